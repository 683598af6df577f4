"""The serving fast path of HIP-NN-TS: energies AND forces without autograd (TorchScript-able).

:class:`FastHipnn` evaluates the member-mean energy and forces of a stacked HIP-NN-TS
(:mod:`openmm_cgkd.model.stacked`; a student or teacher is the case K = 1, an ensemble K = 8) with
the chain rule written out, the same mathematics as
:func:`~openmm_cgkd.model.stacked.training_forward`:

1. pairs from a :class:`~openmm_cgkd.model.neighbors.VerletList` (rebuilt only when a bead moved
   half the skin), laid out in lines of ``slot_width`` slots per (bead i, type of j);
2. per slot: distance, unit vector, the S sensitivities ``g_s`` and their radial derivatives
   ``g'_s``, the C = 9 tensor channels ``Y_c(u)``; the environment of a line is ONE batched matmul
   ``Y [lines, C, M] @ g [lines, M, S]``, scattered over lines into ``env [N*T, C, S]``;
3. the network forward over all K members at once (``env @ int_w`` as one ``[N*C, T*S] @ [T*S, K*F]``
   matmul, then batched ``[K, N, F]`` layers), keeping the pre-activations;
4. the hand-written backward of the member-mean energy through the layers to ``dE/d env``
   (again one matmul back through ``int_w``);
5. per line, ``sum_s dE/denv g_s`` and ``sum_s dE/denv g'_s`` of every channel as ONE batched matmul
   ``[lines, C, S] @ [lines, S, 2M]``, then the pair-vector gradient and two scatters into forces.

``forward(bead_types [N], positions [N,3] nm, box [3,3] nm or None)`` ->
``(energy [], bead_energies [N], forces [N,3])``: the member means, in the input dtype as
:class:`~openmm_cgkd.model.potential.CGPotential` returns them (no ``force_std``: it serves MD).

Built from any hipnn-ts network, eager or TorchScript (:meth:`FastHipnn.from_model`): a
``CGPotential`` (weights under ``representation.net.``, ``energy_scale [T]``) or a
``StackedEnsemblePotential`` (``net.``, ``[K, T]``); nothing of the bundle format changes.
``check_errors`` (copied from the source model): input, box and neighbour-overflow checks with
clear errors (host syncs); without: asynchronous device asserts only. ``tests/unit/model/test_fast_hipnn.py``
checks energies and forces against autograd on the shipped bundles.
"""
from typing import Dict, Optional, Tuple

import math

import torch
from torch import Tensor, nn

from openmm_cgkd.model.neighbors import VerletList, check_geometry
from openmm_cgkd.model.potential import check_inputs

__all__ = ["FastHipnn", "is_hipnn_model", "DEFAULT_SKIN_NM"]

DEFAULT_SKIN_NM = 0.1
_NAMES = ("int_w", "vec_scale", "quad_scale", "self_w", "self_b", "res_w", "res_b", "adjust_w", "atom_w", "atom_b",
          "atom_res_w", "atom_res_b", "e0_w", "e1_w", "e1_b", "inv_mu", "sens_width")


def is_hipnn_model(model) -> bool:
    """Whether ``model`` (eager or TorchScript) is a hipnn-ts ``CGPotential`` or
    ``StackedEnsemblePotential`` that :meth:`FastHipnn.from_model` can serve."""
    if isinstance(model, FastHipnn):
        return False
    try:
        arch = getattr(model, "architecture")
    except (AttributeError, RuntimeError):
        return False
    if arch != "hipnn-ts":
        return False
    keys = set(model.state_dict().keys())
    return "net.int_w" in keys or "representation.net.int_w" in keys


def _act(name: str, x: Tensor) -> Tuple[Tensor, Tensor]:
    """activation and its derivative"""
    if name == "softplus":
        return torch.nn.functional.softplus(x), torch.sigmoid(x)
    if name == "silu":
        sig = torch.sigmoid(x)
        h = x * sig
        return h, sig + h * (1.0 - sig)
    h = torch.tanh(x)
    return h, 1.0 - h * h


