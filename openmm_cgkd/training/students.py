"""Students: one network (the teachers' architecture by default) trained on the mapped AA forces
and/or the teacher labels (docs/METHOD.md sections 2.5 and 2.6).

The nine variants of the paper are presets (:data:`VARIANTS`) with its loss weights: per-bead
energy w_e = 5, system energy w_E = 5, and for forces w_ft = 1, w_aa = 2 when both force
targets are used, else weight 1 for the one used. ``single-*`` variants learn from labels made
by one teacher (``cgkd label --member K``, or a one-teacher bundle), ``ensemble-*`` from the
ensemble mean. Free weights (``weights:`` in the config) override a preset's.

The student reuses the teachers' wall and bonded priors (from the labels' provenance): the labels
include them, so the student's network learns the same remainder as the teachers', with every
architecture (the stacked ``hipnn-ts`` path included). Its bundle records the
variant, the weights and the teachers it learned from.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.model.priors import BondedPriors
from openmm_cgkd.model.wall import WallParameters
from openmm_cgkd.training.config import ConfigError, LossWeights, StudentConfig, config_to_dict
from openmm_cgkd.training.data import split_blocks
from openmm_cgkd.training.variants import VARIANTS, Variant

__all__ = ["Variant", "VARIANTS", "resolve_variant", "StudentResult", "train_student", "train_students_stacked"]


def resolve_variant(name: str | None, weights: LossWeights | None) -> tuple[str, str | None, LossWeights]:
    """(variant name, required label source or None, loss weights) of a student config."""
    if name is None:
        if weights is None:
            raise ConfigError("a student needs a `variant` (one of "
                              f"{sorted(VARIANTS)}) or free `weights`")
        return "custom", None, weights
    if name not in VARIANTS:
        raise ConfigError(f"unknown student variant {name!r}; choose one of {sorted(VARIANTS)} or give free `weights`")
    v = VARIANTS[name]
    if weights is not None:
        return f"custom (from {name})", v.source, weights
    return name, v.source, v.weights


def _check_source(required: str | None, labels_source: str) -> None:
    if required is None:
        return
    ok = labels_source == "ensemble" if required == "ensemble" else labels_source != "ensemble"
    if not ok:
        raise ConfigError(f"this variant learns from {'the ensemble mean' if required == 'ensemble' else 'one teacher'}"
                          f" but the dataset's labels come from {labels_source!r}; "
                          + ("label with the ensemble bundle (no --member)" if required == "ensemble"
                             else "label with --member K (or a single-teacher bundle), into a copy (--out)"))


@dataclass
class StudentResult:
    out: Path
    bundle: Path
    model: object  # TrainablePotential with the best weights (CPU)
    variant: str
    weights: LossWeights
    blocks: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


class _Prepared(NamedTuple):
    """A student's inputs, checked: its labelled dataset, variant, loss weights, the teachers'
    provenance and wall, the split blocks and the architecture."""

    dataset: CGDataset
    variant: str
    weights: LossWeights
    prov: dict
    wall: WallParameters
    blocks: dict
    pcfg: object  # PotentialConfig
    priors: object = None  # the teachers' BondedPriors (None: no bonded terms)


def _prepare(cfg: StudentConfig, dataset: CGDataset | None) -> _Prepared:
    """The student's :class:`_Prepared` inputs (checked)."""
    from openmm_cgkd.model.potential import PotentialConfig
    from openmm_cgkd.training.model import check_boxes_for_cutoff, number_density, potential_config_for

    if not cfg.dataset:
        raise ConfigError("a student needs a labelled dataset (the `dataset:` key)")
    dataset = dataset if dataset is not None else CGDataset.load(cfg.dataset)
    dataset.check_forces(f"the forces (F_AA) of {cfg.dataset}")
    if dataset.labels is None:
        raise ConfigError(f"{cfg.dataset} has no distillation labels; run `cgkd label` with the teachers first")
    prov = dataset.labels.provenance
    if prov.get("teacher_bundle") and cfg.dataset:  # stored relative to the labelled dataset's folder
        prov = {**prov, "teacher_bundle": str((Path(cfg.dataset).parent / prov["teacher_bundle"]).resolve())}
    variant, source, weights = resolve_variant(cfg.variant, cfg.weights)
    _check_source(source, str(prov.get("source", "")))
    if "wall" not in prov or "architecture" not in prov:
        raise ConfigError("the labels' provenance lacks the teachers' wall/architecture; relabel with `cgkd label`")
    wall = WallParameters.from_dict(prov["wall"])
    blocks = split_blocks(dataset.n_frames, cfg.split)
    train = blocks["train"]
    if cfg.model is not None:
        density = number_density(dataset.positions[train], dataset.boxes[train])
        pcfg = potential_config_for(cfg.model, list(dataset.type_names), density)
    else:
        pcfg = PotentialConfig.from_dict(prov["architecture"])
    check_boxes_for_cutoff(dataset.boxes, pcfg.cutoff_nm, f"the student on {cfg.dataset}")
    priors = BondedPriors.from_dict(prov["priors"]) if prov.get("priors") else None
    return _Prepared(dataset, variant, weights, prov, wall, blocks, pcfg, priors)


