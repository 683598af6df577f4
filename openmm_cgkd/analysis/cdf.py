"""Cluster distribution functions (CDF): single-linkage merge distances per species under PBC.

Grow a distance cutoff from 0 among the beads of one species; each time two clusters first merge
(single linkage, minimum-image distances) record the cutoff. These merge distances are exactly
the edge lengths of the minimum spanning tree (MST) of the complete graph of minimum-image
distances (Kruskal's algorithm is single-linkage clustering), so a frame of n beads gives n - 1
merge distances, computed here with ``scipy.sparse.csgraph.minimum_spanning_tree``.

The CDF of a species is the histogram of its merge distances over all frames on a grid from 0 to
half the smallest box width (merges beyond are dropped and counted in ``meta["n_beyond"]``),
normalised to a density (per nm, integral 1 over the grid).
"""
from __future__ import annotations

import numpy as np

from openmm_cgkd.analysis.distributions import (AnalysisError, Distribution, bead_type_indices,
                                                box_half_width, pairwise_distances, require_periodic,
                                                uniform_edges)

__all__ = ["mst_merge_distances", "frame_merge_distances", "cdf_edges", "cdf_from_merge_distances",
           "compute_cdfs", "DEFAULT_CDF_BIN_WIDTH"]

DEFAULT_CDF_BIN_WIDTH = 0.005  # nm


def mst_merge_distances(positions: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Sorted single-linkage merge distances (n - 1 values, nm) of ``positions`` (n, 3) nm in a
    periodic ``box`` (3, 3)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree

    n = len(positions)
    if n < 2:
        return np.zeros(0)
    dist = pairwise_distances(positions, positions, box)
    # A sparse upper triangle: scipy reads dense entries within ~1e-8 of 0 as "no edge", and any
    # stored zero as absent, so coincident beads get the tiniest positive weight instead.
    i, j = np.triu_indices(n, 1)
    w = dist[i, j]
    tiny = np.finfo(np.float64).tiny
    w[w == 0.0] = tiny
    mst = minimum_spanning_tree(csr_matrix((w, (i, j)), shape=(n, n)))
    out = np.sort(mst.data)
    if len(out) != n - 1:  # cannot happen for a complete graph, but fail loudly if it does
        raise AnalysisError(f"minimum spanning tree of {n} beads has {len(out)} edges")
    out[out == tiny] = 0.0
    return out


def frame_merge_distances(traj, species=None, progress: bool = False) -> dict[str, np.ndarray]:
    """Merge distances of every frame: ``{species: array (F, n_species - 1)}`` (nm).

    Species with fewer than two beads are left out. This is the expensive step; the CDF and the
    time-resolved CDFs of :mod:`.stability` are histograms of its result.
    """
    from tqdm.auto import tqdm

    boxes = require_periodic(traj)
    types = bead_type_indices(traj.topology)
    wanted = list(types) if species is None else list(species)
    for s in wanted:
        if s not in types:
            raise AnalysisError(f"species {s!r}: topology has types {sorted(types)}")
    wanted = [s for s in wanted if len(types[s]) >= 2]
    out = {s: np.empty((traj.n_frames, len(types[s]) - 1)) for s in wanted}
    for f in tqdm(range(traj.n_frames), desc="CDF", disable=not progress, leave=False):
        pos = traj.xyz[f].astype(np.float64)
        for s in wanted:
            out[s][f] = mst_merge_distances(pos[types[s]], boxes[f])
    return out


def cdf_edges(*trajectories, r_max: float | None = None, bin_width: float = DEFAULT_CDF_BIN_WIDTH) -> np.ndarray:
    """CDF bin edges from 0 to half the smallest box width of all ``trajectories`` (or ``r_max``
    if smaller)."""
    cap = min(box_half_width(require_periodic(t)) for t in trajectories)
    return uniform_edges(0.0, cap if r_max is None else min(cap, r_max), bin_width)


def cdf_from_merge_distances(merges: dict[str, np.ndarray], edges: np.ndarray,
                             frames=slice(None)) -> dict[str, Distribution]:
    """Histogram the merge distances of :func:`frame_merge_distances` (``frames`` selects rows)."""
    edges = np.asarray(edges, dtype=np.float64)
    out = {}
    for s, m in merges.items():
        sel = np.asarray(m[frames])
        vals = sel.ravel()
        counts, _ = np.histogram(vals, bins=edges)
        total = int(counts.sum())
        dens = counts / (total * np.diff(edges)) if total else np.zeros(len(edges) - 1)
        out[s] = Distribution("cdf", s, edges, dens, n_samples=total, n_frames=int(sel.shape[0]),
                              meta={"n_beyond": int(np.count_nonzero(vals >= edges[-1])),
                                    "mean_merge_distance_nm": float(vals.mean()) if vals.size else float("nan")})
    return out


def compute_cdfs(traj, edges: np.ndarray | None = None, *, r_max: float | None = None,
                 bin_width: float = DEFAULT_CDF_BIN_WIDTH, species=None, progress: bool = False) -> dict[str, Distribution]:
    """CDF of every species (bead type) of ``traj``, keyed by type name."""
    if edges is None:
        edges = cdf_edges(traj, r_max=r_max, bin_width=bin_width)
    return cdf_from_merge_distances(frame_merge_distances(traj, species, progress), edges)
