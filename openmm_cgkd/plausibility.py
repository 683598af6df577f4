"""Plausibility checks that catch unit mistakes before they give a silently wrong result.

* :func:`bead_spacing_problem`: positions and box in Angstrom read as nm (everything 10x too
  far apart: the beads no longer see each other and a model runs them as isolated particles),
  or nm read as Angstrom (10x too close). The test is local, so a droplet in a large box is
  fine: the median distance from a bead to its nearest neighbour (minimum image) must lie in
  :data:`NEAREST_NEIGHBOR_RANGE_NM`. Condensed CG systems have 0.3-1 nm (reline, one bead per
  molecule: 0.40 nm); all-atom resolution about 0.1 nm (bonded hydrogens).

The functions return a message (what is wrong, how to fix it) or None; callers raise their own
error type. Units: nm.
"""
from __future__ import annotations

import numpy as np

__all__ = ["NEAREST_NEIGHBOR_RANGE_NM", "median_nearest_neighbor_nm", "bead_spacing_problem", "PLAUSIBLE_CG_RMS_FORCE",
           "force_scale_problem"]

NEAREST_NEIGHBOR_RANGE_NM = (0.05, 2.0)


def median_nearest_neighbor_nm(positions, box=None, max_beads: int = 256, chunk: int = 32) -> float:
    """Median over beads (at most ``max_beads`` of them, evenly spread) of the distance to the
    nearest other bead, nm; minimum image in ``box`` (3x3, rows = box vectors, nm) when given.
    ``inf`` for fewer than two beads."""
    x = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    n = x.shape[0]
    if n < 2:
        return float("inf")
    query = np.unique(np.linspace(0, n - 1, min(n, max_beads)).astype(np.int64))
    inv = None
    if box is not None:
        box = np.asarray(box, dtype=np.float64).reshape(3, 3)
        inv = np.linalg.inv(box)
    nearest = np.empty(len(query))
    for start in range(0, len(query), chunk):
        idx = query[start:start + chunk]
        d = x[None, :, :] - x[idx, None, :]  # (q, n, 3)
        if inv is not None:
            s = d @ inv
            d = (s - np.round(s)) @ box
        r2 = np.einsum("qnk,qnk->qn", d, d)
        r2[np.arange(len(idx)), idx] = np.inf
        nearest[start:start + chunk] = np.sqrt(r2.min(axis=1))
    return float(np.median(nearest))


def bead_spacing_problem(positions, box=None, what: str = "positions") -> str | None:
    """None when the bead spacing is plausible in nm, else a message naming the likely unit error."""
    try:
        nn = median_nearest_neighbor_nm(positions, box)
    except np.linalg.LinAlgError:
        return None  # a singular box is reported by the box checks
    lo, hi = NEAREST_NEIGHBOR_RANGE_NM
    if not np.isfinite(nn) or lo <= nn <= hi:
        return None
    edge = "" if box is None else f" (box edges {', '.join(f'{v:.4g}' for v in np.linalg.norm(box, axis=1))} nm)"
    if nn > hi:
        return (f"{what}: the median distance between a bead and its nearest neighbour is {nn:.3g} nm{edge}, "
                f"implausible for a condensed system (expected {lo:g}-{hi:g} nm): are positions and box in "
                "Angstrom? Convert them to nm (divide by 10)")
    return (f"{what}: the median distance between a bead and its nearest neighbour is {nn:.3g} nm{edge}, "
            f"implausibly small (expected {lo:g}-{hi:g} nm): the beads overlap; check that positions and box "
            "are in nm")


# RMS per-component force (kJ/mol/nm) of a mapped CG dataset: reline (one bead per molecule) 279,
# the synthetic test liquid 69. kcal/mol/A read as kJ/mol/nm is 41.84x too small; a conversion
# applied twice 41.84x too large: both leave this range for any condensed system.
PLAUSIBLE_CG_RMS_FORCE = (10.0, 5000.0)
KCAL_PER_A_IN_KJ_PER_NM = 41.84


def force_scale_problem(forces, what: str = "forces") -> str | None:
    """None when the RMS force component of ``forces`` (kJ/mol/nm) is plausible for a CG
    condensed system (:data:`PLAUSIBLE_CG_RMS_FORCE`), else a message naming the direction of
    the likely unit error (or that all forces are zero)."""
    f = np.asarray(forces, dtype=np.float64)
    if f.size == 0:
        return None
    if not np.any(f):
        return f"{what} are all zero: nothing to learn from; were the forces written?"
    rms = float(np.sqrt(np.mean(f ** 2)))
    lo, hi = PLAUSIBLE_CG_RMS_FORCE
    k = KCAL_PER_A_IN_KJ_PER_NM
    if rms < lo:
        return (f"{what}: RMS force component {rms:.3g} kJ/mol/nm is implausibly SMALL for a condensed CG system "
                f"(expected {lo:g}-{hi:g}; reline: 279): forces in kcal/mol/A stored as kJ/mol/nm are {k}x too "
                f"small; multiply them by {k}")
    if rms > hi:
        return (f"{what}: RMS force component {rms:.3g} kJ/mol/nm is implausibly LARGE for a condensed CG system "
                f"(expected {lo:g}-{hi:g}; reline: 279): forces converted from kcal/mol/A twice are {k}x too "
                f"large; divide them by {k}")
    return None
