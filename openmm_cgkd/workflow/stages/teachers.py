"""The pipeline's ``teachers`` stage: the ensemble of teachers trained on the dataset, with each
member's training run and validation-block force error."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from openmm_cgkd.bundle import load_bundle
from openmm_cgkd.config import config_from_dict
from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.fileio import read_json
from openmm_cgkd.training.config import TeachersConfig, config_to_dict
from openmm_cgkd.workflow.config import PipelineConfig, trainer_settings
from openmm_cgkd.executor import Executor
from openmm_cgkd.workflow.results import TeachersResult, TrainingRun

__all__ = ["teachers_stage", "run_info"]


def run_info(run_dir: Path, member: int = 0) -> TrainingRun:
    """Epochs, early stop and best validation loss of a finished training run, and its log (of a
    stacked run: those of ``member``, with its own log ``logs/member_KK.csv``)."""
    from openmm_cgkd.training.stacked import member_epochs

    res = read_json(run_dir / "result.json") or {}
    if isinstance(res.get("members"), list):
        members = res["members"]
        info = members[member] if member < len(members) and isinstance(members[member], dict) else {}
        return TrainingRun(member_epochs(res, member), info.get("stopped_early"), info.get("best_val_loss"),
                           run_dir / "logs" / f"member_{member:02d}.csv")
    return TrainingRun(res.get("epochs"), res.get("stopped_early"), res.get("best_val_loss"),
                       run_dir / "logs" / "metrics.csv")


def _member_info(teachers_out: Path, k: int) -> TrainingRun:
    """:func:`run_info` of teacher member ``k``: its own run, or its part of a stacked run
    (``stacked/``: per-member logs and results)."""
    from openmm_cgkd.training.teachers import member_dir

    run = member_dir(teachers_out, k)
    if (run / "result.json").is_file() or not (teachers_out / "stacked").is_dir():
        return run_info(run)
    return run_info(teachers_out / "stacked", k)


def _validation_forces(bundle: str, dataset, frames: np.ndarray) -> dict:
    """Force error (kJ/mol/nm; network + wall vs mapped AA forces) of ``bundle`` on ``frames``."""
    from openmm_cgkd.training.labels import predict_labels
    from openmm_cgkd.training.metrics import regression_metrics

    labels = predict_labels(load_bundle(bundle), dataset.select_frames(frames), device="cpu")
    return regression_metrics(labels.forces, dataset.forces[frames])


def teachers_stage(cfg: PipelineConfig, out: Path, log, executor: Executor) -> TeachersResult:
    """The teachers (:func:`~openmm_cgkd.training.teachers.train_teachers`), each member a task
    of ``executor``; their runs and validation-block force errors."""
    from openmm_cgkd.training.teachers import train_teachers

    tcfg = config_from_dict(TeachersConfig, {
        "dataset": cfg.dataset, "out": str(out / "teachers"), "model": cfg.model,
        "split": asdict(cfg.split), "trainer": trainer_settings(cfg), **cfg.teachers}, "teachers")
    log(f"[teachers] training {tcfg.members} members -> {tcfg.out}")
    res = train_teachers(tcfg, executor=executor)
    setup = read_json(Path(tcfg.out) / "setup.json") or {}
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
