"""CG potential: a torchmd-net representation plus a per-bead energy head (TorchScript-able).

Units: positions and box in **nm**, energies in **kJ/mol**, forces in **kJ/mol/nm**. torchmd-net
itself is unit-agnostic; every length it sees here (cutoffs, RBF centres, box) is in nm.

Inputs of :meth:`CGPotential.forward`:

* ``bead_types``: ``LongTensor[N]``, type indices ``0 .. num_types-1`` (the bundle manifest's
  bead-type order),
* ``positions``: ``Tensor[N, 3]`` (nm), any float dtype: cast to the model dtype, results are
  returned in the input dtype (OpenMM hands float64 positions on CPU / Reference),
* ``box``: ``Tensor[3, 3]`` (nm), rows are the box vectors a, b, c, or ``None`` (or an all-zero
  box) for no periodic boundary conditions. The box must be in OpenMM's reduced triclinic form (lower triangular,
  ``a_y = a_z = b_z = 0``, ``a_x >= 2 |b_x|``, ``a_x >= 2 |c_x|``, ``b_y >= 2 |c_y|``) and every
  width ``a_x, b_y, c_z`` at least twice the cutoff (see :func:`check_box`).

Outputs ``(energy [] , bead_energies [N], forces [N, 3])`` with ``energy = bead_energies.sum()``
and ``forces = -d energy / d positions`` (autograd). The network excludes the repulsive wall
(:mod:`openmm_cgkd.model.wall_torch`; training adds it, OpenMM serves it as a
``CustomNonbondedForce``).

How the graph is built: :class:`NeighborList` calls torchmd-net's neighbour kernel on detached
positions to get the pair list and each pair's periodic image (an integer combination of box
vectors); :func:`edge_geometry` then recomputes pair vectors and distances from the positions
with plain differentiable torch ops. So autograd never goes through the custom kernel (forces of
any order, float64 and ``create_graph=True`` for force training all work), and one pair list can
serve several networks (:class:`~openmm_cgkd.model.ensemble.EnsemblePotential`). The precomputed
edges reach the torchmd-net representation through :class:`_EdgePassThrough`, which replaces its
``distance`` module (see there).
"""
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from openmm_cgkd.config import Config, ConfigError, config_from_dict, read_yaml_mapping
from openmm_cgkd.errors import CGKDError
from openmm_cgkd.model.hipnn import HipnnRepresentation, PassThroughHead
from openmm_cgkd.model.neighbors import box_problem, check_geometry, overflow_message
from openmm_cgkd.quiet import import_torchmdnet

__all__ = ["ARCHITECTURES", "STACKED_ARCHITECTURES", "PotentialConfig", "load_model_config", "model_config_names", "NeighborList", "CGPotential", "edge_geometry",
           "suggest_max_num_neighbors", "check_box", "NeighborOverflowError"]

ARCHITECTURES = ("tensornet", "graph-network", "equivariant-transformer", "hipnn-ts")
# architectures whose K members can be stacked into one network (openmm_cgkd.model.stacked)
STACKED_ARCHITECTURES = ("hipnn-ts",)
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_HIPNN_ONLY = ("sensitivity_min_nm", "sensitivity_max_nm")  # PotentialConfig fields only hipnn-ts reads


class NeighborOverflowError(CGKDError, RuntimeError):
    """More neighbour pairs than ``max_num_neighbors * N`` (python-side check; the scripted
    module raises a ``RuntimeError`` / ``torch.jit.Error`` whose message starts the same)."""


import_torchmdnet()
from torchmdnet.extensions.ops import get_neighbor_pairs_kernel  # noqa: E402


