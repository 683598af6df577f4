"""The distillation loss (docs/METHOD.md sections 2.3 and 2.5).

Err(a, b) = RMSE(a, b) + MAE(a, b) over all elements, and::

    L = w_aa Err(F, F_AA) + w_ft Err(F, F_T) + w_e Err(e, e_T) + w_E Err(E/N, E_T/N)

with F the predicted forces (kJ/mol/nm), e the per-bead energies (kJ/mol), E their sum and N
the number of beads. Teachers use w_aa = 1 and nothing else.

Frames without AA forces (student MD frames labelled by the ensemble, :mod:`openmm_cgkd.training.refine`)
carry ``has_aa_forces = False`` in the batch: the F_AA term is taken over the frames that have AA
forces only, and a batch without any leaves it out (it adds nothing and is not logged for that
batch); the label terms use every frame. Their stored ``forces`` (zeros) are never read.
"""
from __future__ import annotations

import torch

from openmm_cgkd.training.config import LossWeights

__all__ = ["err", "distillation_loss"]


def err(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """RMSE + MAE over all elements."""
    d = pred - target
    return torch.sqrt(torch.mean(d * d)) + torch.mean(torch.abs(d))


def loss_terms(weights: LossWeights, batch: dict[str, torch.Tensor], n_beads: int):
    """The terms of the distillation loss present in ``batch``: (weight, term name, prediction key,
    batch key, scale) each; the total energy is compared per bead (scale 1/N). A term with a
    positive weight whose labels are missing is an error."""
    spec = (("w_aa", "err_f_aa", "forces", "forces", 1.0),
            ("w_ft", "err_f_t", "forces", "label_forces", 1.0),
            ("w_e", "err_e_t", "bead_energies", "label_bead_energies", 1.0),
            ("w_E", "err_E_t", "energy", "label_energy", 1.0 / n_beads))
    for wname, tname, pkey, bkey, scale in spec:
        w = getattr(weights, wname)
        if bkey not in batch:
            if w > 0:
                raise KeyError(f"loss weight {wname} > 0 needs '{bkey}' in the batch (distillation labels)")
            continue
        yield w, tname, pkey, bkey, scale


def distillation_loss(pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                      weights: LossWeights) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted loss of a batch and its terms (each term unweighted, detached).

    ``pred`` holds ``forces`` (B, N, 3), ``bead_energies`` (B, N) and ``energy`` (B,);
    ``batch`` holds ``forces`` (F_AA) and, for the label terms, ``label_forces``,
    ``label_bead_energies`` and ``label_energy``; optionally ``has_aa_forces`` (B,) bool: which
    frames have AA forces (see the module docstring).
    """
    terms: dict[str, torch.Tensor] = {}
    total = pred["forces"].new_zeros(())
    n_beads = pred["forces"].shape[1]
    has_aa = batch.get("has_aa_forces")
    partial = has_aa is not None and not bool(has_aa.all())
    for w, tname, pkey, bkey, scale in loss_terms(weights, batch, n_beads):
        p, t = pred[pkey], batch[bkey]
        if bkey == "forces" and partial:
            if not bool(has_aa.any()):
                continue  # no frame of this batch has AA forces: no F_AA term
            p, t = p[has_aa], t[has_aa]
        term = err(p * scale, t * scale)
        terms[tname] = term.detach()
        if w > 0:
            total = total + w * term
    return total, terms
