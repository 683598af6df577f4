"""HIP-NN-TS (HIP-NN with tensor sensitivities of order 2) with a member axis on every weight:
:class:`HipnnTS` (K members evaluated as one), and the one-member representation and head that
:class:`~openmm_cgkd.model.potential.CGPotential` builds for ``architecture: hipnn-ts``
(:class:`HipnnRepresentation`, :class:`PassThroughHead`). The equations are in
:mod:`openmm_cgkd.model.stacked`, which stacks K members into an ensemble. Units: nm, kJ/mol.
"""

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from openmm_cgkd.quiet import import_torchmdnet

__all__ = ["HipnnTS", "HipnnRepresentation", "PassThroughHead", "NUM_CHANNELS", "CUSP_REG"]

NUM_CHANNELS = 9  # tensor sensitivity order 2: 1 scalar + 3 vector + 5 traceless quadrupole channels
CUSP_REG = 1e-6  # hippynn's regulariser of the vector / quadrupole norms (keeps their gradient finite at 0)

# learned weights of HipnnTS: name -> shape after the member axis, in terms of (S, T, F, L)
_PARAM_SHAPES = {
    "int_w": ("ST", "F"), "vec_scale": ("F",), "quad_scale": ("F",), "self_w": ("T", "F"), "self_b": ("F",),
    "res_w": ("F", "F"), "res_b": ("F",), "adjust_w": ("T", "F"),
    "atom_w": ("L", "F", "F"), "atom_b": ("L", "F"), "atom_res_w": ("L", "F", "F"), "atom_res_b": ("L", "F"),
    "e0_w": ("T",), "e1_w": ("F",), "e1_b": (),
}


def _activation(name: str, x: Tensor) -> Tensor:
    if name == "softplus":
        return torch.nn.functional.softplus(x)
    if name == "silu":
        return torch.nn.functional.silu(x)
    return torch.tanh(x)


