"""Compact records of analysed MD replicas, and a model's report put together from them.

A long study cannot keep its trajectories (a 300 ps replica of 252 beads is ~1 MB of DCD), but
it must keep its results. The pipeline therefore analyses each replica as soon as its MD has
run and keeps only a compact record of it (:func:`replica_to_record`, written by
:func:`write_record` as gzip-compressed JSON): the replica's RDF/ADF/CDF curves, its TAEs
against the reference, its time-resolved CDFs and drift, pymbar's equilibration estimate, its
potential-energy series, or why it failed. The analysis stage rebuilds every model's
:class:`~openmm_cgkd.analysis.report.ModelReport` from its records
(:func:`report_from_replicas`) without reading a trajectory.

The result equals :func:`~openmm_cgkd.analysis.report.analyze_model` run on all the replicas at
once: every replica is histogrammed on the grids of the reference box (NVT replicas share it),
so per-replica curves, TAEs and their mean and standard deviation over replicas are the same
up to the 6 significant digits every number is stored with (``tests/unit/analysis/test_analysis_records.py``;
TAEs are computed before that rounding). Units: nm, degree, ps, kJ/mol.
"""
from __future__ import annotations

import gzip
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from openmm_cgkd.analysis.distributions import AnalysisError, Distribution
from openmm_cgkd.analysis.equilibration import EquilibrationResult
from openmm_cgkd.analysis.replicas import replica_mean, replica_tae_stats
from openmm_cgkd.analysis.report import KINDS, AnalysisSettings, ModelReport, ReplicaAnalysis, summarize_taes
from openmm_cgkd.analysis.stability import CoordinateCheck, DriftResult, StabilityReport

__all__ = ["replica_to_record", "replica_from_record", "failed_replica", "curves_to_record", "curves_from_record",
           "report_from_replicas", "molecular_from_records", "write_record", "read_record", "drift_from_record",
           "RECORD_DIGITS", "RECORD_VERSION"]

RECORD_DIGITS = 6  # significant digits of the stored curves
# Version of a replica record: 1 (no "version" key) curves, TAEs, stability, equilibration, energy;
# 2 adds "drift_from_start" (:class:`~openmm_cgkd.analysis.drift.DriftSeries` from frame 0). Every
# version loads; what a record lacks is None.
RECORD_VERSION = 2


def _round(obj, digits: int = RECORD_DIGITS):
    """A copy with floats rounded to ``digits`` significant digits (NaN/inf kept)."""
    if isinstance(obj, dict):
        return {str(k): _round(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v, digits) for v in obj]
    if isinstance(obj, np.ndarray):
        return _round(obj.tolist(), digits)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return float(f"{x:.{digits}g}") if math.isfinite(x) and x != 0.0 else x
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def curves_to_record(curves: Mapping[str, Mapping[str, Distribution]]) -> dict:
    """``{kind: {key: Distribution}}`` as nested plain data."""
    return {kind: {key: c.to_dict() for key, c in by_key.items()} for kind, by_key in curves.items()}


def curves_from_record(data: Mapping) -> dict[str, dict[str, Distribution]]:
    return {kind: {key: Distribution.from_dict(c) for key, c in by_key.items()} for kind, by_key in data.items()}


def replica_to_record(replica: ReplicaAnalysis) -> dict:
    """Everything the aggregated report needs of one analysed replica, as plain data: curves,
    TAEs, stability (with the time-resolved CDFs), equilibration, frames used and the
    potential-energy series (x, kJ/mol)."""
    d = replica.to_dict(curves=not replica.failed, blocks=True)
    d["coordinates"] = replica.stability.coordinates.to_dict()
    if replica.energy_series is not None:
        x, e = replica.energy_series
        d["energy_series"] = {"x": np.asarray(x).tolist(), "potential_kj_mol": np.asarray(e).tolist()}
    return d


def _stability_from(d: Mapping, coords: CoordinateCheck) -> StabilityReport:
    drift = {}
    for sp, r in d.get("drift", {}).items():
        drift[sp] = DriftResult(r["species"], r["mean_merge_distance_nm"], r["slope_nm_per_time"],
                                r["relative_change"], r["threshold"], r["t_statistic"], list(r["block_means_nm"]),
                                list(r["block_peaks_nm"]), r.get("t_min", 3.0))
    blocks = [{k: Distribution.from_dict(c) for k, c in b.items()} for b in d.get("blocks", [])]
    return StabilityReport(coords, [tuple(b) for b in d.get("block_frames", [])], list(d.get("block_times", [])),
                           blocks, drift)


