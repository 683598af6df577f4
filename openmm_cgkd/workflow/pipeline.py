"""The whole method in one command: AA data -> mapping -> teachers -> labels -> students -> MD
replicas -> structural analysis -> a report comparing teachers, the ensemble and the students.

``cgkd pipeline config.yaml`` runs :func:`run_pipeline`. Every stage writes its outputs under
``<out>/<stage>/`` and a marker ``<out>/stages/<stage>.json`` holding its fingerprint
(:mod:`openmm_cgkd.fingerprint`): the settings it depends on and the digest of the CONTENT of
its inputs (the dataset's arrays, the teachers' and students' bundles, the labels, the replica
records), never their paths. A rerun skips a stage whose fingerprint matches (and whose
outputs exist) and reruns one whose fingerprint changed, saying what changed; a rerun stage
writes new outputs, so every stage downstream of it is redone too. Hardware and logging
settings (trainer accelerator/devices/threads/progress bar, teachers.parallel, md.platform,
md.threads) are not part of a fingerprint. Inside a stage, every unit of work is keyed the
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

Configuration (YAML; relative paths are resolved against the file's directory)::

    out: runs/des-quick              # everything goes here
    dataset: cg.h5                   # mapped CG dataset; made by the `aa` stage if absent
    dataset_start_frame: 0           # frame selection, in this order: the first frame used, or
    dataset_window_ps: [100, 1500]   #   a time window [start, stop) in ps from the first frame;
    dataset_max_frames: 500          #   then at most this many frames,
    dataset_stride: 2                #   every stride-th of them (neighbouring frames are correlated)
    aa:                              # optional: make the dataset (skipped when `dataset` exists)
      system: system.yaml            #   system definition (openmm_cgkd.data.systemdef)
      molecules: 48                  #   resize at the same density (optional)
      mapping: mapping.yaml
      protocol: {equilibration_ps: 20, production_ps: 20, frame_interval_ps: 0.1}
    model: {architecture: graph-network, embedding_dim: 32, ...}   # teachers and students
    split: {train: 0.8, val: 0.1, test: 0.1, gap_frames: 5}       # contiguous blocks + gaps
    trainer: {max_epochs: 1000, early_stopping_patience: 20, batch_size: 4}
    teachers: {members: 8}
    students:
      variants: [ensemble-e-ft-faa, single-e-ft-faa]   # single-*: one student per member below
      single_teacher_members: [0, 1, 2, 3]
      trainer: {}                                      # overrides of the shared trainer settings
    md:
      replicas: 4                    # ensemble and students
      teacher_members: 4             # single teachers that get MD ...
      teacher_replicas: 2            # ... with this many replicas each
      length_ps: 300                 # or steps:
      timestep_fs: 2.0
      report_interval_ps: 1.0        # or report_interval: (steps)
      discard_ps: 100                # the same equilibration discard for every replica
      timestep_check: {nvt_ps: 20, nve_ps: 20}   # check_timestep on the first student
    analysis: {reference_stride: 1}  # AnalysisSettings fields

Units: nm, ps, fs (time step), K, kJ/mol.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from openmm_cgkd.config import Config, ConfigError, config_from_dict
from openmm_cgkd.workflow.results import (RESULT_TYPES, AAResult, AnalysisResult, LabelsResult, MDResult,
                                          ModelAnalysis, ReplicaRecord, ReportResult, StageResult, StudentResult,
                                          StudentsResult, TeachersResult, TrainingRun, ensemble_model, model_kind,
                                          student_model, teacher_model)
from openmm_cgkd.workflow.results import from_portable as _local
from openmm_cgkd.workflow.results import to_portable as _portable
from openmm_cgkd.training.config import SplitConfig

__all__ = ["PipelineConfig", "MDConfig", "AAConfig", "StudentsConfig", "TimestepCheckConfig", "load_pipeline_config",
           "run_pipeline", "interim_report", "stage_outputs", "select_frames", "start_frames", "student_plan", "STAGES"]

STAGES = ("aa", "teachers", "labels", "students", "md", "analysis", "report")


@dataclass
class AAConfig(Config):
    """How to make the AA reference dataset when it does not exist yet."""

    system: str = ""
    mapping: str = ""
    molecules: int | None = None
    protocol: dict = field(default_factory=dict)  # openmm_cgkd.data.aamd.Protocol fields
    platform: str | None = None
    threads: int | None = None
    seed: int = 1


@dataclass
class StudentsConfig(Config):
    """Students to train: every ``ensemble-*`` variant once, every ``single-*`` variant once per
    teacher in ``single_teacher_members`` (labels of that member; the paper's error bars of
    single-teacher students are the spread over teachers)."""

    variants: list[str] = field(default_factory=lambda: ["ensemble-e-ft-faa"])
    single_teacher_members: list[int] = field(default_factory=lambda: [0])
    trainer: dict = field(default_factory=dict)  # overrides of the shared trainer settings

    def __post_init__(self) -> None:
        from openmm_cgkd.training.variants import VARIANTS

        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ConfigError(f"students.variants: unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
        if len(set(self.variants)) != len(self.variants):
            raise ConfigError(f"students.variants lists a variant twice: {self.variants}")
        m = self.single_teacher_members
        if any(k < 0 for k in m) or len(set(m)) != len(m):
            raise ConfigError(f"students.single_teacher_members must be distinct member indices >= 0, got {m}")


@dataclass
class TimestepCheckConfig(Config):
    """:func:`openmm_cgkd.md.timestep_check.check_timestep` at ``md.timestep_fs`` (off when nve_ps is 0)."""

    nvt_ps: float = 0.0
    nve_ps: float = 0.0
    models: list[str] | None = None  # MD model names; default: the first student (else the ensemble)
    sample_every_steps: int = 10
    max_drift_kT_per_ns: float = 0.05  # per bead
    max_temperature_error: float = 0.02  # relative
    stop_if_unsafe: bool = True  # a step found NOT safe stops the md stage before any replica runs

    def __post_init__(self) -> None:
        if self.nvt_ps < 0 or self.nve_ps < 0 or self.sample_every_steps < 1:
            raise ConfigError("md.timestep_check: nvt_ps and nve_ps must be >= 0, sample_every_steps >= 1")

    @property
    def enabled(self) -> bool:
        return self.nve_ps > 0


@dataclass
class MDConfig(Config):
    """MD replicas of every model (docs/METHOD.md section 4: replicas from training frames).

    Replica r of every model starts from the same training frame (evenly spaced over the training
    block, distinct) with velocity/thermostat seed ``seed + r``. Length: ``steps`` or
    ``length_ps``; report interval: ``report_interval`` (steps) or ``report_interval_ps``;
    ``discard_ps``: the equilibration discard applied to every replica of every model."""

    replicas: int = 2  # the ensemble and every student
    teacher_replicas: int | None = None  # each single teacher (default: replicas)
    steps: int | None = None  # default 2000 when length_ps is not given either
    length_ps: float | None = None
    timestep_fs: float = 2.0
    temperature_K: float | None = None  # None: the training data's (recorded in the dataset and bundles)
    friction_per_ps: float = 1.0
    report_interval: int | None = None  # default 50 steps when report_interval_ps is not given either
    report_interval_ps: float | None = None
    discard_ps: float | None = None  # default: analysis.discard_frames (0)
    platform: str | None = None  # None: CUDA when present, else CPU
    threads: int | None = None
    workers: int = 1  # replicas run at once, in as many processes (hardware: not in any fingerprint)
    teacher_members: int = 2  # how many single teachers get MD (each costs as much as a student)
    include_ensemble: bool = True
    seed: int = 1000
    timestep_check: TimestepCheckConfig = field(default_factory=TimestepCheckConfig)

    def __post_init__(self) -> None:
        if isinstance(self.timestep_check, dict):
            self.timestep_check = config_from_dict(TimestepCheckConfig, self.timestep_check, "md.timestep_check")
        if self.steps is not None and self.length_ps is not None:
            raise ConfigError("md: give steps or length_ps, not both")
        if self.report_interval is not None and self.report_interval_ps is not None:
            raise ConfigError("md: give report_interval or report_interval_ps, not both")
        if not self.timestep_fs > 0 or (self.temperature_K is not None and not self.temperature_K > 0):
            raise ConfigError("md.timestep_fs and md.temperature_K must be positive")
        if self.workers < 1:
            raise ConfigError(f"md.workers must be >= 1, got {self.workers}")
        if self.replicas < 1 or (self.teacher_replicas is not None and self.teacher_replicas < 1):
            raise ConfigError("md.replicas and md.teacher_replicas must be >= 1")
        if self.n_steps < 1 or self.interval_steps < 1:
            raise ConfigError("md.steps (length_ps) and md.report_interval (report_interval_ps) must give >= 1 step")
        tc = self.timestep_check
        if tc.enabled and round(tc.nve_ps * 1000.0 / self.timestep_fs) < 3 * tc.sample_every_steps:
            raise ConfigError(f"md.timestep_check: nve_ps = {tc.nve_ps} gives fewer than 3 samples every "
                              f"{tc.sample_every_steps} steps of {self.timestep_fs:g} fs")
        if self.discard_ps is not None and not 0 <= self.discard_ps < self.n_steps * self.timestep_fs / 1000.0:
            raise ConfigError(f"md.discard_ps = {self.discard_ps} must be >= 0 and shorter than the run "
                              f"({self.n_steps * self.timestep_fs / 1000.0:g} ps)")

    @property
    def n_steps(self) -> int:
        if self.length_ps is not None:
            return int(round(self.length_ps * 1000.0 / self.timestep_fs))
        return 2000 if self.steps is None else int(self.steps)

    @property
    def interval_steps(self) -> int:
        if self.report_interval_ps is not None:
            return int(round(self.report_interval_ps * 1000.0 / self.timestep_fs))
        return 50 if self.report_interval is None else int(self.report_interval)

    @property
    def n_teacher_replicas(self) -> int:
        return self.replicas if self.teacher_replicas is None else int(self.teacher_replicas)


@dataclass
class PipelineConfig(Config):
    out: str = "runs/pipeline"
    dataset: str = ""
    dataset_start_frame: int | None = None  # frames used: from this one ...
    dataset_window_ps: list[float] | None = None  # ... or [start, stop) ps measured from the first frame's time
    dataset_max_frames: int | None = None  # then at most this many ...
    dataset_stride: int = 1  # ... and every stride-th of them (neighbouring frames are correlated)
    aa: AAConfig | None = None
    model: dict = field(default_factory=dict)
    split: SplitConfig = field(default_factory=SplitConfig)
    trainer: dict = field(default_factory=dict)
    teachers: dict = field(default_factory=lambda: {"members": 8})
    students: StudentsConfig = field(default_factory=StudentsConfig)
    md: MDConfig = field(default_factory=MDConfig)
    analysis: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.dataset:
            raise ConfigError("the pipeline needs `dataset:` (an existing CG dataset, or where the `aa` stage writes it)")
        if self.dataset_stride < 1 or (self.dataset_max_frames is not None and self.dataset_max_frames < 2):
            raise ConfigError("dataset_stride must be >= 1 and dataset_max_frames >= 2")
        if self.dataset_start_frame is not None and self.dataset_start_frame < 0:
            raise ConfigError(f"dataset_start_frame must be >= 0, got {self.dataset_start_frame}")
        if self.dataset_window_ps is not None:
            w = self.dataset_window_ps
            if len(w) != 2 or not 0 <= w[0] < w[1]:
                raise ConfigError(f"dataset_window_ps must be [start, stop] with 0 <= start < stop (ps), got {w}")
            if self.dataset_start_frame is not None:
                raise ConfigError("give dataset_start_frame or dataset_window_ps, not both")
        unknown = set(self.teachers) - {"members", "seeds", "parallel", "wall"}
        if unknown:
            raise ConfigError(f"teachers: unknown keys {sorted(unknown)} (members, seeds, parallel, wall)")
        members = int(self.teachers.get("members", 8))
        if any(v.startswith("single-") for v in self.students.variants):
            too_big = [k for k in self.students.single_teacher_members if k >= members]
            if too_big or not self.students.single_teacher_members:
                raise ConfigError(f"students.single_teacher_members {self.students.single_teacher_members} must name "
                                  f"members of the {members} teachers (0 .. {members - 1})")
        if "discard_frames" in self.analysis and self.md.discard_ps is not None:
            raise ConfigError("give md.discard_ps or analysis.discard_frames, not both")

    @property
    def selects_frames(self) -> bool:
        return (self.dataset_stride > 1 or self.dataset_max_frames is not None or self.dataset_start_frame is not None
                or self.dataset_window_ps is not None)


def _resolve(base: Path, p: str | None) -> str | None:
    if not p:
        return p
    q = Path(p)
    return str(q if q.is_absolute() else (base / q))


def load_pipeline_config(path: str | Path, overrides: dict | None = None) -> PipelineConfig:
    """Read a pipeline YAML; unknown keys are errors naming their dotted path."""
    from openmm_cgkd.config import read_yaml_mapping

    path = Path(path)
    data = read_yaml_mapping(path, "pipeline config")
    for k, v in (overrides or {}).items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    base = path.resolve().parent
    data["out"] = _resolve(base, data.get("out", "runs/pipeline"))
    data["dataset"] = _resolve(base, data.get("dataset", ""))
    if data.get("aa"):
        for key in ("system", "mapping"):
            data["aa"][key] = _resolve(base, data["aa"].get(key, ""))
    return config_from_dict(PipelineConfig, data)


# ------------------------------------------------------------------------------ markers
def stage_outputs(out: str | Path, name: str) -> StageResult | None:
    """The typed result (:mod:`openmm_cgkd.workflow.results`) recorded in
    ``<out>/stages/<name>.json``, paths made absolute for ``out``; None when the stage has not
    finished."""
    if name not in RESULT_TYPES:
        raise ConfigError(f"unknown stage {name!r}; stages: {list(STAGES)}")
    out = Path(out).resolve()
    p = out / "stages" / f"{name}.json"
    if not p.is_file():
        return None
    return RESULT_TYPES[name].from_marker(json.loads(p.read_text())["outputs"], out)


class _Stages:
    """Markers ``<out>/stages/<name>.json``: {fingerprint digest, key (the settings and input
    checksums it was computed from), outputs, files, seconds (wall time summed over the attempts
    that made it), attempts, finished}. The time of an unfinished attempt waits in
    ``<name>.clock.json`` for the attempt that finishes the stage."""

    def __init__(self, out: Path, log):
        self.out = out
        self.dir = out / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = log

    def done(self, name: str, key: dict) -> dict | None:
        from openmm_cgkd.fingerprint import describe_changes, digest

        p = self.dir / f"{name}.json"
        if not p.is_file():
            return None
        marker = _local(json.loads(p.read_text()), self.out)
        if marker.get("fingerprint") != digest(key):
            changes = describe_changes(marker.get("key"), key)
            self.log(f"[{name}] changed since the last run ({'; '.join(changes[:5])}"
                     f"{'; ...' if len(changes) > 5 else ''}): running it again")
            return None
        missing = [o for o in marker.get("files", []) if not Path(o).exists()]
        if missing:
            self.log(f"[{name}] outputs missing ({missing[0]} ...): running it again")
            return None
        return marker

    def _clock_file(self, name: str) -> Path:
        return self.dir / f"{name}.clock.json"

    def clock(self, name: str) -> dict:
        try:
            return json.loads(self._clock_file(name).read_text())
        except (OSError, ValueError):
            return {"seconds": 0.0, "attempts": 0}

    @contextmanager
    def timed(self, name: str, key: dict):
        """Time one attempt at stage ``name`` with fingerprint ``key``; ``tick()`` (yielded) saves the
        time so far, so that a killed attempt still counts up to its last tick. Earlier attempts
        count only when they had the same fingerprint."""
        from openmm_cgkd.fingerprint import digest

        fp = digest(key)
        before = self.clock(name)
        if before.get("fingerprint") != fp:
            before = {"seconds": 0.0, "attempts": 0}
        t0 = time.time()

        def save() -> None:
            rec = {"seconds": round(before["seconds"] + time.time() - t0, 2), "attempts": before["attempts"] + 1,
                   "fingerprint": fp}
            tmp = self._clock_file(name).with_suffix(".part")
            tmp.write_text(json.dumps(rec))
            tmp.replace(self._clock_file(name))

        try:
            yield save
        finally:
            save()

    def done_seconds(self, name: str) -> dict | None:
        """{seconds, attempts} of a finished stage's marker (None when it has not finished)."""
        marker = _read_json(self.dir / f"{name}.json")
        if marker is None:
            return None
        return {"seconds": marker.get("seconds"), "attempts": marker.get("attempts")}

    def mark(self, name: str, key: dict, result: StageResult) -> dict:
        from openmm_cgkd.fingerprint import digest

        clock = self.clock(name)
        marker = {"stage": name, "fingerprint": digest(key), "key": key, "outputs": result.to_dict(),
                  "files": [str(f) for f in result.files()], "seconds": clock["seconds"],
                  "attempts": clock["attempts"],
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp = self.dir / f"{name}.json.part"
        tmp.write_text(json.dumps(_portable(marker, self.out), indent=1, default=str))
        tmp.replace(self.dir / f"{name}.json")
        self._clock_file(name).unlink(missing_ok=True)
        return marker


def _write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)
    return path


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ------------------------------------------------------------------------------ frames
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


