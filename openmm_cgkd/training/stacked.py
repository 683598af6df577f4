"""Training K stacked members at once (architectures of ``STACKED_ARCHITECTURES``: ``hipnn-ts``).

One run trains the K members of a :class:`~openmm_cgkd.model.stacked.StackedEnsemblePotential`:

* the loss is the SUM of the member losses (each the usual :func:`~.loss.distillation_loss` of its
  own predictions), so every member's weights get exactly the gradient of its own loss;
* the optimiser is Adam with one learning rate per member (:class:`StackedAdam`; Adam works
  element by element, so K stacked members step exactly as K separate Adams would), with
  per-member gradient-norm clipping;
* validation loss, ``ReduceLROnPlateau`` schedule, early stopping and best weights are kept per
  member: a member that stops early is frozen (learning rate 0) while the others go on; the run
  ends when every member has stopped or at ``max_epochs``;
* all members see the same batches (their order depends only on the trainer seed and the epoch);
  they differ by their initialisation (``seeds``);
* K = 1 is the single-member case of the same code.

Per batch the pair lists, the shared sensitivities, the wall and the bonded priors (molecules;
docs/molecules.md) are computed once for all K members (:func:`~openmm_cgkd.model.stacked.training_forward`).

Run directory ``out`` (resumable like :mod:`.trainer`)::

    checkpoints/last.ckpt       newest epoch: weights, per-member best weights, optimiser, schedules,
                                early-stopping state (written atomically)
    logs/member_KK.csv          per-member epoch log: epoch, train_loss, val_loss, lr, stopped, terms
    result.json                 written at the end: per-member best_val_loss, best_epoch, stopped_early
    best_weights.pt             written with result.json: the per-member best weights alone (the
                                model's state dict, a small file; no optimiser or schedule state)
    fingerprint.json            what the run is keyed on (the trainer's run fingerprint + the seeds)

Calling :func:`train_stacked` again with the same fingerprint resumes from ``last.ckpt`` (epoch
order and schedules are restored, so the result equals an uninterrupted run) or, once
``result.json`` exists, reloads the best weights: from ``last.ckpt``, or from ``best_weights.pt``
when the checkpoints are gone (a fresh clone of a repository that keeps only the small files of
finished runs); with neither there it trains again. With another fingerprint it starts afresh.
Units: nm, kJ/mol, kJ/mol/nm.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.fileio import atomic_path
from openmm_cgkd.model.potential import STACKED_ARCHITECTURES, PotentialConfig
from openmm_cgkd.model.stacked import StackedEnsemblePotential, joined_pairs, training_forward
from openmm_cgkd.model.wall import WallParameters
from openmm_cgkd.training.config import ConfigError, LossWeights, TrainerConfig
from openmm_cgkd.training.loss import loss_terms
from openmm_cgkd.training.model import training_prior, training_wall
from openmm_cgkd.training.rundir import RunDir, block_ranges

__all__ = ["StackedTrainable", "StackedTrainResult", "StackedAdam", "member_losses", "train_stacked", "train_single",
           "is_stacked_architecture", "predict_members"]

CHECKPOINT = "last.ckpt"


def is_stacked_architecture(architecture) -> bool:
    """Whether an architecture (name, :class:`PotentialConfig` or its mapping) trains stacked."""
    if isinstance(architecture, PotentialConfig):
        architecture = architecture.architecture
    elif isinstance(architecture, dict):
        architecture = architecture.get("architecture")
    return architecture in STACKED_ARCHITECTURES


# --------------------------------------------------------------------------- the model

class StackedTrainable(nn.Module):
    """``network`` (:class:`StackedEnsemblePotential`, K members) + the shared wall + the shared
    bonded priors, on batches.

    ``forward(bead_types [N], positions [B,N,3], boxes [B,3,3])`` -> ``energy [K,B]``,
    ``bead_energies [K,B,N]``, ``forces [K,B,N,3]`` (kJ/mol, kJ/mol/nm; network + wall + priors),
    with the graph to the weights that a force loss needs: every member learns what the fixed terms
    leave, exactly as :class:`~openmm_cgkd.training.model.TrainablePotential`. The wall's and the
    priors' parameters are buffers; with ``priors`` (:class:`~openmm_cgkd.model.priors.BondedPriors`
    on ``topology``, a :class:`~openmm_cgkd.cgtopology.CGTopology` of beads ``bead_types``) the wall
    leaves out the bonded pairs the priors own. All-zero boxes: no periodic box.
    """

    def __init__(self, config: PotentialConfig, num_members: int, seeds=None, wall: WallParameters | None = None,
                 density_per_nm3: float = 0.0, priors=None, topology=None, bead_types=None):
        super().__init__()
        self.network = StackedEnsemblePotential(config, num_members, seeds)
        self.wall_parameters = wall
        self.wall = training_wall(wall, density_per_nm3, config)
        self.prior = training_prior(priors, topology, bead_types, config, self.wall)

    @property
    def config(self) -> PotentialConfig:
        return self.network.config

    @property
    def num_members(self) -> int:
        return self.network.num_members

    def _wall_terms(self, bead_types: Tensor, positions: Tensor, boxes: Tensor,
                    pairs: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Wall per-bead energies ``[B,N]`` and forces ``[B,N,3]``, shared by every member.
        ``pairs``: the network's :func:`~openmm_cgkd.model.stacked.joined_pairs` of the batch; when the
        wall's cutoff is not longer than the network's, the wall's pairs are taken from them (no
        second neighbour search: at a few hundred beads the O(N^2) search costs as much as the wall)."""
        from openmm_cgkd.training.model import TrainablePotential

        b, n, _ = positions.shape
        types = bead_types.to(torch.long).repeat(b)
        eye = torch.eye(3, dtype=positions.dtype, device=positions.device)
        with torch.enable_grad():
            flat = positions.detach().reshape(b * n, 3).clone().requires_grad_(True)
            if pairs is not None and self.wall.cutoff_nm <= self.network.cutoff_nm:
                with torch.no_grad():
                    ei, vec = pairs
                    keep = (vec * vec).sum(1) < self.wall.cutoff_nm ** 2
                    ei, vec = ei[:, keep], vec[keep]
                    plain = flat.index_select(0, ei[0]) - flat.index_select(0, ei[1])
                    shifts = vec - plain  # the periodic image, Cartesian (nm)
            else:
                ei, shifts = TrainablePotential._joined_edges(self.wall.neighbors, positions.detach(), boxes)
            bead = self.wall.bead_energies_from_edges(types, flat, ei, shifts, eye)
            (grad,) = torch.autograd.grad(bead.sum(), flat)
        return bead.detach().view(b, n), -grad.view(b, n, 3)

    def _prior_terms(self, positions: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """Prior per-bead energies ``[B,N]`` and forces ``[B,N,3]``, shared by every member."""
        with torch.enable_grad():
            pos = positions.detach().clone().requires_grad_(True)
            bead = self.prior.bead_energies(pos, boxes)
            (grad,) = torch.autograd.grad(bead.sum(), pos)
        return bead.detach(), -grad

    def forward(self, bead_types: Tensor, positions: Tensor, boxes: Tensor) -> dict[str, Tensor]:
        dtype = self.network.model_dtype()
        pos = positions.detach().to(dtype)
        box = boxes.detach().to(dtype)
        with torch.no_grad():  # one neighbour search per frame, for the network and the wall
            pairs = joined_pairs(self.network.neighbors, pos, box)
        out = training_forward(self.network, bead_types, pos, box, pairs=pairs)
        if self.wall is not None:
            bead_w, force_w = self._wall_terms(bead_types, pos, box, pairs)
            out = {"bead_energies": out["bead_energies"] + bead_w, "forces": out["forces"] + force_w}
        if self.prior is not None:
            bead_p, force_p = self._prior_terms(pos, box)
            out = {"bead_energies": out["bead_energies"] + bead_p, "forces": out["forces"] + force_p}
        if self.wall is not None or self.prior is not None:
            out["energy"] = out["bead_energies"].sum(-1)
        return out


def member_losses(pred: dict[str, Tensor], batch: dict[str, Tensor],
                  weights: LossWeights | Sequence[LossWeights]) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-member distillation losses ``[K]`` and their terms (each ``[K]``, unweighted, detached):
    member k's entry equals :func:`~openmm_cgkd.training.loss.distillation_loss` of its predictions
    with its weights (``weights``: shared, or one :class:`LossWeights` per member) and its labels
    (a label of the batch with a member axis, ``[B, K, ...]`` from :class:`MemberLabelFrames`, gives
    member k its own; one without is shared)."""
    k = pred["forces"].shape[0]
    n_beads = pred["forces"].shape[2]
    per_member = [weights] * k if isinstance(weights, LossWeights) else list(weights)
    if len(per_member) != k:
        raise ValueError(f"{len(per_member)} loss weights for {k} members")
    widest = LossWeights(**{name: max(getattr(w, name) for w in per_member) for name in ("w_aa", "w_ft", "w_e", "w_E")})
    total = pred["forces"].new_zeros(k)
    terms: dict[str, Tensor] = {}
    for _, tname, pkey, bkey, scale in loss_terms(widest, batch, n_beads):
        target = batch[bkey].to(pred[pkey].dtype)
        target = target.movedim(1, 0) if target.dim() == pred[pkey].dim() else target.unsqueeze(0)
        d = ((pred[pkey] - target) * scale).reshape(k, -1)
        term = torch.sqrt(torch.mean(d * d, dim=1)) + torch.mean(torch.abs(d), dim=1)
        terms[tname] = term.detach()
        wname = _WEIGHT_OF_TERM[tname]
        w = torch.tensor([getattr(m, wname) for m in per_member], dtype=term.dtype, device=term.device)
        total = total + torch.where(w > 0, w * term, torch.zeros_like(term))
    return total, terms


_WEIGHT_OF_TERM = {"err_f_aa": "w_aa", "err_f_t": "w_ft", "err_e_t": "w_e", "err_E_t": "w_E"}


class MemberLabelFrames(torch.utils.data.Dataset):
    """The frames ``indices`` of ``dataset`` (positions, box, mapped forces) with each member's own
    distillation labels from ``member_labels`` (one labelled dataset per member, of the same frames):
    ``label_forces [K, N, 3]``, ``label_bead_energies [K, N]``, ``label_energy [K]`` per item."""

    def __init__(self, dataset: CGDataset, indices, member_labels: Sequence[CGDataset]):
        from openmm_cgkd.training.data import FrameDataset

        self.base = FrameDataset(dataset, indices)
        self.labels = [FrameDataset(d, indices, require_labels=True).labels for d in member_labels]

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        item = self.base[i]
        for j, key in enumerate(("label_forces", "label_bead_energies", "label_energy")):
            item[key] = torch.stack([lab[j][i] for lab in self.labels])
        return item


# --------------------------------------------------------------------------- optimiser

class StackedAdam:
    """Adam (``torch.optim.Adam``'s update, L2 ``weight_decay`` added to the gradient) for weights
    with a leading member axis, with one learning rate per member (``lr`` [K]; 0 freezes a member)."""

    def __init__(self, params, lr: Tensor, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr.detach().clone().to(torch.float64)
        self.betas = betas
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.step_count = 0
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def clip_member_grad_norm(self, max_norm: float) -> Tensor:
        """Scale each member's gradient to a norm of at most ``max_norm`` (as
        ``clip_grad_norm_`` does for one network); returns the norms before clipping [K]."""
        k = self.lr.numel()
        sq = None
        for p in self.params:
            if p.grad is not None:
                s = (p.grad.detach().to(torch.float64) ** 2).reshape(k, -1).sum(1)
                sq = s if sq is None else sq + s
        if sq is None:
            return torch.zeros(k, dtype=torch.float64)
        norms = torch.sqrt(sq)
        coef = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
        for p in self.params:
            if p.grad is not None:
                p.grad.mul_(coef.to(p.dtype).to(p.device).view((k,) + (1,) * (p.dim() - 1)))
        return norms

    @torch.no_grad()
    def step(self) -> None:
        self.step_count += 1
        b1, b2 = self.betas
        bc1 = 1.0 - b1 ** self.step_count
        bc2_sqrt = math.sqrt(1.0 - b2 ** self.step_count)
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            if p.grad is None:
                continue
            g = p.grad
            if self.weight_decay:
                g = g.add(p, alpha=self.weight_decay)
            m.lerp_(g, 1.0 - b1)
            v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            denom = (v.sqrt() / bc2_sqrt).add_(self.eps)
            step_size = (self.lr / bc1).to(p.dtype).to(p.device).view((-1,) + (1,) * (p.dim() - 1))
            p.sub_(step_size * m / denom)

    def state_dict(self) -> dict:
        return {"lr": self.lr.clone(), "step_count": self.step_count, "exp_avg": [t.clone() for t in self.exp_avg],
                "exp_avg_sq": [t.clone() for t in self.exp_avg_sq]}

    def load_state_dict(self, state: dict) -> None:
        self.lr = state["lr"].clone()
        self.step_count = int(state["step_count"])
        for dst, src in zip(self.exp_avg + self.exp_avg_sq, state["exp_avg"] + state["exp_avg_sq"]):
            dst.copy_(src)


class _MemberSchedule:
    """Per-member ReduceLROnPlateau (torch's, each on a stand-in optimiser holding that member's
    learning rate), early stopping (Lightning's rule: stop after ``patience`` epochs without a validation
    loss lower than the best by more than ``early_stopping_min_delta``) and the best epoch (the lowest
    validation loss, whatever the margin: its weights are kept)."""

    def __init__(self, k: int, cfg: TrainerConfig):
        self.cfg = cfg
        self._holders = [torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr) for _ in range(k)]
        self.schedulers = [torch.optim.lr_scheduler.ReduceLROnPlateau(
            h, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=cfg.lr_min) for h in self._holders]
        self.best_val = [math.inf] * k
        self.best_epoch = [-1] * k
        self.wait = [0] * k
        self.stop_best = [math.inf] * k  # early stopping's own best: moves only on a gain > min_delta
        self.stopped = [False] * k
        self.stopped_epoch = [-1] * k

    def lrs(self) -> list[float]:
        return [0.0 if s else h.param_groups[0]["lr"] for h, s in zip(self._holders, self.stopped)]

    def update(self, epoch: int, val: list[float]) -> list[bool]:
        """Feed the epoch's validation losses; returns which members improved (new best weights)."""
        improved = []
        for k, v in enumerate(val):
            if self.stopped[k]:
                improved.append(False)
                continue
            self.schedulers[k].step(v)
            better = v < self.best_val[k]
            improved.append(bool(better))
            if better:
                self.best_val[k], self.best_epoch[k] = v, epoch
            if v < self.stop_best[k] - self.cfg.early_stopping_min_delta:
                self.stop_best[k], self.wait[k] = v, 0
            else:
                self.wait[k] += 1
                if self.wait[k] >= self.cfg.early_stopping_patience:
                    self.stopped[k], self.stopped_epoch[k] = True, epoch
        return improved

    def state_dict(self) -> dict:
        return {"schedulers": [s.state_dict() for s in self.schedulers],
                "holder_lrs": [h.param_groups[0]["lr"] for h in self._holders], "best_val": list(self.best_val),
                "best_epoch": list(self.best_epoch), "wait": list(self.wait), "stopped": list(self.stopped),
                "stopped_epoch": list(self.stopped_epoch), "stop_best": list(self.stop_best)}

    def load_state_dict(self, state: dict) -> None:
        for s, h, ss, lr in zip(self.schedulers, self._holders, state["schedulers"], state["holder_lrs"]):
            s.load_state_dict(ss)
            h.param_groups[0]["lr"] = lr
        for key in ("best_val", "best_epoch", "wait", "stopped", "stopped_epoch"):
            setattr(self, key, list(state[key]))
        # checkpoints written before min_delta existed: with min_delta 0 the two bests are the same
        self.stop_best = list(state.get("stop_best", self.best_val))


# --------------------------------------------------------------------------- the run

@dataclass
class StackedTrainResult:
    model: StackedTrainable  # per-member best-validation weights, eval mode, CPU
    out: Path
    info: dict = field(default_factory=dict)

    def member_potential(self, m: int, wall: WallParameters | None, density_per_nm3: float, priors=None,
                         topology=None, bead_types=None):
        """Member ``m`` alone as a ``TrainablePotential`` (its network + ``wall`` + the bonded
        ``priors`` on ``topology``, as in the run), eval mode."""
        from openmm_cgkd.training.model import TrainablePotential

        tp = TrainablePotential(self.model.network.config, wall, density_per_nm3, priors, topology, bead_types)
        tp.network.load_state_dict(self.model.network.member(m).state_dict())
        return tp.eval()


def member_epochs(info: dict, m: int) -> int | None:
    """Epochs member ``m`` trained in a stacked run whose ``result.json`` is ``info`` (up to its
    early stop; the run's epochs when it did not stop early)."""
    members = info.get("members") if isinstance(info.get("members"), list) else []
    member = members[m] if m < len(members) and isinstance(members[m], dict) else {}
    return member["stopped_epoch"] + 1 if member.get("stopped_epoch") is not None else info.get("epochs")


def _device(cfg: TrainerConfig) -> torch.device:
    acc = str(cfg.accelerator).lower()
    if acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator {cfg.accelerator!r} but no CUDA device is available")
        dev = cfg.devices
        index = dev[0] if isinstance(dev, (list, tuple)) and dev else 0
        return torch.device(f"cuda:{int(index)}")
    if acc not in ("cpu", "auto"):
        raise ConfigError(f"trainer.accelerator must be cpu, gpu or auto for stacked training, got {cfg.accelerator!r}")
    return torch.device("cpu")


def _check_trainer(cfg: TrainerConfig) -> None:
    if str(cfg.strategy) not in ("auto", "None", ""):
        raise ConfigError(f"stacked training runs its K members in one process; trainer.strategy must be 'auto', "
                          f"got {cfg.strategy!r}")
    if str(cfg.precision) not in ("32-true", "32", "64-true", "64"):
        raise ConfigError(f"stacked training supports precision 32-true or 64-true, got {cfg.precision!r}")
    if cfg.tensorboard:
        warnings.warn("stacked training writes CSV logs only (logs/member_KK.csv); trainer.tensorboard is ignored",
                      stacklevel=3)


def _epoch_losses(model: StackedTrainable, loader, bead_types: Tensor, weights, device,
                  optimizer: StackedAdam | None, clip: float | None, epoch: int, stage: str, bar=None):
    """One pass over ``loader``: per-member mean losses and terms (weighted by frames); trains when
    an optimiser is given."""
    k = model.num_members
    sums = torch.zeros(k, dtype=torch.float64)
    term_sums: dict[str, Tensor] = {}
    frames = 0
    for batch in loader:
        batch = {key: v.to(device) for key, v in batch.items()}
        if optimizer is None:
            with torch.no_grad():
                pred = model(bead_types, batch["positions"], batch["box"])
                losses, terms = member_losses(pred, batch, weights)
        else:
            pred = model(bead_types, batch["positions"], batch["box"])
            losses, terms = member_losses(pred, batch, weights)
        bad = [i for i in range(k) if not bool(torch.isfinite(losses[i]))]
        if bad:
            raise FloatingPointError(
                f"{stage} loss of member(s) {bad} is not finite in epoch {epoch}: the model produced NaN/inf "
                "(check the wall parameters, the learning rate and the data's force scale)")
        if optimizer is not None:
            optimizer.zero_grad()
            losses.sum().backward()  # the members' weights are disjoint: each gets its own loss's gradient
            if clip is not None:
                optimizer.clip_member_grad_norm(float(clip))
            optimizer.step()
        bs = int(batch["positions"].shape[0])
        sums += losses.detach().to(torch.float64).cpu() * bs
        for name, v in terms.items():
            term_sums[name] = term_sums.get(name, torch.zeros(k, dtype=torch.float64)) + v.to(torch.float64).cpu() * bs
        frames += bs
        if bar is not None:
            bar.update(1)
    return (sums / frames).tolist(), {name: (v / frames).tolist() for name, v in term_sums.items()}


_LOG_FIELDS = ["epoch", "train_loss", "val_loss", "lr", "stopped"]


def _write_logs(out: Path, k: int, epoch: int, train: list, val: list, lrs: list, stopped: list,
                train_terms: dict, val_terms: dict) -> None:
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    names = sorted(train_terms)
    fields = _LOG_FIELDS + [f"train_{n}" for n in names] + [f"val_{n}" for n in sorted(val_terms)]
    for m in range(k):
        path = logs / f"member_{m:02d}.csv"
        fresh = not path.is_file()
        with open(path, "a", newline="") as fh:
            w = csv.writer(fh)
            if fresh:
                w.writerow(fields)
            row = [epoch, train[m], val[m], lrs[m], int(stopped[m])]
            row += [train_terms[n][m] for n in names] + [val_terms[n][m] for n in sorted(val_terms)]
            w.writerow(row)


def _truncate_logs(out: Path, last_epoch: int) -> None:
    """Drop log rows of epochs after the checkpoint (a kill between log and checkpoint)."""
    for path in sorted((out / "logs").glob("member_*.csv")):
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            continue
        keep = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) <= last_epoch]
        if len(keep) != len(rows):
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
                csv.writer(fh).writerows(keep)


