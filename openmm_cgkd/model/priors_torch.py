"""Torch evaluation of the bonded priors (:class:`~openmm_cgkd.model.priors.BondedPriors`) of one
system: its bonds, angles and dihedrals (:class:`~openmm_cgkd.cgtopology.CGTopology`) with
their parameters looked up by bead types, as index and parameter buffers.

``PriorPotential.bead_energies(positions [B,N,3], boxes [B,3,3] or None) -> [B,N]`` (kJ/mol; each
term's energy split equally between its beads) is differentiable: training adds it to the
network's bead energies before taking forces, so the network learns what the priors leave.
``forward(bead_types, positions [N,3], box)`` returns ``(energy, bead_energies, forces)`` like
:class:`~openmm_cgkd.model.wall_torch.WallPotential` (labels, tests). Bond vectors are taken at
the minimum image (bonds shorter than half the box); an all-zero box means no periodic box.
"""
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from openmm_cgkd.model.priors import BondedPriors

__all__ = ["PriorPotential"]


def _min_image(d: Tensor, boxes: Optional[Tensor]) -> Tensor:
    """Bond vectors d [B,M,3] at the minimum image of boxes [B,3,3] (rows = vectors)."""
    if boxes is None:
        return d
    inv = torch.linalg.inv(boxes)
    s = d @ inv
    return (s - torch.round(s)) @ boxes


class PriorPotential(nn.Module):
    """Bonded priors of one system (the topology's bonds, angles, dihedrals) in torch."""

    def __init__(self, priors: BondedPriors, topology, bead_types: np.ndarray, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.priors = priors  # python-side only
        types = np.asarray(bead_types, np.int64)
        self.n_beads = int(len(types))
        bonds = topology.bonds if priors.bonds else np.zeros((0, 2), np.int64)
        angles = topology.angles if priors.angles else np.zeros((0, 3), np.int64)
        bp = priors.bond_parameters(bonds, types)
        ap = priors.angle_parameters(angles, types)
        dt = priors.dihedral_terms(topology.dihedrals, types)
        self.register_buffer("bond_index", torch.as_tensor(bonds, dtype=torch.long).reshape(-1, 2))
        self.register_buffer("bond_r0", torch.as_tensor(bp[:, 0], dtype=dtype))
        self.register_buffer("bond_k", torch.as_tensor(bp[:, 1], dtype=dtype))
        self.register_buffer("angle_index", torch.as_tensor(angles, dtype=torch.long).reshape(-1, 3))
        self.register_buffer("angle_theta0", torch.as_tensor(ap[:, 0], dtype=dtype))
        self.register_buffer("angle_k", torch.as_tensor(ap[:, 1], dtype=dtype))
        self.register_buffer("dihedral_index", torch.as_tensor(dt[:, :4], dtype=torch.long).reshape(-1, 4))
        self.register_buffer("dihedral_n", torch.as_tensor(dt[:, 4], dtype=dtype))
        self.register_buffer("dihedral_k", torch.as_tensor(dt[:, 5], dtype=dtype))
        self.register_buffer("dihedral_delta", torch.as_tensor(dt[:, 6], dtype=dtype))

    @property
    def is_empty(self) -> bool:
        return len(self.bond_index) + len(self.angle_index) + len(self.dihedral_index) == 0

    def bead_energies(self, positions: Tensor, boxes: Optional[Tensor] = None) -> Tensor:
        """Per-bead prior energies [B, N] (kJ/mol) of frames ``positions`` [B, N, 3] (nm)."""
        x = positions
        if boxes is not None and not bool(torch.any(boxes != 0)):
            boxes = None
        if boxes is not None:
            boxes = boxes.to(x.dtype)
        out = torch.zeros(x.shape[0], x.shape[1], dtype=x.dtype, device=x.device)
        if len(self.bond_index):
            i, j = self.bond_index[:, 0], self.bond_index[:, 1]
            r = torch.linalg.norm(_min_image(x[:, j] - x[:, i], boxes), dim=-1)
            e = 0.5 * self.bond_k.to(x.dtype) * (r - self.bond_r0.to(x.dtype)) ** 2
            out = out.index_add(1, i, 0.5 * e).index_add(1, j, 0.5 * e)
        if len(self.angle_index):
            i, j, k = self.angle_index[:, 0], self.angle_index[:, 1], self.angle_index[:, 2]
            u = _min_image(x[:, i] - x[:, j], boxes)
            v = _min_image(x[:, k] - x[:, j], boxes)
            # atan2(|u x v|, u.v): smooth and finite at 0 and pi, unlike arccos
            theta = torch.atan2(torch.linalg.norm(torch.cross(u, v, dim=-1), dim=-1), (u * v).sum(-1))
            e = 0.5 * self.angle_k.to(x.dtype) * (theta - self.angle_theta0.to(x.dtype)) ** 2
            third = e / 3.0
            out = out.index_add(1, i, third).index_add(1, j, third).index_add(1, k, third)
        if len(self.dihedral_index):
            q = self.dihedral_index
            b1 = _min_image(x[:, q[:, 1]] - x[:, q[:, 0]], boxes)
            b2 = _min_image(x[:, q[:, 2]] - x[:, q[:, 1]], boxes)
            b3 = _min_image(x[:, q[:, 3]] - x[:, q[:, 2]], boxes)
            n1 = torch.cross(b1, b2, dim=-1)
            n2 = torch.cross(b2, b3, dim=-1)
            b2hat = b2 / torch.linalg.norm(b2, dim=-1, keepdim=True)
            phi = torch.atan2((b2hat * torch.cross(n1, n2, dim=-1)).sum(-1), (n1 * n2).sum(-1))
            e = self.dihedral_k.to(x.dtype) * (1.0 + torch.cos(self.dihedral_n.to(x.dtype) * phi
                                                               - self.dihedral_delta.to(x.dtype)))
            quarter = 0.25 * e
            for c in range(4):
                out = out.index_add(1, q[:, c], quarter)
        return out

    def forward(self, bead_types: Tensor, positions: Tensor,
                box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """(energy kJ/mol, bead energies [N], forces [N,3] kJ/mol/nm) of one frame."""
        with torch.enable_grad():
            pos = positions.detach().to(self.bond_r0.dtype).requires_grad_(True)
            boxes = None if box is None else box.detach().to(pos.dtype).unsqueeze(0)
            bead = self.bead_energies(pos.unsqueeze(0), boxes)[0]
            energy = bead.sum()
            if pos.requires_grad and energy.requires_grad:
                (grad,) = torch.autograd.grad(energy, pos)
            else:
                grad = torch.zeros_like(pos)
        dt = positions.dtype
        return energy.detach().to(dt), bead.detach().to(dt), (-grad).to(dt)
