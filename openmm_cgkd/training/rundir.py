"""One training run directory, the same for both training engines (Lightning in
:mod:`~openmm_cgkd.training.trainer`, the stacked loop in :mod:`~openmm_cgkd.training.stacked`).

Files every run directory holds (the engines add their checkpoints and logs)::

    fingerprint.json    what the run is keyed on, written first (:func:`openmm_cgkd.fingerprint.write_fingerprint`)
    checkpoints/        the engine's checkpoints (``last.ckpt`` and ``best-EEE.ckpt``, or ``stacked.ckpt``)
    logs/               per-epoch CSV logs
    result.json         written when the run has finished; its paths are relative to the run
                        directory, and it repeats the fingerprint's digest
    best_weights.pt     the best weights alone (a small state dict), written just before result.json

:class:`RunDir` claims a directory for a fingerprint (a run of other settings is deleted with a
note of what changed), reloads a finished run (from its best checkpoint, or from
``best_weights.pt`` when the checkpoints are gone, e.g. in a fresh clone that keeps only the
small files of finished runs) and writes the result. Run directories written before this module
existed have the same files and resume unchanged.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from openmm_cgkd.fileio import atomic_path, read_json, write_json
from openmm_cgkd.fingerprint import describe_changes, digest, read_fingerprint, write_fingerprint

__all__ = ["RunDir", "BEST_WEIGHTS", "RESULT_FILE", "is_global_zero", "block_ranges"]

BEST_WEIGHTS = "best_weights.pt"
RESULT_FILE = "result.json"
# what a run of other settings leaves behind (deleted when the directory is claimed again)
RUN_FILES = ("checkpoints", "logs", "tensorboard", RESULT_FILE, "result.part", BEST_WEIGHTS)


def is_global_zero() -> bool:
    """False in the extra processes of a multi-process (DDP) run: they train, but write nothing."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


