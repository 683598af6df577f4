"""One training run on Lightning: Adam, ReduceLROnPlateau, early stopping, a checkpoint every
epoch, resume after a kill, CSV logs (TensorBoard optional), progress bars, fixed seeds.

Layout of a run directory ``out``::

    checkpoints/last.ckpt       the newest epoch (written atomically: a kill never leaves half a file)
    checkpoints/best-EEE.ckpt   the epoch with the lowest validation loss
    logs/metrics.csv            per-epoch train/val losses, loss terms, learning rate (all sessions)
    result.json                 written when the run has finished (early stop or max_epochs); its
                                paths are relative to ``out``, so a run directory can be moved
    best_weights.pt             the best epoch's model weights alone (a small state dict), written
                                with result.json
    fingerprint.json            what the run is keyed on (see :func:`run_fingerprint`), written first

Calling :func:`train_potential` again on the same ``out`` with the same fingerprint resumes from
``last.ckpt`` (or, when ``result.json`` exists, only reloads the best weights: from the best
checkpoint, or from ``best_weights.pt`` when the checkpoints are gone, e.g. in a fresh clone of a
repository that keeps only the small files of finished runs). With another
fingerprint (a changed setting, dataset content, architecture, wall or loss weights) the old
checkpoints, logs and result are deleted and the run starts again from scratch. The batches of
an epoch depend only on (seed, epoch) and the schedule state travels in the checkpoint, so a
resumed run ends with the same weights as one never interrupted (``tests/unit/training/test_training_resume.py``).
Claiming the directory, reloading a finished run and writing its result are
:class:`~openmm_cgkd.training.rundir.RunDir`'s, shared with the stacked engine (:mod:`openmm_cgkd.training.stacked`).
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.fileio import atomic_path, map_strings
from openmm_cgkd.model.potential import PotentialConfig
from openmm_cgkd.model.wall import WallParameters
from openmm_cgkd.training.config import ConfigError, LossWeights, TrainerConfig
from openmm_cgkd.training.data import FrameDataset, make_loader
from openmm_cgkd.training.model import TrainablePotential, number_density
from openmm_cgkd.training.rundir import RunDir, block_ranges

__all__ = ["TrainResult", "train_potential", "run_fingerprint", "seed_everything", "HARDWARE_KEYS"]

# TrainerConfig fields that do not change what is learned (hardware, logging): a run may resume
# with other values, and they are not part of its fingerprint.
HARDWARE_KEYS = ("accelerator", "devices", "strategy", "num_workers", "num_threads", "progress_bar", "tensorboard",
                 "log_every_n_steps")
# Trainer settings added after runs were made: left out of the fingerprint at their default value,
# so those runs keep their fingerprints (and resume); set, they key the run like any setting.
ADDED_LATER = {"early_stopping_min_delta": 0.0}


@dataclass
class TrainResult:
    model: TrainablePotential  # best-validation weights, in eval mode, on the CPU
    out: Path
    info: dict = field(default_factory=dict)  # best_val_loss, epochs, stopped_early, seconds, paths


def seed_everything(seed: int) -> None:
    import lightning.pytorch as pl

    pl.seed_everything(int(seed), workers=True, verbose=False)


_CKPT_DIR = "@checkpoint_dir"  # stands for the directory of the checkpoint file in stored paths


def _relative_path(s: str, root: str) -> str:
    if s == root:
        return _CKPT_DIR
    if s.startswith(root + os.sep):
        return _CKPT_DIR + "/" + os.path.relpath(s, root).replace(os.sep, "/")
    return s


def _absolute_path(s: str, root: str) -> str:
    if s == _CKPT_DIR:
        return root
    if s.startswith(_CKPT_DIR + "/"):
        return os.path.join(root, *s[len(_CKPT_DIR) + 1:].split("/"))
    return s


def _atomic_checkpoint_io():
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        """Write each checkpoint to a temporary file and rename it: a kill mid-write leaves the old one.
        The callbacks' paths under the checkpoint's directory (Lightning's ModelCheckpoint records
        its directory and best/last files) are stored relative to it and made absolute again on
        loading, so a checkpoint holds no machine path and resumes after the run directory moved
        (a fresh clone elsewhere)."""

        def save_checkpoint(self, checkpoint, path, storage_options=None):
            if "callbacks" in checkpoint:
                root = os.path.realpath(os.path.dirname(str(path)))
                checkpoint = {**checkpoint, "callbacks": map_strings(checkpoint["callbacks"],
                                                                     lambda s: _relative_path(s, root))}
            with atomic_path(path) as tmp:
                super().save_checkpoint(checkpoint, str(tmp), storage_options)

        def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None):
            checkpoint = super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
            if "callbacks" in checkpoint:
                root = os.path.realpath(os.path.dirname(str(path)))
                checkpoint["callbacks"] = map_strings(checkpoint["callbacks"], lambda s: _absolute_path(s, root))
            return checkpoint

    return AtomicCheckpointIO()


def _resumable_csv_logger(out: Path):
    """A CSV logger of per-epoch metrics in ``out/logs/metrics.csv`` that a resumed run appends to
    (Lightning's CSVLogger deletes an existing file when it starts). Built on Lightning's public
    ``Logger`` interface only; columns are ``epoch``, ``step`` and the metric names (a new metric
    name rewrites the file with the wider header). Each call writes through."""
    import csv

    from lightning.pytorch.loggers.logger import Logger
    from lightning.pytorch.utilities import rank_zero_only

    class AppendingCSVLogger(Logger):
        def __init__(self, root: Path) -> None:
            super().__init__()
            self._root = Path(root)
            self.path = self._root / "logs" / "metrics.csv"

        @property
        def name(self) -> str:
            return "logs"

        @property
        def version(self) -> str:
            return ""

        @property
        def save_dir(self) -> str:
            return str(self._root)

        @rank_zero_only
        def log_hyperparams(self, params) -> None:  # hyper-parameters live in the bundle manifest
            return None

        @rank_zero_only
        def log_metrics(self, metrics: dict, step: int | None = None) -> None:
            row = {k: (float(v.item()) if hasattr(v, "item") else v) for k, v in metrics.items()}
            row["step"] = step
            rows, header = [], []
            if self.path.is_file():
                with open(self.path, newline="") as fh:
                    reader = csv.DictReader(fh)
                    header = list(reader.fieldnames or [])
                    if not set(row) <= set(header):
                        rows = list(reader)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if header and set(row) <= set(header):
                with open(self.path, "a", newline="") as fh:
                    csv.DictWriter(fh, fieldnames=header).writerow(row)
                return
            header = sorted(set(header) | set(row))
            with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=header)
                writer.writeheader()
                writer.writerows(rows + [row])

    return AppendingCSVLogger(out)


def _block_key(idx) -> str:
    from openmm_cgkd.fingerprint import array_digest

    idx = np.asarray(idx, dtype=np.int64)
    if len(idx) == 0:
        return "empty"
    return f"{int(idx[0])}:{int(idx[-1]) + 1} ({len(idx)} frames, {array_digest(idx)[:8]})"


def run_fingerprint(dataset: CGDataset, blocks: dict[str, np.ndarray], potential_config: PotentialConfig,
                    wall: WallParameters | None, weights: LossWeights, cfg: TrainerConfig, priors=None) -> dict:
    """What a training run is keyed on: the dataset's content digest, the train/val frames, the
    architecture, the wall, the loss weights and every trainer setting except :data:`HARDWARE_KEYS`."""
    from openmm_cgkd.fingerprint import cg_dataset_digest

    trainer = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in HARDWARE_KEYS}
    for key, default in ADDED_LATER.items():  # unset: the fingerprint of a run made before the setting existed
        if trainer.get(key) == default:
            del trainer[key]
    return {"dataset": cg_dataset_digest(dataset),
            "blocks": {k: _block_key(blocks.get(k, [])) for k in ("train", "val")},
            "architecture": potential_config.to_dict(), "wall": wall.to_dict() if wall is not None else None,
            "loss_weights": weights.as_dict(), "trainer": trainer,
            **({"priors": priors.to_dict()} if priors is not None else {})}


def train_potential(dataset: CGDataset, blocks: dict[str, np.ndarray], potential_config: PotentialConfig,
                    wall: WallParameters | None, weights: LossWeights, cfg: TrainerConfig, out: str | Path,
                    callbacks: list | None = None, log=print, priors=None) -> TrainResult:
    """Train a fresh :class:`TrainablePotential` (seeded by ``cfg.seed``) on ``blocks['train']``,
    validating on ``blocks['val']``; with the bonded ``priors``
    (:class:`~openmm_cgkd.model.priors.BondedPriors`, on the dataset's topology) added to the
    network's output; resumable in ``out`` (see the module docstring for when an
    existing run is resumed, reloaded or redone). ``log`` receives the one-line note of a redo.
    Returns the best-validation weights."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    from openmm_cgkd.training.devices import check_accelerator
    from openmm_cgkd.training.lightning_module import CGKDModule

    check_accelerator(cfg.accelerator, cfg.devices)  # a GPU asked for where there is none: a clear error
    run = RunDir(out)
    out = run.out
    if len(blocks.get("val", [])) == 0:
        raise ConfigError("training needs a validation block (split.val > 0): it drives the learning-rate "
                          "schedule, early stopping and the choice of the best epoch")
    fingerprint, finished = run.claim(run_fingerprint(dataset, blocks, potential_config, wall, weights, cfg, priors), log,
                                      resume_checkpoint=out / "checkpoints" / "last.ckpt")
    if cfg.num_threads is not None:
        torch.set_num_threads(int(cfg.num_threads))
    seed_everything(cfg.seed)
    density = number_density(dataset.positions[blocks["train"]], dataset.boxes[blocks["train"]])
    model = TrainablePotential(potential_config, wall, density, priors, dataset.topology, dataset.bead_types)
    module = CGKDModule(model, torch.from_numpy(dataset.bead_types.astype(np.int64)), weights, cfg)

    if finished is not None and run.reload_finished(  # the same run finished earlier: its best weights
            out / finished["best_checkpoint"], lambda path: _load_best(module, path), model.load_state_dict, log):
        return TrainResult(_finish(model), out, finished)

    train = FrameDataset(dataset, blocks["train"], require_labels=weights.needs_labels)
    val = FrameDataset(dataset, blocks["val"], require_labels=weights.needs_labels)
    train_loader = make_loader(train, cfg.batch_size, shuffle=True, seed=cfg.seed, num_workers=cfg.num_workers)
    val_loader = make_loader(val, cfg.batch_size, shuffle=False, num_workers=cfg.num_workers)

    ckpt_dir = out / "checkpoints"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best-{epoch:03d}", monitor="val_loss", mode="min",
                                 save_top_k=1, save_last=True, every_n_epochs=1, auto_insert_metric_name=False)
    stopper = EarlyStopping(monitor="val_loss", mode="min", patience=cfg.early_stopping_patience,
                            min_delta=cfg.early_stopping_min_delta)
    cbs = [checkpoint, stopper, *(callbacks or [])]
    if cfg.progress_bar:
        cbs.append(TQDMProgressBar(refresh_rate=max(1, len(train_loader) // 20)))
    loggers = [_resumable_csv_logger(out)]
    if cfg.tensorboard:
        loggers.append(TensorBoardLogger(out, name="", version="tensorboard"))
    strategy = cfg.strategy
    if strategy in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"):
        # the energy head's last bias is a constant offset that no force depends on: force-only
        # losses leave it without a gradient, which plain DDP treats as an error
        strategy = f"{strategy}_find_unused_parameters_true"
    on_gpu = cfg.accelerator in ("gpu", "cuda") or (cfg.accelerator == "auto" and torch.cuda.is_available())
    from openmm_cgkd.quiet import quiet_lightning

    quiet_lightning()
    trainer = pl.Trainer(
        max_epochs=cfg.max_epochs, accelerator=cfg.accelerator, devices=cfg.devices, strategy=strategy,
        precision=cfg.precision, deterministic=(True if not on_gpu else "warn") if cfg.deterministic else False,
        inference_mode=False, gradient_clip_val=cfg.gradient_clip_val, callbacks=cbs, logger=loggers,
        enable_progress_bar=cfg.progress_bar, enable_model_summary=False, log_every_n_steps=cfg.log_every_n_steps,
        num_sanity_val_steps=0, default_root_dir=str(out), plugins=[_atomic_checkpoint_io()])
    last = ckpt_dir / "last.ckpt"
    start = time.time()
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if last.is_file() else None)
    if trainer.global_rank != 0:
        return TrainResult(_finish(model), out, {})
    best = checkpoint.best_model_path or str(last)
    info = {
        "best_val_loss": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
        "epochs": int(trainer.current_epoch), "stopped_early": bool(stopper.stopped_epoch > 0),
        "seconds_last_session": round(time.time() - start, 2), "seed": cfg.seed,
        "best_checkpoint": os.path.relpath(best, out), "metrics_csv": os.path.join("logs", "metrics.csv"),
        **block_ranges(blocks), "fingerprint": fingerprint,
    }
    _load_best(module, best)
    return TrainResult(_finish(model), out, run.finish(model.state_dict(), info))


def _load_best(module, path: str) -> None:
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    module.load_state_dict(state)


def _finish(model: TrainablePotential) -> TrainablePotential:
    return model.cpu().eval()