def train_stacked(dataset: CGDataset, blocks: dict[str, np.ndarray], potential_config: PotentialConfig,
                  wall: WallParameters | None, weights: LossWeights | Sequence[LossWeights], cfg: TrainerConfig,
                  out: str | Path, seeds: list[int], log=print,
                  member_labels: Sequence[CGDataset] | None = None, priors=None) -> StackedTrainResult:
    """Train ``len(seeds)`` stacked members (member k initialised from ``seeds[k]``) on
    ``blocks['train']``, validating each on ``blocks['val']``; resumable in ``out``. Returns the
    per-member best-validation weights (see the module docstring).

    Members learn the same targets (``weights`` one :class:`LossWeights`, labels of ``dataset``)
    or each its own: ``weights`` one per member and/or ``member_labels`` (one labelled dataset of
    the same frames per member: several students in one run). Members with the same seed must
    then differ in their targets. With the bonded ``priors``
    (:class:`~openmm_cgkd.model.priors.BondedPriors`, on the dataset's topology) every member's
    output is network + wall + priors, as in :func:`~openmm_cgkd.training.trainer.train_potential`.

    The run is keyed on a fingerprint (:func:`~openmm_cgkd.training.trainer.run_fingerprint` plus
    the member seeds and targets, in ``out/fingerprint.json``): a run made with other settings or
    data is deleted and trained again from scratch (``log`` gets a note), one with the same is
    resumed or reloaded."""
    from openmm_cgkd.training.data import FrameDataset, make_loader
    from openmm_cgkd.training.model import number_density
    from openmm_cgkd.training.trainer import run_fingerprint

    run = RunDir(out)
    out = run.out
    if not is_stacked_architecture(potential_config):
        raise ConfigError(f"architecture {potential_config.architecture!r} cannot be stacked; stacked training "
                          f"needs one of {list(STACKED_ARCHITECTURES)}")
    if len(blocks.get("val", [])) == 0:
        raise ConfigError("training needs a validation block (split.val > 0): it drives the learning-rate "
                          "schedules, early stopping and the choice of each member's best epoch")
    seeds = [int(s) for s in seeds]
    k = len(seeds)
    shared = isinstance(weights, LossWeights)
    member_weights = [weights] * k if shared else list(weights)
    if len(member_weights) != k or (member_labels is not None and len(member_labels) != k):
        raise ConfigError(f"{k} members need {k} loss weights and {k} labelled datasets (one each), got "
                          f"{len(member_weights)} and {'-' if member_labels is None else len(member_labels)}")
    from openmm_cgkd.fingerprint import cg_dataset_digest

    label_digests = None if member_labels is None else [cg_dataset_digest(d) for d in member_labels]
    targets = [(s, member_weights[m].as_dict(), None if label_digests is None else label_digests[m])
               for m, s in enumerate(seeds)]
    if not seeds or len({json.dumps(t, sort_keys=True) for t in targets}) != k:
        raise ConfigError(f"stacked training needs distinct member seeds (or, for members with the same seed, "
                          f"distinct targets), got seeds {seeds}")
    if member_labels is not None:
        for d in member_labels:
            if d.n_frames != dataset.n_frames or not np.array_equal(d.positions[blocks["train"][:1]],
                                                                   dataset.positions[blocks["train"][:1]]):
                raise ConfigError("each member's labelled dataset must hold the frames of the training dataset")
    _check_trainer(cfg)
    settings = {**run_fingerprint(dataset, blocks, potential_config, wall, member_weights[0], cfg, priors),
                "stacked_members": {"seeds": seeds}}
    if not shared:
        settings["stacked_members"]["loss_weights"] = [w.as_dict() for w in member_weights]
    if label_digests is not None:
        settings["stacked_members"]["labels"] = label_digests
    fingerprint, finished = run.claim(settings, log, resume_checkpoint=out / "checkpoints" / CHECKPOINT)
    if cfg.num_threads is not None:
        torch.set_num_threads(int(cfg.num_threads))
    device = _device(cfg)
    density = number_density(dataset.positions[blocks["train"]], dataset.boxes[blocks["train"]])
    model = StackedTrainable(potential_config, k, seeds, wall, density, priors, dataset.topology, dataset.bead_types)
    if str(cfg.precision).startswith("64"):
        model = model.double()
    model = model.to(device)
    bead_types = torch.from_numpy(dataset.bead_types.astype(np.int64)).to(device)
    ckpt_dir = out / "checkpoints"
    ckpt_path = ckpt_dir / CHECKPOINT
    if finished is not None and run.reload_finished(  # the same run finished earlier: its best weights
            ckpt_path, lambda path: model.load_state_dict(
                torch.load(path, map_location="cpu", weights_only=False)["best_state"]), model.load_state_dict, log):
        return StackedTrainResult(model.cpu().eval(), out, finished)

    if member_labels is not None:
        train = MemberLabelFrames(dataset, blocks["train"], member_labels)
        val = MemberLabelFrames(dataset, blocks["val"], member_labels)
    else:
        needs = any(w.needs_labels for w in member_weights)
        train = FrameDataset(dataset, blocks["train"], require_labels=needs)
        val = FrameDataset(dataset, blocks["val"], require_labels=needs)
    train_loader = make_loader(train, cfg.batch_size, shuffle=True, seed=cfg.seed, num_workers=cfg.num_workers)
    val_loader = make_loader(val, cfg.batch_size, shuffle=False, num_workers=cfg.num_workers)
    lr0 = torch.full((k,), float(cfg.lr), dtype=torch.float64)
    optimizer = StackedAdam(model.network.parameters(), lr0, weight_decay=cfg.weight_decay)
    schedule = _MemberSchedule(k, cfg)
    best_state = {name: t.detach().clone() for name, t in model.state_dict().items()}
    start_epoch, seconds = 0, 0.0
    if ckpt_path.is_file():  # same fingerprint (else run.claim removed it): resume
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        best_state = {name: t.to(device) for name, t in state["best_state"].items()}
        start_epoch, seconds = int(state["epoch"]) + 1, float(state["seconds"])
        _truncate_logs(out, int(state["epoch"]))
    elif (out / "logs").is_dir():  # a run killed before its first checkpoint
        for stale in (out / "logs").glob("member_*.csv"):
            stale.unlink()
    # the entries with a leading member axis: the learned weights and the per-member energy affine
    member_keys = [f"network.net.{name}" for name, _ in model.network.net.named_parameters()]
    member_keys += ["network.energy_scale", "network.energy_offset"]

    bar = None
    if cfg.progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(train_loader) + len(val_loader), unit="batch", dynamic_ncols=True)
    session_start = time.time()
    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, cfg.max_epochs):
            if all(schedule.stopped):
                epoch -= 1
                break
            if bar is not None:
                bar.reset()
                bar.set_description(f"stacked x{k} epoch {epoch}")
            train_loader.sampler.set_epoch(epoch)
            optimizer.lr = torch.tensor(schedule.lrs(), dtype=torch.float64)
            model.train()
            train_loss, train_terms = _epoch_losses(model, train_loader, bead_types, member_weights, device, optimizer,
                                                    cfg.gradient_clip_val, epoch, "train", bar)
            model.eval()
            val_loss, val_terms = _epoch_losses(model, val_loader, bead_types, member_weights, device, None, None, epoch,
                                                "val", bar)
            lrs_used = schedule.lrs()
            stopped_before = list(schedule.stopped)
            improved = schedule.update(epoch, val_loss)
            with torch.no_grad():
                current = model.state_dict()
                for m, better in enumerate(improved):
                    if better:
                        for name in member_keys:
                            best_state[name][m].copy_(current[name][m])
            if bar is not None:
                bar.set_postfix_str("val " + " ".join(f"{v:.3g}" for v in val_loss))
            _write_logs(out, k, epoch, train_loss, val_loss, lrs_used, stopped_before, train_terms, val_terms)
            run.save_checkpoint({"epoch": epoch, "num_members": k, "seeds": seeds, "model": model.state_dict(),
                          "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                          "best_state": best_state, "seconds": seconds + time.time() - session_start},
                         ckpt_path)
    finally:
        if bar is not None:
            bar.close()
    model.load_state_dict(best_state)
    info = {
        "num_members": k, "seeds": seeds, "epochs": int(epoch + 1),
        "members": [{"member": m, "seed": seeds[m], "best_val_loss": schedule.best_val[m],
                     "best_epoch": schedule.best_epoch[m], "stopped_early": schedule.stopped[m],
                     "stopped_epoch": schedule.stopped_epoch[m] if schedule.stopped[m] else None}
                    for m in range(k)],
        "seconds_total": round(seconds + time.time() - session_start, 2), "trainer_seed": cfg.seed,
        "checkpoint": os.path.join("checkpoints", CHECKPOINT),
        "metrics_csv": [os.path.join("logs", f"member_{m:02d}.csv") for m in range(k)],
        **block_ranges(blocks), "fingerprint": fingerprint,
    }
    return StackedTrainResult(model.cpu().eval(), out, run.finish(model.state_dict(), info))


def train_single(dataset: CGDataset, blocks: dict[str, np.ndarray], potential_config: PotentialConfig,
                 wall: WallParameters | None, weights: LossWeights, cfg: TrainerConfig, out: str | Path,
                 log=print, priors=None):
    """One network of a stacked architecture trained as a one-member stacked run (seed
    ``cfg.seed``): the fast training path of :func:`~openmm_cgkd.model.stacked.training_forward`
    instead of autograd through the pairs. Returns a :class:`~openmm_cgkd.training.trainer.TrainResult`
    like :func:`~openmm_cgkd.training.trainer.train_potential`'s: the best-validation network in a
    ``TrainablePotential`` (with the wall and the bonded ``priors``, which it trains with) and ``info`` with ``best_val_loss``, ``best_epoch``,
    ``epochs``, ``stopped_early``, ``metrics_csv`` (the run's ``logs/member_00.csv``) and the
    stacked run's own ``result.json`` fields. Resumable in ``out`` like :func:`train_stacked`."""
    from openmm_cgkd.training.model import number_density
    from openmm_cgkd.training.trainer import TrainResult

    res = train_stacked(dataset, blocks, potential_config, wall, weights, cfg, out, [int(cfg.seed)], log=log,
                        priors=priors)
    member = res.info["members"][0]
    density = number_density(dataset.positions[blocks["train"]], dataset.boxes[blocks["train"]])
    info = {**res.info, "best_val_loss": member["best_val_loss"], "best_epoch": member["best_epoch"],
            "stopped_early": member["stopped_early"], "metrics_csv": res.info["metrics_csv"][0], "trainer": "stacked"}
    return TrainResult(res.member_potential(0, wall, density, priors, dataset.topology, dataset.bead_types),
                       Path(out), info)


# --------------------------------------------------------------------------- predictions

@torch.no_grad()
def predict_members(model: StackedTrainable, dataset: CGDataset, indices, batch_size: int = 8) -> list[dict]:
    """Per-member predictions (network + wall + priors) on frames ``indices``: a list of K dicts with
    ``energy (F,)``, ``bead_energies (F,N)``, ``forces (F,N,3)`` (float64 numpy; kJ/mol, kJ/mol/nm)."""
    device = next(model.parameters()).device
    types = torch.from_numpy(dataset.bead_types.astype(np.int64)).to(device)
    indices = np.asarray(indices)
    chunks: dict[str, list] = {"energy": [], "bead_energies": [], "forces": []}
    for start in range(0, len(indices), batch_size):
        idx = indices[start:start + batch_size]
        out = model(types, torch.from_numpy(dataset.positions[idx]).to(device),
                    torch.from_numpy(dataset.boxes[idx]).to(device))
        for key in chunks:
            chunks[key].append(out[key].detach().cpu().double().numpy())
    joined = {key: np.concatenate(v, axis=1) for key, v in chunks.items()}
    return [{key: joined[key][m] for key in joined} for m in range(model.num_members)]
