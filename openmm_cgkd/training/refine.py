"""Refining a student where its data are thin: the pieces of a round of ``cgkd refine`` that need no MD
(the loop with the student's MD is :mod:`openmm_cgkd.workflow.refine`).

A student trained on AA frames knows nothing below the AA's closest contact of a pair: its
network may put a well there (a short-range trap) that the wall does not reach. A round

1. takes frames of the student's own MD (positions ``(F, N, 3)`` nm, boxes ``(F, 3, 3)`` nm),
2. finds those with a pair closer than the reference's closest contact of its type pair
   (:func:`closest_contacts`, :func:`close_pair_counts`) or an ensemble force spread above a
   threshold, and keeps at most ``max_frames`` of them (:func:`select_frames`),
3. labels them with the ensemble (:func:`openmm_cgkd.training.labels.predict_labels`: F_T, e_T,
   E_T; :func:`frames_dataset` holds them; their ``forces`` are zeros: they have no AA forces),
4. fine-tunes the student from its weights on its training block plus every frame found so far
   (:func:`fine_tune`): the AA frames with the student's loss, the new frames with its label terms
   only (the F_AA term skips frames with ``has_aa_forces = False``, :mod:`openmm_cgkd.training.loss`).

The coordination below the contact (:func:`coordination_below_contact`) counts, per pair A-B, the
B beads closer than the contact to an A bead (per A bead; x2 for a like pair, as in
:mod:`openmm_cgkd.analysis.contacts`), from the frames directly. Units: nm, kJ/mol, kJ/mol/nm.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.errors import CGKDError
from openmm_cgkd.geometry import minimum_image
from openmm_cgkd.training.config import ConfigError, FineTuneConfig, LossWeights

__all__ = ["RefineError", "pair_keys", "closest_contacts", "close_pair_counts", "coordination_below_contact", "select_frames",
           "frames_dataset", "check_weights", "fine_tune", "FineTuneResult"]


class RefineError(CGKDError, RuntimeError):
    """A refinement round that failed (every MD replica blew up at once, a fine-tune diverged)."""

    exit_code = 1


def pair_keys(type_names) -> list[tuple[int, int, str]]:
    """``(a, b, "A-B")`` for every type pair a <= b, in type order."""
    names = list(type_names)
    return [(a, b, f"{names[a]}-{names[b]}") for a in range(len(names)) for b in range(a, len(names))]


def _distances(positions: np.ndarray, box: np.ndarray | None, excluded: np.ndarray | None = None) -> np.ndarray:
    """(N, N) minimum-image pair distances (nm), +inf on the diagonal and for the ``excluded``
    bead pairs ([P, 2]: bonded pairs the wall leaves to the priors)."""
    x = np.asarray(positions, dtype=np.float64)
    d = x[None, :, :] - x[:, None, :]
    if box is not None and np.any(box):
        d = minimum_image(d, box)
    r = np.sqrt(np.einsum("ijk,ijk->ij", d, d))
    np.fill_diagonal(r, np.inf)
    if excluded is not None and len(excluded):
        e = np.asarray(excluded, dtype=np.int64)
        r[e[:, 0], e[:, 1]] = r[e[:, 1], e[:, 0]] = np.inf
    return r


def _type_masks(bead_types: np.ndarray, n_types: int) -> list[np.ndarray]:
    return [np.asarray(bead_types) == t for t in range(n_types)]


def closest_contacts(dataset: CGDataset, frames=None, excluded: np.ndarray | None = None) -> dict[str, float]:
    """Per type pair ``"A-B"``, the closest distance (nm) of an A and a B bead over ``frames`` of
    ``dataset`` (default: all), bead pairs ``excluded`` ([P, 2], e.g. bonded pairs) left out: the
    reference's closest contact (inf for a pair with no beads)."""
    idx = np.arange(dataset.n_frames) if frames is None else np.asarray(frames, dtype=np.int64)
    masks = _type_masks(dataset.bead_types, len(dataset.type_names))
    keys = pair_keys(dataset.type_names)
    best = {key: np.inf for _, _, key in keys}
    for i in idx:
        r = _distances(dataset.positions[i], dataset.boxes[i] if dataset.periodic else None, excluded)
        for a, b, key in keys:
            sub = r[np.ix_(masks[a], masks[b])]
            if sub.size:
                best[key] = min(best[key], float(sub.min()))
    return best


def close_pair_counts(positions: np.ndarray, boxes: np.ndarray | None, bead_types: np.ndarray, type_names,
                      contacts: dict[str, float], margin_nm: float = 0.0,
                      excluded: np.ndarray | None = None) -> np.ndarray:
    """``(F, P)``: per frame and type pair (the order of :func:`pair_keys`), the number of bead pairs
    closer than ``contacts[key] - margin_nm`` (nm), bead pairs ``excluded`` ([P, 2]) left out.
    ``boxes`` None or all zero: no periodic box."""
    pos = np.asarray(positions, dtype=np.float64)
    keys = pair_keys(type_names)
    masks = _type_masks(bead_types, len(list(type_names)))
    out = np.zeros((len(pos), len(keys)), dtype=np.int64)
    for f in range(len(pos)):
        r = _distances(pos[f], None if boxes is None else np.asarray(boxes)[f], excluded)
        for p, (a, b, key) in enumerate(keys):
            below = r[np.ix_(masks[a], masks[b])] < contacts[key] - margin_nm
            out[f, p] = int(below.sum()) // 2 if a == b else int(below.sum())
    return out


