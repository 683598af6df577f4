"""What each pipeline stage returns: small frozen dataclasses, and their JSON markers.

Every stage of :func:`openmm_cgkd.workflow.run.run_pipeline` returns one of these; the marker
``<out>/stages/<stage>.json`` stores its :meth:`~StageResult.to_marker` form under ``outputs``,
and :func:`openmm_cgkd.workflow.cache.stage_outputs` reads it back with :meth:`~StageResult.from_marker`.

=============  =======================  ========================================================
stage          result                   holds
=============  =======================  ========================================================
``aa``         :class:`AAResult`        the mapped dataset, its frame and bead counts
``teachers``   :class:`TeachersResult`  ensemble and member bundles, test metrics, per-member
                                        training runs, validation-block force errors, config
``labels``     :class:`LabelsResult`    labelled dataset per label source, content digests
``students``   :class:`StudentsResult`  per student: variant, label source, bundle, metrics, run
``md``         :class:`MDResult`        per model its :class:`ReplicaRecord` s; time step checks
``analysis``   :class:`AnalysisResult`  per model its :class:`ModelAnalysis`; overlay figures
``report``     :class:`ReportResult`    ``report.md``, ``report.json`` and the two figures
=============  =======================  ========================================================

Paths are absolute :class:`~pathlib.Path` s in memory. In a marker every absolute path is
written relative to the output directory as ``$OUT/<relative path>`` (so a moved or cloned
output directory still resumes), in the same JSON layout the markers have always had:
``to_marker`` of ``from_marker(m)`` is ``m`` again. Metrics and summaries stay plain JSON
mappings (kJ/mol/nm for force errors, TAEs dimensionless or nm).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from openmm_cgkd.analysis.noise import NoiseFloor

__all__ = ["OUT_TOKEN", "StageResult", "AAResult", "TrainingRun", "TeachersResult", "LabelsResult", "StudentResult",
           "StudentsResult", "ReplicaRecord", "MDResult", "ModelAnalysis", "AnalysisResult", "ReportResult",
           "RESULT_TYPES", "to_portable", "from_portable", "teacher_model", "ensemble_model", "student_model",
           "model_kind"]

OUT_TOKEN = "$OUT"  # markers write paths inside (or next to) the output directory as $OUT/...


# The names of the MD models (keys of MDResult.models and AnalysisResult.models, folders md/<name>/
# and analysis/<name>/): made and read here only.
def teacher_model(member: int) -> str:
    """The MD model name of single teacher ``member``: ``teacher-00``."""
    return f"teacher-{int(member):02d}"


def ensemble_model(members: int) -> str:
    """The MD model name of the ensemble of ``members`` teachers: ``ensemble-8``."""
    return f"ensemble-{int(members)}"


def student_model(student: str) -> str:
    """The MD model name of a student (its name in :class:`StudentsResult`): ``student-<name>``."""
    return f"student-{student}"


def model_kind(name: str) -> str | None:
    """``teacher``, ``ensemble`` or ``student``: which kind of model an MD model name is (None for
    a name these functions did not make)."""
    kind, sep, rest = name.partition("-")
    return kind if sep and rest and kind in ("teacher", "ensemble", "student") else None


def to_portable(obj: Any, out: Path) -> Any:
    """``obj`` with every absolute path string written as ``$OUT/<path relative to out>``."""
    if isinstance(obj, dict):
        return {k: to_portable(v, out) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_portable(v, out) for v in obj]
    if isinstance(obj, Path):
        obj = str(obj)
    if isinstance(obj, str) and os.path.isabs(obj):
        return f"{OUT_TOKEN}/" + Path(os.path.relpath(obj, out)).as_posix()
    return obj


def from_portable(obj: Any, out: Path) -> Any:
    """Undo :func:`to_portable` for the output directory ``out``."""
    if isinstance(obj, dict):
        return {k: from_portable(v, out) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_portable(v, out) for v in obj]
    if isinstance(obj, str) and obj.startswith(OUT_TOKEN + "/"):
        return os.path.normpath(out / obj[len(OUT_TOKEN) + 1:])
    return obj


class StageResult:
    """Common conversions. A subclass defines ``to_dict`` (the marker's JSON layout with absolute
    path strings), ``from_dict`` (its inverse) and ``files`` (what must exist for the stage to count
    as done)."""

    def to_dict(self) -> dict:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: Mapping):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def files(self) -> list[Path]:
        return []

    def to_marker(self, out: str | os.PathLike) -> dict:
        """The ``outputs`` of the stage's marker: paths as ``$OUT/...`` relative to ``out``."""
        return to_portable(self.to_dict(), Path(out).resolve())

    @classmethod
    def from_marker(cls, outputs: Mapping, out: str | os.PathLike):
        """The result recorded in a marker's ``outputs`` for the output directory ``out``."""
        return cls.from_dict(from_portable(dict(outputs), Path(out).resolve()))


