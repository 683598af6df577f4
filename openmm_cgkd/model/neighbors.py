"""A Verlet neighbour list with a skin, laid out for matmuls (TorchScript-able, device-agnostic).

:class:`VerletList` keeps, in buffers of the module that owns it, every directed pair (i -> j)
within ``cutoff + skin`` of the positions at its last build, with each pair's periodic image (an
integer combination of box vectors). It is rebuilt only when a bead has moved more than half the
skin since that build (minimum-image displacement, so beads wrapped into the box by the caller do
not count as moved), when the box changed (a barostat), or when the number of beads changed. Between
builds every pair now within the cutoff is in the list (each bead moved at most skin / 2).

Layout (what :mod:`openmm_cgkd.model.fast_hipnn` consumes): the pairs are grouped by (bead i, type
of j) and laid out in ``lines`` of ``slot_width`` slots; a group takes ``ceil(count / slot_width)``
lines, so the environment of a line is one small dense matmul and the scatter goes over lines, not
pairs. Per slot: ``slot_i`` / ``slot_j`` (a padding slot has ``slot_j = slot_i`` and vector 0),
``slot_shift`` (cell shifts, floats holding integers), ``slot_valid``; per line: ``line_row``
(``i * T + t``) and ``line_bead`` (i).

The build uses torchmd-net's brute-force kernel (O(N^2), the same kernel as
:class:`~openmm_cgkd.model.potential.NeighborList`) at ``cutoff + skin``; the skin actually used is
``min(skin, half the narrowest box width - cutoff)`` (0: rebuilt every step), so the minimum image
stays the only image within reach. ``static_shapes``: fixed-size tables (``max_pairs`` pairs,
``N * T + max_pairs / slot_width`` lines; unused lines point at a dummy row ``N * T``) and a rebuild
at every call without any host sync: what a CUDA graph can capture.
"""
import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from openmm_cgkd.quiet import import_torchmdnet

import_torchmdnet()
from torchmdnet.extensions.ops import get_neighbor_pairs_kernel  # noqa: E402

__all__ = ["VerletList", "minimum_image", "box_problem", "check_geometry", "overflow_message", "brute_force_pairs"]


def minimum_image(d: Tensor, box: Tensor) -> Tensor:
    """``d [..., 3]`` (nm) reduced to the minimum image of a reduced triclinic box (rows a, b, c)."""
    d = d - torch.round(d[..., 2:3] / box[2, 2]) * box[2]
    d = d - torch.round(d[..., 1:2] / box[1, 1]) * box[1]
    d = d - torch.round(d[..., 0:1] / box[0, 0]) * box[0]
    return d


def box_problem(b: List[List[float]], cutoff: float) -> str:
    """What is wrong with the box ``b`` (rows a, b, c; nm) for a minimum-image pair search within
    ``cutoff`` (nm): not lower triangular, a width below twice the cutoff, or not in reduced form;
    "" when nothing is. The one box check of the package (TorchScript-able; widths and cutoff
    printed to 0.1 pm)."""
    if b[0][1] != 0.0 or b[0][2] != 0.0 or b[1][2] != 0.0:
        return ("box must be lower triangular (a_y = a_z = b_z = 0), OpenMM's reduced form; "
                + "rows are the box vectors")
    w = min(b[0][0], min(b[1][1], b[2][2]))
    if not w >= 2.0 * cutoff:
        widths = torch.round(torch.tensor([b[0][0], b[1][1], b[2][2], cutoff], dtype=torch.float64), decimals=4)
        v: List[float] = widths.tolist()
        return ("box widths (" + str(v[0]) + ", " + str(v[1]) + ", " + str(v[2])
                + ") nm must be at least twice the cutoff " + str(v[3]) + " nm")
    if abs(b[1][0]) > 0.5 * b[0][0] * (1 + 1e-6) or abs(b[2][0]) > 0.5 * b[0][0] * (1 + 1e-6) \
            or abs(b[2][1]) > 0.5 * b[1][1] * (1 + 1e-6):
        return "box is not in reduced form (need |b_x|, |c_x| <= a_x/2 and |c_y| <= b_y/2)"
    return ""


def check_geometry(pos: Tensor, box: Optional[Tensor], cutoff: float) -> None:
    """The input checks of every neighbour search (host syncs): finite positions; a box (when
    given) that passes :func:`box_problem` (``ValueError`` otherwise)."""
    if not bool(torch.isfinite(pos).all()):
        raise ValueError("positions contain NaN or inf")
    if box is not None:
        b: List[List[float]] = box.cpu().tolist()
        problem = box_problem(b, cutoff)
        if problem != "":
            raise ValueError(problem)


def overflow_message(found: int, within: str, budget: str) -> str:
    """The one neighbour-overflow message: ``found`` pairs ``within`` (e.g. "the cutoff 0.6 nm")
    exceed ``budget`` (the budget's formula and value). Starts with ``NeighborOverflowError``,
    which the Python side matches to raise
    :class:`~openmm_cgkd.model.potential.NeighborOverflowError`."""
    return ("NeighborOverflowError: " + str(found) + " neighbour pairs within " + within + " exceed the budget "
            + budget + "; the system is denser than the model was sized for (or beads overlap). "
            + "Rebuild the model with a larger max_num_neighbors "
            + "(see openmm_cgkd.model.potential.suggest_max_num_neighbors).")


