"""Has an AA reference rearranged, or is it one frozen packing? (docs/evidence.md, "The reference check")

A stationary energy does not make a liquid sampled: a viscous liquid (reline at 298 K) can sit in
one packing for a whole production, and a reference that is one packing gives a noise floor of
that packing, not of the liquid. Two numbers tell:

* **first-shell neighbour persistence**: of the bead pairs closer than ``cutoff`` (the first
  shell, nm) at the start frame, the fraction that are still closer than ``cutoff`` at the lag
  (``still``), and at EVERY frame up to the lag (``survival``; lower, since pairs near the
  cutoff flicker across it from frame to frame). A liquid that has rearranged has exchanged
  most of its first shells: ``still`` falls towards the chance level (a bead's neighbours over
  all beads, a few %);
* **bead displacement**: the RMS displacement of the beads from the start frame (trajectory
  unwrapped by minimum-image steps between frames, the drift of the whole box, i.e. the mean
  displacement of all beads, removed), against the mean first-shell pair distance at the
  start frame. A bead that has changed its neighbours has moved about one neighbour distance.

The verdict is "one frozen packing" when, at the last frame, at least :data:`FROZEN_STILL`
(50 %) of the start's first-shell pairs are still neighbours, or the RMS displacement is below
:data:`FROZEN_DISPLACEMENT` (half) of the neighbour distance: the reference's structure is then that of one packing and its
self-noise underestimates the liquid's. Units: nm, ps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from openmm_cgkd.analysis.distributions import AnalysisError, minimum_image, pairwise_distances, require_periodic

__all__ = ["unwrap", "displacement_rms", "first_shell_pairs", "neighbour_persistence", "ReferenceCheck",
           "check_reference", "reference_check_markdown", "FIRST_SHELL_NM", "FROZEN_STILL", "FROZEN_DISPLACEMENT"]

FIRST_SHELL_NM = 0.6  # first-shell cutoff (nm): the first minimum of the all-bead g(r) of reline is near it
FROZEN_STILL = 0.5  # at least half the start's first-shell pairs still neighbours at the end: frozen
FROZEN_DISPLACEMENT = 0.5  # RMS displacement below half the neighbour distance: frozen


def _boxes(boxes, n_frames: int) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.shape == (3, 3):
        b = np.broadcast_to(b, (n_frames, 3, 3))
    if b.shape != (n_frames, 3, 3):
        raise AnalysisError(f"boxes of shape {b.shape} for {n_frames} frames")
    return b


def unwrap(xyz: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Continuous positions (F, N, 3) nm from wrapped ``xyz`` (F, N, 3) nm in ``boxes`` (F, 3, 3)
    or (3, 3) nm: frame 0 as given, then each frame-to-frame step taken at its minimum image
    (valid while no bead moves half a box between frames)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise AnalysisError(f"positions must have shape (frames, beads, 3), got {xyz.shape}")
    b = _boxes(boxes, len(xyz))
    steps = np.stack([minimum_image(xyz[f] - xyz[f - 1], b[f]) for f in range(1, len(xyz))]) if len(xyz) > 1 \
        else np.zeros((0,) + xyz.shape[1:])
    return np.concatenate([xyz[:1], xyz[:1] + np.cumsum(steps, axis=0)])


def displacement_rms(xyz: np.ndarray, boxes: np.ndarray, start: int = 0) -> np.ndarray:
    """RMS bead displacement (F - start,) nm from frame ``start`` to every later frame of ``xyz``
    (F, N, 3) nm, unwrapped (:func:`unwrap`), the mean displacement of all beads (the drift of
    the whole box) removed; element 0 is 0."""
    u = unwrap(xyz, boxes)[start:]
    d = u - u[:1]
    d -= d.mean(axis=1, keepdims=True)
    return np.sqrt(np.mean(np.sum(d * d, axis=2), axis=1))


def first_shell_pairs(positions: np.ndarray, box: np.ndarray, cutoff: float = FIRST_SHELL_NM) -> np.ndarray:
    """Bead pairs (P, 2) (i < j) closer than ``cutoff`` nm in one frame ``positions`` (N, 3) nm."""
    dist = pairwise_distances(positions, positions, box)
    i, j = np.nonzero(np.triu(dist < cutoff, 1))
    return np.stack([i, j], axis=1)


def _pair_distances(xyz: np.ndarray, boxes: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Minimum-image distances (F, P) nm of ``pairs`` in every frame."""
    out = np.empty((len(xyz), len(pairs)))
    for f in range(len(xyz)):
        d = minimum_image(xyz[f, pairs[:, 1]] - xyz[f, pairs[:, 0]], boxes[f])
        out[f] = np.sqrt(np.einsum("ij,ij->i", d, d))
    return out


