"""HIP-NN-TS with stacked members: K networks evaluated as one (TorchScript-able).

The architecture is HIP-NN with tensor sensitivities of order 2 (Chigaev et al., J. Chem. Phys.
158, 184108 (2023); the ``HipnnQuad`` of lanl/hippynn), written here with every learned weight
carrying a leading member axis K, so that K members with independent initialisations run as
batched matmuls on one pair list and one set of sensitivities. Units: nm, kJ/mol, kJ/mol/nm.

One member, for a bead i of type t_i with neighbours j (pairs within ``cutoff_nm``; r_ij,
unit vector u_ij):

* sensitivities ``g_s(r) = exp(-(1/r - 1/mu_s)^2 w^2 / 2) * cos_cutoff(r)``, s = 1..S
  (``num_rbf``), centres mu_s evenly spaced in 1/r from ``sensitivity_max_nm`` to
  ``sensitivity_min_nm``, ``w = 2 S sensitivity_min_nm`` (hippynn's initial values) and
  torchmd-net's ``CosineCutoff``. Unlike hippynn they are **fixed**, so every member shares them;
* tensor sensitivities ``g_s(r) Y_c(u)`` with Y = (1; u_x, u_y, u_z; the 5 independent
  components of the traceless u u^T - I/3): C = 9 channels;
* environment ``env[i, c, s, t] = sum_{j of type t} g_s(r_ij) Y_c(u_ij)`` (the input features are
  the one-hot bead types, so the environment does not depend on the member);
* interaction layer (ResNet-wrapped as in hippynn): ``q[c, f] = sum_{s,t} env[c, s, t] V[s, t, f]``,
  ``a = q[0] + |q[1:4]| lambda_1 + |Q| lambda_2 + W_self[t_i] + b_self`` (norms with hippynn's
  cusp regulariser 1e-6), ``x_1 = R act(a) + b_R + A[t_i]``;
* ``num_layers`` atom-environment layers ``x <- R_l act(W_l x + b_l) + b'_l + x``;
* hierarchical per-bead energy ``e_i = h_0[t_i] + h_1 . x + b_h`` (hippynn's ``HEnergy``).

:class:`~openmm_cgkd.model.hipnn.HipnnTS` is that network for K members: ``forward(bead_types, edge_index, edge_vec)``
-> per-bead energies ``[K, N]``. A single network (``K = 1``) is what
:class:`~openmm_cgkd.model.potential.CGPotential` builds for ``architecture: hipnn-ts``.

:class:`StackedEnsemblePotential` is the ensemble, a drop-in for
:class:`~openmm_cgkd.model.ensemble.EnsemblePotential`: ``forward(bead_types, positions, box)``
-> member means ``(energy [], bead_energies [N], forces [N,3])`` and ``force_std [N,3]``
(population std). How forces are computed:

* ``with_std`` (default): the positions are replicated per member (``[K, N, 3]``), so ONE
  backward pass of the summed member energies yields every member's forces (pair geometry and
  sensitivities are evaluated per member: K times the cheap part);
* ``with_std = False`` (what OpenMM serves, see :meth:`StackedEnsemblePotential.serve_mean_only`):
  one pass over the shared geometry and ONE backward pass of the member-mean energy; ``force_std``
  is then an empty ``[0, 3]`` tensor (not computed), never a wrong number.

``member(k)`` extracts member k as a plain :class:`CGPotential`; ``from_members`` stacks K of
them; ``load_stacked(module, config)`` rebuilds the eager module from a TorchScript one.
"""

import copy
import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from openmm_cgkd.model.hipnn import _PARAM_SHAPES, HipnnTS
from openmm_cgkd.model.potential import CGPotential, NeighborList, PotentialConfig, _model_box, check_inputs

__all__ = ["StackedEnsemblePotential", "load_stacked", "is_stacked_module", "training_forward", "joined_pairs"]

