"""YAML-driven configuration of the training stages (teachers, labels, students).

Every config is a dataclass read by the package's one config mechanism
(:mod:`openmm_cgkd.config`): :func:`~openmm_cgkd.config.load_config` (or ``Cls.from_yaml``) reads a
YAML file into one and rejects unknown
keys by their dotted path and values of the wrong type, so a typo never silently falls back to a
default. Relative ``dataset``/``out``/``teachers`` paths in a YAML file are resolved against the
file's directory. Example files live in ``configs/training/``.

Units: nm, kJ/mol, kJ/mol/nm. Learning rates are per Adam step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from openmm_cgkd.config import Config, ConfigError, config_from_dict, config_to_dict

__all__ = ["ConfigError", "SplitConfig", "TrainerConfig", "LossWeights", "WallFitConfig", "PriorFitConfig",
           "TeachersConfig", "LabelsConfig", "StudentConfig", "config_from_dict", "config_to_dict"]


@dataclass
class SplitConfig(Config):
    """Train / validation / test split by contiguous blocks of frames, in that order.

    Neighbouring frames of an MD trajectory are correlated, so frames are never shuffled
    across blocks; ``gap_frames`` frames are dropped between blocks to decorrelate them further.
    """

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    gap_frames: int = 0

    def __post_init__(self) -> None:
        fracs = (self.train, self.val, self.test)
        if min(fracs) < 0 or self.train <= 0 or abs(sum(fracs) - 1.0) > 1e-6:
            raise ConfigError(f"split fractions must be >= 0 (train > 0) and sum to 1, got {fracs}")
        if self.gap_frames < 0:
            raise ConfigError("split.gap_frames must be >= 0")


# values Lightning 2 accepts (checked here, before Lightning is imported)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
PRECISIONS = ("64-true", "64", "32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "ddp_find_unused_parameters_true",
              "single_device", "fsdp", "deepspeed")


@dataclass
class TrainerConfig(Config):
    """Optimiser, schedule, stopping, hardware and logging of one Lightning training run."""

    max_epochs: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_factor: float = 0.5  # ReduceLROnPlateau on the validation loss
    lr_patience: int = 5
    lr_min: float = 1e-6
    early_stopping_patience: int = 20  # epochs without a better validation loss
    # "better" for early stopping: lower by more than this (absolute, in validation-loss units; Lightning's
    # min_delta). 0: any improvement resets the patience, so a run at the lr floor can crawl on for tens of
    # epochs of < 0.1 % (the DES study: about a third of its training time)
    early_stopping_min_delta: float = 0.0
    gradient_clip_val: float | None = None
    seed: int = 0
    accelerator: str = "auto"  # "cpu", "gpu", "auto"
    devices: int | str = 1
    strategy: str = "auto"  # "ddp" for several GPUs
    precision: str = "32-true"
    num_workers: int = 0
    num_threads: int | None = None  # torch CPU threads; 1 is fastest for small models on busy machines
    progress_bar: bool = True
    tensorboard: bool = False
    log_every_n_steps: int = 10
    deterministic: bool = True

    def __post_init__(self) -> None:
        for name in ("max_epochs", "batch_size", "log_every_n_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"trainer.{name} must be >= 1")
        if not self.lr > 0 or not 0 < self.lr_factor < 1 or self.lr_min < 0:
            raise ConfigError("trainer needs lr > 0, 0 < lr_factor < 1 and lr_min >= 0")
        if self.early_stopping_patience < 1 or self.lr_patience < 0:
            raise ConfigError("trainer.early_stopping_patience must be >= 1 and lr_patience >= 0")
        if not self.early_stopping_min_delta >= 0:
            raise ConfigError(f"trainer.early_stopping_min_delta must be >= 0, got {self.early_stopping_min_delta}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"trainer.num_threads must be >= 1 (or absent: torch's default), got {self.num_threads}")
        if self.num_workers < 0:
            raise ConfigError(f"trainer.num_workers must be >= 0, got {self.num_workers}")
        if self.gradient_clip_val is not None and not self.gradient_clip_val > 0:
            raise ConfigError(f"trainer.gradient_clip_val must be > 0 (or absent), got {self.gradient_clip_val}")
        if self.accelerator not in ACCELERATORS:
            raise ConfigError(f"trainer.accelerator must be one of {list(ACCELERATORS)}, got {self.accelerator!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"trainer.precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"trainer.strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}")
        devices = self.devices
        ok = (devices == "auto" or (isinstance(devices, int) and not isinstance(devices, bool) and
                                    (devices >= 1 or devices == -1)))
        if isinstance(devices, str) and devices != "auto":
            ok = devices.strip().lstrip("-").isdigit() and int(devices) >= -1 and int(devices) != 0
        if not ok:
            raise ConfigError(f"trainer.devices must be a count >= 1, -1 (all) or 'auto', got {devices!r}")


@dataclass
class LossWeights(Config):
    """L = w_aa Err(F, F_AA) + w_ft Err(F, F_T) + w_e Err(e, e_T) + w_E Err(E/N, E_T/N)."""

    w_aa: float = 1.0
    w_ft: float = 0.0
    w_e: float = 0.0
    w_E: float = 0.0

    def __post_init__(self) -> None:
        ws = self.as_dict()
        if any(v < 0 for v in ws.values()) or not any(v > 0 for v in ws.values()):
            raise ConfigError(f"loss weights must be >= 0 with at least one > 0, got {ws}")

    def as_dict(self) -> dict[str, float]:
        return {"w_aa": float(self.w_aa), "w_ft": float(self.w_ft), "w_e": float(self.w_e), "w_E": float(self.w_E)}

    @property
    def needs_labels(self) -> bool:
        return self.w_ft > 0 or self.w_e > 0 or self.w_E > 0


@dataclass
class WallFitConfig(Config):
    """Repulsive wall per bead-type pair, fitted from the training block (docs/METHOD.md section 3)."""

    enabled: bool = True
    width_nm: float = 0.015  # dr
    fraction: float = 0.05  # p
    rdf_threshold: float = 0.01  # taper t = smallest r where g(r) exceeds this
    bin_nm: float = 0.002
    max_frames: int = 200  # frames used for the RDFs (evenly spaced over the block)
    cutoff_nm: float | None = None  # default max(t) + 10/a


@dataclass
class PriorFitConfig(Config):
    """Bonded priors (harmonic bonds and angles, Fourier dihedrals) fitted by Boltzmann inversion of
    the training block (docs/molecules.md). ``enabled: auto`` fits them when beads are bonded.
    ``temperature_K`` was called ``temperature_k`` before: configs with the old key still read."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"temperature_k": "temperature_K"}

    enabled: bool | str = "auto"  # "auto", true or false
    temperature_K: float | None = None  # default: the temperature the dataset records
    angles: bool = True
    dihedral_terms: int = 3  # Fourier terms n = 1..M of each dihedral; 0: no dihedral prior
    exclusions: int = 2  # the wall leaves out pairs up to this many bonds apart (2: 1-2, 1-3; 3: also 1-4)
    bins: int = 60
    max_frames: int = 2000

    def __post_init__(self) -> None:
        if self.enabled not in (True, False, "auto"):
            raise ConfigError(f"priors.enabled must be auto, true or false, got {self.enabled!r}")
        if self.exclusions not in (0, 1, 2, 3):
            raise ConfigError(f"priors.exclusions must be 0..3 bonds, got {self.exclusions}")
        if not 0 <= self.dihedral_terms <= 6:
            raise ConfigError(f"priors.dihedral_terms must be 0..6, got {self.dihedral_terms}")
        if self.temperature_K is not None and not self.temperature_K > 0:
            raise ConfigError(f"priors.temperature_K must be positive (K), got {self.temperature_K}")


