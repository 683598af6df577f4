"""Drift from t = 0 (docs/evidence.md, "Drift from t = 0"): structure and energy of every replica
from its first frame, per model its trend over replicas with an error, and one equilibration
discard for every model chosen from the reference models.

A replica starts from an AA frame, so its first frame has the AA's structure; a model whose
structure drifts away relaxes during the run, and a window that starts after a fixed discard
sees only the end of it. Per replica (:func:`replica_drift_series`, kept in the replica record
when the pipeline runs it) the series from frame 0:

* the mean single-linkage merge distance per species (nm; the CDF of :mod:`.cdf`),
* the coordination number per bead-type pair (B beads within the first minimum ``r_min`` of the
  AA's g(r) of an A bead; :func:`first_minimum`),
* the potential energy (kJ/mol).

Per replica the drift of a series is its relative change from frame 0 to the mean over a window
(:func:`relative_change`) and its least-squares slope with standard error (:func:`linear_trend`);
per model the mean over replicas with its standard error (:func:`over_replicas`), so that models
are compared by the t-tests of :mod:`.statistics` on the per-replica drifts.

The discard (:func:`common_discard`): pymbar's equilibration time (frames) of every replica of
the reference models (the ensemble; models whose replicas are trusted), the largest of them, the
same for every model. Units: nm, ps, kJ/mol.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from openmm_cgkd.analysis.distributions import AnalysisError, Distribution, bead_type_indices, require_periodic

__all__ = ["linear_trend", "relative_change", "over_replicas", "first_minimum", "merge_distance_series",
           "coordination_series", "DriftSeries", "replica_drift_series", "ReplicaMean", "common_discard", "model_drift",
           "DRIFT_SERIES_VERSION"]

DRIFT_SERIES_VERSION = 1


def linear_trend(times: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope of ``values`` (n,) against ``times`` (n,) ps and its standard error
    (units of values per ps; the SE assumes independent residuals, so for correlated MD frames
    it is optimistic: compare models by the spread of slopes over replicas instead)."""
    t, v = np.asarray(times, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if t.shape != v.shape or t.size < 3:
        raise AnalysisError(f"a trend needs at least 3 (time, value) points, got {t.size}")
    tc = t - t.mean()
    sxx = float(np.sum(tc * tc))
    if sxx == 0.0:
        raise AnalysisError("a trend needs more than one time")
    slope = float(np.sum(tc * (v - v.mean())) / sxx)
    resid = v - v.mean() - slope * tc
    return slope, math.sqrt(float(np.sum(resid * resid)) / (t.size - 2) / sxx)


def relative_change(values: Sequence[float], window: slice) -> float:
    """(mean of ``values[window]`` - ``values[0]``) / ``values[0]``: the drift from frame 0 to a
    window, as a fraction."""
    v = np.asarray(values, dtype=np.float64)
    w = v[window]
    if v.size == 0 or w.size == 0 or v[0] == 0.0:
        raise AnalysisError("a relative change needs a non-zero first value and a non-empty window")
    return float((w.mean() - v[0]) / v[0])


@dataclass(frozen=True)
class ReplicaMean:
    """Mean of one per-replica number over replicas with its standard error (std / sqrt(n)),
    and the values."""

    mean: float
    se: float
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    def to_dict(self) -> dict:
        return {"mean": self.mean, "se": self.se, "n": self.n, "values": list(self.values)}


def over_replicas(values: Sequence[float]) -> ReplicaMean:
    """:class:`ReplicaMean` of per-replica ``values`` (SE NaN for one replica)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise AnalysisError("no replicas")
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
    return ReplicaMean(float(v.mean()), se, tuple(float(x) for x in v))


def first_minimum(g: Distribution, smooth_bins: int = 5) -> float:
    """The first minimum (nm, bin centre) after the first peak of g(r) ``g`` (smoothed with a
    running mean over ``smooth_bins`` bins): the outer edge of the first coordination shell."""
    v = np.convolve(g.values, np.ones(smooth_bins) / smooth_bins, mode="same")
    if not np.any(v > 0):
        raise AnalysisError(f"RDF {g.key}: empty")
    peak = int(np.argmax(v > 0.5 * v.max()))  # start of the first peak ...
    while peak + 1 < v.size and v[peak + 1] >= v[peak]:
        peak += 1  # ... climbed to its top
    k = peak
    while k + 1 < v.size and v[k + 1] <= v[k]:
        k += 1
    if k + 1 >= v.size:
        raise AnalysisError(f"RDF {g.key}: no minimum after the first peak within {g.edges[-1]:g} nm")
    return float(g.centers[k])


def merge_distance_series(traj, progress: bool = False) -> dict[str, np.ndarray]:
    """Mean single-linkage merge distance (nm) per species and frame: ``{species: (F,)}``."""
    from openmm_cgkd.analysis.cdf import frame_merge_distances

    return {s: m.mean(axis=1) for s, m in frame_merge_distances(traj, progress=progress).items()}


def coordination_series(traj, cutoffs: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Per pair ``"A-B"`` of ``cutoffs`` (nm), the mean number of B beads closer than the cutoff
    to an A bead, per frame: ``{pair: (F,)}`` (a like pair: each bead's neighbours of its type)."""
    from openmm_cgkd.analysis.distributions import minimum_image

    boxes = require_periodic(traj)
    types = bead_type_indices(traj.topology)
    xyz = np.asarray(traj.xyz, dtype=np.float64)
    out = {}
    for key, rc in cutoffs.items():
        a, b = key.split("-")
        if a not in types or b not in types:
            raise AnalysisError(f"pair {key}: topology has types {sorted(types)}")
        ia, ib = types[a], types[b]
        series = np.empty(len(xyz))
        for f in range(len(xyz)):
            d = minimum_image(xyz[f, ib][None, :, :] - xyz[f, ia][:, None, :], boxes[f])
            close = np.einsum("ijk,ijk->ij", d, d) < rc * rc
            if a == b:
                np.fill_diagonal(close, False)
            series[f] = close.sum() / len(ia)
        out[key] = series
    return out


@dataclass
class DriftSeries:
    """One replica's series from its first frame: ``times_ps`` (F,), ``merge_nm`` {species: (F,)},
    ``coordination`` {pair: (F,)} with the ``cutoffs_nm`` used, ``energy_kj_mol`` (F,) or None."""

    times_ps: np.ndarray
    merge_nm: dict[str, np.ndarray]
    coordination: dict[str, np.ndarray]
    cutoffs_nm: dict[str, float]
    energy_kj_mol: np.ndarray | None = None

    def to_dict(self) -> dict:
        return {"version": DRIFT_SERIES_VERSION, "times_ps": np.asarray(self.times_ps).tolist(),
                "merge_nm": {k: v.tolist() for k, v in self.merge_nm.items()},
                "coordination": {k: v.tolist() for k, v in self.coordination.items()},
                "cutoffs_nm": dict(self.cutoffs_nm),
                "energy_kj_mol": None if self.energy_kj_mol is None else np.asarray(self.energy_kj_mol).tolist()}

    @classmethod
    def from_dict(cls, d: Mapping) -> "DriftSeries":
        e = d.get("energy_kj_mol")
        return cls(np.asarray(d["times_ps"], dtype=np.float64),
                   {k: np.asarray(v, dtype=np.float64) for k, v in d["merge_nm"].items()},
                   {k: np.asarray(v, dtype=np.float64) for k, v in d["coordination"].items()},
                   {k: float(v) for k, v in d["cutoffs_nm"].items()},
                   None if e is None else np.asarray(e, dtype=np.float64))

    def drifts(self, window: slice) -> dict[str, float]:
        """Relative change from frame 0 to ``window`` of every series: ``merge:<species>``,
        ``coordination:<pair>``, and ``energy`` (absolute, kJ/mol: an energy has no natural zero)."""
        out = {f"merge:{k}": relative_change(v, window) for k, v in self.merge_nm.items()}
        out.update({f"coordination:{k}": relative_change(v, window) for k, v in self.coordination.items()
                    if v[0] != 0.0})
        if self.energy_kj_mol is not None:
            out["energy"] = float(np.mean(self.energy_kj_mol[window]) - self.energy_kj_mol[0])
        return out


def replica_drift_series(traj, reference_rdfs: Mapping[str, Distribution], energy: Sequence[float] | None = None,
                         times: Sequence[float] | None = None) -> DriftSeries:
    """The :class:`DriftSeries` of a replica trajectory ``traj`` from its first frame:
    coordination cut at the first minimum of each pair's AA g(r) (``reference_rdfs``; pairs whose
    g(r) has none on its grid are left out), the
    potential ``energy`` (F,) kJ/mol when it has a value per frame. ``times`` (F,) ps default to
    ``traj.time``."""
    cutoffs = {}
    for k, g in reference_rdfs.items():
        try:
            cutoffs[k] = first_minimum(g)
        except AnalysisError:  # no first minimum on the grid (a small box): no coordination series for it
            continue
    t = np.asarray(traj.time if times is None else times, dtype=np.float64)
    e = None if energy is None else np.asarray(energy, dtype=np.float64)
    if e is not None and e.shape != (traj.n_frames,):
        e = None
    return DriftSeries(t, merge_distance_series(traj), coordination_series(traj, cutoffs), cutoffs, e)


def common_discard(t0_frames: Sequence[int | None]) -> int:
    """The equilibration discard (frames) for every model: the largest pymbar equilibration time
    ``t0_frames`` over the replicas of the reference models (None entries, replicas pymbar
    could not judge, are skipped)."""
    v = [int(t) for t in t0_frames if t is not None]
    if not v:
        raise AnalysisError("no equilibration time of a reference replica to choose the discard from")
    return max(v)


def model_drift(series: Sequence[DriftSeries], start: int) -> dict[str, dict]:
    """One model's drift over its replicas' ``series``: per quantity (``merge:<species>``,
    ``coordination:<pair>``, ``energy``) the :class:`ReplicaMean` (as a dict) of the per-replica
    change from frame 0 to the window from frame ``start`` on (:meth:`DriftSeries.drifts`), and of
    the per-replica slope over that window (``slope``, per ps; merge and coordination as fractions
    of their frame-0 value per ps, energy in kJ/mol/ps). Empty without series."""
    if not series:
        return {}
    window = slice(int(start), None)
    changes = [s.drifts(window) for s in series]
    keys = [k for k in changes[0] if all(k in c for c in changes)]
    out = {}
    for k in keys:
        slopes = []
        for s in series:
            kind, _, name = k.partition(":")
            v = {"merge": s.merge_nm, "coordination": s.coordination}.get(kind, {}).get(name)
            v = s.energy_kj_mol if kind == "energy" else v / v[0]
            t = s.times_ps[window]
            slopes.append(linear_trend(t, v[window])[0] if t.size >= 3 else math.nan)
        out[k] = {"change": over_replicas([c[k] for c in changes]).to_dict(),
                  "slope": over_replicas(slopes).to_dict()}
    return out