def coordination_below_contact(counts: np.ndarray, bead_types: np.ndarray, type_names) -> dict[str, dict]:
    """Per pair ``"A-B"``, the mean number (over the frames of ``counts``, :func:`close_pair_counts`)
    of B neighbours of an A bead below the contact (``per_a``) and of A neighbours of a B bead
    (``per_b``); a like pair counts each pair for both its beads."""
    n = np.bincount(np.asarray(bead_types), minlength=len(list(type_names)))
    mean = np.asarray(counts, dtype=np.float64).mean(axis=0) if len(counts) else np.zeros(counts.shape[1])
    out = {}
    for p, (a, b, key) in enumerate(pair_keys(type_names)):
        pairs = mean[p] * (2.0 if a == b else 1.0)
        out[key] = {"per_a": float(pairs / n[a]) if n[a] else 0.0, "per_b": float(pairs / n[b]) if n[b] else 0.0}
    return out


def select_frames(max_spread: np.ndarray, close_pairs: np.ndarray, threshold: float | None,
                  max_frames: int) -> np.ndarray:
    """Indices (ascending) of the frames to label: those with a pair below the contact
    (``close_pairs`` (F,) > 0) or a maximum bead force spread ``max_spread`` (F,) (kJ/mol/nm) above
    ``threshold`` (None: spread not used; NaN counts as above). At most ``max_frames``: the frames
    with most close pairs first, then the highest spread."""
    close = np.asarray(close_pairs, dtype=np.int64)
    spread = np.asarray(max_spread, dtype=np.float64)
    if close.shape != spread.shape or close.ndim != 1:
        raise ValueError(f"max_spread {spread.shape} and close_pairs {close.shape} must be (frames,) alike")
    hit = close > 0
    if threshold is not None:
        hit |= ~(spread <= threshold)
    idx = np.flatnonzero(hit)
    if len(idx) > max_frames:
        order = np.lexsort((-np.nan_to_num(spread[idx], nan=np.inf), -close[idx]))  # last key sorts first
        idx = np.sort(idx[order[:max_frames]])
    return idx


def frames_dataset(template: CGDataset, positions: np.ndarray, boxes: np.ndarray, provenance: dict) -> CGDataset:
    """The frames ``positions`` (F, N, 3) nm / ``boxes`` (F, 3, 3) nm of ``template``'s system as a
    dataset WITHOUT AA forces: its ``forces`` are zeros (so that no stage can train on them as AA
    forces: :meth:`CGDataset.check_forces` refuses all-zero forces), its ``times`` the frame order
    (ps, no physical time), ``provenance`` says where the frames came from."""
    f = len(positions)
    return CGDataset(np.asarray(positions, np.float32), np.zeros((f, template.n_beads, 3), np.float32),
                     np.asarray(boxes, np.float32), np.arange(f, dtype=np.float64), template.bead_types,
                     list(template.type_names), template.masses, None, None,
                     {**provenance, "aa_forces": False}, template.topology, template.temperature_K,
                     template.bead_names)


def check_weights(weights: LossWeights) -> LossWeights:
    """``weights``, or a :class:`ConfigError` when they use no ensemble label (w_ft, w_e, w_E all 0):
    the new frames have no AA forces, so such a loss would learn nothing from them."""
    if not weights.needs_labels:
        raise ConfigError(f"the loss weights {weights.as_dict()} use no ensemble label: the new frames (which "
                          "have no AA forces) would teach nothing; give weights with w_ft, w_e or w_E > 0 "
                          "(`weights:` in the refine config)")
    return weights


@dataclass
class FineTuneResult:
    """The fine-tuned student (a :class:`~openmm_cgkd.training.model.TrainablePotential`, CPU, eval)
    and its record (losses per epoch, frames, seconds)."""

    model: object
    info: dict


def _trainable(network, wall, density: float, priors, dataset: CGDataset):
    """(module, forward) for fine-tuning ``network`` (a :class:`CGPotential`): a one-member
    :class:`~openmm_cgkd.training.stacked.StackedTrainable` for a stacked architecture (its fast
    path), else a :class:`~openmm_cgkd.training.model.TrainablePotential`. ``forward(types, pos,
    boxes)`` -> dict of ``[B, ...]`` predictions with the graph to the weights."""
    from openmm_cgkd.model.stacked import StackedEnsemblePotential
    from openmm_cgkd.training.model import TrainablePotential
    from openmm_cgkd.training.stacked import StackedTrainable, is_stacked_architecture

    cfg = network.config
    if is_stacked_architecture(cfg):
        module = StackedTrainable(cfg, 1, None, wall, density, priors, dataset.topology, dataset.bead_types)
        module.network.load_state_dict(StackedEnsemblePotential.from_members([network]).state_dict())

        def forward(types, pos, boxes):
            return {k: v[0] for k, v in module(types, pos, boxes).items()}
    else:
        module = TrainablePotential(cfg, wall, density, priors, dataset.topology, dataset.bead_types)
        module.network.load_state_dict(network.state_dict())

        def forward(types, pos, boxes):
            return module(types, pos, boxes, create_graph=True)
    return module, forward