def _frames_subset(cfg: PipelineConfig, out: Path, log) -> str:
    """Write the selected frames (:func:`select_frames`) to ``<out>/data/cg.h5`` (rewritten only
    when the source's content or the selection changed, or the copy is not the one written)."""
    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.fingerprint import file_sha256

    src = Path(cfg.dataset)
    target = out / "data" / "cg.h5"
    key = {"source_sha256": file_sha256(src), "start_frame": cfg.dataset_start_frame,
           "window_ps": cfg.dataset_window_ps, "max_frames": cfg.dataset_max_frames, "stride": cfg.dataset_stride}
    stamp = target.with_suffix(".json")
    if target.is_file() and stamp.is_file():
        old = _read_json(stamp) or {}
        if {k: old.get(k) for k in key} == key and old.get("target_sha256") == file_sha256(target):
            return str(target)
    ds = CGDataset.load(src)
    idx, desc = select_frames(ds.times, cfg.dataset_start_frame, cfg.dataset_window_ps, cfg.dataset_max_frames,
                              cfg.dataset_stride)
    sub = ds.select_frames(idx)
    sub.provenance = {**ds.provenance, "selected_from": str(src), "selection": desc}
    sub.save(target)
    _write_json(stamp, {**key, "target_sha256": file_sha256(target), "selection": desc})
    log(f"[data] {desc} of {src.name} -> {target}")
    return str(target)