@dataclass(frozen=True)
class AAResult(StageResult):
    """The ``aa`` stage: the AA run mapped to beads."""

    dataset: Path
    frames: int
    beads: int

    def to_dict(self) -> dict:
        return {"dataset": str(self.dataset), "frames": self.frames, "beads": self.beads}

    @classmethod
    def from_dict(cls, data: Mapping) -> "AAResult":
        return cls(Path(data["dataset"]), data["frames"], data["beads"])

    def files(self) -> list[Path]:
        return [self.dataset]


@dataclass(frozen=True)
class TrainingRun:
    """How a training run ended: epochs trained, early stop, best validation loss, and its
    per-epoch log (``metrics_csv``)."""

    epochs: int | None
    stopped_early: bool | None
    best_val_loss: float | None
    metrics_csv: Path

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, "stopped_early": self.stopped_early, "best_val_loss": self.best_val_loss,
                "metrics_csv": str(self.metrics_csv)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "TrainingRun":
        return cls(data.get("epochs"), data.get("stopped_early"), data.get("best_val_loss"),
                   Path(data["metrics_csv"]))


@dataclass(frozen=True)
class TeachersResult(StageResult):
    """The ``teachers`` stage: the ensemble bundle and its members' bundles (member order), the
    ensemble's test-block metrics, each member's :class:`TrainingRun`, each member's force error
    on the validation block (kJ/mol/nm; empty without one) and the teachers' training config."""

    ensemble: Path
    members: tuple[Path, ...]
    metrics: dict
    runs: tuple[TrainingRun, ...]
    validation_forces: tuple[dict, ...]
    config: dict

    def to_dict(self) -> dict:
        return {"ensemble": str(self.ensemble), "members": [str(p) for p in self.members], "metrics": self.metrics,
                "runs": [r.to_dict() for r in self.runs], "validation_forces": list(self.validation_forces),
                "config": self.config}

    @classmethod
    def from_dict(cls, data: Mapping) -> "TeachersResult":
        return cls(Path(data["ensemble"]), tuple(Path(p) for p in data["members"]), data.get("metrics", {}),
                   tuple(TrainingRun.from_dict(r) for r in data.get("runs", [])),
                   tuple(data.get("validation_forces", [])), data.get("config", {}))

    def files(self) -> list[Path]:
        return [self.ensemble, *self.members]


