"""The pipeline's ``analysis`` stage: each model's report put together from its replicas'
records (no trajectory read), its figures, the overlays of all models and the reference's
noise floor."""
from __future__ import annotations

import json
import math
from pathlib import Path

from openmm_cgkd.analysis import plots as P
from openmm_cgkd.analysis.distributions import AnalysisError
from openmm_cgkd.analysis.noise import NoiseFloor, noise_floor
from openmm_cgkd.analysis.records import curves_from_record, read_record, replica_from_record, report_from_replicas
from openmm_cgkd.analysis.replicas import replica_mean
from openmm_cgkd.analysis.report import summary_markdown, write_report
from openmm_cgkd.errors import CGKDError
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
    results, reports = {}, {}
    for name, reps in runs.models.items():
        replicas = []
        for rep in reps:
            rec = read_record(rep.record)
            if rec is None:
                raise CGKDError(f"replica record {rep.record} is missing or unreadable: rerun the md stage")
            replicas.append(replica_from_record(rec["analysis"]))
        report = report_from_replicas(name, settings, Path(cfg.dataset).name, reference, replicas)
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
            contacts={k: c.to_dict() for k, c in report.contacts.items()})
        log(f"[analysis] {name}: {report.n_failed} of {len(report.replicas)} replicas failed; " + ", ".join(
            f"{k} TAE {v.mean:.3f}" for k, v in report.summary.items() if k in ("rdf", "adf", "cdf")))
    floor = _noise_floor(cfg, dest / "noise_floor.json", settings, data_digest, reports, log)
    figures = {}
    if any(r.good_replicas for r in reports.values()) and reference:
        figures["rdf_overlay"] = model_overlays(reports, "rdf", dest / "rdf_overlay.png")
        figures["cdf_overlay"] = model_overlays(reports, "cdf", dest / "cdf_overlay.png")
    frame_ps = cfg.md.interval_steps * cfg.md.timestep_fs / 1000.0 * settings.stride
    figures["energy"] = energy_panels(reports, settings.discard_frames * frame_ps, dest / "energy_equilibration.png")
    return AnalysisResult(results, figures, floor)


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


def _noise_floor(cfg: PipelineConfig, path: Path, settings, data_digest: str, reports: dict, log):
    """The reference's noise floor (:func:`~openmm_cgkd.analysis.noise.noise_floor`) for blocks as
    long as a replica's scored part; cached in ``path`` by its inputs. None when no replica was
    scored or the reference is too short."""

    scored = [r.stop_frame - r.start_frame for rep in reports.values() for r in rep.good_replicas]
    if not scored:
        return None
    block = max(scored)
    key = digest({"settings": settings.to_dict(), "reference": data_digest, "block_frames": block})
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("digest") == key:
            return NoiseFloor.from_dict(cached["floor"])
    log(f"[analysis] noise floor: blocks of {block} reference frames against the other half of the reference")
    try:
        floor = noise_floor(cfg.dataset, block, settings)
    except AnalysisError as exc:
        log(f"[analysis] no noise floor: {exc}")
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"digest": key, "floor": floor.to_dict()}, indent=1) + "\n")
    log("[analysis] noise floor: " + ", ".join(f"{k} TAE {floor.summary[k].mean:.3f} +- {floor.summary[k].std:.3f}"
                                              for k in ("rdf", "adf", "cdf") if k in floor.summary))
    return floor
