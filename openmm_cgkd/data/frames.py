"""Frame selection of a dataset: which frames of a CG dataset a study uses (by start frame or
time window, then a count, then a stride)."""
from __future__ import annotations

import numpy as np

from openmm_cgkd.config import ConfigError

__all__ = ["select_frames"]


def select_frames(times: np.ndarray, start_frame: int | None = None, window_ps=None, max_frames: int | None = None,
                  stride: int = 1) -> tuple[np.ndarray, str]:
    """Indices of the frames used and a description. In this order: from ``start_frame`` on, or
    the frames whose time minus the first frame's time lies in ``window_ps`` = [start, stop) ps;
    then the first ``max_frames`` of those; then every ``stride``-th."""
    times = np.asarray(times, dtype=np.float64)
    n = len(times)
    idx = np.arange(n)
    what = []
    if start_frame is not None:
        if start_frame >= n:
            raise ConfigError(f"dataset_start_frame = {start_frame} but the dataset holds only {n} frames")
        idx = idx[start_frame:]
        what.append(f"from frame {start_frame}")
    if window_ps is not None:
        a, b = float(window_ps[0]), float(window_ps[1])
        rel = times - times[0]
        eps = 1e-6
        idx = idx[(rel[idx] >= a - eps) & (rel[idx] < b - eps)]
        what.append(f"times {a:g}-{b:g} ps after the first frame")
    if max_frames is not None:
        if len(idx) < max_frames:
            raise ConfigError(f"dataset_max_frames = {max_frames} but the selection holds only {len(idx)} of the "
                              f"dataset's {n} frames")
        idx = idx[:max_frames]
        what.append(f"the first {max_frames} of them")
    idx = idx[::stride]
    if stride > 1:
        what.append(f"every {stride}")
    if len(idx) < 2:
        raise ConfigError(f"the frame selection ({', '.join(what) or 'all'}) leaves {len(idx)} frame(s) of {n}")
    desc = (", ".join(what) or "all frames") + f": {len(idx)} frames (source frames {idx[0]}-{idx[-1]}, " \
           f"{times[idx[0]]:g}-{times[idx[-1]]:g} ps)"
    return idx, desc
