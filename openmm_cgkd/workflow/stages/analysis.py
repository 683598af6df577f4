"""The pipeline's ``analysis`` stage: each model's report put together from its replicas'
records (no trajectory read), its figures, the overlays of all models and the reference's
noise floor."""
from __future__ import annotations

import json
import math
from pathlib import Path

from openmm_cgkd.analysis import plots as P
from openmm_cgkd.analysis.contacts import contact_coordination
from openmm_cgkd.analysis.distributions import AnalysisError, bead_type_indices
from openmm_cgkd.analysis.noise import NoiseFloor, noise_floor
from openmm_cgkd.analysis.drift import model_drift
from openmm_cgkd.analysis.records import (curves_from_record, drift_from_record, molecular_from_records, read_record,
                                          replica_from_record, report_from_replicas)
from openmm_cgkd.analysis.replicas import replica_mean
from openmm_cgkd.analysis.reference_check import check_reference
from openmm_cgkd.analysis.report import NO_BOX, load_reference, summary_markdown, write_report
from openmm_cgkd.errors import CGKDError
from openmm_cgkd.fileio import write_json
from openmm_cgkd.fingerprint import digest
from openmm_cgkd.workflow.config import PipelineConfig, analysis_settings
from openmm_cgkd.workflow.report import energy_panels, model_overlays
from openmm_cgkd.workflow.results import AnalysisResult, MDResult, ModelAnalysis

__all__ = ["analysis_stage"]


def analysis_stage(cfg: PipelineConfig, out: Path, runs: MDResult, data_digest: str, log,
                    dest: Path | None = None) -> AnalysisResult:
    """Each model's report put together from its replica records (no trajectory read), written in
    ``dest`` (default ``<out>/analysis``); ``data_digest``: the dataset's (``dataset_digest``)."""

    settings = analysis_settings(cfg)
    ref_rec = read_record(out / "md" / "reference.json.gz")
    expected = digest({"settings": settings.to_dict(), "reference": data_digest})
    reference = curves_from_record(ref_rec["curves"]) if ref_rec and ref_rec.get("digest") == expected else {}
    if ref_rec and not reference:
        log("[analysis] md/reference.json.gz was made with other settings: the reference curves are left out")
    dest = out / "analysis" if dest is None else dest
    check, volume, counts = _reference_geometry(cfg, settings, log)
    skipped = NO_BOX if volume is None else None  # a reference without a box: no RDF / ADF / CDF
    results, reports = {}, {}
    for name, reps in runs.models.items():
        replicas, series, molecular = [], [], []
        for rep in reps:
            rec = read_record(rep.record)
            if rec is None:
                raise CGKDError(f"replica record {rep.record} is missing or unreadable: rerun the md stage")
            replicas.append(replica_from_record(rec["analysis"]))
            if not rep.failed and drift_from_record(rec) is not None:
                series.append(drift_from_record(rec))
            if not replicas[-1].failed:
                molecular.append(rec.get("molecular"))
        mol = molecular_from_records((ref_rec or {}).get("molecular") if reference else None, molecular)
        report = report_from_replicas(name, settings, Path(cfg.dataset).name, reference, replicas, skipped, mol)
        reports[name] = report
        adir = dest / name
        write_report(report, adir, plots=False)
        _model_plots(report, adir)
        results[name] = ModelAnalysis(
            summary={k: v.to_dict() for k, v in report.summary.items()}, stable=report.stable, dir=adir,
            n_replicas=len(report.replicas), n_failed=report.n_failed,
            failures=tuple({"replica": rep.replica, **rep.failure} for rep in reps if rep.failed),
            not_equilibrated_within_discard=tuple(report.not_equilibrated), discard_frames=settings.discard_frames,
            pymbar_t0_frames=tuple(None if r.equilibration is None else
                                   int(math.ceil(r.equilibration.fraction * r.n_frames_loaded - 1e-9))
                                   for r in report.replicas),
            contacts={k: c.to_dict() for k, c in report.contacts.items()},
            coordination={} if not report.good_replicas or not reference or skipped else
            {k: c.to_dict() for k, c in contact_coordination(report.mean["rdf"], reference["rdf"], volume,
                                                              counts).items()},
            drift=model_drift(series, settings.discard_frames))
        log(f"[analysis] {name}: {report.n_failed} of {len(report.replicas)} replicas failed; " + ", ".join(
            f"{k} TAE {v.mean:.3f}" for k, v in report.summary.items() if k in ("rdf", "adf", "cdf")))
    frame_ps = cfg.md.interval_steps * cfg.md.timestep_fs / 1000.0 * settings.stride  # one analysed CG frame
    floor = None
    if skipped:
        log("[analysis] no noise floor: the reference has no periodic box (no RDF, ADF or CDF to score)")
    else:
        floor = _noise_floor(cfg, dest / "noise_floor.json", settings, data_digest, reports, frame_ps, log)
    figures = {}
    if any(r.good_replicas for r in reports.values()) and reference and not skipped:
        figures["rdf_overlay"] = model_overlays(reports, "rdf", dest / "rdf_overlay.png")
        figures["cdf_overlay"] = model_overlays(reports, "cdf", dest / "cdf_overlay.png")
    figures["energy"] = energy_panels(reports, settings.discard_frames * frame_ps, dest / "energy_equilibration.png")
    return AnalysisResult(results, figures, floor, None if check is None else check.to_dict())