def _finish(cfg: StudentConfig, prep: _Prepared, result, seconds: float, run_dir: Path,
            extra_force_refs: dict[str, np.ndarray] | None) -> StudentResult:
    """Test-block metrics, report, learning curve and bundle of a trained student."""
    dataset, variant, weights, prov, wall, blocks = prep[:6]
    from openmm_cgkd.bundle import save_bundle
    from openmm_cgkd.training.common import (code_provenance, dataset_bead_types, dataset_provenance,
                                             write_test_report)
    from openmm_cgkd.training.metrics import evaluate_frames, training_curve_plot

    out = Path(cfg.out)
    test = blocks["test"] if len(blocks["test"]) else blocks["val"]
    metrics, pred = evaluate_frames(result.model, dataset, test, cfg.trainer.batch_size, extra_force_refs)
    metrics = {"test_frames": [int(test[0]), int(test[-1]) + 1], "student": metrics}
    write_test_report(out, f"student {variant}", metrics, pred, dataset, test)
    training_curve_plot({variant: run_dir / result.info.get("metrics_csv", "logs/metrics.csv")},
                        out / "training_curves.png", f"student {variant}")
    targets = VARIANTS[cfg.variant].targets if cfg.variant in VARIANTS else None
    training = {"stage": "student", "variant": variant, "targets": targets, "loss_weights": weights.as_dict(),
                "teachers": prov, "dataset": dataset_provenance(cfg.dataset, dataset, blocks),
                "trainer": config_to_dict(cfg.trainer), "result": result.info,
                "test_metrics": metrics["student"], "seconds": round(seconds, 1), **code_provenance()}
    bundle = save_bundle(out / "bundle", result.model.network, bead_types=dataset_bead_types(dataset), wall=wall,
                         model_kind="student", variant=variant, training=training,
                         description=f"CG student '{variant}' distilled from {prov.get('source')} labels of "
                                     f"{prov.get('teacher_bundle')}", overwrite=True,
                         periodic=dataset.periodic, priors=prep.priors, temperature_K=dataset.temperature_K)
    return StudentResult(out, bundle, result.model, variant, weights, blocks, metrics)


def train_student(cfg: StudentConfig, dataset: CGDataset | None = None,
                  extra_force_refs: dict[str, np.ndarray] | None = None) -> StudentResult:
    """Train, evaluate and bundle a student (see the module docstring). Resumable in ``cfg.out``."""
    from openmm_cgkd.training.stacked import is_stacked_architecture, train_single
    from openmm_cgkd.training.rundir import is_global_zero
    from openmm_cgkd.training.trainer import train_potential

    p = _prepare(cfg, dataset)
    out = Path(cfg.out)
    start = time.time()
    if is_stacked_architecture(p.pcfg):  # hipnn-ts: the stacked fast path
        result = train_single(p.dataset, p.blocks, p.pcfg, p.wall, p.weights, cfg.trainer, out / "run",
                              priors=p.priors)
    else:
        result = train_potential(p.dataset, p.blocks, p.pcfg, p.wall, p.weights, cfg.trainer, out / "run",
                                 priors=p.priors)
    if not is_global_zero():  # a DDP helper process: rank 0 writes the results
        return StudentResult(out, out / "bundle", result.model, p.variant, p.weights, p.blocks, {})
    return _finish(cfg, p, result, time.time() - start, out / "run", extra_force_refs)


