"""The network force: the ONE place that chooses how OpenMM evaluates a CG network.

Today the backend is openmm-torch's ``TorchForce`` (C++, runs a TorchScript module in the
simulation's process, positions and box passed every step). openmm-torch upstream has begun
deprecating ``TorchForce`` in favour of a Python-side force; when that lands, only
:func:`make_network_force` changes.

The module given to ``TorchForce`` is :class:`TorchForceModule`: it holds the bead type indices
of the system (a buffer), wraps positions into the periodic box in the precision OpenMM hands
over (float64 on CPU/Reference; wrapping first keeps float32 accurate however far beads have
diffused), casts them to the network's dtype (float32) and returns the energy and the forces
the network computes (``setOutputsForces(True)``). openmm-torch runs a ``torch.jit.freeze``'d
copy of this module (freezing drops ``detach()`` calls: the network code must not rely on them).

The network uses torchmd-net's custom operators (neighbour lists). They must be registered in
the process before a ``TorchForce`` is built or a serialized ``System`` holding one is
deserialized: ``import torchmdnet`` first (:func:`make_network_force` and ``CGKDForceField`` do it
for you; a script that only deserializes a System XML must do it itself).
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Optional, Tuple

import torch

__all__ = ["TorchForceModule", "make_network_force", "NETWORK_FORCE_NAME"]

NETWORK_FORCE_NAME = "cgkd_network"


def _network_dtype(model: torch.nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


class TorchForceModule(torch.nn.Module):
    """``forward(positions [N,3] nm, boxvectors [3,3] nm) -> (energy kJ/mol, forces [N,3] kJ/mol/nm)``.

    ``model`` has the CG potential signature ``model(bead_types, positions, box) ->
    (energy, bead_energies, forces[, force_std])`` and excludes the wall. For a non-periodic system
    (``periodic=False``) the model receives ``box=None``.
    """

    def __init__(self, model: torch.nn.Module, bead_types: Sequence[int], periodic: bool = True,
                 dtype: torch.dtype | None = None):
        super().__init__()
        self.model = model
        self.register_buffer("bead_types", torch.as_tensor(list(bead_types), dtype=torch.long))
        self.periodic = bool(periodic)
        self.dtype = dtype if dtype is not None else _network_dtype(model)

    def forward(self, positions: torch.Tensor, boxvectors: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        box: Optional[torch.Tensor] = None
        pos = positions
        if self.periodic:
            if boxvectors is None:
                raise RuntimeError("cgkd: periodic network force called without box vectors")
            b = boxvectors.to(positions.dtype)
            # Wrap into the reduced (OpenMM) triclinic box, c then b then a, in the input precision.
            pos = pos - torch.outer(torch.floor(pos[:, 2] / b[2, 2]), b[2])
            pos = pos - torch.outer(torch.floor(pos[:, 1] / b[1, 1]), b[1])
            pos = pos - torch.outer(torch.floor(pos[:, 0] / b[0, 0]), b[0])
            box = b.to(self.dtype)
        out = self.model(self.bead_types, pos.to(self.dtype), box)  # an ensemble adds force_std
        return out[0], out[2]


def make_network_force(model: torch.nn.Module, bead_types: Sequence[int], *, periodic: bool = True,
                       properties: Mapping[str, str] | None = None, force_group: int = 0):
    """An OpenMM ``Force`` evaluating ``model`` (the network, no wall) on beads of ``bead_types``.

    ``properties`` go to the backend (openmm-torch: e.g. ``{"useCUDAGraphs": "true"}``).
    The force is named ``cgkd_network``.
    """
    from openmmtorch import TorchForce

    from openmm_cgkd.model.potential import import_torchmdnet

    import_torchmdnet()  # registers the custom operators the scripted network calls

    properties = {str(k): str(v) for k, v in (properties or {}).items()}
    if properties.get("useCUDAGraphs", "false").lower() == "true" and hasattr(model, "set_check_errors"):
        # a captured CUDA graph cannot read values back to the host: the model's clear-error checks
        # (which do) give way to asynchronous device asserts, on a copy of the caller's module
        model = copy.deepcopy(model)
        model.set_check_errors(False)
    wrapper = TorchForceModule(model, bead_types, periodic=periodic)
    scripted = torch.jit.script(wrapper)
    force = TorchForce(scripted, properties)
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    force.setOutputsForces(True)
    force.setName(NETWORK_FORCE_NAME)
    force.setForceGroup(int(force_group))
    return force
