"""Radial distribution functions g(r) for every bead-type pair (``mdtraj.compute_rdf``).

The grid is fixed (default 0-1.5 nm in 0.005 nm bins) and capped at half the smallest box width,
so that a CG trajectory and its AA reference give curves on the same bins: build the edges once
with :func:`rdf_edges` from all the trajectories to be compared, and pass them to
:func:`compute_rdfs`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from openmm_cgkd.analysis.distributions import (AnalysisError, Distribution, bead_type_indices,
                                                box_half_width, pair_keys, require_periodic,
                                                uniform_edges)

__all__ = ["rdf_edges", "compute_rdfs", "close_contacts", "paired_contact_bins", "CloseContact", "first_shell_cutoff", "DEFAULT_RDF_R_MAX",
           "DEFAULT_RDF_BIN_WIDTH", "AA_CONTACT_G"]

DEFAULT_RDF_R_MAX = 1.5  # nm
DEFAULT_RDF_BIN_WIDTH = 0.005  # nm


def first_shell_cutoff(rdf: Distribution, smooth_nm: float = 0.02) -> float | None:
    """The first minimum after the first peak of g(r) (nm): the end of the first coordination
    shell. g is smoothed by a running mean over ``smooth_nm``; the first peak is the first local
    maximum above 1; the minimum the first local minimum after it. None when there is none
    (no peak above 1, or g still falls at the grid's end)."""
    g = np.asarray(rdf.values, dtype=np.float64)
    r = 0.5 * (rdf.edges[:-1] + rdf.edges[1:])
    width = max(1, int(round(smooth_nm / float(rdf.edges[1] - rdf.edges[0]))))
    gs = np.convolve(g, np.ones(width) / width, mode="same")
    above = np.flatnonzero(gs > 1.0)
    if len(above) == 0:
        return None
    i = int(above[0])
    while i + 1 < len(gs) and gs[i + 1] >= gs[i]:  # climb to the first peak
        i += 1
    while i + 1 < len(gs) and gs[i + 1] <= gs[i]:  # descend to the first minimum after it
        i += 1
    if i + 1 >= len(gs):
        return None
    return float(r[i])


def rdf_edges(*trajectories, r_max: float = DEFAULT_RDF_R_MAX,
              bin_width: float = DEFAULT_RDF_BIN_WIDTH) -> np.ndarray:
    """Bin edges from 0 to ``r_max`` (nm), capped at half the smallest box width of all
    ``trajectories``, so that every one of them can be histogrammed on the same grid."""
    cap = min(box_half_width(require_periodic(t)) for t in trajectories) if trajectories else np.inf
    return uniform_edges(0.0, min(r_max, cap), bin_width)


def compute_rdfs(traj, edges: np.ndarray | None = None, *, r_max: float = DEFAULT_RDF_R_MAX,
                 bin_width: float = DEFAULT_RDF_BIN_WIDTH, pairs=None, max_distances: int = 4_000_000,
                 progress: bool = False, molecules: np.ndarray | None = None,
                 which: str = "all") -> dict[str, Distribution]:
    """g(r) of every bead-type pair of ``traj``, keyed ``"A-B"`` (type names sorted).

    ``edges`` (uniform, nm) default to :func:`rdf_edges` of ``traj``; ``pairs`` restricts the type
    pairs (iterable of (A, B)). Frames are processed in chunks of at most ``max_distances``
    distances and combined with mdtraj's normalisation (number of pairs times the sum over frames
    of 1/volume), so the result equals one ``mdtraj.compute_rdf`` call over all frames.
    ``molecules`` (molecule index per bead) with ``which`` = ``"inter"`` or ``"intra"`` keeps only
    the pairs of beads in different molecules or in the same one (normalised by their own count).
    """
    if which not in ("all", "inter", "intra") or (which != "all" and molecules is None):
        raise AnalysisError(f"which must be all, inter or intra (inter/intra need molecules), got {which!r}")
    import mdtraj as md
    from tqdm.auto import tqdm

    boxes = require_periodic(traj)
    if edges is None:
        edges = rdf_edges(traj, r_max=r_max, bin_width=bin_width)
    edges = np.asarray(edges, dtype=np.float64)
    if edges[-1] > box_half_width(boxes) * (1 + 1e-6):
        raise AnalysisError(f"RDF grid reaches {edges[-1]:g} nm, beyond half the smallest box width "
                            f"({box_half_width(boxes):g} nm)")
    n_bins = len(edges) - 1
    types = bead_type_indices(traj.topology)
    wanted = pair_keys(types) if pairs is None else [tuple(sorted(p)) for p in pairs]
    inv_vol = 1.0 / np.abs(np.linalg.det(boxes))
    out: dict[str, Distribution] = {}
    for a, b in tqdm(wanted, desc="RDF", disable=not progress, leave=False):
        if a not in types or b not in types:
            raise AnalysisError(f"bead type pair {a}-{b}: topology has types {sorted(types)}")
        atom_pairs = traj.topology.select_pairs(types[a], types[b])
        if which != "all" and len(atom_pairs):
            same = molecules[atom_pairs[:, 0]] == molecules[atom_pairs[:, 1]]
            atom_pairs = atom_pairs[same if which == "intra" else ~same]
        if len(atom_pairs) == 0:  # a single bead of a like pair (or no pair of that kind)
            continue
        chunk = max(1, int(max_distances // len(atom_pairs)))
        g_sum = np.zeros(n_bins)
        for s in range(0, traj.n_frames, chunk):
            part = traj[s:s + chunk]
            _, g = md.compute_rdf(part, atom_pairs, r_range=(edges[0], edges[-1]), n_bins=n_bins)
            g_sum += g * inv_vol[s:s + chunk].sum()  # undo the per-chunk volume normalisation
        key = f"{a}-{b}"
        out[key] = Distribution("rdf", key, edges, g_sum / inv_vol.sum(), n_samples=len(atom_pairs) * traj.n_frames,
                                n_frames=traj.n_frames, meta={"types": [a, b], "n_pairs": int(len(atom_pairs))})
    return out


AA_CONTACT_G = 0.1  # g(r) at which the reference's first contact begins


@dataclass(frozen=True)
class CloseContact:
    """A pair's contacts closer than any in the reference: ``reference_contact_nm`` is the first
    r (bin centre, nm) at which the reference g(r) reaches ``AA_CONTACT_G``; ``peak_g`` the
    highest model g(r) below it, at ``peak_r_nm`` (0 and None when the model has none there)."""

    pair: str
    reference_contact_nm: float
    peak_g: float
    peak_r_nm: float | None

    def to_dict(self) -> dict:
        return {"pair": self.pair, "reference_contact_nm": self.reference_contact_nm, "peak_g": self.peak_g,
                "peak_r_nm": self.peak_r_nm}


def paired_contact_bins(model: dict[str, Distribution], reference: dict[str, Distribution],
                        threshold: float = AA_CONTACT_G):
    """Yield ``(key, model g(r), reference g(r), first)`` per pair in both, where ``first`` is the
    first bin at which the reference reaches ``threshold`` (its closest contact); pairs whose
    reference never does are skipped, curves on different grids are an :class:`AnalysisError`."""
    for key, ref in reference.items():
        cg = model.get(key)
        if cg is None:
            continue
        if cg.edges.shape != ref.edges.shape or not np.allclose(cg.edges, ref.edges):
            raise AnalysisError(f"RDF {key}: model and reference are on different grids")
        above = np.nonzero(ref.values >= threshold)[0]
        if above.size:
            yield key, cg, ref, int(above[0])


def close_contacts(model: dict[str, Distribution], reference: dict[str, Distribution],
                   threshold: float = AA_CONTACT_G) -> dict[str, CloseContact]:
    """Per pair, how far the model's g(r) reaches inside the distance the reference never comes
    (g below ``threshold``): a pairing the reference does not have (e.g. anions in contact),
    which a TAE over the whole curve can hide. Pairs missing from either side, or whose reference
    never reaches ``threshold``, are left out. Curves must share their grid."""
    out = {}
    for key, cg, ref, first in paired_contact_bins(model, reference, threshold):
        inside = cg.values[:first]
        k = int(np.argmax(inside)) if inside.size else 0
        peak = float(inside[k]) if inside.size else 0.0
        out[key] = CloseContact(key, float(ref.centers[first]), peak, float(cg.centers[k]) if peak > 0 else None)
    return out