class StackedEnsemblePotential(nn.Module):
    """K stacked HIP-NN-TS members as one module; a drop-in for
    :class:`~openmm_cgkd.model.ensemble.EnsemblePotential` (see the module docstring).

    Attributes (plain, also on the scripted module): ``create_graph`` (False) as for
    :class:`CGPotential`; ``check_errors`` (True; :meth:`set_check_errors`); ``with_std`` (True;
    :meth:`set_with_std`); ``num_members``, ``cutoff_nm``, ``num_types``, ``architecture``.
    Per-member buffers ``energy_scale`` / ``energy_offset`` ``[K, T]`` mirror CGPotential's.
    """

    __jit_unused_properties__ = ["config"]
    create_graph: bool
    check_errors: bool
    with_std: bool
    cutoff_nm: float
    num_types: int
    num_members: int
    max_num_neighbors: int
    architecture: str

    def __init__(self, config: PotentialConfig, num_members: int, seeds: Optional[Sequence[int]] = None):
        super().__init__()
        if config.architecture != "hipnn-ts":
            raise ValueError(f"only hipnn-ts members can be stacked, got {config.architecture!r}")
        self._config = config
        self.create_graph = False
        self.check_errors = True
        self.with_std = True
        self.cutoff_nm = config.cutoff_nm
        self.num_types = config.num_types
        self.num_members = int(num_members)
        self.max_num_neighbors = config.max_num_neighbors
        self.architecture = config.architecture
        self.neighbors = NeighborList(config.cutoff_nm, config.max_num_neighbors, loop=False,
                                      cutoff_lower_nm=config.cutoff_lower_nm, static_shapes=config.static_shapes)
        self.net = HipnnTS(config, num_members, seeds)
        dtype = config.torch_dtype
        self.register_buffer("energy_scale", torch.ones(self.num_members, config.num_types, dtype=dtype))
        self.register_buffer("energy_offset", torch.zeros(self.num_members, config.num_types, dtype=dtype))

    @property
    def config(self) -> PotentialConfig:
        """The members' :class:`PotentialConfig` (python side only)."""
        return self._config

    # -- switches (exported: also on a scripted / loaded module) -------------------------------
    @torch.jit.export
    def set_check_errors(self, value: bool) -> None:
        """Switch the input / overflow checks (device syncs; off for CUDA graphs and in MD)."""
        self.check_errors = value
        self.neighbors.check_errors = value

    @torch.jit.export
    def set_with_std(self, value: bool) -> None:
        """Whether ``forward`` computes the member force std (True) or only the means (False)."""
        self.with_std = value

    @torch.jit.export
    def serve_mean_only(self) -> None:
        """The MD configuration (what ``make_network_force`` serves): mean force from one backward
        pass, no std, no host syncs (bead types and the box are checked once by ``create_system``;
        neighbour overflow stays an asynchronous device assert, immediate on the CPU)."""
        self.set_with_std(False)
        self.set_check_errors(False)

    @torch.jit.export
    def model_dtype(self) -> torch.dtype:
        return self.energy_offset.dtype

    # -- computation -------------------------------------------------------------------------
    @torch.jit.export
    def bead_energies_from_edges(self, bead_types: Tensor, positions: Tensor, edge_index: Tensor,
                                 cell_shifts: Tensor, box: Optional[Tensor]) -> Tensor:
        """Per-member per-bead energies ``[K, N]`` (kJ/mol) on a precomputed pair list.

        ``positions``: ``[N, 3]`` (shared geometry) or ``[K, N, 3]`` (one replica per member, so
        that one backward pass gives per-member forces); model dtype, may require grad.
        """
        safe = edge_index.clamp(min=0)
        vec = positions.index_select(-2, safe[0]) - positions.index_select(-2, safe[1])
        if box is not None:
            vec = vec + cell_shifts.to(positions.dtype) @ box.to(positions.dtype)
        degenerate = (edge_index[0] == edge_index[1]) | (edge_index[0] < 0)
        vec = vec.masked_fill(degenerate.unsqueeze(-1), 0.0)
        z = bead_types.to(torch.long)
        e = self.net(z, edge_index, vec)
        return e * self.energy_scale.index_select(1, z) + self.energy_offset.index_select(1, z)

    def _prepare(self, bead_types: Tensor, positions: Tensor,
                 box: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor], Tensor, Tensor]:
        check_inputs(bead_types, positions, box, self.num_types, self.check_errors)
        dtype = self.energy_offset.dtype
        pos0 = positions.detach().to(dtype)
        # without checks (MD): no host sync; a box is taken as given (an all-zero one is not looked for)
        box_m = _model_box(box, dtype, pos0.device, self.neighbors.static_shapes or not self.check_errors)
        if box_m is not None and not self.check_errors:
            # the one input that can change in MD (a barostat): an asynchronous assert, no sync
            width = torch.minimum(torch.minimum(box_m[0, 0], box_m[1, 1]), box_m[2, 2])
            torch._assert_async(width >= 2.0 * self.cutoff_nm, "box narrower than twice the network cutoff")
        edge_index, cell_shifts = self.neighbors(pos0, box_m)
        return pos0, box_m, edge_index, cell_shifts

    @torch.jit.export
    def forward_members(self, bead_types: Tensor, positions: Tensor,
                        box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Per-member ``(energies [K], bead_energies [K,N], forces [K,N,3])`` in the model dtype,
        from one backward pass over per-member replicas of the positions."""
        pos0, box_m, edge_index, cell_shifts = self._prepare(bead_types, positions, box)
        grad_was_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(True)
        # clone, not detach (torch.jit.freeze drops detach); one replica per member
        pos = pos0.clone().unsqueeze(0).repeat(self.num_members, 1, 1).requires_grad_(True)
        bead_e = self.bead_energies_from_edges(bead_types, pos, edge_index, cell_shifts, box_m)
        # everything derived from bead_e before grad mode is restored: TorchScript's profiling
        # executor, called under no_grad, would otherwise specialise bead_e as not requiring grad
        energies = bead_e.sum(dim=1)
        grads = torch.autograd.grad([energies.sum()], [pos], create_graph=self.create_graph)
        torch.set_grad_enabled(grad_was_enabled)
        grad = grads[0]
        forces = torch.zeros_like(pos) if grad is None else -grad
        if not self.create_graph:
            energies = energies.detach()
            bead_e = bead_e.detach()
        return energies, bead_e, forces

    @torch.jit.export
    def forward_mean(self, bead_types: Tensor, positions: Tensor,
                     box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Member means ``(energy [], bead_energies [N], forces [N,3])`` (model dtype) from one pass
        over the shared geometry and one backward pass of the mean energy."""
        pos0, box_m, edge_index, cell_shifts = self._prepare(bead_types, positions, box)
        grad_was_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(True)
        pos = pos0.clone().requires_grad_(True)
        bead_mean = self.bead_energies_from_edges(bead_types, pos, edge_index, cell_shifts, box_m).mean(dim=0)
        energy = bead_mean.sum()
        grads = torch.autograd.grad([energy], [pos], create_graph=self.create_graph)
        torch.set_grad_enabled(grad_was_enabled)
        grad = grads[0]
        forces = torch.zeros_like(pos) if grad is None else -grad
        if not self.create_graph:
            energy = energy.detach()
            bead_mean = bead_mean.detach()
        return energy, bead_mean, forces

    def forward(self, bead_types: Tensor, positions: Tensor,
                box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        in_dtype = positions.dtype
        if self.with_std:
            energies, bead_e, forces_k = self.forward_members(bead_types, positions, box)
            energy = energies.mean(dim=0)
            bead_mean = bead_e.mean(dim=0)
            forces = forces_k.mean(dim=0)
            force_std = torch.sqrt(((forces_k - forces.unsqueeze(0)) ** 2).mean(dim=0))
        else:
            energy, bead_mean, forces = self.forward_mean(bead_types, positions, box)
            force_std = torch.zeros((0, 3), dtype=forces.dtype, device=forces.device)  # not computed
        if in_dtype != energy.dtype and (in_dtype == torch.float32 or in_dtype == torch.float64):
            return energy.to(in_dtype), bead_mean.to(in_dtype), forces.to(in_dtype), force_std.to(in_dtype)
        return energy, bead_mean, forces, force_std

    # -- python-side: members in and out --------------------------------------------------------
    def member(self, k: int) -> CGPotential:
        """Member k as a plain one-network :class:`CGPotential` (a copy; torch's global random state
        is left as it was)."""
        with torch.random.fork_rng(devices=[]):
            single = CGPotential(copy.deepcopy(self._config))
        net = single.representation.net
        with torch.no_grad():
            for name, value in self.net.member_state(k).items():
                getattr(net, name).copy_(value)
            single.energy_scale.copy_(self.energy_scale[k])
            single.energy_offset.copy_(self.energy_offset[k])
        return single.to(self.energy_offset.device)

    def members(self) -> List[CGPotential]:
        """All K members as :class:`CGPotential` copies."""
        return [self.member(k) for k in range(self.num_members)]

    @classmethod
    def from_members(cls, members: Sequence[CGPotential]) -> "StackedEnsemblePotential":
        """Stack K one-network hipnn-ts :class:`CGPotential` s (same config) into one module."""
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        cfg = members[0].config
        for k, m in enumerate(members):
            if not isinstance(m, CGPotential) or m.config.architecture != "hipnn-ts":
                raise TypeError(f"member {k} is not a hipnn-ts CGPotential")
            if m.config.to_dict() != cfg.to_dict():
                raise ValueError(f"member {k} has a different architecture config from member 0")
        out = cls(copy.deepcopy(cfg), len(members))
        with torch.no_grad():
            for name in _PARAM_SHAPES:
                getattr(out.net, name).copy_(torch.cat([getattr(m.representation.net, name) for m in members]))
            out.energy_scale.copy_(torch.stack([m.energy_scale for m in members]))
            out.energy_offset.copy_(torch.stack([m.energy_offset for m in members]))
        return out


def is_stacked_module(module) -> bool:
    """Whether ``module`` (eager or TorchScript) is a :class:`StackedEnsemblePotential`."""
    return isinstance(module, StackedEnsemblePotential) or (
        hasattr(module, "num_members") and hasattr(module, "net") and hasattr(module, "serve_mean_only"))


def load_stacked(module, config: PotentialConfig) -> StackedEnsemblePotential:
    """An eager :class:`StackedEnsemblePotential` with the weights of ``module`` (e.g. the
    TorchScript module of an ensemble bundle, whose manifest gives ``config``)."""
    if isinstance(module, StackedEnsemblePotential):
        return module
    if not is_stacked_module(module):
        raise TypeError(f"{type(module).__name__} is not a stacked ensemble module")
    out = StackedEnsemblePotential(config, int(module.num_members))
    out.load_state_dict({k: v.detach().cpu() for k, v in module.state_dict().items()})
    return out


# --------------------------------------------------------------------------- training (eager only)

def _chunked_rows(row: Tensor, n_rows: int, width: int) -> Tuple[Tensor, Tensor, Tensor]:
    """A dense table of ``width`` slots per line for items grouped by ``row`` (values in
    ``0..n_rows-1``): each row takes ``ceil(count / width)`` lines, so little of the table is padding.
    Returns ``(order, slot_index, line_row)``: item ``order[q]`` goes to flat slot ``slot_index[q]``
    (line ``slot_index // width``), and line l belongs to row ``line_row[l]``."""
    order = torch.argsort(row, stable=True)
    rows = row.index_select(0, order)
    counts = torch.bincount(rows, minlength=n_rows)
    lines = (counts + width - 1) // width
    line_start = torch.cumsum(lines, 0) - lines
    start = torch.cumsum(counts, 0) - counts
    slot = torch.arange(rows.numel(), device=row.device) - start.index_select(0, rows)
    slot_index = (line_start.index_select(0, rows) + torch.div(slot, width, rounding_mode="floor")) * width \
        + torch.remainder(slot, width)
    line_row = torch.repeat_interleave(torch.arange(n_rows, device=row.device), lines)
    return order, slot_index, line_row


def _sensitivity_pair(net: HipnnTS, r: Tensor, valid: Tensor) -> Tuple[Tensor, Tensor]:
    """Sensitivities ``g [..., S]`` and their radial derivatives ``dg/dr`` (1/nm), zero where not valid.

    Nine passes over the ``[..., S]`` tensors, in place where possible (they are the largest of a
    training batch). The exponent is capped at 40 (e^-40 = 4e-18, far below float32 round-off of the
    sums), as in the serving fast path: uncapped, most values underflow into subnormal floats, and
    every later op on them is many times slower on a CPU."""
    inv_r = 1.0 / r
    x = inv_r.unsqueeze(-1) - net.inv_mu
    w2 = net.sens_width * net.sens_width
    raw = torch.exp((x * x).mul_(-0.5 * w2).clamp_(min=-40.0))
    rc = net.cutoff_nm
    inside = (r < rc).to(r.dtype) * valid.to(r.dtype)
    fc = 0.5 * (torch.cos(math.pi * r / rc) + 1.0) * inside
    dfc = -0.5 * math.pi / rc * torch.sin(math.pi * r / rc) * inside
    g = raw * fc.unsqueeze(-1)
    # d/dr [raw fc] = raw (w^2 x / r^2) fc + raw dfc
    dg = x.mul_((w2 * inv_r * inv_r * fc).unsqueeze(-1)).add_(dfc.unsqueeze(-1)).mul_(raw)
    return g, dg


def joined_pairs(neighbors: NeighborList, positions: Tensor, boxes: Tensor) -> Tuple[Tensor, Tensor]:
    """Pairs of B frames ``positions [B,N,3]``, ``boxes [B,3,3]`` (nm; all zero: no periodic box) as one graph of B*N beads:
    ``(edge_index [2,E], pair_vectors [E,3])`` with ``pair_vectors = r_i - r_j`` + periodic image
    (self pairs and padding dropped)."""
    b_n, n = int(positions.shape[0]), int(positions.shape[1])
    flat = positions.reshape(b_n * n, 3)
    periodic = bool(torch.any(boxes != 0))  # all-zero boxes: no periodic boundaries (non-periodic data)
    edges, shifts = [], []
    for f in range(b_n):
        ei, cs = neighbors(positions[f], boxes[f] if periodic else None)
        keep = (ei[0] >= 0) & (ei[0] != ei[1])
        edges.append(ei[:, keep] + f * n)
        shifts.append(cs[keep].to(positions.dtype) @ boxes[f])
    ei = torch.cat(edges, 1)
    vec = flat.index_select(0, ei[0]) - flat.index_select(0, ei[1]) + torch.cat(shifts, 0)
    return ei, vec


def training_forward(model: "StackedEnsemblePotential", bead_types: Tensor, positions: Tensor,
                     boxes: Tensor, slot_width: int = 16, create_graph: bool = True,
                     pairs: Optional[Tuple[Tensor, Tensor]] = None) -> dict:
    """Per-member predictions on a batch of frames, differentiable in the weights (for training).

    ``bead_types [N]``, ``positions [B,N,3]`` nm, ``boxes [B,3,3]`` nm -> ``energy [K,B]``,
    ``bead_energies [K,B,N]`` (kJ/mol), ``forces [K,B,N,3]`` (kJ/mol/nm): the values of
    :meth:`StackedEnsemblePotential.forward_members` frame by frame, with the autograd graph to the
    weights that a force loss needs (what ``create_graph=True`` gives), but NOT to the positions
    (the geometry enters as constants: no derivative of the forces by the positions exists here).

    How: the pairs are laid out in a dense table of ``slot_width`` slots per line, grouped by
    (bead i, type of its neighbour j), one or more lines per group; the sensitivities ``g_s`` and
    their radial derivatives ``g'_s`` are shared constants there, and the environment is one batched
    matmul. Every member's forces follow from its energy gradient ``G_k = dE_k/d env`` by the
    chain rule written out: ``sum_s G_k g_s`` and ``sum_s G_k g'_s`` of all members and channels
    are ONE batched matmul ``[lines, K*C, S] @ [lines, S, 2*slot_width]``, so the members'
    per-pair work is a dense matrix product instead of K sparse autograd passes (``tests/unit/model/test_stacked.py`` checks values and weight
    gradients against autograd through :meth:`StackedEnsemblePotential.forward_members`).

    ``pairs``: the batch's :func:`joined_pairs` when the caller has them already (computed here otherwise).

    ``create_graph=False``: inference (the distillation labels): the same values, detached, with no
    graph to the weights (autograd runs only through the small per-bead network, never the pairs).
    """
    net = model.net
    k, c_n, t_n, s_n = net.num_members, net.num_channels, net.num_types, net.num_sens
    dtype = model.model_dtype()
    b_n, n = int(positions.shape[0]), int(positions.shape[1])
    bn = b_n * n
    z = bead_types.to(torch.long).to(positions.device).repeat(b_n)
    with torch.no_grad():
        pos = positions.detach().to(dtype)
        ei, vec_e = joined_pairs(model.neighbors, pos, boxes.detach().to(dtype)) if pairs is None else pairs
        m = slot_width
        order, slot_index, line_row = _chunked_rows(ei[0] * t_n + z.index_select(0, ei[1]), bn * t_n, m)
        rows = int(line_row.numel())  # table lines; line l holds pairs of bead line_row[l] // T
        vec = torch.zeros(rows * m, 3, dtype=dtype, device=pos.device).index_copy_(
            0, slot_index, vec_e.index_select(0, order)).view(rows, m, 3)
        col = torch.zeros(rows * m, dtype=torch.long, device=pos.device).index_copy_(
            0, slot_index, ei[1].index_select(0, order))
        valid = torch.zeros(rows * m, dtype=torch.bool, device=pos.device).index_fill_(0, slot_index, True).view(rows, m)
        vf = valid.to(dtype)
        r = torch.sqrt(torch.where(valid, (vec * vec).sum(-1), torch.ones_like(vf)))
        inv_r = vf / r
        u = vec * inv_r.unsqueeze(-1)
        g, dg = _sensitivity_pair(net, r, valid)  # [rows, M, S]
        ux, uy, uz = u[..., 0], u[..., 1], u[..., 2]
        third = 1.0 / 3.0
        y = torch.stack([vf, ux, uy, uz, ux * ux - third, ux * uy, ux * uz, uy * uy - third, uy * uz],
                        dim=1) * vf.unsqueeze(1)  # [rows, C, M]
        env = torch.zeros(bn * t_n, c_n, s_n, dtype=dtype, device=pos.device).index_add_(
            0, line_row, torch.bmm(y, g))  # [(i, t), C, S]
        env = env.view(bn, t_n, c_n, s_n).permute(0, 2, 3, 1).reshape(bn * c_n, s_n * t_n)
        basis = torch.cat([g, dg], dim=1).transpose(1, 2)  # [lines, S, 2M]: (g | g') per slot
    with torch.enable_grad():
        q = torch.matmul(env, net.int_w)  # [K, BN*C, F]
        if not create_graph:
            q = q.detach().requires_grad_(True)
        e = net.energies_from_interaction(z, q)
        e = e * model.energy_scale.index_select(1, z) + model.energy_offset.index_select(1, z)  # [K, BN]
        (p,) = torch.autograd.grad(e.sum(), q, create_graph=create_graph)
    if not create_graph:
        e = e.detach()
    with torch.set_grad_enabled(create_graph):
        grad_env = torch.matmul(p, net.int_w.transpose(1, 2))  # [K, BN*C, S*T] = dE_k / d env
        gb = grad_env.view(k, bn, c_n, s_n, t_n).permute(1, 4, 0, 2, 3).reshape(bn * t_n, k * c_n, s_n)
        gb = gb.index_select(0, line_row)  # [lines, K*C, S]
        # (unbind, not indexing: the backward of one unbind is one stack, that of each index a full-size fill)
        bcoef, acoef = torch.bmm(gb, basis).view(rows, k, c_n, 2, m).unbind(3)  # sum_s G g_s, sum_s G g'_s
        radial = (acoef * y.unsqueeze(1)).sum(2)  # sum_c a_c Y_c: [lines, K, M]
        ux_, uy_, uz_ = ux.unsqueeze(1), uy.unsqueeze(1), uz.unsqueeze(1)
        _, b1, b2, b3, b4, b5, b6, b7, b8 = bcoef.unbind(2)
        wx = b1 + 2.0 * ux_ * b4 + uy_ * b5 + uz_ * b6  # sum_c b_c dY_c/du
        wy = b2 + ux_ * b5 + 2.0 * uy_ * b7 + uz_ * b8
        wz = b3 + ux_ * b6 + uy_ * b8
        udotw = ux_ * wx + uy_ * wy + uz_ * wz
        ir = inv_r.unsqueeze(1)
        gvec = torch.stack([ux_ * radial + (wx - ux_ * udotw) * ir, uy_ * radial + (wy - uy_ * udotw) * ir,
                            uz_ * radial + (wz - uz_ * udotw) * ir], dim=-1)  # dE_k/d(r_i - r_j): [rows, K, M, 3]
        # (scatter along the first axis: index_add along another one is many times slower on the CPU)
        grad_pos = torch.zeros(bn, k, 3, dtype=dtype, device=pos.device).index_add(
            0, torch.div(line_row, t_n, rounding_mode="floor"), gvec.sum(2))
        grad_pos = grad_pos.index_add(0, col, -gvec.transpose(1, 2).reshape(rows * m, k, 3)).transpose(0, 1)
    bead = e.reshape(k, b_n, n)
    return {"energy": bead.sum(-1), "bead_energies": bead, "forces": (-grad_pos).reshape(k, b_n, n, 3)}
