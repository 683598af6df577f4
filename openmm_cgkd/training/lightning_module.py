"""The Lightning module of every training run (teachers and students alike).

One :class:`CGKDModule` wraps a :class:`TrainablePotential` and the loss weights. It logs
``train_loss``, ``val_loss``, each loss term (``train_err_f_aa``, ``val_err_e_t`` ...) and
``lr`` per epoch.

The learning-rate schedule (ReduceLROnPlateau on the validation loss) is stepped here, in
``on_validation_epoch_end``, and saved in the checkpoint by this module, not by Lightning:
Lightning steps plateau schedulers only after the epoch's checkpoint is written, so a run
resumed from that checkpoint would miss one step and drift from an uninterrupted run.
"""
from __future__ import annotations

import lightning.pytorch as pl
import torch

from openmm_cgkd.training.config import LossWeights, TrainerConfig
from openmm_cgkd.training.loss import distillation_loss
from openmm_cgkd.training.model import TrainablePotential

__all__ = ["CGKDModule"]


class CGKDModule(pl.LightningModule):
    def __init__(self, model: TrainablePotential, bead_types: torch.Tensor, weights: LossWeights,
                 trainer_config: TrainerConfig):
        super().__init__()
        self.model = model
        self.register_buffer("bead_types", bead_types.to(torch.long).clone(), persistent=False)
        self.weights = weights
        self.cfg = trainer_config
        self.scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._pending_scheduler_state: dict | None = None
        self._val_sum = 0.0
        self._val_count = 0

    def forward(self, batch: dict[str, torch.Tensor], create_graph: bool = False) -> dict[str, torch.Tensor]:
        return self.model(self.bead_types, batch["positions"], batch["box"], create_graph=create_graph)

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> tuple[torch.Tensor, int]:
        pred = self(batch, create_graph=stage == "train")
        loss, terms = distillation_loss(pred, batch, self.weights)
        if not bool(torch.isfinite(loss)):
            bad = sorted(k for k, v in terms.items() if not bool(torch.isfinite(v)))
            raise FloatingPointError(
                f"{stage} loss is not finite (terms {bad}) in epoch {self.current_epoch}: the model "
                "produced NaN/inf (check the wall parameters, the learning rate and the data's force scale)")
        bs = batch["positions"].shape[0]
        self.log(f"{stage}_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=bs,
                 prog_bar=True, sync_dist=True)
        for name, value in terms.items():
            self.log(f"{stage}_{name}", value, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        return loss, bs

    def training_step(self, batch, batch_idx):
        loss, _ = self._step(batch, "train")
        return loss

    def validation_step(self, batch, batch_idx):
        with torch.enable_grad():  # forces are gradients, also in validation
            loss, bs = self._step(batch, "val")
        self._val_sum += float(loss.detach()) * bs
        self._val_count += bs

    def on_validation_epoch_start(self) -> None:
        self._val_sum, self._val_count = 0.0, 0

    def on_validation_epoch_end(self) -> None:
        totals = torch.tensor([self._val_sum, float(self._val_count)], dtype=torch.float64, device=self.device)
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        if self.trainer.sanity_checking or totals[1] == 0 or self.scheduler is None:
            return
        self.scheduler.step(float(totals[0] / totals[1]))
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_epoch=True, sync_dist=False)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=self.cfg.lr_factor, patience=self.cfg.lr_patience, min_lr=self.cfg.lr_min)
        if self._pending_scheduler_state is not None:
            self.scheduler.load_state_dict(self._pending_scheduler_state)
            self._pending_scheduler_state = None
        return opt

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.scheduler is not None:
            checkpoint["cgkd_lr_scheduler"] = self.scheduler.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Lightning restores the module before configure_optimizers runs: keep it until then.
        self._pending_scheduler_state = checkpoint.get("cgkd_lr_scheduler")
        if self.scheduler is not None and self._pending_scheduler_state is not None:
            self.scheduler.load_state_dict(self._pending_scheduler_state)
            self._pending_scheduler_state = None
