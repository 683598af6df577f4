"""Ensemble of K CG potentials in one TorchScript-able module, sharing one neighbour list.

``EnsemblePotential(members).forward(bead_types, positions, box)`` returns
``(energy [], bead_energies [N], forces [N,3], force_std [N,3])``: the member means of energy,
per-bead energies and forces, and the member standard deviation of the forces, per component.
The std is the **population** std (divide by K, not K-1), so a one-member ensemble has std 0.
``forward_members`` returns the K members' outputs stacked (``[K]``, ``[K,N]``, ``[K,N,3]``).

Shared work: the pair list is computed once (members must agree on architecture and cutoff);
the members' networks then run one after the other on it, each followed by its own backward
pass, so peak memory stays that of one member.
"""
from typing import List, Sequence, Tuple, Optional

import torch
from torch import Tensor, nn

from openmm_cgkd.model.potential import CGPotential, NeighborList, _model_box, check_inputs

__all__ = ["EnsemblePotential"]


class EnsemblePotential(nn.Module):
    """K :class:`CGPotential` members (same architecture, cutoff and bead types), one module.

    Attributes: ``create_graph`` (False) as for :class:`CGPotential`; ``check_errors`` (True)
    via :meth:`set_check_errors`; ``num_members``, ``cutoff_nm``, ``num_types``.
    """

    __jit_unused_properties__ = ["config"]
    create_graph: bool
    check_errors: bool
    cutoff_nm: float
    num_types: int
    num_members: int
    max_num_neighbors: int
    architecture: str

    def __init__(self, members: Sequence[CGPotential]):
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        first = members[0]
        for k, m in enumerate(members):
            if not isinstance(m, CGPotential):
                raise TypeError(f"ensemble member {k} is a {type(m).__name__}, not a CGPotential")
            for attr in ("architecture", "cutoff_nm", "num_types"):
                if getattr(m, attr) != getattr(first, attr):
                    raise ValueError(f"ensemble members disagree on {attr}: member 0 has "
                                     f"{getattr(first, attr)!r}, member {k} has {getattr(m, attr)!r}")
            if m.model_dtype() != first.model_dtype():
                raise ValueError(f"ensemble members disagree on dtype: {first.model_dtype()} vs {m.model_dtype()}")
            if m.neighbors.static_shapes != first.neighbors.static_shapes or \
                    m.neighbors.cutoff_lower != first.neighbors.cutoff_lower:
                raise ValueError(f"ensemble member {k} builds its pair list differently from member 0")
        self.members = nn.ModuleList(members)
        self.create_graph = False
        self.check_errors = True
        self.cutoff_nm = first.cutoff_nm
        self.num_types = first.num_types
        self.num_members = len(members)
        self.max_num_neighbors = max(m.max_num_neighbors for m in members)
        self.architecture = first.architecture
        nl = first.neighbors
        self.neighbors = NeighborList(nl.cutoff_upper, self.max_num_neighbors, loop=nl.loop,
                                      cutoff_lower_nm=nl.cutoff_lower, static_shapes=nl.static_shapes)
        self.register_buffer("_dtype_probe", torch.zeros(0, dtype=first.model_dtype()))

    @property
    def config(self):
        """The members' (shared) :class:`~openmm_cgkd.model.potential.PotentialConfig` (member 0's)."""
        return self.members[0].config

    @torch.jit.export
    def set_check_errors(self, value: bool) -> None:
        """Switch the input / overflow checks (also on a scripted or loaded module)."""
        self.check_errors = value
        self.neighbors.check_errors = value
        for m in self.members:
            m.set_check_errors(value)

    @torch.jit.export
    def model_dtype(self) -> torch.dtype:
        return self._dtype_probe.dtype

    @torch.jit.export
    def forward_members(self, bead_types: Tensor, positions: Tensor,
                        box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Per-member ``(energies [K], bead_energies [K,N], forces [K,N,3])`` in the model dtype."""
        check_inputs(bead_types, positions, box, self.num_types, self.check_errors)
        dtype = self._dtype_probe.dtype
        pos0 = positions.detach().to(dtype)
        box_m = _model_box(box, dtype, pos0.device, self.neighbors.static_shapes)
        grad_was_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(True)
        edge_index, cell_shifts = self.neighbors(pos0, box_m)
        # member by member: each backward pass frees that member's graph before the next member
        # runs, so peak memory is one member's (a single backward over all K graphs does the same
        # arithmetic but holds K graphs at once)
        bead_energies: List[Tensor] = []
        forces: List[Tensor] = []
        for member in self.members:
            # clone, not detach: torch.jit.freeze (which openmm-torch applies) drops detach(), and the
            # members' identical pair-geometry ops on one shared tensor are then merged, so the second
            # member's backward pass meets the first one's freed graph
            pos = pos0.clone().requires_grad_(True)
            e = member.bead_energies_from_edges(bead_types, pos, edge_index, cell_shifts, box_m)
            grads = torch.autograd.grad([e.sum()], [pos], create_graph=self.create_graph)
            grad = grads[0]
            forces.append(torch.zeros_like(pos) if grad is None else -grad)
            bead_energies.append(e if self.create_graph else e.detach())
        torch.set_grad_enabled(grad_was_enabled)
        bead_e = torch.stack(bead_energies)  # [K, N]
        energies = bead_e.sum(dim=1)  # [K]
        forces_k = torch.stack(forces)  # [K, N, 3]
        if not self.create_graph:
            energies = energies.detach()
            bead_e = bead_e.detach()
        return energies, bead_e, forces_k

    def forward(self, bead_types: Tensor, positions: Tensor,
                box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        energies, bead_e, forces = self.forward_members(bead_types, positions, box)
        energy = energies.mean(dim=0)
        bead_mean = bead_e.mean(dim=0)
        force_mean = forces.mean(dim=0)
        force_std = torch.sqrt(((forces - force_mean.unsqueeze(0)) ** 2).mean(dim=0))
        in_dtype = positions.dtype
        if in_dtype != energy.dtype and (in_dtype == torch.float32 or in_dtype == torch.float64):
            return energy.to(in_dtype), bead_mean.to(in_dtype), force_mean.to(in_dtype), force_std.to(in_dtype)
        return energy, bead_mean, force_mean, force_std
