"""The pipeline's ``labels`` stage: the dataset labelled by the teachers' ensemble and by each
single teacher a student learns from."""
from __future__ import annotations

from pathlib import Path

from openmm_cgkd.training.config import LabelsConfig
from openmm_cgkd.workflow.config import PipelineConfig, student_plan
from openmm_cgkd.workflow.results import LabelsResult, TeachersResult
from openmm_cgkd.workflow.stages.data import dataset_digest

__all__ = ["labels_stage", "label_sources", "label_dataset"]


def label_sources(cfg: PipelineConfig) -> list[str]:
    return sorted({s["labels"] for s in student_plan(cfg).values()})


def label_dataset(cfg: PipelineConfig, out: Path, teachers: TeachersResult, source: str, log) -> tuple[Path, str]:
    """Label the dataset with the ensemble (``source`` = ``ensemble``) or one member
    (``member_KK``); (path of the labelled copy, content digest)."""
    from openmm_cgkd.training.labels import make_labels

    member = None if source == "ensemble" else int(source.split("_")[1])
    if member is not None and len(teachers.members) == 1:
        member = None  # a one-member "ensemble" is that teacher
    path = make_labels(LabelsConfig(dataset=cfg.dataset, teachers=str(teachers.ensemble), member=member,
                                    out=str(out / "labels" / f"{source}.h5")), progress=False)
    log(f"[labels] {source} labels -> {path}")
    return Path(path), dataset_digest(str(path))


def labels_stage(cfg: PipelineConfig, out: Path, teachers: TeachersResult, log) -> LabelsResult:
    labelled, digests = {}, {}
    for source in label_sources(cfg):
        labelled[source], digests[source] = label_dataset(cfg, out, teachers, source, log)
    return LabelsResult(labelled, digests)