def _dataset_digest(path: str) -> str:
    """Content digest of a CG dataset file (its arrays, not its bytes or provenance)."""
    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.fingerprint import cg_dataset_digest

    return cg_dataset_digest(CGDataset.load(path))


def _trainer(cfg: PipelineConfig, extra: dict | None = None) -> dict:
    return {**cfg.trainer, **(extra or {})}


# ------------------------------------------------------------------------------ teachers
def _run_info(run_dir: Path, member: int = 0) -> TrainingRun:
    """Epochs, early stop and best validation loss of a finished training run, and its log (of a
    stacked run: those of ``member``, with its own log ``logs/member_KK.csv``)."""
    from openmm_cgkd.training.stacked import member_epochs

    res = _read_json(run_dir / "result.json") or {}
    if isinstance(res.get("members"), list):
        members = res["members"]
        info = members[member] if member < len(members) and isinstance(members[member], dict) else {}
        return TrainingRun(member_epochs(res, member), info.get("stopped_early"), info.get("best_val_loss"),
                           run_dir / "logs" / f"member_{member:02d}.csv")
    return TrainingRun(res.get("epochs"), res.get("stopped_early"), res.get("best_val_loss"),
                       run_dir / "logs" / "metrics.csv")


def _member_info(teachers_out: Path, k: int) -> TrainingRun:
    """:func:`_run_info` of teacher member ``k``: its own run, or its part of a stacked run
    (``stacked/``: per-member logs and results)."""
    from openmm_cgkd.training.teachers import member_dir

    run = member_dir(teachers_out, k)
    if (run / "result.json").is_file() or not (teachers_out / "stacked").is_dir():
        return _run_info(run)
    return _run_info(teachers_out / "stacked", k)


