"""Stability of a CG trajectory: broken coordinates, time-resolved CDFs and the clustering drift.

**Drift statistic.** Spurious clustering shows as single-linkage merge distances shrinking over
time (the CDF peak moving to shorter distance). For each species, let m(t) be the mean merge
distance of frame t (the mean edge of its minimum spanning tree, see :mod:`.cdf`). A straight
line is fitted to m(t) by least squares over all frames, and the drift is the fitted change
over the whole trajectory relative to the mean::

    relative_change = slope * (t_last - t_first) / mean(m)

It is dimensionless and does not depend on the time unit (DCD files carry no real times). A
species is **flagged** for spurious clustering when both

* ``relative_change < -threshold`` (default threshold 0.05: the mean merge distance contracts by
  more than 5 % over the run), and
* the fitted slope is clearly negative against the frame-to-frame scatter: its t statistic
  (slope / standard error of the least-squares slope) is below ``-t_min`` (default 3). This
  only guards small, noisy systems; frames of MD are correlated, so it is no formal test.

A stationary liquid fluctuates around a constant m, giving ``|relative_change|`` of order 1 % for a
few hundred beads. Analyse the trajectory after equilibration (see :mod:`.equilibration`).

The time-resolved CDFs are the CDFs of ``n_blocks`` contiguous, equal blocks of frames.

**Broken coordinates.** A frame is *non-finite* when a coordinate or box value is NaN/inf, and
*exploded* when a coordinate lies further than ``max_extent_boxes`` (default 10) box lengths from
the origin; either makes the trajectory unstable.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from openmm_cgkd.analysis.cdf import cdf_edges, cdf_from_merge_distances, frame_merge_distances
from openmm_cgkd.analysis.distributions import AnalysisError, Distribution

__all__ = ["CoordinateCheck", "DriftResult", "StabilityReport", "check_coordinates", "cdf_drift",
           "time_resolved_cdfs", "assess_stability", "DEFAULT_DRIFT_THRESHOLD", "DEFAULT_N_BLOCKS"]

DEFAULT_DRIFT_THRESHOLD = 0.05
DEFAULT_N_BLOCKS = 5
DEFAULT_T_MIN = 3.0


@dataclass
class CoordinateCheck:
    """Frames (indices) with non-finite or exploded coordinates."""

    n_frames: int
    nonfinite_frames: list[int] = field(default_factory=list)
    exploded_frames: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.nonfinite_frames and not self.exploded_frames

    @property
    def first_bad_frame(self) -> int | None:
        bad = self.nonfinite_frames + self.exploded_frames
        return min(bad) if bad else None

    def to_dict(self) -> dict:
        return {"n_frames": self.n_frames, "ok": self.ok, "first_bad_frame": self.first_bad_frame,
                "nonfinite_frames": self.nonfinite_frames, "exploded_frames": self.exploded_frames}


@dataclass
class DriftResult:
    """Clustering drift of one species (see the module docstring)."""

    species: str
    mean_merge_distance_nm: float
    slope_nm_per_time: float  # per unit of the trajectory's time axis (ps for real times)
    relative_change: float
    threshold: float
    t_statistic: float  # slope / its standard error (inf for a noiseless line)
    block_means_nm: list[float]
    block_peaks_nm: list[float]
    t_min: float = DEFAULT_T_MIN

    @property
    def flagged(self) -> bool:
        return bool(self.relative_change < -self.threshold and self.t_statistic < -self.t_min)

    def to_dict(self) -> dict:
        return {"species": self.species, "mean_merge_distance_nm": self.mean_merge_distance_nm,
                "slope_nm_per_time": self.slope_nm_per_time, "relative_change": self.relative_change,
                "threshold": self.threshold, "t_statistic": self.t_statistic, "t_min": self.t_min,
                "flagged": self.flagged, "block_means_nm": self.block_means_nm,
                "block_peaks_nm": self.block_peaks_nm}


@dataclass
class StabilityReport:
    """Stability of one trajectory: coordinates, time-resolved CDFs, drift per species."""

    coordinates: CoordinateCheck
    block_frames: list[tuple[int, int]]  # [start, stop) frame ranges
    block_times: list[float]  # mean time of each block
    blocks: list[dict[str, Distribution]]
    drift: dict[str, DriftResult]

    @property
    def clustering(self) -> bool:
        return any(d.flagged for d in self.drift.values())

    @property
    def stable(self) -> bool:
        return self.coordinates.ok and not self.clustering

    def to_dict(self, curves: bool = True) -> dict:
        d = {"stable": self.stable, "clustering": self.clustering, "coordinates": self.coordinates.to_dict(),
             "block_frames": [list(b) for b in self.block_frames], "block_times": self.block_times,
             "drift": {k: v.to_dict() for k, v in self.drift.items()}}
        if curves:
            d["blocks"] = [{k: v.to_dict() for k, v in b.items()} for b in self.blocks]
        return d


def check_coordinates(traj, max_extent_boxes: float = 10.0) -> CoordinateCheck:
    """Flag frames with NaN/inf coordinates or box, or coordinates far outside the box."""
    xyz = np.asarray(traj.xyz, dtype=np.float64)
    finite = np.isfinite(xyz).all(axis=(1, 2))
    if traj.unitcell_vectors is not None:
        boxes = np.asarray(traj.unitcell_vectors, dtype=np.float64)
        finite &= np.isfinite(boxes).all(axis=(1, 2))
        scale = np.where(finite, np.linalg.norm(np.nan_to_num(boxes), axis=2).max(axis=1), np.inf)
    else:
        scale = np.full(traj.n_frames, np.inf)
    with np.errstate(invalid="ignore"):
        extent = np.nanmax(np.abs(np.where(np.isfinite(xyz), xyz, 0.0)), axis=(1, 2))
    exploded = finite & (extent > max_extent_boxes * scale)
    return CoordinateCheck(traj.n_frames, np.flatnonzero(~finite).tolist(), np.flatnonzero(exploded).tolist())


def _block_ranges(n_frames: int, n_blocks: int) -> list[tuple[int, int]]:
    n_blocks = max(1, min(int(n_blocks), n_frames))
    bounds = np.linspace(0, n_frames, n_blocks + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _fit_slope(t: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares slope of y(t), the fitted change over the span, and the slope's t statistic."""
    n = len(t)
    if n < 2 or t[-1] <= t[0]:
        return 0.0, 0.0, 0.0
    tc = t - t.mean()
    sxx = float(np.sum(tc * tc))
    slope = float(np.sum(tc * (y - y.mean())) / sxx)
    if n < 3:
        return slope, slope * float(t[-1] - t[0]), 0.0
    resid = y - y.mean() - slope * tc
    se = float(np.sqrt(np.sum(resid * resid) / (n - 2) / sxx))
    t_stat = slope / se if se > 0 else (np.copysign(np.inf, slope) if slope else 0.0)
    return slope, slope * float(t[-1] - t[0]), float(t_stat)


