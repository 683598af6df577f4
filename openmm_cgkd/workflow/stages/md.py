"""The pipeline's ``md`` stage: replicas of every model (single teachers, the ensemble, the
students), each run, analysed right away and kept as a compact record (``replica.json.gz``);
the time step check before any replica runs; each replica a task of the pipeline's executor
(:mod:`openmm_cgkd.executor`: a Dask cluster, by default ``md.workers`` local worker
processes). A replica that blows up is a result (its step and reason are
recorded), not a crash."""
from __future__ import annotations

import copy
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from openmm_cgkd.analysis.drift import replica_drift_series
from openmm_cgkd.analysis.records import (RECORD_VERSION, curves_to_record, failed_replica, read_record,
                                          replica_to_record, write_record)
from openmm_cgkd.analysis.report import analyze_model, load_reference, load_trajectory
from openmm_cgkd.analysis.stability import check_coordinates
from openmm_cgkd.config import ConfigError
from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.fileio import read_json, write_json
from openmm_cgkd.fingerprint import bundle_checksum, digest
from openmm_cgkd.md.simulation import SimulationError, StaleRunError, read_log, run_simulation
from openmm_cgkd.md.timestep_check import check_timestep
from openmm_cgkd.topology import dataset_topology, write_bead_pdb
from openmm_cgkd.workflow.config import PipelineConfig, analysis_settings
from openmm_cgkd.executor import Executor, Need, task_threads
from openmm_cgkd.workflow.results import (MDResult, ReplicaRecord, StudentsResult, TeachersResult, ensemble_model,
                                          model_kind, student_model, teacher_model)

__all__ = ["md_stage", "finished_md", "models_for_md", "start_frames", "replica_jobs", "last_logged_step"]


def models_for_md(cfg: PipelineConfig, teachers: TeachersResult,
                   students: StudentsResult) -> dict[str, tuple[str, int]]:
    """{model name: (bundle, replicas)} in report order: single teachers, ensemble, students."""
    models = {}
    for k, path in enumerate(teachers.members[: cfg.md.teacher_members]):
        models[teacher_model(k)] = (str(path), cfg.md.n_teacher_replicas)
    if cfg.md.include_ensemble:
        models[ensemble_model(len(teachers.members))] = (str(teachers.ensemble), cfg.md.replicas)
    for name, bundle in students.bundles.items():
        models[student_model(name)] = (str(bundle), cfg.md.replicas)
    return models


def start_frames(train_frames, replicas: int) -> list[int]:
    """``replicas`` distinct start frames evenly spaced over the training block ``train_frames``
    (indices into the dataset), first and last included."""
    block = np.asarray(train_frames, dtype=np.int64)
    if replicas > len(block):
        raise ConfigError(f"{replicas} replicas need as many distinct start frames; the training block has "
                          f"{len(block)}")
    return [int(block[i]) for i in np.linspace(0, len(block) - 1, replicas).round().astype(int)]


def replica_jobs(models: dict[str, tuple[str, int]], train_block) -> list[tuple[str, str, int, int]]:
    """(model, bundle, replica, start frame) of every MD replica, in the order they run: replica 0
    of every model, then replica 1 of every model that has one, ... (a study stopped part-way has
    replicas of every model, not all replicas of the first few)."""
    plans = {name: list(enumerate(start_frames(train_block, n))) for name, (_, n) in models.items()}
    depth = max((len(p) for p in plans.values()), default=0)
    return [(name, models[name][0], *plans[name][r]) for r in range(depth) for name in models
            if r < len(plans[name])]