def suggest_max_num_neighbors(number_density_per_nm3: float, cutoff_nm: float,
                              safety: float = 1.5, multiple: int = 8) -> int:
    """Neighbour budget per bead for a liquid of the given number density (beads/nm^3).

    Expected neighbours within the cutoff = density * 4/3 pi rc^3 (+1 for the self pair that
    the tensornet / equivariant-transformer graphs include); times ``safety`` for density
    fluctuations and clustering, rounded up to a multiple of ``multiple``. The pair budget of
    the whole system is this times N (torchmd-net's convention), so local clusters denser than
    ``safety`` x average are still fine as long as the total stays below it.
    """
    if not number_density_per_nm3 > 0 or not cutoff_nm > 0:
        raise ValueError("number density (beads/nm^3) and cutoff (nm) must be positive, "
                         f"got {number_density_per_nm3} and {cutoff_nm}")
    if not safety >= 1:
        raise ValueError(f"safety factor must be >= 1, got {safety}")
    expected = number_density_per_nm3 * 4.0 / 3.0 * math.pi * cutoff_nm ** 3 + 1.0
    n = int(math.ceil(expected * safety))
    return int(math.ceil(n / multiple) * multiple)


def check_box(box_nm, cutoff_nm: float) -> None:
    """Raise ``ValueError`` unless ``box_nm`` (3x3, rows = vectors, nm) is a reduced triclinic
    box whose widths are all at least twice ``cutoff_nm``: the conditions under which the
    minimum-image pair search (OpenMM's and torchmd-net's) is exact (the checks of
    :func:`~openmm_cgkd.model.neighbors.box_problem`, which the neighbour lists run too)."""
    b = torch.as_tensor(box_nm, dtype=torch.float64).detach().cpu()
    if b.shape != (3, 3):
        raise ValueError(f"box must be 3x3 (rows are box vectors a, b, c; nm), got shape {tuple(b.shape)}")
    if not bool(torch.isfinite(b).all()):
        raise ValueError("box has non-finite entries")
    problem = box_problem(b.tolist(), float(cutoff_nm))
    if problem:
        raise ValueError(problem)


