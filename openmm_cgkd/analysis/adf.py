"""Angular distribution functions P(theta) of bead triplets j-i-k around a central bead i.

For every frame and every bead i, the neighbours are the beads within ``cutoff`` of i (minimum
image); every unordered pair {j, k} of distinct neighbours contributes the angle between the
minimum-image vectors i->j and i->k. Triplets are sorted by type into keys ``"J-I-K@rc"`` with the
central type I in the middle, J <= K, and rc the cutoff in nm (two decimals). Each curve is a
normalised density over 0-180 degrees (per degree, integral 1); no sin(theta) weighting.

The cutoffs are the system's: by default the end of the first coordination shell of every
bead-type pair, the first minimum after the first peak of its reference g(r)
(:func:`adf_cutoffs_from_rdfs`), or those given. The DES paper's (0.60, 0.65 and 0.75 nm, which
bracket reline's first-shell peak: :data:`DES_ADF_CUTOFFS`) are those of the DES configurations
and ``cgkd demo`` only: on water they give an ADF TAE of 0.037 where the first-shell cutoff gives
0.353, hiding the loss of tetrahedral order.
"""
from __future__ import annotations

import numpy as np

from openmm_cgkd.analysis.distributions import (AnalysisError, Distribution, bead_type_indices, box_half_width,
                                                require_periodic, uniform_edges)
from openmm_cgkd.geometry import is_orthorhombic, minimum_image

__all__ = ["compute_adfs", "adf_key", "adf_cutoffs_from_rdfs", "DES_ADF_CUTOFFS", "DEFAULT_ADF_BIN_WIDTH"]

DES_ADF_CUTOFFS = (0.60, 0.65, 0.75)  # nm, the DES paper's (reline); not a default for other systems
DEFAULT_ADF_BIN_WIDTH = 2.0  # degree


def adf_key(j: str, i: str, k: str, cutoff: float) -> str:
    j, k = sorted((j, k))
    return f"{j}-{i}-{k}@{cutoff:.2f}"


def _neighbours(pos: np.ndarray, box: np.ndarray, centres: np.ndarray, rc: float):
    """Neighbours within ``rc`` (minimum image, self excluded) of beads ``centres``, padded to the
    largest count K: indices (C, K), vectors centre->neighbour (C, K, 3), distances (C, K) with
    inf in padding slots. A periodic k-d tree serves orthorhombic boxes; others go brute force."""
    if is_orthorhombic(box):
        from scipy.spatial import cKDTree

        lengths = np.diag(box)
        wrapped = np.mod(pos, lengths)
        wrapped[wrapped >= lengths] = 0.0  # float rounding of np.mod at the upper face
        tree = cKDTree(wrapped, boxsize=lengths)
        k = int(tree.query_ball_point(wrapped[centres], rc, return_length=True).max(initial=1))
        k = min(k, len(pos))
        r, nb = tree.query(wrapped[centres], k=k, distance_upper_bound=rc)
        r, nb = r.reshape(len(centres), k), nb.reshape(len(centres), k)
        # Drop each centre itself (distance 0 to its own index), keep order of the rest.
        own = nb == centres[:, None]
        r[own] = np.inf
        missing = ~np.isfinite(r)
        nb = np.where(missing, 0, nb)
        vec = minimum_image(wrapped[nb] - wrapped[centres][:, None, :], box)
        return nb, vec, np.where(missing, np.inf, r)
    d = minimum_image(pos[None, :, :] - pos[centres, None, :], box)  # (C, N, 3)
    r = np.sqrt(np.einsum("cnk,cnk->cn", d, d))
    r[np.arange(len(centres)), centres] = np.inf
    kmax = int((r < rc).sum(axis=1).max(initial=0))
    if kmax == 0:
        return np.zeros((len(centres), 0), dtype=np.int64), np.zeros((len(centres), 0, 3)), np.zeros((len(centres), 0))
    nb = np.argpartition(r, kmax - 1, axis=1)[:, :kmax]
    rows = np.arange(len(centres))[:, None]
    rn = r[rows, nb]
    rn[rn >= rc] = np.inf
    return nb, d[rows, nb], rn


