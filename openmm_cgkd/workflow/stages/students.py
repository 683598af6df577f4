"""The pipeline's ``students`` stage: every student of the plan (:func:`~openmm_cgkd.workflow.config.student_plan`),
each kept under its own fingerprint; students of a stacked architecture train together."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from openmm_cgkd.bundle import read_manifest
from openmm_cgkd.config import config_from_dict
from openmm_cgkd.fileio import read_json, write_json
from openmm_cgkd.fingerprint import bundle_checksum, describe_changes, digest
from openmm_cgkd.training.config import StudentConfig
from openmm_cgkd.workflow.config import PipelineConfig, student_plan, trainer_settings
from openmm_cgkd.executor import Executor, Need
from openmm_cgkd.workflow.results import LabelsResult, StudentResult, StudentsResult, TeachersResult, TrainingRun
from openmm_cgkd.workflow.results import to_portable as _portable
from openmm_cgkd.workflow.stages.labels import label_dataset
from openmm_cgkd.workflow.stages.teachers import run_info

__all__ = ["students_stage"]


def _student_task(scfg: StudentConfig) -> tuple[Path, dict]:
    """Executor task: train (or resume) one student in this worker; (its bundle, its metrics)."""
    from openmm_cgkd.training.students import train_student

    res = train_student(scfg)
    return Path(res.bundle), res.metrics


def students_stage(cfg: PipelineConfig, out: Path, teachers: TeachersResult, labels: LabelsResult, tick,
                   log, executor: Executor) -> StudentsResult:
    """Train every student of :func:`student_plan` that is not done yet. A student is done when
    ``students/<name>/pipeline.json`` holds the fingerprint asked for (variant, labels' content,
    architecture, split, trainer) and its bundle has the recorded checksum; its labels are made
    again only when it has to be trained and they are gone. With a stacked architecture
    (hipnn-ts) the students still to train train together, as the members of ONE stacked run in
    ``students/stacked/`` (:func:`~openmm_cgkd.training.students.train_students_stacked`); else
    each student is a task of ``executor`` (a GPU task when the trainer asks for a GPU, or
    ``auto`` and the workers have GPUs)."""
    from openmm_cgkd.training.stacked import is_stacked_architecture
    from openmm_cgkd.training.students import train_students_stacked
    from openmm_cgkd.training.trainer import HARDWARE_KEYS

    trainer = trainer_settings(cfg, cfg.students.trainer)
    results, todo = {}, []
    for name, spec in student_plan(cfg).items():
        sdir = out / "students" / name
        key = {"variant": spec["variant"], "labels": labels.digests[spec["labels"]],
               "model": cfg.model, "split": asdict(cfg.split),
               "trainer": {k: v for k, v in trainer.items() if k not in HARDWARE_KEYS}}
        unit = read_json(sdir / "pipeline.json")
        bundle = sdir / "bundle"
        if unit and unit.get("fingerprint") == digest(key) and bundle.is_dir() \
                and unit.get("bundle_checksum") == bundle_checksum(bundle):
            log(f"[students] {name}: done earlier")
            results[name] = _student_result(unit["outputs"], bundle, run_info(sdir / "run"))
            continue
        if unit:
            log(f"[students] {name}: changed ({'; '.join(describe_changes(unit.get('key'), key)[:4])}): training it")
        todo.append((name, spec, sdir, key))

    def config(name, spec, sdir, key) -> StudentConfig:
        path = labels.datasets[spec["labels"]]
        if not path.is_file():
            path, again = label_dataset(cfg, out, teachers, spec["labels"], log)
            if again != labels.digests[spec["labels"]]:
                log(f"[students] {name}: the labels made again differ from the recorded ones (non-deterministic "
                    "inference?); training on the new ones")
                key["labels"] = again
        return config_from_dict(StudentConfig, {
            "dataset": str(path), "out": str(sdir), "variant": spec["variant"], "model": cfg.model or None,
            "split": asdict(cfg.split), "trainer": trainer}, f"students.{name}")

    def record(name, spec, sdir, key, bundle, metrics) -> None:
        outputs = {"variant": spec["variant"], "labels": spec["labels"], "member": spec["member"],
                   "metrics": metrics}
        write_json(sdir / "pipeline.json", {"fingerprint": digest(key), "key": key,
                                            "bundle_checksum": bundle_checksum(bundle),
                                            "outputs": _portable(outputs, sdir)})
        results[name] = _student_result(outputs, bundle, run_info(sdir / "run"))

    if len(todo) > 1 and is_stacked_architecture(_student_architecture(cfg, teachers)):
        scfgs = [config(*t) for t in todo]
        log(f"[students] {', '.join(t[0] for t in todo)}: one stacked run of {len(todo)} -> {out / 'students' / 'stacked'}")
        for t, res in zip(todo, train_students_stacked(scfgs, out / "students" / "stacked", log=log)):
            record(*t, res.bundle, res.metrics)
        tick()
    elif todo:
        scfgs = []
        for t in todo:
            scfgs.append(config(*t))
            log(f"[students] {t[0]} (labels {t[1]['labels']}) -> {scfgs[-1].out}")
        accelerator = trainer.get("accelerator", "auto")
        gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and executor.has_gpus)
        by_out = {scfg.out: t for scfg, t in zip(scfgs, todo)}
        for scfg, (bundle, metrics) in executor.map(_student_task, scfgs, [t[0] for t in todo],
                                                     Need(threads=trainer.get("num_threads"), gpu=gpu),
                                                     what="students"):
            record(*by_out[scfg.out], bundle, metrics)
            tick()
    return StudentsResult({name: results[name] for name in student_plan(cfg)})


def _student_architecture(cfg: PipelineConfig, teachers: TeachersResult) -> str:
    """The students' architecture name: ``model`` (``architecture``, or that of its ``base``), else
    the teachers'."""
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
