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

**Temperature and energy** (:func:`thermal_check`, from the MD log of ``cgkd simulate``: columns
``time_ps``, ``total_kj_mol``, ``temperature_k``). A liquid that keeps its structure while its
kinetic temperature runs away from the thermostat's is not stable: the network's forces are then
not conservative at the time step, or push beads into regions it never saw. Over the analysed
part of the run:

* the mean kinetic temperature over its second half must lie within ``max_temperature_error``
  (default 5 %) of the thermostat's, up to 2 standard errors of that mean (4 blocks);
* the total energy's fitted change over the run, per bead in kT, must stay within
  ``max_energy_drift_kT`` (default 0.5 kT per bead; a heating from 300 to 365 K changes the kinetic
  energy alone by 0.33 kT per bead) unless its t statistic is within ``t_min``.

The thermostat's temperature is the run's (``fingerprint.json`` beside ``log.csv``) or given.

**Broken coordinates.** A frame is *non-finite* when a coordinate or box value is NaN/inf, and
*exploded* when a coordinate lies further than ``max_extent_boxes`` (default 10) box lengths from
the origin; either makes the trajectory unstable.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from openmm_cgkd.analysis.cdf import cdf_edges, cdf_from_merge_distances, frame_merge_distances
from openmm_cgkd.analysis.distributions import AnalysisError, Distribution

__all__ = ["CoordinateCheck", "DriftResult", "ThermalCheck", "StabilityReport", "check_coordinates", "cdf_drift",
           "time_resolved_cdfs", "assess_stability", "thermal_check", "read_md_log", "DEFAULT_DRIFT_THRESHOLD",
           "DEFAULT_N_BLOCKS", "DEFAULT_MAX_TEMPERATURE_ERROR", "DEFAULT_MAX_ENERGY_DRIFT_KT"]

DEFAULT_DRIFT_THRESHOLD = 0.05
DEFAULT_N_BLOCKS = 5
DEFAULT_T_MIN = 3.0
DEFAULT_MAX_TEMPERATURE_ERROR = 0.05  # relative deviation of the mean kinetic temperature from the thermostat's
DEFAULT_MAX_ENERGY_DRIFT_KT = 0.5  # fitted change of the total energy over the run, kT per bead
_KB_KJ_MOL_K = 0.00831446261815324


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
class ThermalCheck:
    """Mean kinetic temperature against the thermostat's and the total-energy drift of one run."""

    n_samples: int
    mean_temperature_K: float  # over the second half of the samples
    temperature_sem_K: float
    target_temperature_K: float | None  # the thermostat's; None: unknown (then not judged)
    energy_drift_kT_per_bead: float  # fitted change of the total energy over the samples / (N kT)
    energy_t_statistic: float
    max_temperature_error: float = DEFAULT_MAX_TEMPERATURE_ERROR
    max_energy_drift_kT: float = DEFAULT_MAX_ENERGY_DRIFT_KT
    t_min: float = DEFAULT_T_MIN

    @property
    def temperature_ok(self) -> bool | None:
        if self.target_temperature_K is None:
            return None
        bias = abs(self.mean_temperature_K - self.target_temperature_K)
        sem = self.temperature_sem_K if np.isfinite(self.temperature_sem_K) else 0.0
        return bool(bias <= self.max_temperature_error * self.target_temperature_K + 2.0 * sem)

    @property
    def drift_ok(self) -> bool:
        return not (abs(self.energy_drift_kT_per_bead) > self.max_energy_drift_kT
                    and abs(self.energy_t_statistic) > self.t_min)

    @property
    def ok(self) -> bool:
        return self.temperature_ok is not False and self.drift_ok

    def describe(self) -> str:
        """One phrase: the mean temperature against the target and the drift."""
        target = "thermostat unknown" if self.target_temperature_K is None else \
            f"thermostat {self.target_temperature_K:g} K"
        return (f"T {self.mean_temperature_K:.1f} +- {self.temperature_sem_K:.1f} K ({target}), energy drift "
                f"{self.energy_drift_kT_per_bead:+.3f} kT/bead")

    def to_dict(self) -> dict:
        return {"n_samples": self.n_samples, "mean_temperature_K": self.mean_temperature_K,
                "temperature_sem_K": self.temperature_sem_K, "target_temperature_K": self.target_temperature_K,
                "temperature_ok": self.temperature_ok, "energy_drift_kT_per_bead": self.energy_drift_kT_per_bead,
                "energy_t_statistic": self.energy_t_statistic, "drift_ok": self.drift_ok, "ok": self.ok,
                "max_temperature_error": self.max_temperature_error,
                "max_energy_drift_kT": self.max_energy_drift_kT}