def md_stage(cfg: PipelineConfig, out: Path, models: dict[str, tuple[str, int]], data_digest: str, tick,
             log, executor: Executor) -> MDResult:
    """Every replica of every model (:func:`replica_jobs`), each a task of ``executor`` (a GPU task
    when ``md.platform`` is CUDA/OpenCL, or unset and the workers have GPUs; ``md.threads``
    threads, default the worker's cores). A replica's result does not depend on the worker that
    ran it (its seed and start frame are its own); a worker lost under a replica costs the steps
    since its last checkpoint (the retry resumes it)."""
    from openmm_cgkd.training.data import split_blocks

    if cfg.md.threads is not None:  # the network runs in torch: its threads too, not only OpenMM's
        import torch

        torch.set_num_threads(int(cfg.md.threads))
    runner = _ReplicaRunner(cfg, out, data_digest, log)
    train_block = split_blocks(runner.ds.n_frames, cfg.split)["train"]
    checks = _timestep_checks(cfg, out, models, runner, train_block, log)
    unsafe = {name: c for name, c in checks.items() if not c.get("safe")}
    if unsafe and cfg.md.timestep_check.stop_if_unsafe:
        raise ConfigError(f"md.timestep_fs = {cfg.md.timestep_fs:g} fs is NOT safe for {', '.join(unsafe)} (the time "
                          f"step check: {'; '.join(c.get('summary', '') for c in unsafe.values())}): no replica was run. "
                          "Lower md.timestep_fs, or set md.timestep_check.stop_if_unsafe: false to run anyway")
    jobs = replica_jobs(models, train_block)
    records: dict[tuple[str, int], dict] = {}
    todo = []
    for job in jobs:  # the finished ones are read here; only the rest become tasks
        name, bundle, r, frame = job
        rec = runner.finished(name, bundle_checksum(bundle), r, frame)
        if rec is not None:
            records[name, r] = rec
        else:
            todo.append(job)
    if todo:
        at_once = f", {min(executor.slots, len(todo))} at a time" if executor.slots else " on the cluster"
        earlier = f" to run ({len(records)} done earlier)" if records else ""
        log(f"[md] {len(todo)} replicas{earlier}{at_once}")
        gpu = cfg.md.platform in ("CUDA", "OpenCL") or (cfg.md.platform is None and executor.has_gpus)
        tasks = [(cfg, out, data_digest, job) for job in todo]
        for (_, _, _, (name, _, r, _)), (rec, lines) in executor.map(
                _md_task, tasks, [f"{j[0]}-r{j[2]:02d}" for j in todo], Need(threads=cfg.md.threads, gpu=gpu),
                what="md"):
            records[name, r] = rec
            for line in lines:
                log(line)
            tick()
    return _md_result(out, models, jobs, records, checks)


def finished_md(cfg: PipelineConfig, out: Path, models: dict[str, tuple[str, int]], data_digest: str,
                 log) -> tuple[MDResult, list[str], int]:
    """The md stage as far as it got (read from its files; nothing runs): the :class:`MDResult` of
    the replicas finished and analysed with the current settings, the models without any, and the
    number of replicas the stage will have."""
    from openmm_cgkd.training.data import split_blocks

    runner = _ReplicaRunner(cfg, out, data_digest, log)
    train_block = split_blocks(runner.ds.n_frames, cfg.split)["train"]
    checks = _timestep_checks(cfg, out, models, runner, train_block, log, run_missing=False)
    jobs = replica_jobs(models, train_block)
    sums = {name: bundle_checksum(bundle) for name, (bundle, _) in models.items()}
    records = {}
    for name, _, r, frame in jobs:
        rec = runner.finished(name, sums[name], r, frame)
        if rec is not None:
            records[name, r] = rec
    runs = _md_result(out, models, jobs, records, checks)
    missing = [name for name, reps in runs.models.items() if not reps]
    runs = MDResult({name: reps for name, reps in runs.models.items() if reps}, checks)
    return runs, missing, len(jobs)


# one _ReplicaRunner (and one force field per bundle) per worker process, for the run it serves
_WORKER: dict = {}


def _md_task(task: tuple[PipelineConfig, Path, str, tuple[str, str, int, int]]) -> tuple[dict, list[str]]:
    """Executor task: replica ``job`` of the run ``(cfg, out, data_digest)`` in this worker; (its
    record, the lines it logged: the client logs them). ``md.threads`` unset: the worker's cores."""
    from openmm_cgkd.serving import CGKDForceField

    import torch

    cfg, out, data_digest, job = task
    if cfg.md.threads is None and task_threads() is not None:
        cfg = copy.copy(cfg)
        cfg.md = replace(cfg.md, threads=task_threads())
    if cfg.md.threads is not None:  # the network's threads too (more than asked for crawl on a busy machine)
        torch.set_num_threads(int(cfg.md.threads))
    run = (repr(cfg), str(out), data_digest)
    if _WORKER.get("run") != run:
        lines: list[str] = []
        _WORKER.clear()
        _WORKER.update(run=run, runner=_ReplicaRunner(cfg, out, data_digest, lines.append), ff={}, lines=lines)
    name, bundle, r, frame = job
    if bundle not in _WORKER["ff"]:
        _WORKER["ff"][bundle] = (CGKDForceField(bundle), bundle_checksum(bundle))
    ff, checksum = _WORKER["ff"][bundle]
    _WORKER["lines"].clear()
    rec = _WORKER["runner"].run(name, bundle, ff, checksum, r, frame)
    return rec, list(_WORKER["lines"])


