"""Equilibration detection on a potential-energy series (Chodera 2016, via pymbar).

``pymbar.timeseries.detect_equilibration`` picks the start t0 that maximises the number of
effectively uncorrelated samples after it; everything before t0 is discarded.

The energy log and the trajectory are matched by *fraction of the run*: both reporters are
assumed to cover the same simulated interval (as ``cgkd simulate`` writes them), so a series
equilibrated after a fraction f = t0 / len(series) discards the first ceil(f * n_frames) frames.
DCD files carry no reliable times, which is why times are not matched.
"""
from __future__ import annotations

import contextlib
import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from openmm_cgkd.analysis.distributions import AnalysisError
from openmm_cgkd.quiet import import_pymbar_timeseries

__all__ = ["EquilibrationResult", "detect_equilibration", "read_energy_log", "frames_to_discard"]


@dataclass
class EquilibrationResult:
    """Start of the equilibrated part of a series of ``n_samples`` values."""

    t0_index: int
    n_samples: int
    statistical_inefficiency: float
    n_effective: float
    t0_time: float | None = None  # in the log's time unit (ps), when the log has times

    @property
    def fraction(self) -> float:
        """Fraction of the series before equilibration."""
        return self.t0_index / self.n_samples if self.n_samples else 0.0

    def to_dict(self) -> dict:
        return {"t0_index": self.t0_index, "t0_time": self.t0_time, "n_samples": self.n_samples,
                "fraction_discarded": self.fraction, "statistical_inefficiency": self.statistical_inefficiency,
                "n_effective": self.n_effective}


def detect_equilibration(energies, times=None, nskip: int = 1) -> EquilibrationResult:
    """Detect where ``energies`` (kJ/mol) become stationary. ``times`` (ps) are only reported."""
    a = np.asarray(energies, dtype=np.float64)
    if a.ndim != 1 or a.size < 3:
        raise AnalysisError(f"equilibration detection needs a 1-D series of >= 3 values, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise AnalysisError("potential-energy series holds NaN/inf values")
    if np.ptp(a) == 0:
        return EquilibrationResult(0, a.size, 1.0, float(a.size), None if times is None else float(times[0]))
    ts = import_pymbar_timeseries()
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        t0, g, neff = ts.detect_equilibration(a, fast=True, nskip=max(1, int(nskip)))
    t0 = int(t0)
    t0_time = None if times is None else float(np.asarray(times, dtype=np.float64)[t0])
    return EquilibrationResult(t0, int(a.size), float(g), float(neff), t0_time)


def read_energy_log(path: str | Path) -> tuple[np.ndarray | None, np.ndarray]:
    """(times or None, potential energies) from a CSV log.

    Reads OpenMM ``StateDataReporter`` files (header ``#"Step","Time (ps)","Potential Energy
    (kJ/mole)",...``) and any CSV whose header has a column containing "potential" (energy,
    kJ/mol) and optionally one containing "time" (ps).
    """
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"energy log not found: {path}")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        raise AnalysisError(f"energy log {path} is empty")
    header = next(csv.reader([lines[0].lstrip("#")]))
    cols = [h.strip().strip('"').lower() for h in header]
    pot = [i for i, c in enumerate(cols) if "potential" in c]
    if not pot:
        raise AnalysisError(f"energy log {path}: no potential-energy column in header {header}")
    tcol = [i for i, c in enumerate(cols) if c.startswith("time") or "time (" in c or c in ("t", "t_ps")]
    energies, times = [], []
    for row in csv.reader(lines[1:]):
        if not row or row[0].lstrip().startswith("#"):
            continue
        try:
            energies.append(float(row[pot[0]]))
            if tcol:
                times.append(float(row[tcol[0]]))
        except (ValueError, IndexError) as exc:
            raise AnalysisError(f"energy log {path}: unreadable row {row}: {exc}") from exc
    return (np.asarray(times) if tcol else None), np.asarray(energies)


def frames_to_discard(result: EquilibrationResult, n_frames: int) -> int:
    """Trajectory frames to drop for an equilibration result of a log spanning the same run."""
    return min(n_frames, int(math.ceil(result.fraction * n_frames - 1e-9)))
