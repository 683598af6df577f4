"""Frames of a :class:`CGDataset` as torch datasets and loaders.

A frame becomes a dict of tensors: ``positions`` (N, 3) nm, ``box`` (3, 3) nm, ``forces``
(N, 3) kJ/mol/nm (the mapped AA forces, F_AA), ``frame`` (its index in the file) and, when the
dataset carries distillation labels, ``label_forces`` (N, 3), ``label_bead_energies`` (N,)
and ``label_energy`` (), and ``has_aa_forces`` (): False for frames whose ``forces`` are no AA
forces (student MD frames labelled by the ensemble, whose F_AA term the loss leaves out). Batches stack frames: every frame of a dataset has the same beads.

Frames are split into contiguous train / validation / test blocks (:func:`split_blocks`), and
the training order is shuffled by :class:`EpochSampler`, whose permutation depends only on
(seed, epoch): a run resumed from a checkpoint sees the same batches as one never stopped.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.training.config import ConfigError, SplitConfig

__all__ = ["split_blocks", "FrameDataset", "EpochSampler", "make_loader"]


def split_blocks(n_frames: int, split: SplitConfig) -> dict[str, np.ndarray]:
    """Frame indices of the contiguous ``train``, ``val`` and ``test`` blocks, in file order.

    Blocks follow each other in that order with ``split.gap_frames`` frames left out between
    neighbours. Raises :class:`ConfigError` if the training block would be empty, or if a block
    with a positive fraction would get no frame.
    """
    n_gaps = int(split.val > 0) + int(split.test > 0)
    usable = n_frames - split.gap_frames * n_gaps
    if usable < 1:
        raise ConfigError(f"{n_frames} frames leave none after {n_gaps} gap(s) of {split.gap_frames}")
    n_val = int(round(split.val * usable))
    n_test = int(round(split.test * usable))
    n_train = usable - n_val - n_test
    for name, frac, count in (("train", split.train, n_train), ("val", split.val, n_val), ("test", split.test, n_test)):
        if frac > 0 and count < 1:
            raise ConfigError(f"the {name} block gets no frame out of {n_frames}; use more frames or a larger fraction")
    out, start = {}, 0
    for name, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        out[name] = np.arange(start, start + count)
        start += count + (split.gap_frames if count and name != "test" else 0)
    return out


class FrameDataset(Dataset):
    """The frames ``indices`` of ``dataset`` as dicts of float32 tensors (labels when present);
    ``has_aa_forces=False``: the dataset's ``forces`` are not AA forces (the loss ignores them)."""

    def __init__(self, dataset: CGDataset, indices: np.ndarray | None = None, require_labels: bool = False,
                 has_aa_forces: bool = True):
        self.has_aa_forces = torch.tensor(bool(has_aa_forces))
        if not has_aa_forces and dataset.labels is None:
            raise ConfigError("frames without AA forces need distillation labels: they have nothing else to learn")
        self.indices = np.arange(dataset.n_frames) if indices is None else np.asarray(indices, dtype=np.int64)
        if require_labels and dataset.labels is None:
            raise ConfigError("this training needs distillation labels (F_T, e_T, E_T) but the dataset has none; "
                              "run `cgkd label` first")
        idx = self.indices
        self.positions = torch.from_numpy(np.ascontiguousarray(dataset.positions[idx], dtype=np.float32))
        self.boxes = torch.from_numpy(np.ascontiguousarray(dataset.boxes[idx], dtype=np.float32))
        self.forces = torch.from_numpy(np.ascontiguousarray(dataset.forces[idx], dtype=np.float32))
        self.bead_types = torch.from_numpy(dataset.bead_types.astype(np.int64))
        self.labels = None
        if dataset.labels is not None:
            lab = dataset.labels
            self.labels = (torch.from_numpy(np.asarray(lab.forces[idx], dtype=np.float32)),
                           torch.from_numpy(np.asarray(lab.bead_energies[idx], dtype=np.float32)),
                           torch.from_numpy(np.asarray(lab.energy[idx], dtype=np.float32)))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"positions": self.positions[i], "box": self.boxes[i], "forces": self.forces[i],
                "frame": torch.tensor(int(self.indices[i])), "has_aa_forces": self.has_aa_forces}
        if self.labels is not None:
            item["label_forces"] = self.labels[0][i]
            item["label_bead_energies"] = self.labels[1][i]
            item["label_energy"] = self.labels[2][i]
        return item


class EpochSampler(Sampler[int]):
    """A random order of ``n`` items that depends only on (``seed``, epoch); call :meth:`set_epoch`.

    Lightning calls ``set_epoch`` at the start of every epoch, also after a resume.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def make_loader(frames: FrameDataset, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0) -> DataLoader:
    sampler = EpochSampler(len(frames), seed) if shuffle else None
    return DataLoader(frames, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=num_workers,
                      persistent_workers=num_workers > 0, drop_last=False)
