"""The whole method in one command: AA data -> mapping -> teachers -> labels -> students -> MD
replicas -> structural analysis -> a report comparing teachers, the ensemble and the students.


``cgkd pipeline config.yaml`` runs :func:`run_pipeline`. Every stage writes its outputs under
``<out>/<stage>/`` and a marker ``<out>/stages/<stage>.json`` holding its fingerprint
(:mod:`openmm_cgkd.fingerprint`): the settings it depends on and the digest of the CONTENT of
its inputs (the dataset's arrays, the teachers' and students' bundles, the labels, the replica
records), never their paths. A rerun skips a stage whose fingerprint matches (and whose
outputs exist) and reruns one whose fingerprint changed, saying what changed; a rerun stage
writes new outputs, so every stage downstream of it is redone too. Hardware and logging
settings (trainer accelerator/devices/threads/progress bar, md.platform, md.threads,
md.workers, cluster) are not part of a fingerprint. The independent tasks of a stage (teacher
members, students, MD replicas with their analysis) run on a Dask cluster
(:mod:`openmm_cgkd.executor`; docs/cluster.md). Inside a stage, every unit of work is keyed the
same way and kept when its fingerprint matches: each training run (resumed from its
checkpoint, or reloaded from ``best_weights.pt`` once finished), each student, each MD
replica. Markers store paths relative to ``<out>`` (``$OUT/...``): an output directory can be
moved, or committed and cloned elsewhere.

Every stage returns a typed result (:mod:`openmm_cgkd.workflow.results`: ``TeachersResult``,
``LabelsResult``, ``StudentsResult``, ``MDResult`` with a ``ReplicaRecord`` per replica,
``AnalysisResult``, ``ReportResult``); :func:`run_pipeline` returns them by stage name and
:func:`stage_outputs` reads one back from its marker.

Long studies keep only small files (``systems/des/study/.gitignore``): each MD replica is
analysed right after it ran and leaves a compact record (``replica.json.gz``: curves, TAEs,
stability, equilibration, energy series, or why it failed; :mod:`openmm_cgkd.analysis.records`),
so a clone without trajectories, checkpoints or labelled datasets resumes without retraining a
finished model or rerunning a finished replica. A replica that blows up (NaN, explosion,
neighbour-list overflow) is a result: its model, replica, step and reason are recorded, the
other replicas go on, and the analysis counts it ("k of n replicas failed"). The wall time of
every stage is accumulated over resumes (``seconds`` in its marker).

The configuration is :mod:`openmm_cgkd.workflow.config`, the markers :mod:`openmm_cgkd.workflow.cache`,
each stage :mod:`openmm_cgkd.workflow.stages`. Units: nm, ps, fs (time step), K, kJ/mol.
"""
from __future__ import annotations

import signal
import threading
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import yaml

from openmm_cgkd.config import ConfigError
from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.data.systemdef import SystemDefinition
from openmm_cgkd.fileio import file_sha256, make_portable
from openmm_cgkd.fingerprint import bundle_checksum, cg_dataset_digest, digest
from openmm_cgkd.training.config import config_to_dict
from openmm_cgkd.training.wall_fit import WALL_FIT_PAIRS
from openmm_cgkd.workflow.cache import STAGES, StageCache
from openmm_cgkd.workflow.config import (PipelineConfig, analysis_settings, ramachandran_key, ramachandran_spec,
                                        student_plan)
from openmm_cgkd.executor import Executor
from openmm_cgkd.workflow.report import write_pipeline_report
from openmm_cgkd.workflow.results import RESULT_TYPES, ReportResult, StageResult, StudentsResult, TeachersResult
from openmm_cgkd.workflow.stages.analysis import analysis_stage
from openmm_cgkd.workflow.stages.data import aa_stage, frames_subset
from openmm_cgkd.workflow.stages.labels import label_sources, labels_stage
from openmm_cgkd.workflow.stages.md import finished_md, md_stage, models_for_md
from openmm_cgkd.workflow.stages.students import students_stage
from openmm_cgkd.workflow.stages.teachers import teachers_stage
from openmm_cgkd.workflow.validate import check_pipeline

__all__ = ["run_pipeline", "interim_report"]


def run_pipeline(cfg: PipelineConfig, only: list[str] | None = None, log=print,
                 executor: Executor | None = None) -> dict[str, StageResult]:
    """Run (or resume) every stage; returns the typed result of each stage that ran or was done
    earlier, by stage name (:mod:`openmm_cgkd.workflow.results`). ``only``: run these stages
    (those before them must be done; those after them are left alone). The stages' independent
    tasks (teacher members, students, MD replicas) run on ``executor``; default: one made from
    ``cfg.cluster`` (a local cluster of ``md.workers`` processes unless told otherwise), started
    on the first task and stopped on return."""
    if executor is not None:
        return _pipeline(cfg, only, log, None, executor)
    with Executor(cfg.cluster, workers=cfg.md.workers, threads=cfg.md.threads, shared_dir=Path(cfg.out).resolve(),
                  log=log) as own:
        return _pipeline(cfg, only, log, None, own)