class _ReplicaRunner:
    """Runs and analyses the replicas of the MD stage (one record per replica)."""

    def __init__(self, cfg: PipelineConfig, out: Path, data_digest: str, log):
        self.cfg, self.out, self.log, self.data_digest = cfg, out, log, data_digest
        self.ds = CGDataset.load(cfg.dataset)
        self.names = [self.ds.type_names[t] for t in self.ds.bead_types]
        self.settings = analysis_settings(cfg)
        self.analysis_key = {"settings": self.settings.to_dict(), "reference": data_digest}
        self.analysis_digest = digest(self.analysis_key)
        self._reference = None
        self._load_reference = lambda: load_reference(cfg.dataset)
        self.reference_file = out / "md" / "reference.json.gz"

    @property
    def reference(self):
        if self._reference is None:
            self._reference = self._load_reference()
        return self._reference

    def md_key(self, checksum: str, frame: int, seed: int) -> dict:
        md = self.cfg.md
        return {"bundle": checksum, "dataset": self.data_digest, "start_frame": frame, "seed": seed,
                "steps": md.n_steps, "timestep_fs": md.timestep_fs, "temperature_K": md.temperature_K,
                "friction_per_ps": md.friction_per_ps, "report_interval": md.interval_steps}

    def _md_record(self, name: str, checksum: str, r: int, frame: int) -> dict | None:
        """The record of replica ``r`` of model ``name`` when its MD ran with the current settings."""

        rec = read_record(self.out / "md" / name / f"replica_{r:02d}" / "replica.json.gz")
        key = self.md_key(checksum, frame, self.cfg.md.seed + r)
        return rec if rec is not None and rec.get("md", {}).get("digest") == digest(key) else None

    def finished(self, name: str, checksum: str, r: int, frame: int) -> dict | None:
        """The record of replica ``r`` of model ``name`` when it finished and was analysed with
        the current settings, else None (nothing runs)."""
        rec = self._md_record(name, checksum, r, frame)
        return rec if rec is not None and rec.get("analysis_key", {}).get("digest") == self.analysis_digest else None

    def run(self, name: str, bundle: str, ff, checksum: str, r: int, frame: int) -> dict:
        """The record of replica ``r`` of model ``name``: reused when its fingerprints match, else
        run (or resumed) and analysed."""
        md = self.cfg.md
        seed = md.seed + r
        rep_dir = self.out / "md" / name / f"replica_{r:02d}"
        record_path = rep_dir / "replica.json.gz"
        key = self.md_key(checksum, frame, seed)
        rec = self._md_record(name, checksum, r, frame)
        if rec is not None:
            if rec.get("analysis_key", {}).get("digest") == self.analysis_digest:
                return rec
            if rec.get("failure") is not None:  # nothing to analyse: only the discard changes
                return self._write(record_path, {**rec, **self._failed_analysis(rep_dir, rec["failure"])})
            if (rep_dir / "trajectory.dcd").is_file():
                self.log(f"[md] {name} replica {r}: analysis settings changed: analysing it again")
                return self._write(record_path, {**rec, **self._analyse(rep_dir, r)})
            self.log(f"[md] {name} replica {r}: analysis settings changed and its trajectory is not here: "
                     "running it again")
        return self._write(record_path, self._simulate(name, ff, checksum, r, frame, seed, rep_dir, key))

    def _write(self, path: Path, rec: dict) -> dict:
        write_record(path, rec)
        return rec

    def _simulate(self, name, ff, checksum, r, frame, seed, rep_dir: Path, key: dict) -> dict:
        import openmm


        md = self.cfg.md
        ds = self.ds
        topology = dataset_topology(ds, frame)  # with the bonds (CONECT) and, when periodic, the box
        box = ds.boxes[frame] if ds.periodic else None

        def replica():
            write_bead_pdb(rep_dir / "start.pdb", topology, ds.positions[frame], box)
            sim = ff.create_simulation(topology, ds.positions[frame], box_vectors=box,
                                       temperature=md.temperature_K, friction_per_ps=md.friction_per_ps,
                                       timestep_fs=md.timestep_fs, platform=md.platform, threads=md.threads,
                                       seed=seed)
            return run_simulation(sim, md.n_steps, rep_dir, report_interval=md.interval_steps, resume=True,
                                  progress=False, description=f"MD {name} #{r}",
                                  inputs={"bundle": checksum, "dataset": self.data_digest, "start_frame": frame})

        rep_dir.mkdir(parents=True, exist_ok=True)
        failure, res = None, None
        t0 = time.time()
        try:
            try:
                res = replica()
            except StaleRunError as exc:  # a replica of other settings (or longer): start it afresh
                self.log(f"[md] {name} replica {r}: made with other settings ({'; '.join(exc.changes[:5])}): "
                         "starting it afresh")
                shutil.rmtree(rep_dir)
                rep_dir.mkdir(parents=True)
                res = replica()
        except StaleRunError:
            raise
        except (SimulationError, openmm.OpenMMException) as exc:  # NaN, explosion, neighbour-list overflow:
            step, reason = _short_reason(exc)  # a result, not a crash
            if step is None:
                step = last_logged_step(rep_dir / "log.csv")
            failure = {"step": step, "reason": reason, "message": str(exc), "error": type(exc).__name__}
            self.log(f"[md] {name} replica {r}: FAILED at step {step}: {reason}")
        rec = {"model": name, "replica": r, "start_frame": frame, "seed": seed, "steps": md.n_steps,
               "timestep_fs": md.timestep_fs, "md": {"digest": digest(key), "key": key},
               "ns_per_day": None if res is None else res.ns_per_day,
               "platform": None if res is None else res.platform,
               "wall_seconds": round(time.time() - t0, 2), "failure": failure}
        if failure is None:
            self.log(f"[md] {name} replica {r}: {res.ns_per_day:.3g} ns/day on {res.platform}")
            rec.update(self._analyse(rep_dir, r))
        else:
            rec.update(self._failed_analysis(rep_dir, failure))
        return rec

    def _energy_series(self, rep_dir: Path):
        try:
            cols = read_log(rep_dir / "log.csv")
        except (OSError, ValueError, KeyError):
            return None
        return np.asarray(cols["time_ps"]), np.asarray(cols["potential_kj_mol"])

    def _failed_analysis(self, rep_dir: Path, failure: dict) -> dict:
        series = self._energy_series(rep_dir)
        n = 0 if series is None else len(series[0])
        rep = failed_replica(rep_dir.name, f"MD stopped at step {failure['step']}: {failure['reason']}", n,
                             min(self.settings.discard_frames, n), series)
        return {"analysis_key": {"digest": self.analysis_digest, "key": self.analysis_key},
                "analysis": replica_to_record(rep), "version": RECORD_VERSION}

    def _analyse(self, rep_dir: Path, r: int) -> dict:
        """Analyse one finished replica against the reference; its record fields."""

        s = self.settings
        traj = load_trajectory(rep_dir / "trajectory.dcd", rep_dir / "start.pdb")  # analyze_model applies the stride
        used = traj[::s.stride]
        coords = check_coordinates(used, s.max_extent_boxes)
        if coords.first_bad_frame is not None or used.n_frames <= s.discard_frames:
            why = (f"broken coordinates from frame {coords.first_bad_frame} (NaN or exploded)"
                   if coords.first_bad_frame is not None else
                   f"no frames left after the {s.discard_frames}-frame discard ({used.n_frames} loaded)")
            rep = failed_replica(rep_dir.name, why, used.n_frames, min(s.discard_frames, used.n_frames),
                                 self._energy_series(rep_dir))
        else:
            report = analyze_model([traj], self.reference, energies=[rep_dir / "log.csv"], settings=s,
                                   name=rep_dir.parent.name)
            rep = report.replicas[0]
            rep.name = rep_dir.name
            # the drift from the start compares g(r) with the reference's: none without a periodic box
            drift = None if report.skipped else self._drift(traj[::s.stride], report.reference["rdf"],
                                                            rep.energy_series)
            old = read_record(self.reference_file)
            if old is None or old.get("digest") != self.analysis_digest:
                ref = {"digest": self.analysis_digest, "key": self.analysis_key,
                       "curves": curves_to_record(report.reference)}
                if report.molecular:  # molecules: the reference's bond/angle/dihedral (and intra RDF) curves
                    ref["molecular"] = curves_to_record({k: m["reference"] for k, m in report.molecular.items()})
                write_record(self.reference_file, ref)
        fields = {"analysis_key": {"digest": self.analysis_digest, "key": self.analysis_key},
                  "analysis": replica_to_record(rep), "version": RECORD_VERSION}
        if not rep.failed and drift is not None:
            fields["drift_from_start"] = drift.to_dict()
        if not rep.failed and report.molecular:  # molecules: this replica's bonded distributions and TAEs
            fields["molecular"] = {"curves": curves_to_record({k: m["mean"] for k, m in report.molecular.items()}),
                                   "tae": {k: {key: st.mean for key, st in m["tae"].items()}
                                           for k, m in report.molecular.items()}}
        return fields

    @staticmethod
    def _drift(traj, reference_rdfs, energy_series):
        """The replica's series from frame 0 (:func:`~openmm_cgkd.analysis.drift.replica_drift_series`),
        the potential energy where the log has one value per frame."""
        times = np.asarray(traj.time, dtype=np.float64)
        energy = None
        if energy_series is not None and len(energy_series[1]) == traj.n_frames:
            times, energy = energy_series
        return replica_drift_series(traj, reference_rdfs, energy, times)