def cdf_drift(merges: dict[str, np.ndarray], times: np.ndarray | None = None,
              threshold: float = DEFAULT_DRIFT_THRESHOLD, n_blocks: int = DEFAULT_N_BLOCKS,
              edges: np.ndarray | None = None, t_min: float = DEFAULT_T_MIN) -> dict[str, DriftResult]:
    """Drift statistic per species from per-frame merge distances (:func:`.cdf.frame_merge_distances`)."""
    out = {}
    for s, m in merges.items():
        n_frames = m.shape[0]
        t = np.arange(n_frames, dtype=np.float64) if times is None else np.asarray(times, dtype=np.float64)
        if t.shape != (n_frames,):
            raise AnalysisError(f"times have shape {t.shape}; merge distances have {n_frames} frames")
        per_frame = m.mean(axis=1)
        mean = float(per_frame.mean())
        slope, rel, t_stat = _fit_slope(t, per_frame)
        rel = rel / mean if mean > 0 else 0.0
        ranges = _block_ranges(n_frames, n_blocks)
        block_means = [float(per_frame[a:b].mean()) for a, b in ranges]
        peaks = []
        for a, b in ranges:
            vals = m[a:b].ravel()
            e = edges if edges is not None else np.linspace(0.0, float(vals.max()) + 1e-9, 101)
            hist, _ = np.histogram(vals, bins=e)
            peaks.append(float(0.5 * (e[np.argmax(hist)] + e[np.argmax(hist) + 1])) if hist.any() else float("nan"))
        out[s] = DriftResult(s, mean, slope, float(rel), float(threshold), t_stat, block_means, peaks, float(t_min))
    return out


def time_resolved_cdfs(merges: dict[str, np.ndarray], edges: np.ndarray,
                       n_blocks: int = DEFAULT_N_BLOCKS) -> tuple[list[tuple[int, int]], list[dict[str, Distribution]]]:
    """CDFs of ``n_blocks`` contiguous blocks of frames: (frame ranges, per-block CDFs)."""
    n_frames = next(iter(merges.values())).shape[0] if merges else 0
    ranges = _block_ranges(n_frames, n_blocks) if n_frames else []
    return ranges, [cdf_from_merge_distances(merges, edges, slice(a, b)) for a, b in ranges]


def assess_stability(traj, *, edges: np.ndarray | None = None, n_blocks: int = DEFAULT_N_BLOCKS,
                     threshold: float = DEFAULT_DRIFT_THRESHOLD, t_min: float = DEFAULT_T_MIN,
                     max_extent_boxes: float = 10.0,
                     merges: dict[str, np.ndarray] | None = None, progress: bool = False) -> StabilityReport:
    """Coordinate check, time-resolved CDFs and drift of ``traj``.

    Structural statistics use the frames before the first broken one. ``merges`` (from
    :func:`.cdf.frame_merge_distances` of those frames) avoids recomputing the spanning trees.
    """
    coords = check_coordinates(traj, max_extent_boxes)
    good = traj if coords.first_bad_frame is None else traj[:coords.first_bad_frame]
    if good.n_frames == 0:
        return StabilityReport(coords, [], [], [], {})
    if merges is None:
        merges = frame_merge_distances(good, progress=progress)
    if edges is None:
        edges = cdf_edges(good)
    ranges, blocks = time_resolved_cdfs(merges, edges, n_blocks)
    times = np.asarray(good.time, dtype=np.float64)
    drift = cdf_drift(merges, times, threshold, n_blocks, edges, t_min)
    block_times = [float(times[a:b].mean()) for a, b in ranges]
    return StabilityReport(coords, ranges, block_times, blocks, drift)