@dataclass
class PotentialConfig(Config):
    """Architecture of a :class:`CGPotential`; plain values, YAML-serialisable (lengths in nm).
    Read by the package's config mechanism (:mod:`openmm_cgkd.config`): unknown keys, wrong types
    and impossible values are :class:`~openmm_cgkd.config.ConfigError` s.

    ``max_num_neighbors`` is the per-bead neighbour budget: the whole system may hold at most
    ``max_num_neighbors * N`` directed pairs (both i->j and j->i count, plus one self pair per
    bead for tensornet / equivariant-transformer). Size it with
    :func:`suggest_max_num_neighbors`; overflowing it is an error, never silent truncation.

    ``hipnn-ts`` (HIP-NN with tensor sensitivities, :mod:`openmm_cgkd.model.stacked`) reads
    ``embedding_dim`` (features), ``num_layers`` (atom-environment layers after its one
    interaction layer), ``num_rbf`` (sensitivity functions), ``activation`` (``softplus``,
    ``silu`` or ``tanh``) and its own ``sensitivity_min_nm`` / ``sensitivity_max_nm`` (centres of
    the first and last sensitivity function, nm; default 0.3 and 0.85 times the cutoff); the
    torchmd-net-only fields are ignored.
    """

    architecture: str = "graph-network"
    num_types: int = 3
    cutoff_nm: float = 1.0
    cutoff_lower_nm: float = 0.0
    embedding_dim: int = 64
    num_layers: int = 3
    num_rbf: int = 32
    rbf_type: str = "gauss"  # torchmd-net's "expnorm" assumes Angstrom cutoffs: in nm it sees < 0.3 nm
    trainable_rbf: bool = False
    activation: str = "silu"
    max_num_neighbors: int = 96
    head_hidden_layers: int = 0  # extra hidden layers of the per-bead energy MLP (Scalar head)
    neighbor_embedding: bool = True  # graph-network, equivariant-transformer
    aggr: str = "add"  # graph-network
    num_heads: int = 8  # equivariant-transformer
    distance_influence: str = "both"  # equivariant-transformer
    attn_activation: str = "silu"  # equivariant-transformer
    equivariance_group: str = "O(3)"  # tensornet
    static_shapes: bool = False  # tensornet, hipnn-ts: fixed-size (padded) pair list, CUDA-graph friendly
    sensitivity_min_nm: Optional[float] = None  # hipnn-ts: centre of the shortest-range sensitivity (0.3 cutoff)
    sensitivity_max_nm: Optional[float] = None  # hipnn-ts: centre of the longest-range one (0.85 cutoff)
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"unknown architecture {self.architecture!r}; choose one of {list(ARCHITECTURES)}")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"dtype must be one of {list(_DTYPES)}, got {self.dtype!r}")
        self.cutoff_nm = float(self.cutoff_nm)
        self.cutoff_lower_nm = float(self.cutoff_lower_nm)
        if not 0 <= self.cutoff_lower_nm < self.cutoff_nm:
            raise ConfigError(f"need 0 <= cutoff_lower_nm < cutoff_nm, got {self.cutoff_lower_nm}, {self.cutoff_nm}")
        for name in ("num_types", "embedding_dim", "num_layers", "num_rbf", "max_num_neighbors", "num_heads"):
            v = getattr(self, name)
            if int(v) != v or int(v) < (0 if name == "num_layers" else 1):
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
            setattr(self, name, int(v))
        if self.static_shapes and self.architecture not in ("tensornet", "hipnn-ts"):
            raise ConfigError("static_shapes is supported by the tensornet and hipnn-ts architectures only")
        if self.architecture == "hipnn-ts":
            self.sensitivity_min_nm = float(0.3 * self.cutoff_nm if self.sensitivity_min_nm is None
                                            else self.sensitivity_min_nm)
            self.sensitivity_max_nm = float(0.85 * self.cutoff_nm if self.sensitivity_max_nm is None
                                            else self.sensitivity_max_nm)
            if not 0 < self.sensitivity_min_nm < self.sensitivity_max_nm <= self.cutoff_nm:
                raise ConfigError("hipnn-ts needs 0 < sensitivity_min_nm < sensitivity_max_nm <= cutoff_nm, got "
                                 f"{self.sensitivity_min_nm}, {self.sensitivity_max_nm}, {self.cutoff_nm}")
            if self.activation not in ("softplus", "silu", "tanh"):
                raise ConfigError(f"hipnn-ts activation must be softplus, silu or tanh, got {self.activation!r}")
            if self.trainable_rbf or self.head_hidden_layers:
                raise ConfigError("hipnn-ts has fixed sensitivity functions (shared by stacked members) and a "
                                 "linear energy readout: trainable_rbf must be false and head_hidden_layers 0")
        if self.architecture == "equivariant-transformer" and self.embedding_dim % self.num_heads:
            raise ConfigError(f"embedding_dim {self.embedding_dim} must be divisible by num_heads {self.num_heads}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    @property
    def self_loops(self) -> bool:
        """Whether the representation's graph includes i->i pairs (as torchmd-net builds it)."""
        return self.architecture not in ("graph-network", "hipnn-ts")

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.architecture != "hipnn-ts":  # keep the other architectures' mappings (and fingerprints) as they were
            for name in _HIPNN_ONLY:
                d.pop(name)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "architecture") -> "PotentialConfig":
        """From a mapping (a manifest's ``architecture``, a YAML file); :class:`ConfigError` on
        unknown keys, wrong types or impossible values."""
        return config_from_dict(cls, d, source)

    def to_yaml(self, path: str | Path | None = None) -> str:
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> "PotentialConfig":
        """From a YAML file, or YAML text (a string holding a newline, or naming no file)."""
        import yaml

        p = Path(path_or_text)
        if (isinstance(path_or_text, Path) or "\n" not in str(path_or_text)) and p.exists():
            return cls.from_dict(read_yaml_mapping(p, "potential config"), str(p))
        data = yaml.safe_load(str(path_or_text))
        if not isinstance(data, dict):
            raise ConfigError(f"potential config YAML must be a mapping, got {type(data).__name__}")
        return cls.from_dict(data, "potential config")


CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def model_config_names() -> list:
    """Names of the shipped architecture configs (``openmm_cgkd/model/configs/<name>.yaml``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_model_config(name_or_path, **overrides) -> PotentialConfig:
    """A :class:`PotentialConfig` from a YAML file, or a shipped config by name (``tensornet``,
    ``graph-network``, ``equivariant-transformer``, ``hipnn-ts``); ``overrides`` replace fields.
    A ``hipnn-ts`` config whose cutoff is overridden gets its sensitivity range rescaled with the
    cutoff (0.3 and 0.85 of it) unless the overrides set that range too."""
    p = Path(name_or_path)
    if not p.is_file():
        p = CONFIG_DIR / f"{name_or_path}.yaml"
        if not p.is_file():
            from openmm_cgkd.config import ConfigFileNotFoundError

            raise ConfigFileNotFoundError(f"no model config {str(name_or_path)!r}: not a file, and not one of the "
                                          f"shipped configs {model_config_names()}")
    cfg = PotentialConfig.from_yaml(p)
    if overrides:
        base = cfg.to_dict()
        if cfg.architecture == "hipnn-ts" and "cutoff_nm" in overrides:
            for name in _HIPNN_ONLY:
                base[name] = None  # the defaults follow the new cutoff
        cfg = PotentialConfig.from_dict({**base, **overrides})
    return cfg


class NeighborList(nn.Module):
    """Directed pair list (i->j and j->i) within ``cutoff_nm``, non-differentiable.

    ``forward(positions [N,3], box [3,3] or None) -> (edge_index [2,E] long, cell_shifts [E,3])``:
    the pair vector is ``positions[i] - positions[j] + cell_shifts @ box`` (``cell_shifts`` are
    integers stored as floats; zero without a box). With ``static_shapes`` the list keeps its
    full size ``max_num_neighbors * N``, unused slots holding index -1.

    ``check_errors`` (default) checks the inputs (finite positions; a reduced triclinic box at
    least twice the cutoff wide) and reads the pair count back to the host to raise a clear
    error on overflow (device syncs per call); without it only an asynchronous device assert on
    overflow remains (needed inside CUDA graphs).
    """

    cutoff_upper: float
    cutoff_lower: float
    max_num_neighbors: int
    loop: bool
    static_shapes: bool
    check_errors: bool

    def __init__(self, cutoff_nm: float, max_num_neighbors: int, loop: bool = False,
                 cutoff_lower_nm: float = 0.0, static_shapes: bool = False, check_errors: bool = True):
        super().__init__()
        import_torchmdnet()
        self.cutoff_upper = float(cutoff_nm)
        self.cutoff_lower = float(cutoff_lower_nm)
        self.max_num_neighbors = int(max_num_neighbors)
        self.loop = bool(loop)
        self.static_shapes = bool(static_shapes)
        self.check_errors = bool(check_errors)

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        pos = positions.detach()
        n = pos.shape[0]
        max_pairs = self.max_num_neighbors * n
        batch = torch.zeros(n, dtype=torch.long, device=pos.device)
        use_periodic = box is not None
        if box is None:
            box_t = torch.zeros((3, 3), dtype=pos.dtype, device=pos.device)
        else:
            box_t = box.detach().to(dtype=pos.dtype, device=pos.device)
        if self.check_errors:
            check_geometry(pos, box_t if use_periodic else None, self.cutoff_upper)
        edge_index, edge_vec, _, num_pairs = get_neighbor_pairs_kernel(
            "brute", pos, batch, box_t, use_periodic, self.cutoff_lower, self.cutoff_upper,
            max_pairs, self.loop, True, 0)
        if self.check_errors:
            found = int(num_pairs[0].item())
            if found > max_pairs:
                raise RuntimeError(overflow_message(
                    found, "the cutoff " + str(self.cutoff_upper) + " nm",
                    "max_num_neighbors * N = " + str(self.max_num_neighbors) + " * " + str(n) + " = "
                    + str(max_pairs)))
        else:
            torch._assert_async(num_pairs[0] <= max_pairs,
                                "NeighborOverflowError: neighbour pairs exceed max_num_neighbors * N")
        if not self.static_shapes:
            keep = edge_index[0] >= 0
            edge_index = edge_index[:, keep]
            edge_vec = edge_vec[keep]
        if use_periodic:
            safe = edge_index.clamp(min=0)
            shift = edge_vec - (pos.index_select(0, safe[0]) - pos.index_select(0, safe[1]))
            # express the image shift in box-vector units (lower-triangular box): exact integers
            nc = torch.round(shift[:, 2] / box_t[2, 2])
            rest = shift - nc.unsqueeze(1) * box_t[2]
            nb = torch.round(rest[:, 1] / box_t[1, 1])
            rest = rest - nb.unsqueeze(1) * box_t[1]
            na = torch.round(rest[:, 0] / box_t[0, 0])
            cell_shifts = torch.stack((na, nb, nc), dim=1)
            if self.static_shapes:
                cell_shifts = cell_shifts.masked_fill((edge_index[0] < 0).unsqueeze(1), 0.0)
        else:
            cell_shifts = torch.zeros_like(edge_vec)
        return edge_index, cell_shifts


def edge_geometry(positions: Tensor, edge_index: Tensor, cell_shifts: Tensor,
                  box: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """Differentiable pair distances ``[E]`` and vectors ``[E,3]`` (``r_i - r_j`` + image).

    Self pairs and padding slots (index -1) get distance 0 and vector 0, with finite gradients
    of every order.
    """
    safe = edge_index.clamp(min=0)
    vec = positions.index_select(0, safe[0]) - positions.index_select(0, safe[1])
    if box is not None:
        vec = vec + cell_shifts.to(positions.dtype) @ box.to(positions.dtype)
    degenerate = (edge_index[0] == edge_index[1]) | (edge_index[0] < 0)
    vec = vec.masked_fill(degenerate.unsqueeze(1), 0.0)
    d2 = (vec * vec).sum(dim=1)
    dist = torch.sqrt(d2.masked_fill(degenerate, 1.0)).masked_fill(degenerate, 0.0)
    return dist, vec


def _model_box(box: Optional[Tensor], dtype: torch.dtype, device: torch.device,
               static_shapes: bool) -> Optional[Tensor]:
    """The box in the model dtype, or None for no periodic boundaries. An all-zero box also
    means non-periodic (checking costs a device sync, so not with static shapes / CUDA graphs:
    pass None there)."""
    if box is None:
        return None
    b = box.detach().to(dtype=dtype, device=device)
    if not static_shapes and not bool(torch.any(b != 0)):
        return None
    return b


class _EdgePassThrough(nn.Module):
    """Stands in for a torchmd-net representation's ``distance`` (``OptimizedDistance``) module.

    torchmd-net 3.1's ``TorchMD_GN``, ``TorchMD_ET`` and ``TensorNet`` call
    ``self.distance(pos, batch, box)`` once and use ``pos``, ``batch`` and ``box`` for nothing
    else (they only hand them back in their outputs). :class:`CGPotential` therefore calls the
    representation with the precomputed graph in those slots: ``pos := edge_vec [E,3]``,
    ``batch := edge_index [2,E]``, ``box := edge_weight [E]``, and this module returns them in
    ``OptimizedDistance``'s order. ``edge_vec`` is cloned because the equivariant transformer
    normalises it in place. ``tests/unit/model/test_potential.py`` checks the result against the
    unmodified torchmd-net module, so an upstream change in this contract is caught.
    """

    return_vecs: bool

    def __init__(self, return_vecs: bool):
        super().__init__()
        self.return_vecs = return_vecs

    def forward(self, pos: Tensor, batch: Optional[Tensor] = None,
                box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        assert batch is not None, "edge_index missing"
        assert box is not None, "edge_weight missing"
        if self.return_vecs:
            return batch, box, pos.clone()
        return batch, box, None


def _build_representation(cfg: PotentialConfig) -> tuple[nn.Module, nn.Module]:
    """torchmd-net representation and matching output (head) module for ``cfg`` (for ``hipnn-ts``:
    a one-member :class:`~openmm_cgkd.model.hipnn.HipnnTS` behind the same interface)."""
    import_torchmdnet()
    if cfg.architecture == "hipnn-ts":
        return HipnnRepresentation(cfg).to(cfg.torch_dtype), PassThroughHead()
    from torchmdnet.models import output_modules

    dtype = cfg.torch_dtype
    shared = dict(hidden_channels=cfg.embedding_dim, num_layers=cfg.num_layers, num_rbf=cfg.num_rbf,
                  rbf_type=cfg.rbf_type, trainable_rbf=cfg.trainable_rbf, activation=cfg.activation,
                  cutoff_lower=cfg.cutoff_lower_nm, cutoff_upper=cfg.cutoff_nm, max_z=cfg.num_types,
                  max_num_neighbors=cfg.max_num_neighbors, dtype=dtype)
    if cfg.architecture == "graph-network":
        from torchmdnet.models.torchmd_gn import TorchMD_GN

        rep = TorchMD_GN(num_filters=cfg.embedding_dim, aggr=cfg.aggr,
                         neighbor_embedding=cfg.neighbor_embedding, **shared)
        head = output_modules.Scalar(cfg.embedding_dim, activation=cfg.activation, dtype=dtype,
                                     num_layers=cfg.head_hidden_layers)
    elif cfg.architecture == "equivariant-transformer":
        from torchmdnet.models.torchmd_et import TorchMD_ET

        rep = TorchMD_ET(attn_activation=cfg.attn_activation, num_heads=cfg.num_heads,
                         distance_influence=cfg.distance_influence,
                         neighbor_embedding=cfg.neighbor_embedding, **shared)
        head = output_modules.EquivariantScalar(cfg.embedding_dim, activation=cfg.activation, dtype=dtype)
    else:
        from torchmdnet.models.tensornet import TensorNet

        # TensorNet's max_z embedding needs room for the ghost atom (type 0) of static shapes: fine.
        rep = TensorNet(equivariance_invariance_group=cfg.equivariance_group,
                        static_shapes=cfg.static_shapes, **shared)
        head = output_modules.Scalar(cfg.embedding_dim, activation=cfg.activation, dtype=dtype,
                                     num_layers=cfg.head_hidden_layers)
    rep.distance = _EdgePassThrough(return_vecs=cfg.architecture != "graph-network")
    # some torchmd-net submodules ignore the dtype argument (e.g. TensorNet's RBF): cast all
    return rep.to(dtype), head.to(dtype)


def check_inputs(bead_types: Tensor, positions: Tensor, box: Optional[Tensor], num_types: int,
                 check_types: bool) -> None:
    """Shapes of the forward inputs (positions [N,3] nm, bead_types [N], box [3,3] nm or None)
    and, with ``check_types`` (a device sync), bead types in ``0 .. num_types-1``."""
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ValueError("positions must have shape [N, 3] (nm)")
    if bead_types.dim() != 1 or bead_types.shape[0] != positions.shape[0]:
        raise ValueError("bead_types must have shape [N] matching positions [N, 3]")
    if box is not None:
        if box.dim() != 2 or box.shape[0] != 3 or box.shape[1] != 3:
            raise ValueError("box must have shape [3, 3] (rows are box vectors, nm)")
    if check_types and bead_types.numel() > 0:
        lo = int(bead_types.min().item())
        hi = int(bead_types.max().item())
        if lo < 0 or hi >= num_types:
            raise ValueError("bead_types must lie in 0.." + str(num_types - 1) + " (the model's "
                             + str(num_types) + " bead types), got range " + str(lo) + ".." + str(hi))


class CGPotential(nn.Module):
    """torchmd-net representation + per-bead energy head: ``forward(bead_types, positions, box)``
    -> ``(energy [], bead_energies [N], forces [N,3])`` in kJ/mol and kJ/mol/nm (see module doc).

    Per-bead energy ``e_i = energy_scale[t_i] * head(x_i) + energy_offset[t_i]`` where ``x_i`` is
    the representation's feature vector of bead i and ``head`` torchmd-net's ``Scalar`` (or
    ``EquivariantScalar``) output MLP before its reduction. ``energy_scale`` / ``energy_offset``
    are per-type buffers (1 and 0 by default; see :meth:`set_energy_affine`).

    Attributes a caller may set (plain attributes, also on the scripted module):

    * ``create_graph`` (False): keep the autograd graph of energies and forces, needed to train
      (losses on forces, per-bead energies or energy all backpropagate to the parameters);
      leave False for inference: no graph is kept and the outputs are detached.
    * ``check_errors`` (True): raise clear errors on neighbour overflow and bad bead types (costs
      a device sync per call; set False for CUDA graphs).
    """

    create_graph: bool
    check_errors: bool
    cutoff_nm: float
    num_types: int
    max_num_neighbors: int
    architecture: str

    def __init__(self, config: PotentialConfig):
        super().__init__()
        self.config = config  # python-side only (ignored by TorchScript)
        self.create_graph = False
        self.check_errors = True
        self.cutoff_nm = config.cutoff_nm
        self.num_types = config.num_types
        self.max_num_neighbors = config.max_num_neighbors
        self.architecture = config.architecture
        self.neighbors = NeighborList(config.cutoff_nm, config.max_num_neighbors, loop=config.self_loops,
                                      cutoff_lower_nm=config.cutoff_lower_nm,
                                      static_shapes=config.static_shapes)
        self.representation, self.head = _build_representation(config)
        dtype = config.torch_dtype
        self.register_buffer("energy_scale", torch.ones(config.num_types, dtype=dtype))
        self.register_buffer("energy_offset", torch.zeros(config.num_types, dtype=dtype))

    # -- python-side helpers -------------------------------------------------------------------
    def set_energy_affine(self, scale=None, offset=None) -> None:
        """Set the per-type energy scale and/or offset (kJ/mol), length ``num_types`` each."""
        for name, value in (("energy_scale", scale), ("energy_offset", offset)):
            if value is None:
                continue
            buf = getattr(self, name)
            t = torch.as_tensor(value, dtype=buf.dtype, device=buf.device).reshape(-1)
            if t.numel() == 1:
                t = t.expand(self.num_types)
            if t.shape != buf.shape:
                raise ValueError(f"{name} needs {self.num_types} values (one per bead type), got {t.numel()}")
            buf.copy_(t)

    @torch.jit.export
    def set_check_errors(self, value: bool) -> None:
        """Switch the input / overflow checks (also on a scripted or loaded module)."""
        self.check_errors = value
        self.neighbors.check_errors = value

    # -- TorchScript-able computation ----------------------------------------------------------
    @torch.jit.export
    def model_dtype(self) -> torch.dtype:
        return self.energy_offset.dtype

    @torch.jit.export
    def bead_energies_from_edges(self, bead_types: Tensor, positions: Tensor, edge_index: Tensor,
                                 cell_shifts: Tensor, box: Optional[Tensor]) -> Tensor:
        """Per-bead energies [N] (kJ/mol) on a precomputed pair list (see :class:`NeighborList`).

        ``positions`` (model dtype) may require grad; the result is differentiable in it.
        """
        edge_weight, edge_vec = edge_geometry(positions, edge_index, cell_shifts, box)
        z = bead_types.to(torch.long)
        x, v, z_out, _pos, batch = self.representation(z, edge_vec, edge_index, edge_weight)
        e = self.head.pre_reduce(x, v, z_out, positions, batch)
        e = e.reshape(-1)
        return e * self.energy_scale.index_select(0, z) + self.energy_offset.index_select(0, z)

    def forward(self, bead_types: Tensor, positions: Tensor,
                box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        check_inputs(bead_types, positions, box, self.num_types, self.check_errors)
        dtype = self.energy_offset.dtype
        in_dtype = positions.dtype
        pos = positions.detach().to(dtype).requires_grad_(True)
        box_m = _model_box(box, dtype, pos.device, self.neighbors.static_shapes)
        # forces need autograd even when called under torch.no_grad() (TorchScript has no
        # enable_grad context manager; set_grad_enabled works as a plain call in both modes)
        grad_was_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(True)
        edge_index, cell_shifts = self.neighbors(pos, box_m)
        bead_energies = self.bead_energies_from_edges(bead_types, pos, edge_index, cell_shifts, box_m)
        energy = bead_energies.sum()
        grads = torch.autograd.grad([energy], [pos], create_graph=self.create_graph)
        torch.set_grad_enabled(grad_was_enabled)
        grad = grads[0]
        if grad is None:
            forces = torch.zeros_like(pos)
        else:
            forces = -grad
        if not self.create_graph:
            # the graph was freed by autograd.grad: hand back plain tensors
            energy = energy.detach()
            bead_energies = bead_energies.detach()
        if in_dtype != dtype and (in_dtype == torch.float32 or in_dtype == torch.float64):
            return energy.to(in_dtype), bead_energies.to(in_dtype), forces.to(in_dtype)
        return energy, bead_energies, forces