def train_students_stacked(cfgs: Sequence[StudentConfig], run_dir: str | Path, log=print) -> list[StudentResult]:
    """Several students of a stacked architecture (hipnn-ts) trained as ONE stacked run in
    ``run_dir``: member k is student ``cfgs[k]`` with its own loss weights and labels (its own
    labelled dataset of the same frames), all initialised from the trainer seed, so they differ
    only by what they learn. Each member trains, stops early and keeps its best epoch as if alone;
    then each student gets its own metrics, report, learning curve and bundle in its ``out``, as
    from :func:`train_student` (whose one-member result it equals). The students must share the
    architecture, split, trainer and the teachers' wall. Resumable in ``run_dir``."""
    from openmm_cgkd.training.model import number_density
    from openmm_cgkd.training.stacked import is_stacked_architecture, member_epochs, train_stacked
    from openmm_cgkd.training.trainer import TrainResult

    if not cfgs:
        raise ConfigError("no students to train")
    prepared = [_prepare(c, None) for c in cfgs]
    first = prepared[0]
    for c, p in zip(cfgs, prepared):
        if not is_stacked_architecture(p.pcfg):
            raise ConfigError(f"students trained together need a stacked architecture, got {p.pcfg.architecture!r}")
        same_priors = (p.priors is None) == (first.priors is None) and (
            p.priors is None or p.priors.to_dict() == first.priors.to_dict())
        if (p.pcfg.to_dict() != first.pcfg.to_dict() or p.wall.to_dict() != first.wall.to_dict() or not same_priors
                or c.split != cfgs[0].split or c.trainer != cfgs[0].trainer
                or any(not np.array_equal(p.blocks[b], first.blocks[b]) for b in ("train", "val", "test"))):
            raise ConfigError("students trained together must share the architecture, the teachers' wall and priors, "
                              "the split "
                              f"and the trainer; {c.out} differs from {cfgs[0].out}")
    dataset, blocks, wall, trainer = first.dataset, first.blocks, first.wall, cfgs[0].trainer
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "members.json").write_text(json.dumps(  # which member is which student (for status views)
        [{"member": m, "variant": p.variant, "out": os.path.relpath(Path(c.out).resolve(), Path(run_dir).resolve())}
         for m, (c, p) in enumerate(zip(cfgs, prepared))], indent=1))
    start = time.time()
    res = train_stacked(dataset, blocks, first.pcfg, wall, [p.weights for p in prepared], trainer, run_dir,
                        [int(trainer.seed)] * len(cfgs), log=log, member_labels=[p.dataset for p in prepared],
                        priors=first.priors)
    density = number_density(dataset.positions[blocks["train"]], dataset.boxes[blocks["train"]])
    seconds = (time.time() - start) / len(cfgs)
    results = []
    for m, (c, p) in enumerate(zip(cfgs, prepared)):
        member = res.info["members"][m]
        own = Path(c.out) / "run"  # the student's own record of its part of the run: result.json + its log
        (own / "logs").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(run_dir) / res.info["metrics_csv"][m], own / "logs" / "metrics.csv")
        info = {"stacked_run": os.path.relpath(Path(run_dir).resolve(), own.resolve()), "member": m,
                "num_members": len(cfgs), "epochs": member_epochs(res.info, m), "best_val_loss": member["best_val_loss"],
                "best_epoch": member["best_epoch"], "stopped_early": member["stopped_early"],
                "metrics_csv": os.path.join("logs", "metrics.csv"), "trainer": "stacked",
                "seconds_total": res.info["seconds_total"], "train_frames": res.info["train_frames"],
                "val_frames": res.info["val_frames"]}
        (own / "result.json").write_text(json.dumps(info, indent=2))
        tp = res.member_potential(m, wall, density, first.priors, dataset.topology, dataset.bead_types)
        results.append(_finish(c, p, TrainResult(tp, own, info), seconds, own, None))
    return results