class FastHipnn(nn.Module):
    """See the module docstring."""

    num_members: int
    num_types: int
    num_sens: int
    num_features: int
    num_layers: int
    num_channels: int
    cusp_reg: float
    activation: str
    cutoff_nm: float
    max_num_neighbors: int
    check_errors: bool
    static_shapes: bool
    architecture: str
    create_graph: bool

    def __init__(self, weights: Dict[str, Tensor], energy_scale: Tensor, energy_offset: Tensor, *, cutoff_nm: float,
                 activation: str, max_num_neighbors: int, static_shapes: bool = False, check_errors: bool = True,
                 skin_nm: float = DEFAULT_SKIN_NM, slot_width: int = 8, cusp_reg: float = 1e-6):
        super().__init__()
        w = {k: v.detach().clone() for k, v in weights.items()}
        int_w = w["int_w"]
        k, st, f = int(int_w.shape[0]), int(int_w.shape[1]), int(int_w.shape[2])
        t = int(w["self_w"].shape[1])
        s = st // t
        self.num_members, self.num_types, self.num_sens, self.num_features = k, t, s, f
        self.num_layers = int(w["atom_w"].shape[1])
        self.num_channels = 9
        self.cusp_reg = float(cusp_reg)
        self.activation = str(activation)
        self.cutoff_nm = float(cutoff_nm)
        self.max_num_neighbors = int(max_num_neighbors)
        self.check_errors = bool(check_errors)
        self.static_shapes = bool(static_shapes)
        self.architecture = "hipnn-ts"
        self.create_graph = False
        dtype = int_w.dtype
        # int_w rows are (s, t); the environment here is laid out (t, s): permute once, and put the
        # members side by side so that env @ int_w is ONE matmul [N*C, T*S] @ [T*S, K*F]
        w_ts = int_w.view(k, s, t, f).transpose(1, 2).reshape(k, t * s, f)
        self.register_buffer("int_w_cat", w_ts.permute(1, 0, 2).reshape(t * s, k * f).contiguous())
        self.register_buffer("int_w_cat_t", self.int_w_cat.t().contiguous())
        self.register_buffer("vec_scale", w["vec_scale"].contiguous())  # [K, F]
        self.register_buffer("quad_scale", w["quad_scale"].contiguous())
        self.register_buffer("self_w", w["self_w"].contiguous())  # [K, T, F]
        self.register_buffer("self_b", w["self_b"].contiguous())
        self.register_buffer("res_w", w["res_w"].contiguous())  # [K, F, F]
        self.register_buffer("res_w_t", w["res_w"].transpose(1, 2).contiguous())
        self.register_buffer("res_b", w["res_b"].contiguous())
        self.register_buffer("adjust_w", w["adjust_w"].contiguous())
        self.register_buffer("atom_w", w["atom_w"].transpose(0, 1).contiguous())  # [L, K, F, F]
        self.register_buffer("atom_w_t", w["atom_w"].transpose(0, 1).transpose(2, 3).contiguous())
        self.register_buffer("atom_b", w["atom_b"].transpose(0, 1).unsqueeze(2).contiguous())  # [L, K, 1, F]
        self.register_buffer("atom_res_w", w["atom_res_w"].transpose(0, 1).contiguous())
        self.register_buffer("atom_res_w_t", w["atom_res_w"].transpose(0, 1).transpose(2, 3).contiguous())
        self.register_buffer("atom_res_b", w["atom_res_b"].transpose(0, 1).unsqueeze(2).contiguous())
        self.register_buffer("e0_w", w["e0_w"].contiguous())  # [K, T]
        self.register_buffer("e1_w", w["e1_w"].contiguous())  # [K, F]
        self.register_buffer("e1_b", w["e1_b"].reshape(k).contiguous())
        # work space of the two largest intermediates ([N*C, K*F] each), kept between calls: a fresh
        # one costs page faults on every call (hundreds of them, a large share of the ensemble's step)
        self.register_buffer("work_q", torch.zeros((0, k * f), dtype=dtype), persistent=False)
        self.register_buffer("work_g", torch.zeros((0, k * f), dtype=dtype), persistent=False)
        self.register_buffer("inv_mu", w["inv_mu"].contiguous())
        self.register_buffer("sens_width", w["sens_width"].reshape(()))
        self.register_buffer("energy_scale", energy_scale.detach().clone().reshape(k, t).to(dtype))
        self.register_buffer("energy_offset", energy_offset.detach().clone().reshape(k, t).to(dtype))
        self.neighbors = VerletList(cutoff_nm, t, max_num_neighbors, skin_nm=skin_nm, slot_width=slot_width,
                                    static_shapes=static_shapes, check_errors=check_errors, dtype=dtype)

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model, skin_nm: float = DEFAULT_SKIN_NM, slot_width: int = 8) -> "FastHipnn":
        """The fast path of a hipnn-ts ``CGPotential`` or ``StackedEnsemblePotential`` (eager or
        TorchScript); the weights are copied, the source model is left as it was."""
        if not is_hipnn_model(model):
            raise TypeError(f"{type(model).__name__} is not a hipnn-ts network")
        sd = {k: v for k, v in model.state_dict().items()}
        prefix = "net." if "net.int_w" in sd else "representation.net."
        weights = {name: sd[prefix + name] for name in _NAMES}
        net = model.net if prefix == "net." else model.representation.net
        k = int(weights["int_w"].shape[0])
        neighbors = model.neighbors
        return cls(weights, sd["energy_scale"].reshape(k, -1), sd["energy_offset"].reshape(k, -1),
                   cutoff_nm=float(model.cutoff_nm), activation=str(net.activation),
                   max_num_neighbors=int(model.max_num_neighbors), static_shapes=bool(neighbors.static_shapes),
                   check_errors=bool(model.check_errors), skin_nm=skin_nm, slot_width=slot_width,
                   cusp_reg=float(net.cusp_reg))

    # -- switches (as on CGPotential / StackedEnsemblePotential) ---------------------------------
    @torch.jit.export
    def set_check_errors(self, value: bool) -> None:
        self.check_errors = value
        self.neighbors.check_errors = value

    @torch.jit.export
    def serve_mean_only(self) -> None:
        """Already the MD configuration (member means only); switches the host-side checks off as
        :meth:`StackedEnsemblePotential.serve_mean_only` does for an ensemble."""
        if self.num_members > 1:
            self.set_check_errors(False)

    @torch.jit.export
    def model_dtype(self) -> torch.dtype:
        return self.energy_offset.dtype

    # -- computation ------------------------------------------------------------------------------
    @torch.jit.export
    def network(self, bead_types: Tensor, env: Tensor) -> Tuple[Tensor, Tensor]:
        """Member-mean per-bead energies ``[N]`` and ``dE/d env`` (``E`` = the summed member-mean
        energy) from ``env [N*C, T*S]``: forward and hand-written backward of every layer."""
        n = bead_types.shape[0]
        k = self.num_members
        f = self.num_features
        z = bead_types
        rows = n * self.num_channels
        if self.work_q.shape[0] != rows or self.work_q.device != env.device or self.work_q.dtype != env.dtype:
            self.work_q = torch.empty((rows, k * f), dtype=env.dtype, device=env.device)
            self.work_g = torch.empty((rows, k * f), dtype=env.dtype, device=env.device)
        q = torch.mm(env, self.int_w_cat, out=self.work_q).view(n, self.num_channels, k, f)  # [N, C, K, F]
        q0 = q[:, 0]
        v = q[:, 1:4]
        q5 = q[:, 4:9]
        # (not torch.linalg.vector_norm: along a strided axis it is ~100 x slower on the CPU)
        vn = torch.sqrt((v * v).sum(1) + self.cusp_reg)  # [N, K, F]
        qn = torch.sqrt(2.0 * ((q5 * q5).sum(1) + q5[:, 0] * q5[:, 3]) + self.cusp_reg)
        # [K, N, F], contiguous (the batched layer matmuls want it so)
        a = (q0 + vn * self.vec_scale + qn * self.quad_scale).transpose(0, 1).contiguous() \
            + (self.self_w.index_select(1, z) + self.self_b.unsqueeze(1))
        h0, dh0 = _act(self.activation, a)
        x = torch.baddbmm(self.res_b.unsqueeze(1) + self.adjust_w.index_select(1, z), h0, self.res_w)
        derivs = []
        for lay in range(self.num_layers):
            h, dh = _act(self.activation, torch.baddbmm(self.atom_b[lay], x, self.atom_w[lay]))
            derivs.append(dh)
            x = torch.baddbmm(x, h, self.atom_res_w[lay]) + self.atom_res_b[lay]
        e = self.e0_w.index_select(1, z) + torch.matmul(x, self.e1_w.unsqueeze(2)).squeeze(2) \
            + self.e1_b.unsqueeze(1)  # [K, N]
        scale = self.energy_scale.index_select(1, z)
        bead = (e * scale + self.energy_offset.index_select(1, z)).mean(0)
        # backward of E = mean_k sum_n scale e
        gx = (scale * (1.0 / k)).unsqueeze(2) * self.e1_w.unsqueeze(1)  # [K, N, F]
        for lay in range(self.num_layers - 1, -1, -1):
            gpre = torch.bmm(gx, self.atom_res_w_t[lay]) * derivs[lay]
            gx = torch.baddbmm(gx, gpre, self.atom_w_t[lay])
        ga = (torch.bmm(gx, self.res_w_t) * dh0).transpose(0, 1)  # [N, K, F]
        # dE/dq of every channel written straight into one [N, C, K, F] buffer (no cat):
        # d|v|/dv = v / |v|; d|Q|/dq5 = (2 q5 + (q5_3, 0, 0, q5_0, 0)) / |Q|
        gq_all = self.work_g.view(n, self.num_channels, k, f)
        gq_all[:, 0] = ga
        torch.mul(v, (ga * self.vec_scale / vn).unsqueeze(1), out=gq_all[:, 1:4])
        cq = ga * self.quad_scale / qn
        torch.mul(q5, (2.0 * cq).unsqueeze(1), out=gq_all[:, 4:9])
        gq_all[:, 4].addcmul_(cq, q5[:, 3])
        gq_all[:, 7].addcmul_(cq, q5[:, 0])
        return bead, torch.matmul(gq_all.view(n * self.num_channels, k * f), self.int_w_cat_t)  # [N*C, T*S]

    def forward(self, bead_types: Tensor, positions: Tensor,
                box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        # no graph, whatever the caller's grad mode: openmm-torch hands positions that require grad,
        # and torch.jit.freeze drops detach() (the work buffers' out= ops refuse inputs with a graph)
        with torch.no_grad():
            return self._evaluate(bead_types, positions, box)

    def _evaluate(self, bead_types: Tensor, positions: Tensor,
                  box: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        check_inputs(bead_types, positions, box, self.num_types, self.check_errors)
        dtype = self.energy_offset.dtype
        in_dtype = positions.dtype
        pos = positions.detach().to(dtype)
        n = pos.shape[0]
        t_n, c_n, s_n = self.num_types, self.num_channels, self.num_sens
        rc = self.cutoff_nm
        z = bead_types.to(torch.long)
        box_m: Optional[Tensor] = None
        if box is not None:
            b = box.detach().to(dtype=dtype, device=pos.device)
            # an all-zero box: no periodic boundaries (as CGPotential; not looked for without checks)
            if not self.check_errors or self.static_shapes or bool(torch.any(b != 0)):
                box_m = b
        if self.check_errors:
            check_geometry(pos, box_m, rc)
        elif box_m is not None:
            width = torch.minimum(torch.minimum(box_m[0, 0], box_m[1, 1]), box_m[2, 2])
            torch._assert_async(width >= 2.0 * rc, "box narrower than twice the network cutoff")
        nb = self.neighbors
        pos_u = nb.update(pos, box_m, z)
        m = nb.slot_width
        vec = pos_u.index_select(0, nb.slot_i) - pos_u.index_select(0, nb.slot_j)
        if box_m is not None:
            vec = vec + torch.matmul(nb.slot_shift, box_m)
        d2 = (vec * vec).sum(1)
        inside = nb.slot_valid & (d2 < rc * rc) & (d2 > 0)
        # the model's own pair budget, on the pairs within the cutoff
        n_in = inside.sum()
        if self.check_errors:
            found = int(n_in.item())
            if found > self.max_num_neighbors * n:
                raise RuntimeError(
                    "NeighborOverflowError: " + str(found) + " neighbour pairs within the cutoff "
                    + str(rc) + " nm exceed the budget max_num_neighbors * N = "
                    + str(self.max_num_neighbors) + " * " + str(n) + " = " + str(self.max_num_neighbors * n)
                    + "; the system is denser than the model was sized for (or beads overlap). "
                    + "Rebuild the model with a larger max_num_neighbors "
                    + "(see openmm_cgkd.model.potential.suggest_max_num_neighbors).")
        else:
            torch._assert_async(n_in <= self.max_num_neighbors * n,
                                "NeighborOverflowError: neighbour pairs exceed max_num_neighbors * N")
        mask = inside.to(dtype)
        r = torch.sqrt(torch.where(inside, d2, torch.ones_like(d2)))
        inv_r = mask / r
        u = vec * inv_r.unsqueeze(1)
        # sensitivities g_s and their radial derivatives g'_s [slots, S] (in place where possible)
        xs = inv_r.unsqueeze(1) - self.inv_mu
        expo = xs * (self.sens_width * 0.7071067811865476)
        expo = expo * expo
        # exponents capped at 40 (e^-40 = 4e-18, far below float32 round-off of the sums): the subnormal
        # floats an uncapped exp produces make every later op on them many times slower on a CPU
        raw = torch.exp(expo.clamp_(max=40.0).neg_())
        arg = (math.pi / rc) * r
        fc = (0.5 * mask) * (torch.cos(arg) + 1.0)
        dfc = (-0.5 * math.pi / rc) * mask * torch.sin(arg)
        g = raw * fc.unsqueeze(1)
        dg = xs.mul_(((self.sens_width * self.sens_width) * inv_r * inv_r * fc).unsqueeze(1)).add_(
            dfc.unsqueeze(1)).mul_(raw)
        lines = nb.line_row.shape[0]
        ux, uy, uz = u[:, 0], u[:, 1], u[:, 2]
        third = 1.0 / 3.0
        y = torch.stack([mask, ux, uy, uz, (ux * ux - third) * mask, ux * uy, ux * uz, (uy * uy - third) * mask,
                         uy * uz], 0).view(c_n, lines, m).transpose(0, 1)  # [lines, C, M]
        g3 = g.view(lines, m, s_n)
        env = torch.zeros((n * t_n + 1, c_n, s_n), dtype=dtype, device=pos.device).index_add_(
            0, nb.line_row, torch.bmm(y, g3))[: n * t_n]
        env = env.view(n, t_n, c_n, s_n).transpose(1, 2).reshape(n * c_n, t_n * s_n)
        bead, genv = self.network(z, env)
        # back to the lines: [N*C, T*S] -> [N*T(+1), C, S]
        genv = genv.view(n, c_n, t_n, s_n).transpose(1, 2).reshape(n * t_n, c_n, s_n)
        genv = torch.cat([genv, torch.zeros((1, c_n, s_n), dtype=dtype, device=pos.device)], 0)
        gl = genv.index_select(0, nb.line_row)  # [lines, C, S]
        bc = torch.bmm(gl, g3.transpose(1, 2)).transpose(0, 1).reshape(c_n, lines * m)  # sum_s G g_s
        radial = (torch.bmm(gl, dg.view(lines, m, s_n).transpose(1, 2)) * y).sum(1).reshape(lines * m)  # sum_c (sum_s G g'_s) Y_c
        b1, b2, b3, b4, b5, b6, b7, b8 = bc[1], bc[2], bc[3], bc[4], bc[5], bc[6], bc[7], bc[8]
        wx = b1 + 2.0 * ux * b4 + uy * b5 + uz * b6  # sum_c b_c dY_c/du
        wy = b2 + ux * b5 + 2.0 * uy * b7 + uz * b8
        wz = b3 + ux * b6 + uy * b8
        wv = torch.stack([wx, wy, wz], 1)
        udotw = (u * wv).sum(1, keepdim=True)
        gvec = u * radial.unsqueeze(1) + (wv - u * udotw) * inv_r.unsqueeze(1)  # dE/d(r_i - r_j) [slots, 3]
        forces = torch.zeros((n, 3), dtype=dtype, device=pos.device).index_add_(0, nb.slot_j, gvec)
        forces = forces.index_add_(0, nb.line_bead, gvec.view(lines, m, 3).sum(1), alpha=-1.0)
        energy = bead.sum()
        if in_dtype != dtype and (in_dtype == torch.float32 or in_dtype == torch.float64):
            return energy.to(in_dtype), bead.to(in_dtype), forces.to(in_dtype)
        return energy, bead, forces