class HipnnTS(nn.Module):
    """K HIP-NN-TS members with stacked weights (shapes ``[K, ...]``); see the module docstring.

    ``config``: the :class:`~openmm_cgkd.model.potential.PotentialConfig` (``hipnn-ts``).
    ``seeds``: one per member; member k is initialised from ``torch.Generator().manual_seed(seeds[k])``,
    which gives the same weights as a one-member network built right after ``torch.manual_seed(seeds[k])``.
    Without seeds the members draw one after another from torch's global generator.
    """

    num_members: int
    num_types: int
    num_sens: int
    num_features: int
    num_layers: int
    num_channels: int
    cusp_reg: float
    activation: str
    cutoff_nm: float

    def __init__(self, config, num_members: int = 1, seeds: Optional[Sequence[int]] = None):
        super().__init__()
        if config.architecture != "hipnn-ts":
            raise ValueError(f"HipnnTS needs architecture 'hipnn-ts', got {config.architecture!r}")
        if int(num_members) < 1:
            raise ValueError(f"num_members must be >= 1, got {num_members}")
        if seeds is not None and len(seeds) != int(num_members):
            raise ValueError(f"need one seed per member ({num_members}), got {len(seeds)}")
        import_torchmdnet()
        from torchmdnet.models.utils import CosineCutoff

        k, t, s, f, layers = (int(num_members), config.num_types, config.num_rbf, config.embedding_dim,
                              config.num_layers)
        self.num_members, self.num_types, self.num_sens, self.num_features, self.num_layers = k, t, s, f, layers
        self.num_channels = NUM_CHANNELS
        self.cusp_reg = CUSP_REG
        self.activation = config.activation
        self.cutoff_nm = config.cutoff_nm
        dtype = config.torch_dtype
        # fixed sensitivities (hippynn's initial values), shared by every member
        inv_mu = torch.linspace(1.0 / config.sensitivity_max_nm, 1.0 / config.sensitivity_min_nm, s, dtype=torch.float64)
        self.register_buffer("inv_mu", inv_mu.to(dtype))
        self.register_buffer("sens_width", torch.tensor(2.0 * s * config.sensitivity_min_nm, dtype=dtype))
        self.cutoff = CosineCutoff(0.0, config.cutoff_nm)
        sizes = {"S": s, "T": t, "F": f, "L": layers, "ST": s * t}
        for name, shape in _PARAM_SHAPES.items():
            self.register_parameter(name, nn.Parameter(torch.empty((k,) + tuple(sizes[d] for d in shape), dtype=dtype)))
        with torch.no_grad():
            for m in range(k):
                gen = None if seeds is None else torch.Generator().manual_seed(int(seeds[m]))
                self._init_member(m, gen)

    # -- initialisation (hippynn-like: Xavier-normal weights, torch's default biases) -----------
    def _init_member(self, m: int, gen: Optional[torch.Generator]) -> None:
        t, s, f, layers = self.num_types, self.num_sens, self.num_features, self.num_layers

        def xavier(p: Tensor, fan_in: int, fan_out: int) -> None:
            nn.init.normal_(p, 0.0, math.sqrt(2.0 / (fan_in + fan_out)), generator=gen)

        def bias(p: Tensor, fan_in: int) -> None:
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(p, -bound, bound, generator=gen)

        xavier(self.int_w[m], s * t, f)
        nn.init.normal_(self.vec_scale[m], generator=gen)
        nn.init.normal_(self.quad_scale[m], generator=gen)
        xavier(self.self_w[m], t, f)
        bias(self.self_b[m], t)
        xavier(self.res_w[m], f, f)
        bias(self.res_b[m], f)
        xavier(self.adjust_w[m], t, f)
        for lay in range(layers):
            xavier(self.atom_w[m, lay], f, f)
            bias(self.atom_b[m, lay], f)
            xavier(self.atom_res_w[m, lay], f, f)
            bias(self.atom_res_b[m, lay], f)
        bias(self.e0_w[m], t)
        bias(self.e1_w[m], f)
        bias(self.e1_b[m], f)

    # -- shared, member-independent part ------------------------------------------------------
    @torch.jit.export
    def environment(self, bead_types: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        """Environment sums ``[..., N*C, S*T]`` of the pairs ``edge_index [2,E]`` (i -> j; index -1
        marks a padding slot) with pair vectors ``edge_vec [..., E, 3]`` (nm; a leading member axis
        is optional). Self pairs and padding (vector 0) contribute nothing."""
        n = bead_types.shape[0]
        t = self.num_types
        s = self.num_sens
        d2 = (edge_vec * edge_vec).sum(-1)
        valid = (d2 > 0) & (edge_index[0] >= 0)
        r = torch.sqrt(torch.where(valid, d2, torch.ones_like(d2)))
        u = edge_vec / r.unsqueeze(-1)
        x = (1.0 / r).unsqueeze(-1) - self.inv_mu
        g = torch.exp(-0.5 * (x * self.sens_width) ** 2) * (self.cutoff(r) * valid.to(r.dtype)).unsqueeze(-1)
        ux, uy, uz = u[..., 0], u[..., 1], u[..., 2]
        third = 1.0 / 3.0
        y = torch.stack([torch.ones_like(ux), ux, uy, uz, ux * ux - third, ux * uy, ux * uz, uy * uy - third,
                         uy * uz], dim=-1)  # [..., E, C]
        sense = (y.unsqueeze(-1) * g.unsqueeze(-2)).flatten(-2)  # [..., E, C*S]
        safe = edge_index.clamp(min=0)
        row = safe[0] * t + bead_types.index_select(0, safe[1])
        lead: List[int] = list(edge_vec.shape[:-2])
        # scatter along the first axis (pairs first): fast on the CPU, and one code path for both layouts
        src = sense.movedim(-2, 0)  # [E, ..., C*S]
        env = torch.zeros([n * t] + lead + [self.num_channels * s], dtype=sense.dtype, device=sense.device)
        env = env.index_add(0, row, src).movedim(0, -2)
        # [..., N, T, C, S] -> [..., N, C, S, T] -> [..., N*C, S*T]
        env = env.unflatten(-1, (self.num_channels, s)).unflatten(-3, (n, t))
        env = env.movedim(-3, -1)
        return env.flatten(-4, -3).flatten(-2)

    # -- the members ----------------------------------------------------------------------------
    @torch.jit.export
    def energies_from_environment(self, bead_types: Tensor, env: Tensor) -> Tensor:
        """Per-bead energies ``[K, N]`` (kJ/mol) from the environment (``[N*C, S*T]`` shared, or
        ``[K, N*C, S*T]`` per member)."""
        return self.energies_from_interaction(bead_types, torch.matmul(env, self.int_w))

    @torch.jit.export
    def energies_from_interaction(self, bead_types: Tensor, q: Tensor) -> Tensor:
        """Per-bead energies ``[K, N]`` from the interaction sums ``q = env @ int_w`` ``[K, N*C, F]``."""
        n = bead_types.shape[0]
        k = self.num_members
        f = self.num_features
        z = bead_types.to(torch.long)
        q = q.reshape(k, n, self.num_channels, f)
        vec = torch.sqrt((q[:, :, 1:4] ** 2).sum(2) + self.cusp_reg) * self.vec_scale.unsqueeze(1)
        q5 = q[:, :, 4:9]
        quad = torch.sqrt(2.0 * ((q5 ** 2).sum(2) + q5[:, :, 0] * q5[:, :, 3]) + self.cusp_reg) * self.quad_scale.unsqueeze(1)
        a = q[:, :, 0] + vec + quad + self.self_w.index_select(1, z) + self.self_b.unsqueeze(1)
        x = torch.matmul(_activation(self.activation, a), self.res_w) + self.res_b.unsqueeze(1) \
            + self.adjust_w.index_select(1, z)
        for lay in range(self.num_layers):
            h = _activation(self.activation, torch.matmul(x, self.atom_w[:, lay]) + self.atom_b[:, lay].unsqueeze(1))
            x = torch.matmul(h, self.atom_res_w[:, lay]) + self.atom_res_b[:, lay].unsqueeze(1) + x
        return self.e0_w.index_select(1, z) + (x * self.e1_w.unsqueeze(1)).sum(-1) + self.e1_b.unsqueeze(1)

    def forward(self, bead_types: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        """Per-bead energies ``[K, N]`` (kJ/mol); ``edge_vec`` ``[E,3]`` (shared) or ``[K,E,3]`` (nm)."""
        return self.energies_from_environment(bead_types, self.environment(bead_types, edge_index, edge_vec))

    # -- python-side: members in and out --------------------------------------------------------
    def member_state(self, k: int) -> dict:
        """The learned weights of member k as a one-member state dict (copies)."""
        if not 0 <= k < self.num_members:
            raise IndexError(f"member {k} of {self.num_members}")
        return {name: getattr(self, name).detach()[k:k + 1].clone() for name in _PARAM_SHAPES}


class HipnnRepresentation(nn.Module):
    """A one-member :class:`HipnnTS` with the call signature of a torchmd-net representation as
    :class:`~openmm_cgkd.model.potential.CGPotential` uses it (``z, edge_vec, edge_index,
    edge_weight`` in; ``(x, v, z, pos, batch)`` out with ``x`` = per-bead energies ``[N, 1]``)."""

    def __init__(self, config):
        super().__init__()
        self.net = HipnnTS(config, 1)

    def forward(self, z: Tensor, pos: Tensor, batch: Tensor,
                box: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor], Tensor, Tensor, Tensor]:
        # CGPotential passes edge_vec, edge_index, edge_weight in the pos, batch, box slots
        e = self.net(z, batch, pos)
        v: Optional[Tensor] = None
        return e.reshape(-1, 1), v, z, pos, batch


class PassThroughHead(nn.Module):
    """The head of a hipnn-ts :class:`CGPotential`: the representation already gives energies."""

    def pre_reduce(self, x: Tensor, v: Optional[Tensor], z: Tensor, pos: Tensor, batch: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor) -> Tensor:
        return x