def _timestep_checks(cfg: PipelineConfig, out: Path, models: dict, runner: _ReplicaRunner, train_block, log,
                     run_missing: bool = True) -> dict:
    """:func:`~openmm_cgkd.md.timestep_check.check_timestep` of the models asked for, each kept in
    ``md/timestep_check/<model>.json`` under its fingerprint (``run_missing=False``: the kept ones only)."""

    tc, md = cfg.md.timestep_check, cfg.md
    if not tc.enabled:
        return {}
    names = tc.models
    if names is None:
        students = [n for n in models if model_kind(n) == "student"]
        ensembles = [n for n in models if model_kind(n) == "ensemble"]
        names = (students or ensembles or list(models))[:1]
    unknown = [n for n in names if n not in models]
    if unknown:
        raise ConfigError(f"md.timestep_check.models: {unknown} are not MD models of this run ({list(models)})")
    frame = start_frames(train_block, 1)[0]
    results = {}
    for name in names:
        key = {"bundle": bundle_checksum(models[name][0]), "dataset": runner.data_digest, "start_frame": frame,
               "timestep_fs": md.timestep_fs, "temperature_K": md.temperature_K,
               "friction_per_ps": md.friction_per_ps, "seed": md.seed, "check": asdict(tc)}
        path = out / "md" / "timestep_check" / f"{name}.json"
        old = read_json(path)
        if old and old.get("digest") == digest(key):
            results[name] = old["result"]
            continue
        if not run_missing:
            continue
        ds = runner.ds
        res = check_timestep(models[name][0], dataset_topology(ds, frame), ds.positions[frame],
                             ds.boxes[frame] if ds.periodic else None, timestep_fs=md.timestep_fs, temperature_K=md.temperature_K,
                             friction_per_ps=md.friction_per_ps, nvt_ps=tc.nvt_ps, nve_ps=tc.nve_ps,
                             sample_every_steps=tc.sample_every_steps, platform=md.platform, threads=md.threads,
                             seed=md.seed, max_drift_kT_per_ns=tc.max_drift_kT_per_ns,
                             max_temperature_error=tc.max_temperature_error)
        results[name] = res.to_dict()
        write_json(path, {"digest": digest(key), "key": key, "result": results[name], "series": res.series})
        log(f"[md] time step check, {name}: {res.summary()}")
    return results