def _as_potential(module, wall, density: float, priors, dataset: CGDataset):
    """The fine-tuned network of ``module`` as a :class:`TrainablePotential` (CPU, eval)."""
    from openmm_cgkd.training.model import TrainablePotential

    module = module.cpu()
    if isinstance(module, TrainablePotential):
        return module.eval()
    tp = TrainablePotential(module.network.config, wall, density, priors, dataset.topology, dataset.bead_types)
    tp.network.load_state_dict(module.network.member(0).state_dict())
    return tp.eval()


def fine_tune(network, wall, priors, dataset: CGDataset, blocks: dict[str, np.ndarray], new: CGDataset,
              weights: LossWeights, cfg: FineTuneConfig, device: str = "cpu", progress: bool = True) -> FineTuneResult:
    """Fine-tune ``network`` (the student's :class:`CGPotential`, with its ``wall`` and bonded
    ``priors``) for ``cfg.epochs`` epochs on ``dataset``'s ``blocks['train']`` (AA frames, loss
    ``weights``) plus every frame of ``new`` (labelled, no AA forces: the label terms of ``weights``
    only); validation loss on ``blocks['val']`` before and after each epoch. Returns the final
    epoch's weights."""
    from torch.utils.data import ConcatDataset, DataLoader

    from openmm_cgkd.training.data import EpochSampler, FrameDataset
    from openmm_cgkd.training.loss import distillation_loss
    from openmm_cgkd.training.model import number_density
    from openmm_cgkd.training.trainer import seed_everything

    if dataset.labels is None or new.labels is None:
        raise ConfigError("fine-tuning needs labelled data: the student's dataset and the new frames")
    check_weights(weights)
    if cfg.num_threads is not None:
        torch.set_num_threads(int(cfg.num_threads))
    seed_everything(cfg.seed)
    dev = torch.device(device)
    train_idx = np.asarray(blocks["train"])
    density = number_density(dataset.positions[train_idx], dataset.boxes[train_idx])
    module, forward = _trainable(network, wall, density, priors, dataset)
    module.to(dev)
    frames = ConcatDataset([FrameDataset(dataset, train_idx, require_labels=True),
                            FrameDataset(new, None, require_labels=True, has_aa_forces=False)])
    val = FrameDataset(dataset, blocks["val"], require_labels=True)
    val_loader = DataLoader(val, batch_size=cfg.batch_size, shuffle=False)
    types = torch.from_numpy(dataset.bead_types.astype(np.int64)).to(dev)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sampler = EpochSampler(len(frames), cfg.seed)

    def to_dev(batch):
        return {k: v.to(dev) for k, v in batch.items()}

    def val_loss() -> float:
        total, count = 0.0, 0
        for batch in val_loader:
            batch = to_dev(batch)
            loss, _ = distillation_loss(forward(types, batch["positions"], batch["box"]), batch, weights)
            total += float(loss.detach()) * len(batch["positions"])
            count += len(batch["positions"])
        return total / max(count, 1)

    epochs = []
    start = time.time()
    val0 = val_loss()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.epochs * ((len(frames) + cfg.batch_size - 1) // cfg.batch_size), desc="fine-tune",
                   unit="batch")
    for epoch in range(cfg.epochs):
        sampler.set_epoch(epoch)
        loader = DataLoader(frames, batch_size=cfg.batch_size, sampler=sampler)
        total, count = 0.0, 0
        for batch in loader:
            batch = to_dev(batch)
            loss, _ = distillation_loss(forward(types, batch["positions"], batch["box"]), batch, weights)
            if not bool(torch.isfinite(loss)):
                raise RefineError(f"the fine-tune loss is not finite in epoch {epoch}: lower fine_tune.lr")
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch["positions"])
            count += len(batch["positions"])
            if bar is not None:
                bar.update(1)
        epochs.append({"epoch": epoch, "train_loss": total / count, "val_loss": val_loss()})
    if bar is not None:
        bar.close()
    model = _as_potential(module, wall, density, priors, dataset)
    info = {"epochs": epochs, "val_loss_before": val0, "val_loss_after": epochs[-1]["val_loss"],
            "aa_frames": int(len(train_idx)), "new_frames": int(new.n_frames), "lr": cfg.lr,
            "loss_weights": weights.as_dict(), "seconds": round(time.time() - start, 1)}
    return FineTuneResult(model, info)