def _validation_forces(bundle: str, dataset, frames: np.ndarray) -> dict:
    """Force error (kJ/mol/nm; network + wall vs mapped AA forces) of ``bundle`` on ``frames``."""
    from openmm_cgkd.bundle import load_bundle
    from openmm_cgkd.training.labels import predict_labels
    from openmm_cgkd.training.metrics import regression_metrics

    labels = predict_labels(load_bundle(bundle), dataset.select_frames(frames), device="cpu")
    return regression_metrics(labels.forces, dataset.forces[frames])


def _stage_teachers(cfg: PipelineConfig, out: Path, log) -> TeachersResult:
    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.training.config import TeachersConfig, config_to_dict
    from openmm_cgkd.training.teachers import train_teachers

    tcfg = config_from_dict(TeachersConfig, {
        "dataset": cfg.dataset, "out": str(out / "teachers"), "model": cfg.model,
        "split": asdict(cfg.split), "trainer": _trainer(cfg), **cfg.teachers}, "teachers")
    log(f"[teachers] training {tcfg.members} members -> {tcfg.out}")
    res = train_teachers(tcfg)
    setup = _read_json(Path(tcfg.out) / "setup.json") or {}
    runs = [_member_info(Path(tcfg.out), k) for k in range(tcfg.members)]
    validation = []
    if setup.get("blocks", {}).get("val"):
        ds = CGDataset.load(cfg.dataset)
        val = np.asarray(setup["blocks"]["val"], dtype=np.int64)
        validation = [_validation_forces(str(p), ds, val) for p in res.member_bundles]
        log("[teachers] validation-block force RMSE (kJ/mol/nm): "
            + ", ".join(f"{v['rmse']:.1f}" for v in validation))
    return TeachersResult(ensemble=Path(res.ensemble_bundle), members=tuple(Path(p) for p in res.member_bundles),
                          metrics=res.metrics.get("ensemble", {}), runs=tuple(runs),
                          validation_forces=tuple(validation), config=config_to_dict(tcfg))


# ------------------------------------------------------------------------------ labels, students
def student_plan(cfg: PipelineConfig) -> dict[str, dict]:
    """{student name: {variant, labels (source key), member}}: every ``ensemble-*`` variant once
    (labels ``ensemble``), every ``single-*`` variant per member of
    ``students.single_teacher_members`` (name ``<variant>-teacherKK``, labels ``member_KK``)."""
    from openmm_cgkd.training.variants import VARIANTS

    plan = {}
    for variant in cfg.students.variants:
        if VARIANTS[variant].source == "ensemble":
            plan[variant] = {"variant": variant, "labels": "ensemble", "member": None}
        else:
            for k in cfg.students.single_teacher_members:
                plan[f"{variant}-teacher{k:02d}"] = {"variant": variant, "labels": f"member_{k:02d}", "member": k}
    return plan


def _label_sources(cfg: PipelineConfig) -> list[str]:
    return sorted({s["labels"] for s in student_plan(cfg).values()})


def _make_labels(cfg: PipelineConfig, out: Path, teachers: TeachersResult, source: str, log) -> tuple[Path, str]:
    """Label the dataset with the ensemble (``source`` = ``ensemble``) or one member
    (``member_KK``); (path of the labelled copy, content digest)."""
    from openmm_cgkd.training.config import LabelsConfig
    from openmm_cgkd.training.labels import make_labels

    member = None if source == "ensemble" else int(source.split("_")[1])
    if member is not None and len(teachers.members) == 1:
        member = None  # a one-member "ensemble" is that teacher
    path = make_labels(LabelsConfig(dataset=cfg.dataset, teachers=str(teachers.ensemble), member=member,
                                    out=str(out / "labels" / f"{source}.h5")), progress=False)
    log(f"[labels] {source} labels -> {path}")
    return Path(path), _dataset_digest(str(path))


def _stage_labels(cfg: PipelineConfig, out: Path, teachers: TeachersResult, log) -> LabelsResult:
    labelled, digests = {}, {}
    for source in _label_sources(cfg):
        labelled[source], digests[source] = _make_labels(cfg, out, teachers, source, log)
    return LabelsResult(labelled, digests)