@dataclass
class TeachersConfig(Config):
    """`cgkd train-teachers`: K members differing only in their seed, trained on F_AA."""

    PATH_KEYS: ClassVar[tuple[str, ...]] = ("dataset", "out", "teachers")  # relative to the YAML file

    dataset: str = ""
    out: str = "runs/teachers"
    model: dict = field(default_factory=dict)  # CGPotential architecture (see openmm_cgkd.model.potential)
    members: int = 8
    seeds: list[int] | None = None  # default trainer.seed + k
    parallel: str | int = "auto"  # workers of the local cluster (cgkd train-teachers): "auto" one per GPU, else
    #                               sized to the machine; "none": one; an int: that many
    split: SplitConfig = field(default_factory=SplitConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    wall: WallFitConfig = field(default_factory=WallFitConfig)
    priors: PriorFitConfig = field(default_factory=PriorFitConfig)

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ConfigError("members must be >= 1")
        if self.seeds is not None and (len(self.seeds) != self.members or len(set(self.seeds)) != self.members):
            raise ConfigError(f"seeds must be {self.members} distinct integers, got {self.seeds}")

    def member_seeds(self) -> list[int]:
        return list(self.seeds) if self.seeds is not None else [self.trainer.seed + k for k in range(self.members)]


@dataclass
class LabelsConfig(Config):
    """`cgkd label`: teacher predictions on every frame of a dataset."""

    PATH_KEYS: ClassVar[tuple[str, ...]] = ("dataset", "out", "teachers")  # relative to the YAML file

    dataset: str = ""
    teachers: str = ""  # a teacher or ensemble bundle
    member: int | None = None  # one member of an ensemble bundle ("single teacher" labels)
    out: str | None = None  # a labelled copy of the dataset; default: add labels to the dataset in place
    device: str = "auto"


@dataclass
class StudentConfig(Config):
    """`cgkd train-student`: one network learning teacher labels (and/or F_AA)."""

    PATH_KEYS: ClassVar[tuple[str, ...]] = ("dataset", "out", "teachers")  # relative to the YAML file

    dataset: str = ""  # a labelled dataset (see `cgkd label`)
    out: str = "runs/student"
    variant: str | None = "ensemble-e-ft-faa"  # a preset of openmm_cgkd.training.students, or None
    weights: LossWeights | None = None  # free weights; override the preset's
    model: dict | None = None  # default: the teachers' architecture
    split: SplitConfig = field(default_factory=SplitConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