def _md_result(out: Path, models: dict, jobs: list, records: dict[tuple[str, int], dict], checks: dict) -> MDResult:
    """The :class:`MDResult` of the replicas in ``records`` ({(model, replica): record}), in report
    order."""
    runs: dict[str, list[ReplicaRecord]] = {name: [] for name in models}
    for name, _, r, frame in sorted(jobs, key=lambda j: (list(models).index(j[0]), j[2])):
        rec = records.get((name, r))
        if rec is None:
            continue
        rep_dir = out / "md" / name / f"replica_{r:02d}"
        runs[name].append(ReplicaRecord(
            replica=r, dir=rep_dir, record=rep_dir / "replica.json.gz", start_frame=frame, seed=rec["seed"],
            ns_per_day=rec["ns_per_day"], platform=rec["platform"], failed=rec["failure"] is not None,
            failure=None if rec["failure"] is None else {k: rec["failure"][k] for k in ("step", "reason")}))
    return MDResult({name: tuple(reps) for name, reps in runs.items()}, checks)


def _short_reason(exc: Exception) -> tuple[int | None, str]:
    """(step, short reason) of a failed MD run."""
    diag = getattr(exc, "diagnosis", None)
    if isinstance(diag, dict):
        step = diag.get("failed_at_step") or diag.get("last_sane_step")
        cause = str(diag.get("likely_cause", "")).split(":")[0].strip()
        return (None if step is None else int(step)), cause or str(exc).split(". ")[0]
    return None, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def last_logged_step(log_path: Path) -> int | None:
    try:
        steps = read_log(log_path)["step"]
    except (OSError, ValueError, KeyError):
        return None
    return int(steps[-1]) if steps else None
