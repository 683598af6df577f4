"""Ensemble force spread: the statistic of the uncertainty watch and its threshold (numpy only).

For members' forces ``F_k,i`` (kJ/mol/nm) on bead i, the bead's spread is
``s_i = sqrt(sum_xyz std_k(F_k,i)^2)``: the root-mean-square distance of the member forces from
their mean (population std over the K members). A frame is summarised by ``max_i s_i`` and
``mean_i s_i``. The threshold of the watch is a high quantile (default 0.99) of ``max_i s_i``
over training frames: about 1 % of frames like the training data exceed it, so a student whose
frames exceed it often has left the region its teachers agree on.
"""
from __future__ import annotations

import numpy as np

__all__ = ["bead_force_spread", "force_std_threshold", "DEFAULT_QUANTILE"]

DEFAULT_QUANTILE = 0.99


def bead_force_spread(force_std: np.ndarray) -> np.ndarray:
    """Per-bead spread ``[..., N]`` (kJ/mol/nm) from per-component member std ``[..., N, 3]``."""
    s = np.asarray(force_std, dtype=np.float64)
    if s.shape[-1] != 3:
        raise ValueError(f"force std must end in 3 components (x, y, z), got shape {s.shape}")
    return np.sqrt((s * s).sum(-1))


def force_std_threshold(member_forces: np.ndarray, quantile: float = DEFAULT_QUANTILE) -> dict:
    """The watch threshold from member forces ``[K >= 2, F, N, 3]`` (kJ/mol/nm) on training frames:
    the ``quantile`` over frames of ``max_i s_i``, with context (mean spread, frames used)."""
    f = np.asarray(member_forces, dtype=np.float64)
    if f.ndim != 4 or f.shape[0] < 2 or f.shape[1] < 1 or f.shape[-1] != 3:
        raise ValueError(f"need member forces [K >= 2, frames >= 1, beads, 3], got shape {f.shape}")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    spread = bead_force_spread(f.std(axis=0))  # [F, N]
    frame_max = spread.max(axis=1)
    return {"statistic": "max over beads of sqrt(sum_xyz std_members(F)^2)", "units": "kJ/mol/nm",
            "quantile": float(quantile), "threshold_kj_mol_nm": float(np.quantile(frame_max, quantile)),
            "frames": int(f.shape[1]), "members": int(f.shape[0]),
            "mean_bead_spread_kj_mol_nm": float(spread.mean()),
            "median_frame_max_kj_mol_nm": float(np.median(frame_max))}