def neighbour_persistence(xyz: np.ndarray, boxes: np.ndarray, cutoff: float = FIRST_SHELL_NM,
                          start: int = 0) -> tuple[np.ndarray, np.ndarray, float, int]:
    """First-shell persistence from frame ``start`` of ``xyz`` (F, N, 3) nm in ``boxes``.

    Returns ``(survival, still, neighbour_distance_nm, n_pairs)``: ``survival`` (F - start,) the
    fraction of the pairs closer than ``cutoff`` at ``start`` that are closer at every frame up
    to each lag, ``still`` (F - start,) the fraction closer at the lag itself, and the mean
    distance of those pairs at ``start`` (nm)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    b = _boxes(boxes, len(xyz))
    if not 0 <= start < len(xyz):
        raise AnalysisError(f"start frame {start} outside the {len(xyz)} frames")
    pairs = first_shell_pairs(xyz[start], b[start], cutoff)
    if len(pairs) == 0:
        raise AnalysisError(f"no bead pair closer than {cutoff} nm at frame {start}")
    dist = _pair_distances(xyz[start:], b[start:], pairs)
    inside = dist < cutoff
    survival = np.logical_and.accumulate(inside, axis=0).mean(axis=1)
    return survival, inside.mean(axis=1), float(dist[0].mean()), int(len(pairs))


@dataclass(frozen=True)
class ReferenceCheck:
    """The reference check of one reference (module docstring): from frame ``start_frame``
    over ``span_ps`` ps (``n_frames`` frames), ``n_pairs`` first-shell pairs closer than
    ``cutoff_nm`` at the start, their mean distance ``neighbour_distance_nm``; at the last
    frame the ``survival`` and ``still`` fractions and the RMS displacement ``rms_nm``; whether
    the reference is one ``frozen`` packing. ``curves``: ``times_ps``, ``survival``, ``still``,
    ``rms_nm`` per frame (for a figure)."""

    n_frames: int
    start_frame: int
    span_ps: float
    cutoff_nm: float
    n_pairs: int
    neighbour_distance_nm: float
    survival: float
    still: float
    rms_nm: float
    frozen: bool
    curves: dict = field(default_factory=dict, compare=False)

    @property
    def displacement_ratio(self) -> float:
        """RMS displacement over the neighbour distance."""
        return self.rms_nm / self.neighbour_distance_nm

    @property
    def verdict(self) -> str:
        head = (f"{100 * self.still:.0f} % of the first-shell pairs (r < {self.cutoff_nm:g} nm) at the start are "
                f"still neighbours after {self.span_ps:g} ps ({100 * self.survival:.0f} % at every frame); beads moved {self.rms_nm:.3f} nm RMS (box drift "
                f"removed), {self.displacement_ratio:.2f} of the neighbour distance {self.neighbour_distance_nm:.3f} nm")
        if self.frozen:
            return ("WARNING: the reference is one frozen packing (" + head + "): its structure is that of one "
                    "packing and its self-noise underestimates the liquid's; use independent boxes")
        return "the reference has rearranged (" + head + ")"

    def to_dict(self, curves: bool = False) -> dict:
        d = {"n_frames": self.n_frames, "start_frame": self.start_frame, "span_ps": self.span_ps,
             "cutoff_nm": self.cutoff_nm, "n_pairs": self.n_pairs, "neighbour_distance_nm": self.neighbour_distance_nm,
             "survival": self.survival, "still": self.still, "rms_nm": self.rms_nm,
             "displacement_ratio": self.displacement_ratio, "frozen": self.frozen, "verdict": self.verdict,
             "thresholds": {"still": FROZEN_STILL, "displacement_ratio": FROZEN_DISPLACEMENT}}
        if curves:
            d["curves"] = {k: np.asarray(v).tolist() for k, v in self.curves.items()}
        return d


def check_reference(traj, cutoff: float = FIRST_SHELL_NM, start: int = 0, times=None) -> ReferenceCheck:
    """The reference check of ``traj`` (an mdtraj trajectory of beads with a box, nm) from frame
    ``start``; ``times`` (F,) ps default to ``traj.time`` (frame index when that is all 0)."""
    boxes = require_periodic(traj)
    xyz = np.asarray(traj.xyz, dtype=np.float64)
    if len(xyz) - start < 2:
        raise AnalysisError(f"the reference check needs at least 2 frames from frame {start}, got {len(xyz)}")
    t = np.asarray(traj.time if times is None else times, dtype=np.float64)
    if t.shape != (len(xyz),) or not np.any(np.diff(t) > 0):
        t = np.arange(len(xyz), dtype=np.float64)
    survival, still, dist, n_pairs = neighbour_persistence(xyz, boxes, cutoff, start)
    rms = displacement_rms(xyz, boxes, start)
    frozen = bool(still[-1] >= FROZEN_STILL or rms[-1] < FROZEN_DISPLACEMENT * dist)
    return ReferenceCheck(len(xyz) - start, int(start), float(t[-1] - t[start]), float(cutoff), n_pairs, dist,
                          float(survival[-1]), float(still[-1]), float(rms[-1]), frozen,
                          {"times_ps": t[start:] - t[start], "survival": survival, "still": still, "rms_nm": rms})


def reference_check_markdown(check: ReferenceCheck) -> str:
    """A report section on ``check``."""
    return ("## Reference check (has the AA reference rearranged?)\n\n" + check.verdict + ".\n\n"
            f"Frozen when >= {100 * FROZEN_STILL:g} % of the first-shell pairs are still neighbours at the end or the RMS "
            f"displacement is < {FROZEN_DISPLACEMENT:g} of the neighbour distance (docs/evidence.md); "
            f"{check.n_pairs} first-shell pairs; {check.n_frames} frames.\n")