def interim_report(cfg: PipelineConfig, log=print) -> ReportResult | None:
    """While the md stage is under way (in this or another process): the analysis and report of
    the replicas finished so far, written in ``<out>/interim/`` (``report.md`` says it is interim
    and which replicas are still missing). Nothing is trained or simulated and no stage marker
    changes. Needs the teachers, labels and students stages done (:class:`ConfigError` otherwise);
    returns None, with a log line, when the md stage is done (the report stage writes the report)."""
    interim: dict = {}
    _pipeline(cfg, None, log, interim, None)
    return interim.get("report")


class _Done(Exception):
    """Raised by the stage runner at the first stage after the last one asked for."""


def _pipeline(cfg: PipelineConfig, only: list[str] | None, log, interim: dict | None,
              executor: Executor | None) -> dict[str, StageResult]:
    out = Path(cfg.out).resolve()
    if interim is None:
        check_pipeline(cfg, only)  # the whole config and what the inputs allow, before any stage runs
        out.mkdir(parents=True, exist_ok=True)
        (out / "pipeline.yaml").write_text(yaml.safe_dump(make_portable(config_to_dict(cfg), out), sort_keys=False))
    elif not (out / "stages").is_dir():
        raise ConfigError(f"{out} holds no pipeline run yet: nothing to report")
    stages = StageCache(out, log)
    wanted = set(only or STAGES) if interim is None else set()
    unknown = wanted - set(STAGES)
    if unknown:
        raise ConfigError(f"unknown stage(s) {sorted(unknown)}; stages: {list(STAGES)}")
    last_wanted = max((STAGES.index(s) for s in wanted), default=len(STAGES) - 1)
    results: dict[str, StageResult] = {}

    def stage(name, key, fn):
        if STAGES.index(name) > last_wanted:
            raise _Done
        marker = stages.done(name, key)
        if marker is not None:
            log(f"[{name}] done earlier ({marker['finished']}): skipped")
            results[name] = RESULT_TYPES[name].from_dict(marker["outputs"])
            return results[name]
        if interim is not None:
            raise ConfigError(f"an interim report needs the teachers, labels and students stages done; {name!r} has "
                              "not finished: run the pipeline first")
        if name not in wanted:
            raise ConfigError(f"stage {name!r} must run again (its inputs or settings changed) but --only names "
                              f"{sorted(wanted)}: run the pipeline without --only, or with --only {name} too")
        with stages.timed(name, key) as tick:
            result = fn(tick)
        stages.mark(name, key, result)
        # what later stages see is what a rerun reads back from the marker (strict JSON: a NaN is
        # stored as null), so a fresh run and a resumed one give later stages the same keys
        result = RESULT_TYPES[name].from_dict(stages.done(name, key)["outputs"])
        results[name] = result
        return result

    # SIGTERM (a session ending) ends the run through Python's exception handling, so that the
    # time spent in the interrupted stage is kept for the attempt that finishes it.
    old_handler = None
    if threading.current_thread() is threading.main_thread():
        def _terminate(signum, frame):
            raise SystemExit(128 + signum)

        old_handler = signal.signal(signal.SIGTERM, _terminate)
    try:
        _run_stages(cfg, out, stage, stages, log, executor, interim)
    except _Done:
        pass
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    return results


