"""Periodic-box geometry of bead positions (nm): the minimum image of displacement vectors."""
from __future__ import annotations

import itertools

import numpy as np

__all__ = ["minimum_image", "is_orthorhombic"]


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