@dataclass(frozen=True)
class LabelsResult(StageResult):
    """The ``labels`` stage: per label source (``ensemble``, ``member_KK``) the labelled copy of
    the dataset and its content digest (the digests key the students; the copies may be deleted)."""

    datasets: dict[str, Path]
    digests: dict[str, str]

    def to_dict(self) -> dict:
        return {"files": {k: str(v) for k, v in self.datasets.items()}, "digests": dict(self.digests)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "LabelsResult":
        return cls({k: Path(v) for k, v in data["files"].items()}, dict(data["digests"]))


@dataclass(frozen=True)
class StudentResult:
    """One student: its variant, label source (``ensemble`` / ``member_KK``), teacher member
    (single-teacher students), test-block metrics, bundle and :class:`TrainingRun`."""

    variant: str
    labels: str
    member: int | None
    metrics: dict
    bundle: Path
    run: TrainingRun

    def to_dict(self) -> dict:
        return {"variant": self.variant, "labels": self.labels, "member": self.member, "metrics": self.metrics,
                "bundle": str(self.bundle), "run": self.run.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping) -> "StudentResult":
        return cls(data["variant"], data["labels"], data.get("member"), data.get("metrics", {}), Path(data["bundle"]),
                   TrainingRun.from_dict(data["run"]))


@dataclass(frozen=True)
class StudentsResult(StageResult):
    """The ``students`` stage: every student of the plan by name (``ensemble-e-ft-faa``,
    ``single-e-ft-faa-teacher00``, ...)."""

    students: dict[str, StudentResult]

    @property
    def bundles(self) -> dict[str, Path]:
        return {name: s.bundle for name, s in self.students.items()}

    def to_dict(self) -> dict:
        return {name: s.to_dict() for name, s in self.students.items()}

    @classmethod
    def from_dict(cls, data: Mapping) -> "StudentsResult":
        return cls({name: StudentResult.from_dict(s) for name, s in data.items()})

    def files(self) -> list[Path]:
        return list(self.bundles.values())


@dataclass(frozen=True)
class ReplicaRecord:
    """One MD replica of a model: its folder and compact record (``replica.json.gz``), start
    frame, seed, speed (ns/day) and platform, and ``failure`` ({step, reason}) when it blew up."""

    replica: int
    dir: Path
    record: Path
    start_frame: int
    seed: int
    ns_per_day: float | None
    platform: str | None
    failed: bool
    failure: dict | None

    def to_dict(self) -> dict:
        return {"replica": self.replica, "dir": str(self.dir), "record": str(self.record),
                "start_frame": self.start_frame, "seed": self.seed, "ns_per_day": self.ns_per_day,
                "platform": self.platform, "failed": self.failed, "failure": self.failure}

    @classmethod
    def from_dict(cls, data: Mapping) -> "ReplicaRecord":
        return cls(data["replica"], Path(data["dir"]), Path(data["record"]), data["start_frame"], data["seed"],
                   data.get("ns_per_day"), data.get("platform"), data["failed"], data.get("failure"))


@dataclass(frozen=True)
class MDResult(StageResult):
    """The ``md`` stage: per model (report order) its replicas, and the time step checks by model
    (:meth:`openmm_cgkd.md.timestep_check.TimestepCheck.to_dict`)."""

    models: dict[str, tuple[ReplicaRecord, ...]]
    timestep_check: dict[str, dict]

    def to_dict(self) -> dict:
        return {"models": {name: [r.to_dict() for r in reps] for name, reps in self.models.items()},
                "timestep_check": self.timestep_check}

    @classmethod
    def from_dict(cls, data: Mapping) -> "MDResult":
        return cls({name: tuple(ReplicaRecord.from_dict(r) for r in reps) for name, reps in data["models"].items()},
                   data.get("timestep_check", {}))

    def files(self) -> list[Path]:
        return [r.record for reps in self.models.values() for r in reps]


@dataclass(frozen=True)
class ModelAnalysis:
    """One model's structure against the AA reference over its replicas: ``summary`` (per kind,
    ``rdf``/``adf``/``cdf``/...: TAE n, mean, std over the scored replicas), stability, its folder
    (``summary.md`` and figures), replicas and failed ones ({replica, step, reason}), replicas not
    equilibrated within the fixed discard, the discard (frames) and pymbar's t0 per replica (frames)."""

    summary: dict[str, dict]
    stable: bool
    dir: Path
    n_replicas: int
    n_failed: int
    failures: tuple[dict, ...]
    not_equilibrated_within_discard: tuple[str, ...]
    discard_frames: int
    pymbar_t0_frames: tuple[int | None, ...]
    contacts: dict[str, dict] = field(default_factory=dict)  # pair -> CloseContact.to_dict()
    coordination: dict[str, dict] = field(default_factory=dict)  # pair -> ContactCoordination.to_dict()
    drift: dict[str, dict] = field(default_factory=dict)  # quantity -> analysis.drift.model_drift() entry
    ramachandran: dict = field(default_factory=dict)  # analysis.phipsi.ModelPhiPsi.to_dict() (analysis.ramachandran)

    def to_dict(self) -> dict:
        data = {"summary": self.summary, "stable": self.stable, "dir": str(self.dir), "n_replicas": self.n_replicas,
                "n_failed": self.n_failed, "failures": list(self.failures),
                "not_equilibrated_within_discard": list(self.not_equilibrated_within_discard),
                "discard_frames": self.discard_frames, "pymbar_t0_frames": list(self.pymbar_t0_frames)}
        if self.contacts:  # markers written before contacts were measured keep their bytes
            data["contacts"] = self.contacts
        if self.coordination:  # the same for the coordination below the AA contact
            data["coordination"] = self.coordination
        if self.drift:  # and for the drift from t = 0 (records of version 2)
            data["drift"] = self.drift
        if self.ramachandran:  # and for the phi/psi score (a study with analysis.ramachandran)
            data["ramachandran"] = self.ramachandran
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> "ModelAnalysis":
        return cls(data["summary"], data["stable"], Path(data["dir"]), data["n_replicas"], data["n_failed"],
                   tuple(data.get("failures", [])), tuple(data.get("not_equilibrated_within_discard", [])),
                   data["discard_frames"], tuple(data.get("pymbar_t0_frames", [])), dict(data.get("contacts", {})),
                   dict(data.get("coordination", {})), dict(data.get("drift", {})), dict(data.get("ramachandran", {})))


@dataclass(frozen=True)
class AnalysisResult(StageResult):
    """The ``analysis`` stage: per model its :class:`ModelAnalysis`, and the figures of all models
    (``rdf_overlay``, ``cdf_overlay``, ``energy``)."""

    models: dict[str, ModelAnalysis]
    figures: dict[str, Path]
    noise_floor: NoiseFloor | None = None
    reference_check: dict | None = None  # ReferenceCheck.to_dict() of the AA reference
    # analysis.ramachandran: {"spec": RamachandranSpec.to_dict(), "reference": PhiPsiAnalysis.to_dict() without its FES}
    ramachandran: dict | None = None

    def to_dict(self) -> dict:
        data = {"models": {name: a.to_dict() for name, a in self.models.items()},
                "figures": {k: str(v) for k, v in self.figures.items()}}
        if self.noise_floor is not None:  # markers written before the noise floor keep their bytes
            data["noise_floor"] = self.noise_floor.to_dict()
        if self.reference_check is not None:  # and those written before the reference check
            data["reference_check"] = self.reference_check
        if self.ramachandran is not None:  # and those of studies without analysis.ramachandran
            data["ramachandran"] = self.ramachandran
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> "AnalysisResult":
        floor = data.get("noise_floor")  # absent from markers written before it existed
        return cls({name: ModelAnalysis.from_dict(a) for name, a in data["models"].items()},
                   {k: Path(v) for k, v in data.get("figures", {}).items()},
                   None if floor is None else NoiseFloor.from_dict(floor), data.get("reference_check"),
                   data.get("ramachandran"))

    def files(self) -> list[Path]:
        return [a.dir for a in self.models.values()]


@dataclass(frozen=True)
class ReportResult(StageResult):
    """The ``report`` stage: ``report.md``, ``tae_comparison.png``, ``report.json`` and
    ``learning_curves.png``."""

    report: Path
    plot: Path
    report_json: Path
    learning_curves: Path

    def to_dict(self) -> dict:
        return {"report": str(self.report), "plot": str(self.plot), "json": str(self.report_json),
                "learning_curves": str(self.learning_curves)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "ReportResult":
        return cls(Path(data["report"]), Path(data["plot"]), Path(data["json"]), Path(data["learning_curves"]))

    def files(self) -> list[Path]:
        return [self.report]


RESULT_TYPES: dict[str, type[StageResult]] = {
    "aa": AAResult, "teachers": TeachersResult, "labels": LabelsResult, "students": StudentsResult, "md": MDResult,
    "analysis": AnalysisResult, "report": ReportResult}