def _run_stages(cfg: PipelineConfig, out: Path, stage, stages: StageCache, log, executor: Executor | None,
                interim: dict | None = None) -> None:
    """The stages in order. Keys: settings that change results (hardware and logging left out)
    + content digests of the inputs; a stage that reruns writes new outputs, whose digests key
    the stages after it. ``interim``: instead of the md stage and those after it, the interim
    report (:func:`interim_report`), its result put in ``interim["report"]``."""
    from openmm_cgkd.training.trainer import HARDWARE_KEYS

    def results_only(trainer: dict) -> dict:
        return {k: v for k, v in trainer.items() if k not in HARDWARE_KEYS}

    common = {"model": cfg.model, "split": asdict(cfg.split), "trainer": results_only(cfg.trainer)}
    if not Path(cfg.dataset).is_file():
        aa_inputs = {k: file_sha256(getattr(cfg.aa, k)) for k in ("system", "mapping")
                     if cfg.aa and getattr(cfg.aa, k) and Path(getattr(cfg.aa, k)).is_file()}
        if "system" in aa_inputs:  # and the files it names (structure, .top, XML): their sha256
            aa_inputs["system_files"] = {k: v for k, v in SystemDefinition.from_yaml(cfg.aa.system).to_dict(
                relative_to=Path(cfg.aa.system).parent).items() if k != "source"}
        aa_settings = {k: v for k, v in asdict(cfg.aa).items()  # paths out: their content is in aa_inputs
                       if k not in ("platform", "threads", "system", "mapping", "run_dir")} if cfg.aa else None
        stage("aa", {"aa": aa_settings, "inputs": aa_inputs}, lambda tick: aa_stage(cfg, log))
    if cfg.selects_frames:
        cfg.dataset = frames_subset(cfg, out, log)
    data = CGDataset.load(cfg.dataset)  # read once: its digest and its topology key the teachers
    data_digest = cg_dataset_digest(data)  # a dataset of other content retrains everything downstream
    # bonded beads: the wall is fitted on the pairs it acts on since 2026-12-08 (earlier teachers of
    # such data had another wall); unbonded data keep the key they always had
    wall_fit = {"wall_fit": WALL_FIT_PAIRS} if data.topology.has_bonds else {}
    del data
    teachers = stage("teachers", {**common, "dataset": data_digest,
                                  "teachers": cfg.teachers, **wall_fit},
                     lambda tick: teachers_stage(cfg, out, log, executor))
    # the labelled datasets are not among the labels stage's files: made again when needed
    labels = stage("labels", {"teachers": bundle_checksum(teachers.ensemble), "dataset": data_digest,
                              "sources": label_sources(cfg)},
                   lambda tick: labels_stage(cfg, out, teachers, log))
    students = stage("students", {**common, "students": {"plan": student_plan(cfg),
                                                         "trainer": results_only(cfg.students.trainer)},
                                  "labels": labels.digests},
                     lambda tick: students_stage(cfg, out, teachers, labels, tick, log, executor))
    models = models_for_md(cfg, teachers, students)
    md_settings = {k: v for k, v in asdict(cfg.md).items() if k not in ("platform", "threads", "workers")}
    md_settings["timestep_check"] = {k: v for k, v in md_settings["timestep_check"].items()
                                     if k != "stop_if_unsafe"}  # whether to go on, not what results
    md_settings.update(n_steps=cfg.md.n_steps, interval_steps=cfg.md.interval_steps)
    settings = analysis_settings(cfg)
    md_key = {"md": md_settings, "models": {n: [bundle_checksum(p), k] for n, (p, k) in models.items()},
              "dataset": data_digest, "split": asdict(cfg.split), "analysis": settings.to_dict()}
    analysis_key = {"analysis": settings.to_dict(), "dataset": data_digest}
    spec = ramachandran_spec(cfg)
    if spec is not None:  # a study without analysis.ramachandran keeps the keys it had
        md_key["ramachandran"] = analysis_key["ramachandran"] = ramachandran_key(spec)
    if interim is not None:
        if stages.done("md", md_key) is not None:
            log(f"[interim] the md stage is done: the report stage writes {out / 'report.md'} (run the pipeline)")
            raise _Done
        interim["report"] = _interim_report(cfg, out, stages, teachers, students, models, data_digest, log)
        raise _Done
    runs = stage("md", md_key, lambda tick: md_stage(cfg, out, models, data_digest, tick, log, executor))
    records = {name: [file_sha256(r.record) for r in reps] for name, reps in runs.models.items()}
    analysis = stage("analysis", {**analysis_key, "records": records},
                     lambda tick: analysis_stage(cfg, out, runs, data_digest, log))
    times = {name: stages.done_seconds(name) for name in STAGES[:-1]}

    def report(tick):
        return write_pipeline_report(out, cfg, teachers, students, runs, analysis, times, log)

    stage("report", {"analysis": digest(analysis.to_marker(out)), "md": digest(runs.to_marker(out)),
                     "statistics": cfg.statistics.to_dict(),
                     "training": digest({"teachers": teachers.to_marker(out), "students": students.to_marker(out)}),
                     "seconds": times}, report)


def _interim_report(cfg: PipelineConfig, out: Path, stages: StageCache, teachers: TeachersResult,
                    students: StudentsResult, models: dict, data_digest: str, log) -> ReportResult:
    runs, missing, total = finished_md(cfg, out, models, data_digest, log)
    done = sum(len(reps) for reps in runs.models.values())
    if not done:
        raise ConfigError(f"no MD replica has finished yet (0 of {total}): nothing to report")
    dest = out / "interim"
    log(f"[interim] {done} of {total} replicas finished: analysis and report in {dest}")
    analysis = analysis_stage(cfg, out, runs, data_digest, log, dest=dest / "analysis")
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    note = (f"**Interim report** ({when}): the md stage is under way, {done} of {total} replicas have finished and "
            "are reported here; every figure below may change as the rest finish"
            + (f". No replica yet: {', '.join(missing)}" if missing else "")
            + ". The pipeline writes the final report (report.md of the run) when the md stage is done.")
    times = {name: stages.done_seconds(name) for name in STAGES[:-1]}
    return write_pipeline_report(out, cfg, teachers, students, runs, analysis, times, log, dest=dest, note=note)
