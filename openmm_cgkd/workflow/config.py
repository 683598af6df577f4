"""The pipeline's configuration: :class:`PipelineConfig` and its sections, read from YAML by
:func:`load_pipeline_config`, and what follows from the configuration alone
(:func:`student_plan`, :func:`analysis_settings`, :func:`trainer_settings`).

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
      workers: 4                     # the local cluster's size (default: sized to the machine)
    analysis: {reference_stride: 1}  # AnalysisSettings fields
    statistics: {alpha: 0.05, equivalence_margin: 0.15, power: 0.8}  # decision rules, declared before the runs
    cluster: {kind: slurm, queue: gpu, cores: 8, memory: 32GiB, gpus: 1, walltime: "08:00:00",
              adaptive_min: 0, adaptive_max: 16}   # where the tasks run (docs/cluster.md; default: local)

Units: nm, ps, fs (time step), K, kJ/mol.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from openmm_cgkd.analysis.report import AnalysisSettings, load_reference
from openmm_cgkd.analysis.statistics import StatisticsConfig
from openmm_cgkd.config import Config, ConfigError, config_from_dict, read_yaml_mapping
from openmm_cgkd.training.config import SplitConfig
from openmm_cgkd.training.variants import VARIANTS
from openmm_cgkd.executor import ClusterConfig

__all__ = ["PipelineConfig", "AAConfig", "StudentsConfig", "MDConfig", "TimestepCheckConfig", "load_pipeline_config",
           "student_plan", "analysis_settings", "trainer_settings"]


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


MAX_UNCHECKED_TIMESTEP_FS = 4.0  # larger CG steps only with md.timestep_check (the DES student: safe at 4 fs)
MD_PLATFORMS = ("auto", "CUDA", "CPU", "Reference", "OpenCL", "HIP")


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
    workers: int | None = None  # the local cluster's worker processes (default: sized to the machine; hardware)
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
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"md.workers must be >= 1, got {self.workers}")
        if self.replicas < 1 or (self.teacher_replicas is not None and self.teacher_replicas < 1):
            raise ConfigError("md.replicas and md.teacher_replicas must be >= 1")
        if not math.isfinite(self.timestep_fs) or (self.temperature_K is not None and not math.isfinite(self.temperature_K)):
            raise ConfigError("md.timestep_fs and md.temperature_K must be finite")
        if not 0 <= self.friction_per_ps < math.inf:
            raise ConfigError(f"md.friction_per_ps must be >= 0 and finite, got {self.friction_per_ps}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"md.threads must be >= 1 (or absent), got {self.threads}")
        if self.platform is not None and self.platform not in MD_PLATFORMS:
            raise ConfigError(f"md.platform must be one of {list(MD_PLATFORMS)} (or absent: auto), got {self.platform!r}")
        for key in ("length_ps", "report_interval_ps"):  # a length that is not whole steps would be rounded
            value = getattr(self, key)
            if value is not None:
                steps = value * 1000.0 / self.timestep_fs
                if not (math.isfinite(steps) and abs(steps - round(steps)) <= 1e-6 * max(1.0, steps)):
                    raise ConfigError(f"md.{key} = {value} ps is not a whole number of {self.timestep_fs:g} fs steps")
        if self.n_steps < 1 or self.interval_steps < 1:
            raise ConfigError("md.steps (length_ps) and md.report_interval (report_interval_ps) must give >= 1 step")
        if self.interval_steps > self.n_steps:
            raise ConfigError(f"md: the report interval ({self.interval_steps} steps) is longer than the run "
                              f"({self.n_steps} steps): every replica would hold only its start frame and every "
                              "model would score alike")
        if self.timestep_fs > MAX_UNCHECKED_TIMESTEP_FS and not self.timestep_check.enabled:
            raise ConfigError(f"md.timestep_fs = {self.timestep_fs:g} fs is beyond the {MAX_UNCHECKED_TIMESTEP_FS:g} fs "
                              "run without a check: enable md.timestep_check (nvt_ps, nve_ps > 0), which stops the md "
                              "stage when the step is not safe, or use a smaller step")
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
    statistics: StatisticsConfig = field(default_factory=StatisticsConfig)  # the report's decision rules
    cluster: ClusterConfig = field(default_factory=ClusterConfig)  # where the tasks run (hardware)

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
        if "parallel" in self.teachers:
            raise ConfigError("teachers.parallel is for `cgkd train-teachers`: in the pipeline the members run on its "
                              "cluster (md.workers, or `cluster:`)")
        unknown = set(self.teachers) - {"members", "seeds", "wall"}
        if unknown:
            raise ConfigError(f"teachers: unknown keys {sorted(unknown)} (members, seeds, wall)")
        if self.md.workers is not None and self.cluster.kind != "local":
            raise ConfigError(f"md.workers sizes the local cluster; with cluster.kind {self.cluster.kind} the "
                              "cluster decides how many replicas run at once")
        members = self.teachers.get("members", 8)
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise ConfigError(f"teachers.members must be an integer >= 1, got {members!r}")
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


def trainer_settings(cfg: PipelineConfig, extra: dict | None = None) -> dict:
    return {**cfg.trainer, **(extra or {})}


def student_plan(cfg: PipelineConfig) -> dict[str, dict]:
    """{student name: {variant, labels (source key), member}}: every ``ensemble-*`` variant once
    (labels ``ensemble``), every ``single-*`` variant per member of
    ``students.single_teacher_members`` (name ``<variant>-teacherKK``, labels ``member_KK``)."""

    plan = {}
    for variant in cfg.students.variants:
        if VARIANTS[variant].source == "ensemble":
            plan[variant] = {"variant": variant, "labels": "ensemble", "member": None}
        else:
            for k in cfg.students.single_teacher_members:
                plan[f"{variant}-teacher{k:02d}"] = {"variant": variant, "labels": f"member_{k:02d}", "member": k}
    return plan


def analysis_settings(cfg: PipelineConfig, with_dataset: bool = True):
    """The :class:`~openmm_cgkd.analysis.report.AnalysisSettings` of the analysis: ``analysis:``
    plus ``discard_frames`` from ``md.discard_ps`` (frames of the analysed trajectory, after
    ``analysis.stride``: the frames whose time is below discard_ps); ADF cutoffs, when
    ``analysis.adf_cutoffs`` is not set, the first shells of the dataset's g(r) (never the DES's).
    ``with_dataset=False``: without those ADF cutoffs (a config whose dataset the aa stage makes)."""

    data = dict(cfg.analysis)
    if cfg.md.discard_ps is not None:
        frame_ps = cfg.md.interval_steps * cfg.md.timestep_fs / 1000.0 * int(data.get("stride", 1))
        data["discard_frames"] = int(math.ceil(cfg.md.discard_ps / frame_ps - 1e-9))
    settings = config_from_dict(AnalysisSettings, data, "analysis")
    if settings.adf_cutoffs is None and with_dataset:
        settings = settings.with_adf_cutoffs(load_reference(cfg.dataset, stride=settings.reference_stride,
                                                            max_frames=settings.reference_max_frames))
    return settings
