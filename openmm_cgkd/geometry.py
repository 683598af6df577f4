"""Periodic-box geometry of bead positions (nm): the minimum image of displacement vectors."""
from __future__ import annotations

import itertools

import numpy as np

__all__ = ["minimum_image", "is_orthorhombic", "closest_pair"]


def is_orthorhombic(box: np.ndarray) -> bool:
    """Whether the box (3, 3; rows are box vectors) is rectangular (off-diagonal entries zero)."""
    return bool(np.all(np.abs(box - np.diag(np.diag(box))) < 1e-9 * np.max(np.abs(box))))


_IMAGES = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.float64)


def minimum_image(d: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Minimum-image version of displacement vectors ``d`` (..., 3) in a box (3, 3; rows are box
    vectors, nm). Exact for orthorhombic boxes; for triclinic ones the 27 neighbouring images of
    the fractionally wrapped vector are searched."""
    d = np.asarray(d, dtype=np.float64)
    box = np.asarray(box, dtype=np.float64)
    if is_orthorhombic(box):
        lengths = np.diag(box)
        return d - lengths * np.round(d / lengths)
    frac = d @ np.linalg.inv(box)
    frac -= np.round(frac)
    d0 = frac @ box
    shifts = _IMAGES @ box  # (27, 3)
    cand = d0[..., None, :] + shifts  # (..., 27, 3)
    best = np.argmin(np.einsum("...ij,...ij->...i", cand, cand), axis=-1)
    return np.take_along_axis(cand, best[..., None, None], axis=-2)[..., 0, :]


def closest_pair(positions, box=None, chunk: int = 256) -> tuple[int, int, float]:
    """(i, j, distance nm) of the closest pair of particles, minimum image in ``box`` (3x3 rows)."""
    x = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    n = len(x)
    if n < 2:
        return -1, -1, float("inf")
    inv = None if box is None else np.linalg.inv(np.asarray(box, dtype=np.float64))
    best = (-1, -1, float("inf"))
    for start in range(0, n, chunk):
        d = x[None, :, :] - x[start:start + chunk, None, :]
        if inv is not None:
            s = d @ inv
            d = (s - np.round(s)) @ box
        r = np.sqrt(np.einsum("qnk,qnk->qn", d, d))
        rows = np.arange(r.shape[0])
        r[rows, start + rows] = np.inf
        q, j = np.unravel_index(np.argmin(r), r.shape)
        if r[q, j] < best[2]:
            best = (int(start + q), int(j), float(r[q, j]))
    return best
