"""Training must stop with a clear error on a non-finite loss, never write NaN models."""
import numpy as np
import pytest
import torch

from openmm_cgkd.training.config import LossWeights, TrainerConfig
from openmm_cgkd.training.lightning_module import CGKDModule


class _NaNModel(torch.nn.Module):
    def forward(self, bead_types, positions, box, create_graph=False):
        f, n = positions.shape[0], positions.shape[1]
        nan = torch.full((f, n, 3), float("nan"))
        return {"forces": nan, "bead_energies": torch.zeros(f, n), "energy": torch.zeros(f)}


def test_nonfinite_loss_raises_naming_the_terms():
    module = CGKDModule(_NaNModel(), torch.zeros(4, dtype=torch.long), LossWeights(w_aa=1.0), TrainerConfig())
    batch = {"positions": torch.rand(2, 4, 3), "box": torch.eye(3).repeat(2, 1, 1) * 2.0,
             "forces": torch.zeros(2, 4, 3)}
    with pytest.raises(FloatingPointError, match="not finite"):
        module._step(batch, "train")