def replica_from_record(d: Mapping) -> ReplicaAnalysis:
    """The :class:`ReplicaAnalysis` of a record written by :func:`replica_to_record`."""
    c = d.get("coordinates") or d["stability"]["coordinates"]
    coords = CoordinateCheck(int(c["n_frames"]), list(c.get("nonfinite_frames", [])), list(c.get("exploded_frames", [])))
    eq = d.get("equilibration")
    equilibration = None if eq is None else EquilibrationResult(
        int(eq["t0_index"]), int(eq["n_samples"]), float(eq["statistical_inefficiency"]), float(eq["n_effective"]),
        eq.get("t0_time"))
    series = d.get("energy_series")
    energy = None if series is None else (np.asarray(series["x"], dtype=np.float64),
                                          np.asarray(series["potential_kj_mol"], dtype=np.float64))
    curves = curves_from_record(d.get("curves", {}))
    return ReplicaAnalysis(d["name"], int(d["n_frames_loaded"]), int(d["start_frame"]), int(d["stop_frame"]),
                           equilibration, _stability_from(d.get("stability", {}), coords), curves,
                           {k: dict(v) for k, v in d.get("tae", {}).items()}, energy, d.get("failure"))


def drift_from_record(record: Mapping):
    """The :class:`~openmm_cgkd.analysis.drift.DriftSeries` of a replica record (the whole record
    as :func:`read_record` returns it), or None for a record written before version 2 or a failed
    replica."""
    from openmm_cgkd.analysis.drift import DriftSeries

    d = record.get("drift_from_start")
    return None if d is None else DriftSeries.from_dict(d)


def failed_replica(name: str, failure: str, n_frames: int = 0, start_frame: int = 0,
                   energy_series: tuple[np.ndarray, np.ndarray] | None = None) -> ReplicaAnalysis:
    """A replica whose MD stopped (``failure`` says why): counted in the report, not scored."""
    if not failure:
        raise AnalysisError("a failed replica needs the reason it failed")
    coords = CoordinateCheck(int(n_frames))
    return ReplicaAnalysis(name, int(n_frames), int(start_frame), int(start_frame), None,
                           StabilityReport(coords, [], [], [], {}), energy_series=energy_series, failure=failure)


def report_from_replicas(name: str, settings: AnalysisSettings, reference_name: str,
                         reference: Mapping[str, Mapping[str, Distribution]],
                         replicas: Sequence[ReplicaAnalysis], skipped: str | None = None,
                         molecular: dict | None = None) -> ModelReport:
    """A model's report from its replicas analysed one by one against the same ``reference``
    curves (``{kind: {key: Distribution}}``; empty when no replica could be analysed): mean
    curves and TAE statistics over the scored replicas, failed ones counted. ``skipped``: why the
    RDF / ADF / CDF are empty (:data:`~openmm_cgkd.analysis.report.NO_BOX`), None when computed;
    ``molecular``: the bonded distributions (:func:`molecular_from_records`), None for one-bead
    molecules."""
    replicas = list(replicas)
    if not replicas:
        raise AnalysisError(f"{name}: no replicas")
    ok = [r for r in replicas if not r.failed]
    if ok:
        mean = {kind: replica_mean([r.curves[kind] for r in ok]) for kind in KINDS}
        tae = {kind: replica_tae_stats([r.tae[kind] for r in ok]) for kind in KINDS}
    else:
        mean = {kind: {} for kind in KINDS}
        tae = {kind: {} for kind in KINDS}
    summary = summarize_taes([r.tae for r in ok], settings.adf_cutoffs)
    ref = {kind: dict(reference.get(kind, {})) for kind in KINDS}
    return ModelReport(name, settings, reference_name, ref, replicas, mean, tae, summary, molecular, skipped)


def molecular_from_records(reference: Mapping | None, replicas: Sequence[Mapping | None]) -> dict | None:
    """:attr:`ModelReport.molecular` from the reference's molecular curves (``{kind: {key: curve
    record}}``) and each scored replica's ``{"curves": ..., "tae": {kind: {key: TAE}}}`` (the md
    stage's records): the mean curves and the TAE over replicas per kind. None when the reference
    has none (one-bead molecules, records made before) or a replica lacks them."""
    replicas = list(replicas)
    if not reference or not replicas or any(r is None for r in replicas):
        return None
    ref = curves_from_record(reference)
    reps = [curves_from_record(r["curves"]) for r in replicas]
    return {kind: {"reference": ref_c, "mean": replica_mean([r[kind] for r in reps]),
                   "tae": replica_tae_stats([r["tae"][kind] for r in replicas])}
            for kind, ref_c in ref.items() if ref_c and all(kind in r for r in reps)}


def write_record(path: str | Path, record: Mapping) -> Path:
    """Write ``record`` as gzip-compressed JSON (floats rounded to :data:`RECORD_DIGITS` significant
    digits; NaN/inf as JSON's NaN/Infinity), atomically. Byte-identical for an equal record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_round(record), sort_keys=True, separators=(",", ":"), default=str)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as fh:
        fh.write(text.encode())
    tmp.replace(path)
    return path


def read_record(path: str | Path) -> dict | None:
    """A record written by :func:`write_record`, or None when it is missing or unreadable."""
    try:
        with gzip.open(path, "rt") as fh:
            data = json.load(fh)
    except (OSError, EOFError, ValueError):
        return None
    return data if isinstance(data, dict) else None