def _stage_students(cfg: PipelineConfig, out: Path, teachers: TeachersResult, labels: LabelsResult, tick,
                    log) -> StudentsResult:
    """Train every student of :func:`student_plan` that is not done yet. A student is done when
    ``students/<name>/pipeline.json`` holds the fingerprint asked for (variant, labels' content,
    architecture, split, trainer) and its bundle has the recorded checksum; its labels are made
    again only when it has to be trained and they are gone. With a stacked architecture
    (hipnn-ts) the students still to train train together, as the members of ONE stacked run in
    ``students/stacked/`` (:func:`~openmm_cgkd.training.students.train_students_stacked`)."""
    from openmm_cgkd.fingerprint import bundle_checksum, describe_changes, digest
    from openmm_cgkd.training.config import StudentConfig
    from openmm_cgkd.training.stacked import is_stacked_architecture
    from openmm_cgkd.training.students import train_student, train_students_stacked
    from openmm_cgkd.training.trainer import HARDWARE_KEYS

    trainer = _trainer(cfg, cfg.students.trainer)
    results, todo = {}, []
    for name, spec in student_plan(cfg).items():
        sdir = out / "students" / name
        key = {"variant": spec["variant"], "labels": labels.digests[spec["labels"]],
               "model": cfg.model, "split": asdict(cfg.split),
               "trainer": {k: v for k, v in trainer.items() if k not in HARDWARE_KEYS}}
        unit = _read_json(sdir / "pipeline.json")
        bundle = sdir / "bundle"
        if unit and unit.get("fingerprint") == digest(key) and bundle.is_dir() \
                and unit.get("bundle_checksum") == bundle_checksum(bundle):
            log(f"[students] {name}: done earlier")
            results[name] = _student_result(unit["outputs"], bundle, _run_info(sdir / "run"))
            continue
        if unit:
            log(f"[students] {name}: changed ({'; '.join(describe_changes(unit.get('key'), key)[:4])}): training it")
        todo.append((name, spec, sdir, key))

    def config(name, spec, sdir, key) -> StudentConfig:
        path = labels.datasets[spec["labels"]]
        if not path.is_file():
            path, again = _make_labels(cfg, out, teachers, spec["labels"], log)
            if again != labels.digests[spec["labels"]]:
                log(f"[students] {name}: the labels made again differ from the recorded ones (non-deterministic "
                    "inference?); training on the new ones")
                key["labels"] = again
        return config_from_dict(StudentConfig, {
            "dataset": str(path), "out": str(sdir), "variant": spec["variant"], "model": cfg.model or None,
            "split": asdict(cfg.split), "trainer": trainer}, f"students.{name}")

    def record(name, spec, sdir, key, res) -> None:
        outputs = {"variant": spec["variant"], "labels": spec["labels"], "member": spec["member"],
                   "metrics": res.metrics}
        _write_json(sdir / "pipeline.json", {"fingerprint": digest(key), "key": key,
                                            "bundle_checksum": bundle_checksum(res.bundle),
                                            "outputs": _portable(outputs, sdir)})
        results[name] = _student_result(outputs, res.bundle, _run_info(sdir / "run"))

    if len(todo) > 1 and is_stacked_architecture(_student_architecture(cfg, teachers)):
        scfgs = [config(*t) for t in todo]
        log(f"[students] {', '.join(t[0] for t in todo)}: one stacked run of {len(todo)} -> {out / 'students' / 'stacked'}")
        for t, res in zip(todo, train_students_stacked(scfgs, out / "students" / "stacked", log=log)):
            record(*t, res)
        tick()
    else:
        for t in todo:
            scfg = config(*t)
            log(f"[students] {t[0]} (labels {t[1]['labels']}) -> {scfg.out}")
            record(*t, train_student(scfg))
            tick()
    return StudentsResult({name: results[name] for name in student_plan(cfg)})


def _student_architecture(cfg: PipelineConfig, teachers: TeachersResult) -> str:
    """The students' architecture name: ``model`` (``architecture``, or that of its ``base``), else
    the teachers'."""
    from openmm_cgkd.bundle import read_manifest
    from openmm_cgkd.model.potential import load_model_config

    if cfg.model:
        if cfg.model.get("architecture"):
            return str(cfg.model["architecture"])
        if cfg.model.get("base"):
            return load_model_config(cfg.model["base"]).architecture
    return str(read_manifest(teachers.ensemble).architecture.get("architecture"))


def _student_result(outputs: dict, bundle, run: TrainingRun) -> StudentResult:
    """A student from the ``outputs`` of its ``pipeline.json`` (variant, labels, member, metrics)."""
    return StudentResult(outputs["variant"], outputs["labels"], outputs["member"], outputs["metrics"], Path(bundle),
                         run)