def _reference_geometry(cfg: PipelineConfig, settings, log):
    """The reference check of the AA reference (:func:`~openmm_cgkd.analysis.reference_check.check_reference`,
    None when it cannot be made), its mean box volume (nm^3; None without a periodic box) and beads
    per type."""
    import numpy as np

    ref = load_reference(cfg.dataset, stride=settings.reference_stride, max_frames=settings.reference_max_frames)
    counts = {k: len(v) for k, v in bead_type_indices(ref.topology).items()}
    if ref.unitcell_vectors is None:
        log("[analysis] no reference check: the reference has no periodic box")
        return None, None, counts
    volume = float(np.mean(np.abs(np.linalg.det(np.asarray(ref.unitcell_vectors, dtype=np.float64)))))
    try:
        check = check_reference(ref)
    except AnalysisError as exc:
        log(f"[analysis] no reference check: {exc}")
        return None, volume, counts
    log(f"[analysis] reference check: {check.verdict}")
    return check, volume, counts


def _model_plots(report, adir: Path) -> list[Path]:
    """The figures the study report needs of one model (RDF and CDF overlays over the AA
    reference, time-resolved CDFs, potential energy per replica), linked from its summary.md."""

    ok = report.good_replicas
    tag = f"{report.name}: {len(ok)} replica(s) vs AA"
    written = []
    if ok:
        written.append(P.plot_overlays(report.mean["rdf"], report.reference["rdf"], adir / "rdf.png", f"RDF, {tag}",
                                       tae=report.tae["rdf"]))
        written.append(P.plot_overlays(report.mean["cdf"], report.reference["cdf"], adir / "cdf.png", f"CDF, {tag}",
                                       tae=report.tae["cdf"]))
        n_blocks = min(len(r.stability.blocks) for r in ok)
        if n_blocks:
            blocks = [replica_mean([r.stability.blocks[b] for r in ok]) for b in range(n_blocks)]
            labels = [f"frames {a}-{b - 1}" for a, b in ok[0].stability.block_frames[:n_blocks]]
            written.append(P.plot_time_resolved_cdfs(blocks, report.reference["cdf"], adir / "cdf_time.png", labels,
                                                     f"Time-resolved CDF, {tag}"))
    series = [(r.energy_series[0], r.energy_series[1], None if r.equilibration is None else r.equilibration.t0_index,
               r.name) for r in report.replicas if r.energy_series is not None]
    if series:
        written.append(P.plot_energies(series, adir / "energy.png", "Potential energy (dotted: pymbar t0)"))
    (adir / "summary.md").write_text(summary_markdown(report, [str(p) for p in written]))
    return written


def _noise_floor(cfg: PipelineConfig, path: Path, settings, data_digest: str, reports: dict, frame_ps: float, log):
    """The reference's noise floor (:func:`~openmm_cgkd.analysis.noise.noise_floor`) for blocks as
    long in time as a replica's scored part (its frames times ``frame_ps``, the CG frame spacing
    in ps; the reference's frames are rarely saved at the same interval); cached in ``path`` by
    its inputs. None when no replica was scored or the reference is too short."""

    scored = [r.stop_frame - r.start_frame for rep in reports.values() for r in rep.good_replicas]
    if not scored:
        return None
    block_ps = round(max(scored) * float(frame_ps), 9)
    key = digest({"settings": settings.to_dict(), "reference": data_digest, "block_ps": block_ps})
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("digest") == key:
            return NoiseFloor.from_dict(cached["floor"])
    log(f"[analysis] noise floor: blocks of {block_ps:g} ps of the reference against the other half of it")
    try:
        floor = noise_floor(cfg.dataset, settings=settings, block_ps=block_ps)
    except AnalysisError as exc:
        log(f"[analysis] no noise floor: {exc}")
        return None
    write_json(path, {"digest": key, "floor": floor.to_dict()})
    log("[analysis] noise floor: " + ", ".join(f"{k} TAE {floor.summary[k].mean:.3f} +- {floor.summary[k].std:.3f}"
                                              for k in ("rdf", "adf", "cdf") if k in floor.summary))
    return floor