class RunDir:
    """The run directory ``out`` of one training run (see the module docstring)."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    def read_result(self) -> dict | None:
        """``result.json`` of a finished run; None when there is none (or it is unreadable)."""
        try:
            data = read_json(self.out / RESULT_FILE)
        except (ValueError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def claim(self, settings: dict, log: Callable[[str], None],
              resume_checkpoint: Path | None = None) -> tuple[str, dict | None]:
        """Make the directory hold a run with fingerprint ``settings``: (digest, the finished
        run's result or None). A run made with other settings (or of unknown settings) is deleted
        first, with a line to ``log`` saying what changed.

        A run that differs only in ``trainer.max_epochs`` is the same run with another stopping
        point, and is kept (a line to ``log``): unfinished, it goes on to the new limit (a limit
        below the epochs already trained ends it at the next start, with its best weights so
        far); finished at its old limit, it goes on from ``resume_checkpoint`` when the new limit
        is higher (without that checkpoint it is trained again); finished otherwise (stopped
        early, or at or beyond the new limit), it stays finished."""
        fp = digest(settings)
        old = read_fingerprint(self.out)
        info = self.read_result()
        if old is not None and old["digest"] == fp and (info is None or info.get("fingerprint") == fp):
            return fp, info
        if not is_global_zero():  # rank 0 has cleared the directory and written the fingerprint
            return fp, None
        if old is not None and _same_but_epoch_limit(old.get("settings"), settings) and (
                info is None or info.get("fingerprint") == old["digest"]):
            limit, old_limit = settings["trainer"]["max_epochs"], old["settings"]["trainer"]["max_epochs"]
            if info is None:
                log(f"training run {self.out}: max_epochs {old_limit} -> {limit}: the run goes on to the new limit")
                write_fingerprint(self.out, settings)
                return fp, None
            if not _needs_more_epochs(info, limit):
                log(f"training run {self.out}: max_epochs {old_limit} -> {limit}: finished after {info.get('epochs')} "
                    f"epochs{' (stopped early)' if _stopped_early(info) else ''}; kept")
                info = {**info, "fingerprint": fp}
                write_fingerprint(self.out, settings)
                write_json(self.out / RESULT_FILE, info, indent=2)
                return fp, info
            if resume_checkpoint is not None and resume_checkpoint.is_file():
                log(f"training run {self.out}: max_epochs {old_limit} -> {limit}: going on from epoch {info.get('epochs')}")
                for name in (RESULT_FILE, BEST_WEIGHTS):
                    (self.out / name).unlink(missing_ok=True)
                write_fingerprint(self.out, settings)
                return fp, None
        stale = [self.out / name for name in RUN_FILES if (self.out / name).exists()]
        if stale:
            changes = describe_changes(old["settings"] if old else None, settings)
            log(f"training run {self.out}: made with other settings ({'; '.join(changes[:6])}"
                f"{'; ...' if len(changes) > 6 else ''}): training again from scratch")
            for p in stale:
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        write_fingerprint(self.out, settings)
        return fp, None

    def reload_finished(self, checkpoint: Path, load_checkpoint: Callable[[Path], None],
                        load_weights: Callable[[dict], None], log: Callable[[str], None]) -> bool:
        """Reload a finished run's best weights: ``load_checkpoint(checkpoint)`` when that file is
        there, else ``load_weights(state dict of best_weights.pt)``; True when one of them ran.
        When neither file is there the run is made unfinished (its result and logs removed, a
        line to ``log``) and False is returned: the engine trains it again."""
        if checkpoint.is_file():
            load_checkpoint(checkpoint)
            return True
        if (self.out / BEST_WEIGHTS).is_file():
            load_weights(torch.load(self.out / BEST_WEIGHTS, map_location="cpu", weights_only=True))
            return True
        log(f"training run {self.out}: finished earlier but neither {checkpoint.relative_to(self.out).as_posix()} "
            f"nor {BEST_WEIGHTS} is there: training again")
        (self.out / RESULT_FILE).unlink()
        shutil.rmtree(self.logs, ignore_errors=True)  # its epochs would be logged twice
        return False

    def save_checkpoint(self, state: dict, path: Path) -> None:
        """``torch.save(state)`` to ``path`` atomically (a kill never leaves half a file)."""
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def finish(self, best_weights: dict, info: dict) -> dict:
        """Write ``best_weights.pt`` (tensors moved to the CPU), then ``result.json`` holding
        ``info``: the run is finished. Returns ``info``."""
        self.save_checkpoint({name: t.detach().cpu() for name, t in best_weights.items()}, self.out / BEST_WEIGHTS)
        write_json(self.out / RESULT_FILE, info, indent=2)
        return info


def _without_epoch_limit(settings: dict) -> dict:
    trainer = settings.get("trainer")
    if not isinstance(trainer, dict) or "max_epochs" not in trainer:
        return settings
    return {**settings, "trainer": {k: v for k, v in trainer.items() if k != "max_epochs"}}


def _same_but_epoch_limit(old: dict | None, new: dict) -> bool:
    """True when two run fingerprints' settings differ in ``trainer.max_epochs`` alone."""
    return (isinstance(old, dict) and isinstance(old.get("trainer"), dict) and "max_epochs" in old["trainer"]
            and "max_epochs" in new.get("trainer", {}) and _without_epoch_limit(old) == _without_epoch_limit(new))


def _stopped_early(info: dict) -> bool:
    """Whether a finished run ended by early stopping (a stacked run: every member did)."""
    members = info.get("members")
    if isinstance(members, list):
        return bool(members) and all(isinstance(m, dict) and m.get("stopped_early") for m in members)
    return bool(info.get("stopped_early"))


def _needs_more_epochs(info: dict, limit: int) -> bool:
    """Whether a finished run would train on under the epoch limit ``limit``."""
    epochs = info.get("epochs")
    return not _stopped_early(info) and isinstance(epochs, int) and epochs < int(limit)


def block_ranges(blocks: dict[str, np.ndarray]) -> dict:
    """``train_frames`` and ``val_frames`` of ``result.json``: the training and validation blocks."""
    return {f"{key}_frames": [int(blocks[key][0]), int(blocks[key][-1]) + 1] for key in ("train", "val")}