# ------------------------------------------------------------------------------ MD
def _models_for_md(cfg: PipelineConfig, teachers: TeachersResult,
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


def analysis_settings(cfg: PipelineConfig):
    """The :class:`~openmm_cgkd.analysis.report.AnalysisSettings` of the analysis: ``analysis:``
    plus ``discard_frames`` from ``md.discard_ps`` (frames of the analysed trajectory, after
    ``analysis.stride``: the frames whose time is below discard_ps); ADF cutoffs, when
    ``analysis.adf_cutoffs`` is not set, the first shells of the dataset's g(r) (never the DES's)."""
    from openmm_cgkd.analysis.report import AnalysisSettings, load_reference

    data = dict(cfg.analysis)
    if cfg.md.discard_ps is not None:
        frame_ps = cfg.md.interval_steps * cfg.md.timestep_fs / 1000.0 * int(data.get("stride", 1))
        data["discard_frames"] = int(math.ceil(cfg.md.discard_ps / frame_ps - 1e-9))
    settings = config_from_dict(AnalysisSettings, data, "analysis")
    if settings.adf_cutoffs is None:
        settings = settings.with_adf_cutoffs(load_reference(cfg.dataset, stride=settings.reference_stride,
                                                            max_frames=settings.reference_max_frames))
    return settings


def _short_reason(exc: Exception) -> tuple[int | None, str]:
    """(step, short reason) of a failed MD run."""
    diag = getattr(exc, "diagnosis", None)
    if isinstance(diag, dict):
        step = diag.get("failed_at_step") or diag.get("last_sane_step")
        cause = str(diag.get("likely_cause", "")).split(":")[0].strip()
        return (None if step is None else int(step)), cause or str(exc).split(". ")[0]
    return None, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _last_logged_step(log_path: Path) -> int | None:
    from openmm_cgkd.md.simulation import read_log

    try:
        steps = read_log(log_path)["step"]
    except (OSError, ValueError, KeyError):
        return None
    return int(steps[-1]) if steps else None


class _ReplicaRunner:
    """Runs and analyses the replicas of the MD stage (one record per replica)."""

    def __init__(self, cfg: PipelineConfig, out: Path, data_digest: str, log):
        from openmm_cgkd.analysis.report import load_reference
        from openmm_cgkd.data.dataset import CGDataset
        from openmm_cgkd.fingerprint import digest

        self.cfg, self.out, self.log, self.data_digest = cfg, out, log, data_digest
        self.ds = CGDataset.load(cfg.dataset)
        self.names = [self.ds.type_names[t] for t in self.ds.bead_types]
        self._reference = None
        self._load_reference = lambda: load_reference(cfg.dataset)
        self.settings = analysis_settings(cfg)
        self.analysis_key = {"settings": self.settings.to_dict(), "reference": data_digest}
        self.analysis_digest = digest(self.analysis_key)
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
        from openmm_cgkd.analysis.records import read_record
        from openmm_cgkd.fingerprint import digest

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
        from openmm_cgkd.analysis.records import write_record

        write_record(path, rec)
        return rec

    def _simulate(self, name, ff, checksum, r, frame, seed, rep_dir: Path, key: dict) -> dict:
        import openmm

        from openmm_cgkd.fingerprint import digest
        from openmm_cgkd.md.simulation import SimulationError, StaleRunError, run_simulation
        from openmm_cgkd.topology import dataset_topology, write_bead_pdb

        md = self.cfg.md
        ds = self.ds
        topology = dataset_topology(ds, ds.boxes[frame])

        def replica():
            write_bead_pdb(rep_dir / "start.pdb", topology, ds.positions[frame], ds.boxes[frame])
            sim = ff.create_simulation(topology, ds.positions[frame], box_vectors=ds.boxes[frame],
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
                step = _last_logged_step(rep_dir / "log.csv")
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
        from openmm_cgkd.md.simulation import read_log

        try:
            cols = read_log(rep_dir / "log.csv")
        except (OSError, ValueError, KeyError):
            return None
        return np.asarray(cols["time_ps"]), np.asarray(cols["potential_kj_mol"])

    def _failed_analysis(self, rep_dir: Path, failure: dict) -> dict:
        from openmm_cgkd.analysis.records import failed_replica, replica_to_record

        series = self._energy_series(rep_dir)
        n = 0 if series is None else len(series[0])
        rep = failed_replica(rep_dir.name, f"MD stopped at step {failure['step']}: {failure['reason']}", n,
                             min(self.settings.discard_frames, n), series)
        return {"analysis_key": {"digest": self.analysis_digest, "key": self.analysis_key},
                "analysis": replica_to_record(rep)}

    def _analyse(self, rep_dir: Path, r: int) -> dict:
        """Analyse one finished replica against the reference; its record fields."""
        from openmm_cgkd.analysis.records import (curves_to_record, failed_replica, read_record, replica_to_record,
                                                  write_record)
        from openmm_cgkd.analysis.report import analyze_model, load_trajectory
        from openmm_cgkd.analysis.stability import check_coordinates

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
            old = read_record(self.reference_file)
            if old is None or old.get("digest") != self.analysis_digest:
                write_record(self.reference_file, {"digest": self.analysis_digest, "key": self.analysis_key,
                                                   "curves": curves_to_record(report.reference)})
        return {"analysis_key": {"digest": self.analysis_digest, "key": self.analysis_key},
                "analysis": replica_to_record(rep)}


def _timestep_checks(cfg: PipelineConfig, out: Path, models: dict, runner: _ReplicaRunner, train_block, log,
                     run_missing: bool = True) -> dict:
    """:func:`~openmm_cgkd.md.timestep_check.check_timestep` of the models asked for, each kept in
    ``md/timestep_check/<model>.json`` under its fingerprint (``run_missing=False``: the kept ones only)."""
    from openmm_cgkd.fingerprint import bundle_checksum, digest
    from openmm_cgkd.md.timestep_check import check_timestep
    from openmm_cgkd.topology import dataset_topology

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
        old = _read_json(path)
        if old and old.get("digest") == digest(key):
            results[name] = old["result"]
            continue
        if not run_missing:
            continue
        ds = runner.ds
        res = check_timestep(models[name][0], dataset_topology(ds, ds.boxes[frame]), ds.positions[frame],
                             ds.boxes[frame], timestep_fs=md.timestep_fs, temperature_K=md.temperature_K,
                             friction_per_ps=md.friction_per_ps, nvt_ps=tc.nvt_ps, nve_ps=tc.nve_ps,
                             sample_every_steps=tc.sample_every_steps, platform=md.platform, threads=md.threads,
                             seed=md.seed, max_drift_kT_per_ns=tc.max_drift_kT_per_ns,
                             max_temperature_error=tc.max_temperature_error)
        results[name] = res.to_dict()
        _write_json(path, {"digest": digest(key), "key": key, "result": results[name], "series": res.series})
        log(f"[md] time step check, {name}: {res.summary()}")
    return results


def replica_jobs(models: dict[str, tuple[str, int]], train_block) -> list[tuple[str, str, int, int]]:
    """(model, bundle, replica, start frame) of every MD replica, in the order they run: replica 0
    of every model, then replica 1 of every model that has one, ... (a study stopped part-way has
    replicas of every model, not all replicas of the first few)."""
    plans = {name: list(enumerate(start_frames(train_block, n))) for name, (_, n) in models.items()}
    depth = max((len(p) for p in plans.values()), default=0)
    return [(name, models[name][0], *plans[name][r]) for r in range(depth) for name in models
            if r < len(plans[name])]


# one _ReplicaRunner (and one force field per bundle) per worker process of a parallel MD stage
_WORKER: dict = {}


def _md_worker_init(cfg: PipelineConfig, out: Path, data_digest: str) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it ends the workers with SIGTERM
    if cfg.md.threads is not None:
        import torch

        torch.set_num_threads(int(cfg.md.threads))
    lines: list[str] = []  # handed to the parent with the replica's record: it logs them
    _WORKER.clear()
    _WORKER.update(runner=_ReplicaRunner(cfg, out, data_digest, lines.append), ff={}, lines=lines)


def _md_worker_run(job: tuple[str, str, int, int]) -> tuple[tuple[str, str, int, int], dict, list[str]]:
    """Replica ``job`` in this process: (job, its record, the lines it logged)."""
    from openmm_cgkd.fingerprint import bundle_checksum
    from openmm_cgkd.serving import CGKDForceField

    name, bundle, r, frame = job
    if bundle not in _WORKER["ff"]:
        _WORKER["ff"][bundle] = (CGKDForceField(bundle), bundle_checksum(bundle))
    ff, checksum = _WORKER["ff"][bundle]
    lines = _WORKER.get("lines")
    if lines is not None:
        lines.clear()
    rec = _WORKER["runner"].run(name, bundle, ff, checksum, r, frame)
    return job, rec, list(lines or [])


def _stage_md(cfg: PipelineConfig, out: Path, models: dict[str, tuple[str, int]], data_digest: str, tick,
              log) -> MDResult:
    """Every replica of every model (:func:`replica_jobs`); with ``md.workers`` > 1, that many at
    once in worker processes of ``md.threads`` threads each. A replica's result does not depend on
    the process that ran it (its seed and start frame are its own)."""
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
    if cfg.md.workers > 1 and len(jobs) > 1:
        log(f"[md] {len(jobs)} replicas, {cfg.md.workers} at a time")
        for (name, _, r, _), rec, lines in worker_map(cfg.md.workers, _md_worker_init, (cfg, out, data_digest),
                                                      _md_worker_run, jobs):
            records[name, r] = rec
            for line in lines:
                log(line)
            tick()
    else:
        _WORKER.clear()
        _WORKER.update(runner=runner, ff={})  # logs as it goes
        for job in jobs:
            records[job[0], job[2]] = _md_worker_run(job)[1]
            tick()
    return _md_result(out, models, jobs, records, checks)


def worker_map(workers: int, initializer, initargs: tuple, fn, jobs: list):
    """``fn(job)`` for every job in ``workers`` spawned processes (each set up once by
    ``initializer(*initargs)``), yielding results as they finish. When the jobs are done the
    workers exit on their own (terminating them at that point leaves their named semaphores to
    the resource tracker, which warns of leaks at shutdown); a stop (SIGTERM, Ctrl-C) or an error
    terminates them, and the jobs under way resume from their last checkpoint next time."""
    import multiprocessing

    pool = multiprocessing.get_context("spawn").Pool(min(workers, len(jobs)), initializer, initargs)
    try:
        yield from pool.imap_unordered(fn, jobs)
        pool.close()
        pool.join()
    finally:
        pool.terminate()
        pool.join()


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


def _finished_md(cfg: PipelineConfig, out: Path, models: dict[str, tuple[str, int]], data_digest: str,
                 log) -> tuple[MDResult, list[str], int]:
    """The md stage as far as it got (read from its files; nothing runs): the :class:`MDResult` of
    the replicas finished and analysed with the current settings, the models without any, and the
    number of replicas the stage will have."""
    from openmm_cgkd.fingerprint import bundle_checksum
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


# ------------------------------------------------------------------------------ analysis
def _model_plots(report, adir: Path) -> list[Path]:
    """The figures the study report needs of one model (RDF and CDF overlays over the AA
    reference, time-resolved CDFs, potential energy per replica), linked from its summary.md."""
    from openmm_cgkd.analysis import plots as P
    from openmm_cgkd.analysis.replicas import replica_mean
    from openmm_cgkd.analysis.report import summary_markdown

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


def _stage_analysis(cfg: PipelineConfig, out: Path, runs: MDResult, data_digest: str, log,
                    dest: Path | None = None) -> AnalysisResult:
    """Each model's report put together from its replica records (no trajectory read), written in
    ``dest`` (default ``<out>/analysis``); ``data_digest``: the dataset's (``_dataset_digest``)."""
    from openmm_cgkd.analysis.records import curves_from_record, read_record, replica_from_record, report_from_replicas
    from openmm_cgkd.analysis.report import write_report
    from openmm_cgkd.errors import CGKDError
    from openmm_cgkd.fingerprint import digest
    from openmm_cgkd.workflow.report import energy_panels, model_overlays

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


def _noise_floor(cfg: PipelineConfig, path: Path, settings, data_digest: str, reports: dict, log):
    """The reference's noise floor (:func:`~openmm_cgkd.analysis.noise.noise_floor`) for blocks as
    long as a replica's scored part; cached in ``path`` by its inputs. None when no replica was
    scored or the reference is too short."""
    from openmm_cgkd.analysis.distributions import AnalysisError
    from openmm_cgkd.analysis.noise import NoiseFloor, noise_floor
    from openmm_cgkd.fingerprint import digest

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


# ------------------------------------------------------------------------------ driver
class _Done(Exception):
    """Raised by the stage runner at the first stage after the last one asked for."""


def run_pipeline(cfg: PipelineConfig, only: list[str] | None = None, log=print) -> dict[str, StageResult]:
    """Run (or resume) every stage; returns the typed result of each stage that ran or was done
    earlier, by stage name (:mod:`openmm_cgkd.workflow.results`). ``only``: run these stages
    (those before them must be done; those after them are left alone)."""
    return _pipeline(cfg, only, log, None)


def interim_report(cfg: PipelineConfig, log=print) -> ReportResult | None:
    """While the md stage is under way (in this or another process): the analysis and report of
    the replicas finished so far, written in ``<out>/interim/`` (``report.md`` says it is interim
    and which replicas are still missing). Nothing is trained or simulated and no stage marker
    changes. Needs the teachers, labels and students stages done (:class:`ConfigError` otherwise);
    returns None, with a log line, when the md stage is done (the report stage writes the report)."""
    interim: dict = {}
    _pipeline(cfg, None, log, interim)
    return interim.get("report")


def _pipeline(cfg: PipelineConfig, only: list[str] | None, log, interim: dict | None) -> dict[str, StageResult]:
    import signal
    import threading

    import yaml

    from openmm_cgkd.provenance import make_portable
    from openmm_cgkd.training.config import config_to_dict

    out = Path(cfg.out).resolve()
    if interim is None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "pipeline.yaml").write_text(yaml.safe_dump(make_portable(config_to_dict(cfg), out), sort_keys=False))
    elif not (out / "stages").is_dir():
        raise ConfigError(f"{out} holds no pipeline run yet: nothing to report")
    stages = _Stages(out, log)
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
            raise RuntimeError(f"stage {name!r} has not run yet but was not asked for (only={sorted(wanted)})")
        with stages.timed(name, key) as tick:
            result = fn(tick)
        stages.mark(name, key, result)
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
        _run_stages(cfg, out, stage, stages, log, interim)
    except _Done:
        pass
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    return results


def _run_stages(cfg: PipelineConfig, out: Path, stage, stages: _Stages, log, interim: dict | None = None) -> None:
    """The stages in order. Keys: settings that change results (hardware and logging left out)
    + content digests of the inputs; a stage that reruns writes new outputs, whose digests key
    the stages after it. ``interim``: instead of the md stage and those after it, the interim
    report (:func:`interim_report`), its result put in ``interim["report"]``."""
    from openmm_cgkd.fingerprint import bundle_checksum, digest, file_sha256
    from openmm_cgkd.training.trainer import HARDWARE_KEYS

    def results_only(trainer: dict) -> dict:
        return {k: v for k, v in trainer.items() if k not in HARDWARE_KEYS}

    common = {"model": cfg.model, "split": asdict(cfg.split), "trainer": results_only(cfg.trainer)}
    if not Path(cfg.dataset).is_file():
        aa_inputs = {k: file_sha256(getattr(cfg.aa, k)) for k in ("system", "mapping")
                     if cfg.aa and getattr(cfg.aa, k) and Path(getattr(cfg.aa, k)).is_file()}
        aa_settings = {k: v for k, v in asdict(cfg.aa).items() if k not in ("platform", "threads")} if cfg.aa else None
        stage("aa", {"aa": aa_settings, "inputs": aa_inputs}, lambda tick: _stage_aa(cfg, log))
    if cfg.selects_frames:
        cfg.dataset = _frames_subset(cfg, out, log)
    data_digest = _dataset_digest(cfg.dataset)  # a dataset of other content retrains everything downstream
    teachers = stage("teachers", {**common, "dataset": data_digest,
                                  "teachers": {k: v for k, v in cfg.teachers.items() if k != "parallel"}},
                     lambda tick: _stage_teachers(cfg, out, log))
    # the labelled datasets are not among the labels stage's files: made again when needed
    labels = stage("labels", {"teachers": bundle_checksum(teachers.ensemble), "dataset": data_digest,
                              "sources": _label_sources(cfg)},
                   lambda tick: _stage_labels(cfg, out, teachers, log))
    students = stage("students", {**common, "students": {"plan": student_plan(cfg),
                                                         "trainer": results_only(cfg.students.trainer)},
                                  "labels": labels.digests},
                     lambda tick: _stage_students(cfg, out, teachers, labels, tick, log))
    models = _models_for_md(cfg, teachers, students)
    md_settings = {k: v for k, v in asdict(cfg.md).items() if k not in ("platform", "threads", "workers")}
    md_settings["timestep_check"] = {k: v for k, v in md_settings["timestep_check"].items()
                                     if k != "stop_if_unsafe"}  # whether to go on, not what results
    md_settings.update(n_steps=cfg.md.n_steps, interval_steps=cfg.md.interval_steps)
    settings = analysis_settings(cfg)
    md_key = {"md": md_settings, "models": {n: [bundle_checksum(p), k] for n, (p, k) in models.items()},
              "dataset": data_digest, "split": asdict(cfg.split), "analysis": settings.to_dict()}
    if interim is not None:
        if stages.done("md", md_key) is not None:
            log(f"[interim] the md stage is done: the report stage writes {out / 'report.md'} (run the pipeline)")
            raise _Done
        interim["report"] = _interim_report(cfg, out, stages, teachers, students, models, data_digest, log)
        raise _Done
    runs = stage("md", md_key, lambda tick: _stage_md(cfg, out, models, data_digest, tick, log))
    records = {name: [file_sha256(r.record) for r in reps] for name, reps in runs.models.items()}
    analysis = stage("analysis", {"analysis": settings.to_dict(), "dataset": data_digest, "records": records},
                     lambda tick: _stage_analysis(cfg, out, runs, data_digest, log))
    times = {name: stages.done_seconds(name) for name in STAGES[:-1]}

    def report(tick):
        from openmm_cgkd.workflow.report import write_pipeline_report

        return write_pipeline_report(out, cfg, teachers, students, runs, analysis, times, log)

    stage("report", {"analysis": digest(analysis.to_marker(out)), "md": digest(runs.to_marker(out)),
                     "training": digest({"teachers": teachers.to_marker(out), "students": students.to_marker(out)}),
                     "seconds": times}, report)


def _interim_report(cfg: PipelineConfig, out: Path, stages: _Stages, teachers: TeachersResult,
                    students: StudentsResult, models: dict, data_digest: str, log) -> ReportResult:
    from datetime import datetime, timezone

    from openmm_cgkd.workflow.report import write_pipeline_report

    runs, missing, total = _finished_md(cfg, out, models, data_digest, log)
    done = sum(len(reps) for reps in runs.models.values())
    if not done:
        raise ConfigError(f"no MD replica has finished yet (0 of {total}): nothing to report")
    dest = out / "interim"
    log(f"[interim] {done} of {total} replicas finished: analysis and report in {dest}")
    analysis = _stage_analysis(cfg, out, runs, data_digest, log, dest=dest / "analysis")
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    note = (f"**Interim report** ({when}): the md stage is under way, {done} of {total} replicas have finished and "
            "are reported here; every figure below may change as the rest finish"
            + (f". No replica yet: {', '.join(missing)}" if missing else "")
            + ". The pipeline writes the final report (report.md of the run) when the md stage is done.")
    times = {name: stages.done_seconds(name) for name in STAGES[:-1]}
    return write_pipeline_report(out, cfg, teachers, students, runs, analysis, times, log, dest=dest, note=note)


def _stage_aa(cfg: PipelineConfig, log) -> AAResult:
    from openmm_cgkd.data.aamd import Protocol, run_aa, select_platform
    from openmm_cgkd.data.build import build_box
    from openmm_cgkd.data.external import load_run
    from openmm_cgkd.data.mapping import MappingSpec, map_trajectory
    from openmm_cgkd.data.systemdef import SystemDefinition

    aa = cfg.aa
    if aa is None:
        raise ConfigError(f"dataset {cfg.dataset} does not exist and the config has no `aa:` section to make it")
    sysdef = SystemDefinition.from_yaml(aa.system)
    if aa.molecules:
        sysdef = sysdef.resized(n_molecules=aa.molecules)
    protocol = config_from_dict(Protocol, {"seed": aa.seed, **aa.protocol}, "aa.protocol")
    run_dir = Path(cfg.out) / "aa"
    structure = run_dir / "built.pdb"
    if not (run_dir / "run.json").is_file() and not structure.is_file():
        plat, _ = select_platform(aa.platform, aa.threads)
        build_box(sysdef, structure, seed=aa.seed, platform=plat, log=log)
    summary = run_aa(run_dir, sysdef, protocol, structure, platform=aa.platform, threads=aa.threads, log=log)
    if not summary.get("finished"):
        raise RuntimeError(f"AA run in {run_dir} did not finish; rerun the pipeline to resume it")
    ds = map_trajectory(load_run(run_dir), MappingSpec.from_yaml(aa.mapping))
    ds.save(cfg.dataset)
    return AAResult(Path(cfg.dataset), ds.n_frames, ds.n_beads)