def adf_cutoffs_from_rdfs(rdfs: dict[str, Distribution], max_nm: float | None = None) -> tuple[float, ...]:
    """The ADF cutoffs of a system (nm): the first-shell cutoff of every pair's g(r)
    (:func:`~openmm_cgkd.analysis.rdf.first_shell_cutoff`), rounded to 0.01 nm, distinct, sorted,
    below ``max_nm``. :class:`AnalysisError` when no pair has a first shell on the grid."""
    from openmm_cgkd.analysis.rdf import first_shell_cutoff

    found = {key: first_shell_cutoff(c) for key, c in rdfs.items()}
    cuts = sorted({round(v, 2) for v in found.values() if v is not None and (max_nm is None or v < max_nm)})
    if not cuts:
        raise AnalysisError(f"no bead-type pair's g(r) shows a first coordination shell (a peak above 1 and a "
                            f"minimum after it) on the RDF grid: give the ADF cutoffs (--adf-cutoffs NM ...)")
    return tuple(cuts)


def compute_adfs(traj, cutoffs, *, bin_width: float = DEFAULT_ADF_BIN_WIDTH,
                 max_block: int = 2_000_000, progress: bool = False) -> dict[str, Distribution]:
    """P(theta) of every type triplet and every cutoff (nm). ``cutoffs`` may be one float.

    Returns ``{"J-I-K@rc": Distribution}`` for all central types I, all J <= K and all cutoffs,
    including triplets never seen (zero curve, ``n_samples`` 0).
    """
    from tqdm.auto import tqdm

    cutoffs = [float(c) for c in np.atleast_1d(cutoffs)]
    boxes = require_periodic(traj)
    rc_max = max(cutoffs)
    if rc_max >= box_half_width(boxes):
        raise AnalysisError(f"ADF cutoff {rc_max:g} nm is not below half the smallest box width "
                            f"({box_half_width(boxes):g} nm)")
    edges = uniform_edges(0.0, 180.0, bin_width)
    n_bins = len(edges) - 1
    types = bead_type_indices(traj.topology)
    names = list(types)
    n_types = len(names)
    type_of = np.empty(traj.n_atoms, dtype=np.int64)
    for t, idx in enumerate(types.values()):
        type_of[idx] = t
    # counts[cutoff, central, j, k, bin] with j <= k
    counts = np.zeros((len(cutoffs), n_types, n_types, n_types, n_bins), dtype=np.int64)
    cut_arr = np.asarray(cutoffs)
    xyz = traj.xyz
    for f in tqdm(range(traj.n_frames), desc="ADF", disable=not progress, leave=False):
        pos = xyz[f].astype(np.float64)
        for ci, centrals in enumerate(types.values()):
            for s in range(0, len(centrals), max(1, max_block // traj.n_atoms)):
                nb, vec, rn = _neighbours(pos, boxes[f], centrals[s:s + max(1, max_block // traj.n_atoms)], rc_max)
                kmax = nb.shape[1]
                if kmax < 2:
                    continue
                a, b = np.triu_indices(kmax, 1)
                rpair = np.maximum(rn[:, a], rn[:, b])  # inf where a neighbour slot is padding
                c, p = np.nonzero(rpair < rc_max)  # real triplets only
                a, b, rpair = a[p], b[p], rpair[c, p]
                unit = vec / np.where(np.isfinite(rn), rn, 1.0)[..., None]
                cos = np.einsum("pk,pk->p", unit[c, a], unit[c, b])
                theta = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
                bins = np.minimum((theta / bin_width).astype(np.int64), n_bins - 1)
                ta, tb = type_of[nb[c, a]], type_of[nb[c, b]]
                lo, hi = np.minimum(ta, tb), np.maximum(ta, tb)
                for q, rc in enumerate(cut_arr):
                    m = rpair < rc
                    if not m.any():
                        continue
                    code = (lo[m] * n_types + hi[m]) * n_bins + bins[m]
                    counts[q, ci] += np.bincount(code, minlength=n_types * n_types * n_bins).reshape(
                        n_types, n_types, n_bins)
    out: dict[str, Distribution] = {}
    for q, rc in enumerate(cutoffs):
        for ci, ci_name in enumerate(names):
            for j in range(n_types):
                for k in range(j, n_types):
                    c = counts[q, ci, j, k]
                    total = int(c.sum())
                    dens = c / (total * bin_width) if total else np.zeros(n_bins)
                    key = adf_key(names[j], ci_name, names[k], rc)
                    out[key] = Distribution("adf", key, edges, dens, n_samples=total, n_frames=traj.n_frames,
                                            meta={"central": ci_name, "neighbours": [names[j], names[k]],
                                                  "cutoff_nm": rc})
    return out