def read_md_log(path) -> dict[str, np.ndarray]:
    """The columns of an MD log CSV (``cgkd simulate``'s ``log.csv``) as float arrays by header name."""
    import csv
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"MD log not found: {path}")
    rows = [r for r in csv.reader(ln for ln in path.read_text().splitlines() if ln.strip())]
    if not rows:
        raise AnalysisError(f"MD log {path} is empty")
    header = [h.strip().strip('"').lstrip("#").strip().lower() for h in rows[0]]
    try:
        data = np.array([[float(v) for v in r] for r in rows[1:] if len(r) == len(header)], dtype=np.float64)
    except ValueError as exc:
        raise AnalysisError(f"MD log {path}: unreadable row ({exc})") from None
    data = data.reshape(-1, len(header))
    return {h: data[:, i] for i, h in enumerate(header)}


def _thermostat_of(log_path) -> float | None:
    """The thermostat temperature (K) of the run whose log is ``log_path``: its ``fingerprint.json``."""
    import json
    from pathlib import Path

    fp = Path(log_path).with_name("fingerprint.json")
    try:
        settings = json.loads(fp.read_text()).get("settings", {})
    except (OSError, ValueError, AttributeError):
        return None
    t = settings.get("temperature_K") if isinstance(settings, dict) else None
    return float(t) if isinstance(t, (int, float)) else None


def thermal_check(log, n_beads: int, *, target_K: float | None = None, start_fraction: float = 0.0,
                  max_temperature_error: float = DEFAULT_MAX_TEMPERATURE_ERROR,
                  max_energy_drift_kT: float = DEFAULT_MAX_ENERGY_DRIFT_KT,
                  t_min: float = DEFAULT_T_MIN) -> ThermalCheck | None:
    """:class:`ThermalCheck` of an MD log (path, or columns as from :func:`read_md_log`) over its
    rows from ``start_fraction`` of the run on; None when the log has no ``temperature_k``
    column. ``target_K``: the thermostat (K), default the run's ``fingerprint.json``."""
    cols = read_md_log(log) if not isinstance(log, dict) else log
    if target_K is None and not isinstance(log, dict):
        target_K = _thermostat_of(log)
    if "temperature_k" not in cols:
        return None
    temp = cols["temperature_k"]
    keep = np.isfinite(temp)
    first = int(np.floor(start_fraction * len(temp)))
    keep[:first] = False
    temp = temp[keep]
    if len(temp) < 3:
        return None
    late = temp[len(temp) // 2:]  # the temperature the run ends up at: its second half
    sem = float(np.std([b.mean() for b in np.array_split(late, 4)], ddof=1) / 2.0) if len(late) >= 8 else float("nan")
    drift, t_stat = 0.0, 0.0
    if "total_kj_mol" in cols:
        t = cols.get("time_ps", np.arange(len(keep), dtype=float))[keep]
        e = cols["total_kj_mol"][keep]
        kT = _KB_KJ_MOL_K * (target_K or float(temp.mean()))
        _, change, t_stat = _fit_slope(t, e)
        drift = change / (n_beads * kT)
    return ThermalCheck(len(temp), float(late.mean()), sem, target_K, float(drift), float(t_stat),
                        float(max_temperature_error), float(max_energy_drift_kT), float(t_min))


@dataclass
class StabilityReport:
    """Stability of one trajectory: coordinates, time-resolved CDFs, drift per species."""

    coordinates: CoordinateCheck
    block_frames: list[tuple[int, int]]  # [start, stop) frame ranges
    block_times: list[float]  # mean time of each block
    blocks: list[dict[str, Distribution]]
    drift: dict[str, DriftResult]
    thermal: ThermalCheck | None = None  # from the MD log, when one was given

    @property
    def clustering(self) -> bool:
        return any(d.flagged for d in self.drift.values())

    @property
    def stable(self) -> bool:
        return self.coordinates.ok and not self.clustering and (self.thermal is None or self.thermal.ok)

    def to_dict(self, curves: bool = True) -> dict:
        d = {"stable": self.stable, "clustering": self.clustering, "coordinates": self.coordinates.to_dict(),
             "thermal": None if self.thermal is None else self.thermal.to_dict(),
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
