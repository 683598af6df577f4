"""Torch evaluation of the repulsive wall (:class:`~openmm_cgkd.model.wall.WallParameters`).

``WallPotential(params).forward(bead_types, positions, box)`` returns ``(energy, bead_energies,
forces)`` like :class:`~openmm_cgkd.model.potential.CGPotential` (kJ/mol, kJ/mol/nm; positions
and box in nm; ``box=None`` for no periodic boundaries). Each pair closer than the wall cutoff
(minimum image) contributes ``A_ij (exp(-a_ij r) - exp(-a_ij rc))``, exactly
``WallParameters.pair_energy``; half of it goes to each bead's energy. Bonded pairs
(:meth:`WallPotential.set_exclusions`: the 1-2 and 1-3 pairs of molecules, left to the bonded
priors) contribute nothing.

:class:`PotentialWithWall` sums a network and the wall: the total that training fits.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from openmm_cgkd.model.potential import NeighborList, _model_box, edge_geometry
from openmm_cgkd.model.wall import WallParameters

__all__ = ["WallPotential", "PotentialWithWall", "suggest_wall_max_num_neighbors"]


def suggest_wall_max_num_neighbors(number_density_per_nm3: float, cutoff_nm: float, safety: float = 3.0) -> int:
    """Pair budget per bead for the wall's (half) pair list; generous since the cutoff is short."""
    from openmm_cgkd.model.potential import suggest_max_num_neighbors

    return suggest_max_num_neighbors(number_density_per_nm3, cutoff_nm, safety=safety)


class WallPotential(nn.Module):
    """Repulsive wall from :class:`WallParameters` (buffers ``log_prefactor``, ``decay`` [T,T]).

    The prefactor A = s p e^{a t} / a overflows float32 for taper points t beyond ~0.44 nm
    (a ~ 200 /nm), so the pair energy is evaluated as ``exp(ln A - a r) - exp(ln A - a rc)``
    with ln A computed in float64; A = 0 (no wall for a pair) gives ln A = -inf and energy 0.
    """

    create_graph: bool
    cutoff_nm: float
    num_types: int
    exclusion_n: int

    def __init__(self, params: WallParameters, max_num_neighbors: int = 32, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.params = params  # python-side only
        self.create_graph = False
        self.cutoff_nm = float(params.cutoff_nm)
        self.num_types = params.n_types
        with torch.no_grad():
            log_a = torch.log(torch.as_tensor(params.prefactor_kj_mol, dtype=torch.float64))
        self.register_buffer("log_prefactor", log_a.to(dtype))
        self.register_buffer("decay", torch.as_tensor(params.decay_per_nm, dtype=dtype).clone())
        # directed pairs, so the budget counts both i->j and j->i
        self.neighbors = NeighborList(self.cutoff_nm, max_num_neighbors, loop=False)
        self.exclusion_n = 0
        self.register_buffer("excluded_keys", torch.zeros(0, dtype=torch.long), persistent=False)

    def set_exclusions(self, pairs, n_beads: int) -> None:
        """Leave out the bead pairs ``pairs`` [P, 2] of a system of ``n_beads`` beads (bead indices
        within one frame; batched frames of that system are handled by index modulo ``n_beads``)."""
        import numpy as np

        p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        keys = np.unique(np.minimum(p[:, 0], p[:, 1]) * int(n_beads) + np.maximum(p[:, 0], p[:, 1]))
        self.exclusion_n = int(n_beads) if len(keys) else 0
        self.excluded_keys = torch.as_tensor(keys, dtype=torch.long, device=self.decay.device)

    @torch.jit.export
    def set_check_errors(self, value: bool) -> None:
        self.neighbors.check_errors = value

    @torch.jit.export
    def bead_energies_from_edges(self, bead_types: Tensor, positions: Tensor, edge_index: Tensor,
                                 cell_shifts: Tensor, box: Optional[Tensor]) -> Tensor:
        """Per-bead wall energies [N] on a directed pair list (each unordered pair twice)."""
        dist, _ = edge_geometry(positions, edge_index, cell_shifts, box)
        z = bead_types.to(torch.long)
        valid = (edge_index[0] >= 0) & (edge_index[0] != edge_index[1]) & (dist < self.cutoff_nm)
        safe = edge_index.clamp(min=0)
        if self.exclusion_n > 0:
            a = safe[0] % self.exclusion_n
            b = safe[1] % self.exclusion_n
            keys = torch.minimum(a, b) * self.exclusion_n + torch.maximum(a, b)
            valid = valid & ~torch.isin(keys, self.excluded_keys)
        ti = z.index_select(0, safe[0])
        tj = z.index_select(0, safe[1])
        a = self.decay[ti, tj]
        log_amp = self.log_prefactor[ti, tj]
        pair = torch.exp(log_amp - a * dist) - torch.exp(log_amp - a * self.cutoff_nm)
        pair = torch.where(valid, pair, torch.zeros_like(pair))
        # each unordered pair appears twice (i->j, j->i): half of each goes to its first bead
        out = torch.zeros(positions.shape[0], dtype=positions.dtype, device=positions.device)
        return out.index_add(0, safe[0], 0.5 * pair)

    def forward(self, bead_types: Tensor, positions: Tensor,
                box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        dtype = self.log_prefactor.dtype
        in_dtype = positions.dtype
        pos = positions.detach().to(dtype).requires_grad_(True)
        box_m = _model_box(box, dtype, pos.device, False)
        grad_was_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(True)
        edge_index, cell_shifts = self.neighbors(pos, box_m)
        bead_energies = self.bead_energies_from_edges(bead_types, pos, edge_index, cell_shifts, box_m)
        energy = bead_energies.sum()
        grads = torch.autograd.grad([energy], [pos], create_graph=self.create_graph, allow_unused=True)
        torch.set_grad_enabled(grad_was_enabled)
        grad = grads[0]
        forces = torch.zeros_like(pos) if grad is None else -grad
        if not self.create_graph:
            # the graph was freed by autograd.grad: hand back plain tensors
            energy = energy.detach()
            bead_energies = bead_energies.detach()
        if in_dtype != dtype and (in_dtype == torch.float32 or in_dtype == torch.float64):
            return energy.to(in_dtype), bead_energies.to(in_dtype), forces.to(in_dtype)
        return energy, bead_energies, forces


class PotentialWithWall(nn.Module):
    """``network + wall``: same forward signature, outputs are the sums of both terms.

    ``create_graph`` is forwarded to both terms (set it with :meth:`set_create_graph`).
    """

    def __init__(self, network: nn.Module, wall: WallPotential):
        super().__init__()
        self.network = network
        self.wall = wall

    def set_create_graph(self, value: bool) -> None:
        self.network.create_graph = bool(value)
        self.wall.create_graph = bool(value)

    def forward(self, bead_types: Tensor, positions: Tensor,
                box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        e1, b1, f1 = self.network(bead_types, positions, box)
        e2, b2, f2 = self.wall(bead_types, positions, box)
        return e1 + e2.to(e1.dtype), b1 + b2.to(b1.dtype), f1 + f2.to(f1.dtype)