def brute_force_pairs(pos: Tensor, box: Optional[Tensor], cutoff: float) -> Tensor:
    """Reference: the set of directed pairs ``[2, E]`` (i != j) within ``cutoff`` (minimum image),
    sorted by i then j; O(N^2) memory, for tests."""
    d = pos.unsqueeze(1) - pos.unsqueeze(0)
    if box is not None:
        d = minimum_image(d, box)
    r = torch.sqrt((d * d).sum(-1))
    n = pos.shape[0]
    keep = (r < cutoff) & ~torch.eye(n, dtype=torch.bool, device=pos.device)
    return keep.nonzero().t()


class VerletList(nn.Module):
    """See the module docstring. ``update(positions [N,3], box [3,3] or None, bead_types [N])``
    (model dtype, nm) rebuilds the list when needed and returns the positions continuous with the
    last build (``ref + minimum-image displacement``: use these with the slot tables)."""

    cutoff: float
    skin: float
    num_types: int
    slot_width: int
    max_num_neighbors: int
    static_shapes: bool
    check_errors: bool

    def __init__(self, cutoff_nm: float, num_types: int, max_num_neighbors: int, skin_nm: float = 0.1,
                 slot_width: int = 16, static_shapes: bool = False, check_errors: bool = True,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        if skin_nm < 0:
            raise ValueError(f"skin must be >= 0 nm, got {skin_nm}")
        self.cutoff = float(cutoff_nm)
        self.skin = 0.0 if static_shapes else float(skin_nm)
        self.num_types = int(num_types)
        self.slot_width = int(slot_width)
        self.max_num_neighbors = int(max_num_neighbors)
        self.static_shapes = bool(static_shapes)
        self.check_errors = bool(check_errors)
        self.register_buffer("num_builds", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("skin_used", torch.zeros((), dtype=dtype), persistent=False)
        self.register_buffer("ref_pos", torch.zeros((0, 3), dtype=dtype), persistent=False)
        self.register_buffer("ref_box", torch.zeros((3, 3), dtype=dtype), persistent=False)
        self.register_buffer("ref_types", torch.zeros((0,), dtype=torch.long), persistent=False)
        self.register_buffer("slot_i", torch.zeros((0,), dtype=torch.long), persistent=False)
        self.register_buffer("slot_j", torch.zeros((0,), dtype=torch.long), persistent=False)
        self.register_buffer("slot_shift", torch.zeros((0, 3), dtype=dtype), persistent=False)
        self.register_buffer("slot_valid", torch.zeros((0,), dtype=torch.bool), persistent=False)
        self.register_buffer("line_row", torch.zeros((0,), dtype=torch.long), persistent=False)
        self.register_buffer("line_bead", torch.zeros((0,), dtype=torch.long), persistent=False)

    def list_budget(self, n: int, skin: float) -> int:
        """Pair budget of the list at ``cutoff + skin``: the model's ``max_num_neighbors * N``
        scaled by the volume ratio (the model's own budget is checked on the pairs within the cutoff)."""
        ratio = ((self.cutoff + skin) / self.cutoff) ** 3
        return int(math.ceil(self.max_num_neighbors * ratio)) * n

    def needs_rebuild(self, pos: Tensor, box: Optional[Tensor], bead_types: Tensor) -> bool:
        if self.static_shapes:
            return True
        if pos.shape[0] != self.ref_pos.shape[0] or not torch.equal(bead_types, self.ref_types):
            return True
        if box is not None:
            if not torch.equal(box, self.ref_box):
                return True
            d = minimum_image(pos - self.ref_pos, box)
        else:
            d = pos - self.ref_pos
        limit = 0.5 * self.skin_used
        return bool(((d * d).sum(-1) > limit * limit).any())

    @torch.jit.export
    def update(self, pos: Tensor, box: Optional[Tensor], bead_types: Tensor) -> Tensor:
        if self.needs_rebuild(pos, box, bead_types):
            self.build(pos, box, bead_types)
            return pos
        if box is None:
            return pos
        return self.ref_pos + minimum_image(pos - self.ref_pos, box)

    def build(self, pos: Tensor, box: Optional[Tensor], bead_types: Tensor) -> None:
        n = pos.shape[0]
        t_n = self.num_types
        m = self.slot_width
        dev = pos.device
        use_periodic = box is not None
        if box is None:
            box_t = torch.zeros((3, 3), dtype=pos.dtype, device=dev)
            skin_t = torch.full((), self.skin, dtype=pos.dtype, device=dev)
        else:
            box_t = box
            half = 0.5 * torch.minimum(torch.minimum(box[0, 0], box[1, 1]), box[2, 2])
            skin_t = torch.clamp(torch.clamp(half - self.cutoff, min=0.0), max=self.skin)
        skin = self.skin if self.static_shapes else float(skin_t)
        max_pairs = self.list_budget(n, skin)
        batch = torch.zeros(n, dtype=torch.long, device=dev)
        edge_index, edge_vec, _w, num_pairs = get_neighbor_pairs_kernel(
            "brute", pos, batch, box_t, use_periodic, 0.0, self.cutoff + skin, max_pairs, False, True, 0)
        z = bead_types.to(torch.long)
        if self.static_shapes:
            torch._assert_async(num_pairs[0] <= max_pairs,
                                "NeighborOverflowError: neighbour pairs exceed the budget of the Verlet list")
        else:
            found = int(num_pairs[0].item())
            if found > max_pairs:
                raise RuntimeError(overflow_message(
                    found, "the cutoff + skin " + str(self.cutoff + skin) + " nm",
                    str(max_pairs) + " (max_num_neighbors * N scaled to the skin)"))
            edge_index = edge_index[:, :found]
            edge_vec = edge_vec[:found]
        valid_pair = edge_index[0] >= 0
        safe = edge_index.clamp(min=0)
        if use_periodic:
            shift = edge_vec - (pos.index_select(0, safe[0]) - pos.index_select(0, safe[1]))
            nc = torch.round(shift[:, 2] / box_t[2, 2])
            rest = shift - nc.unsqueeze(1) * box_t[2]
            nb = torch.round(rest[:, 1] / box_t[1, 1])
            rest = rest - nb.unsqueeze(1) * box_t[1]
            na = torch.round(rest[:, 0] / box_t[0, 0])
            cell = torch.stack((na, nb, nc), dim=1)
        else:
            cell = torch.zeros_like(edge_vec)
        n_rows = n * t_n
        # group key (i, type of j); padding pairs (static shapes) go to the dummy row n_rows
        key = torch.where(valid_pair, safe[0] * t_n + z.index_select(0, safe[1]),
                          torch.full_like(safe[0], n_rows))
        order = torch.argsort(key, stable=True)
        keys = key.index_select(0, order)
        # counts per row (+ the dummy row): index_add, not bincount (no host sync)
        counts = torch.zeros(n_rows + 1, dtype=torch.long, device=dev).index_add_(0, keys, torch.ones_like(keys))
        lines = torch.div(counts + (m - 1), m, rounding_mode="floor")
        if self.static_shapes:
            # fixed number of lines; the dummy row takes what the real rows leave (room for all padding)
            n_lines = n_rows + (max_pairs + m - 1) // m
            lines = torch.cat([lines[:n_rows], (n_lines - lines[:n_rows].sum()).reshape(1)])
        else:
            n_lines = int(lines.sum())
        line_start = torch.cumsum(lines, 0) - lines
        start = torch.cumsum(counts, 0) - counts
        slot = torch.arange(keys.numel(), device=dev) - start.index_select(0, keys)
        line_row = torch.repeat_interleave(torch.arange(n_rows + 1, device=dev), lines, output_size=n_lines)
        slot_index = (line_start.index_select(0, keys) + torch.div(slot, m, rounding_mode="floor")) * m \
            + torch.remainder(slot, m)
        line_bead = torch.div(line_row, t_n, rounding_mode="floor").clamp(max=n - 1)
        slot_i = line_bead.repeat_interleave(m)
        total = n_lines * m
        slot_valid = torch.zeros(total, dtype=torch.bool, device=dev).index_copy_(
            0, slot_index, valid_pair.index_select(0, order))
        slot_j = slot_i.clone().index_copy_(0, slot_index, safe[1].index_select(0, order))
        slot_shift = torch.zeros((total, 3), dtype=pos.dtype, device=dev).index_copy_(
            0, slot_index, cell.index_select(0, order))
        self.slot_i = slot_i
        self.slot_j = slot_j
        self.slot_shift = slot_shift
        self.slot_valid = slot_valid
        self.line_row = line_row
        self.line_bead = line_bead
        self.ref_pos = pos.clone()
        self.ref_box = box_t.clone()
        self.ref_types = z.clone()
        self.skin_used = skin_t
        self.num_builds = self.num_builds + 1

    @torch.jit.export
    def pairs_within(self, pos_u: Tensor, box: Optional[Tensor], cutoff: float) -> Tensor:
        """The directed pairs ``[2, E]`` of the list within ``cutoff`` at positions ``pos_u`` (from
        :meth:`update`), sorted by i then j (for tests)."""
        vec = pos_u.index_select(0, self.slot_i) - pos_u.index_select(0, self.slot_j)
        if box is not None:
            vec = vec + self.slot_shift @ box
        d2 = (vec * vec).sum(-1)
        keep = self.slot_valid & (d2 < cutoff * cutoff)
        i = self.slot_i[keep]
        j = self.slot_j[keep]
        key = i * pos_u.shape[0] + j
        order = torch.argsort(key)
        return torch.stack([i.index_select(0, order), j.index_select(0, order)])
