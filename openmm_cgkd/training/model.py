"""The model as training sees it: a :class:`CGPotential` plus its wall, evaluated on batches.

:class:`CGPotential` evaluates one frame. Training evaluates B frames at once: each frame gets
its own pair list (the potential's :class:`NeighborList`, so the same cutoff, budget and
overflow error), the pair lists are joined into one graph of B*N beads, and the network's
``bead_energies_from_edges`` runs once on it. Periodic images are passed as explicit shift
vectors (``cell_shifts @ box`` of each frame, with an identity "box"), so frames may have
different boxes. The result equals B separate ``forward`` calls (``tests/unit/training/test_training_model.py``).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor, nn

from openmm_cgkd.model.potential import CGPotential, PotentialConfig, suggest_max_num_neighbors
from openmm_cgkd.model.wall import WallParameters
from openmm_cgkd.model.wall_torch import WallPotential, suggest_wall_max_num_neighbors

__all__ = ["TrainablePotential", "potential_config_for", "number_density"]


def number_density(positions: np.ndarray, boxes: np.ndarray) -> float:
    """Beads per nm^3 (mean over frames). Without a box (all-zero boxes): the beads over the
    volume of their bounding box grown by 0.5 nm on each side (a generous neighbour budget)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if not np.any(boxes != 0):
        x = np.asarray(positions, dtype=np.float64)
        extent = x.max(axis=1) - x.min(axis=1) + 1.0  # (F, 3)
        return float(positions.shape[1] / np.prod(extent, axis=1).mean())
    volumes = np.abs(np.linalg.det(boxes))
    return float(positions.shape[1] / volumes.mean())


def check_boxes_for_cutoff(boxes_nm, cutoff_nm: float, what: str = "the dataset") -> None:
    """:class:`ConfigError` when a box of ``boxes_nm`` ((F, 3, 3) nm, rows = vectors, reduced
    form) is narrower than twice ``cutoff_nm`` in some direction: the minimum-image pair search
    of the network would miss pairs (checked before training or labelling starts). Non-periodic
    data (all-zero boxes) have no minimum image and pass."""
    import numpy as np

    from openmm_cgkd.training.config import ConfigError

    b = np.asarray(boxes_nm, dtype=np.float64).reshape(-1, 3, 3)
    if not np.any(b):
        return
    widths = np.stack([b[:, 0, 0], b[:, 1, 1], b[:, 2, 2]], axis=1)
    narrowest = float(np.min(np.abs(widths))) if widths.size else float("inf")
    if narrowest < 2.0 * cutoff_nm:
        raise ConfigError(f"{what}: the box is {narrowest:.4g} nm wide somewhere, narrower than twice the model's "
                          f"cutoff {cutoff_nm:.4g} nm; use a smaller model.cutoff_nm (< {narrowest / 2:.4g}) or a "
                          "larger box")


def potential_config_for(model: dict, type_names: list[str], density_per_nm3: float) -> PotentialConfig:
    """A :class:`PotentialConfig` from a config mapping: ``num_types`` comes from the dataset and,
    unless given, ``max_num_neighbors`` is sized from the dataset's density and the cutoff.

    ``base: NAME_OR_YAML`` starts from a shipped model config (``tensornet``, ``graph-network``,
    ``equivariant-transformer``) or a YAML file; the other keys override its fields.
    """
    d = dict(model)
    base = d.pop("base", None)
    if base is not None:
        from openmm_cgkd.model.potential import load_model_config

        shipped = load_model_config(base).to_dict()
        for key in ("num_types", "max_num_neighbors"):  # sized for the base's system: take them from this data
            shipped.pop(key)
        d = {**shipped, **d}
    if "num_types" in d and int(d["num_types"]) != len(type_names):
        from openmm_cgkd.training.config import ConfigError

        raise ConfigError(f"model.num_types = {d['num_types']} but the dataset has {len(type_names)} bead types "
                          f"{type_names}")
    d["num_types"] = len(type_names)
    if "max_num_neighbors" not in d:
        from openmm_cgkd.training.config import ConfigError

        cutoff = d.get("cutoff_nm", PotentialConfig.cutoff_nm)
        if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not 0 < cutoff < float("inf"):
            raise ConfigError(f"model.cutoff_nm must be a positive number (nm), got {cutoff!r}")
        cutoff = float(cutoff)
        d["max_num_neighbors"] = suggest_max_num_neighbors(density_per_nm3, cutoff, safety=2.0)
    cfg = PotentialConfig.from_dict(d)
    if cfg.rbf_type == "expnorm" and not cfg.trainable_rbf:
        warnings.warn("rbf_type 'expnorm' with fixed RBFs: torchmd-net's expnorm basis is scaled for Angstrom "
                      "cutoffs; with cutoffs in nm its functions are ~0 beyond ~0.3 nm and the network barely "
                      "sees distances. Use rbf_type 'gauss' (or trainable_rbf: true).", stacklevel=2)
    return cfg


def training_wall(wall: WallParameters | None, density_per_nm3: float, config: PotentialConfig):
    """The torch wall added to the network in training (None without a wall), its neighbour
    budget sized from the bead density (1/nm^3; 0 = unknown: 32 neighbours)."""
    if wall is None or not np.any(wall.prefactor_kj_mol > 0):
        return None
    budget = suggest_wall_max_num_neighbors(density_per_nm3, wall.cutoff_nm) if density_per_nm3 > 0 else 32
    return WallPotential(wall, max_num_neighbors=budget, dtype=config.torch_dtype)


def training_prior(priors, topology, bead_types, config: PotentialConfig, wall: WallPotential | None):
    """The torch bonded priors of one system (None without bonded terms); sets the wall's
    exclusions (the bonded pairs the priors own) on ``wall``."""
    if priors is None or topology is None:
        return None
    from openmm_cgkd.model.priors_torch import PriorPotential

    if wall is not None and priors.exclusions > 0:
        wall.set_exclusions(topology.excluded_pairs(priors.exclusions), topology.n_beads)
    prior = PriorPotential(priors, topology, bead_types, dtype=config.torch_dtype)
    return None if prior.is_empty else prior


class TrainablePotential(nn.Module):
    """``network`` (:class:`CGPotential`) + optional ``wall`` (:class:`WallPotential`) + optional
    bonded ``prior`` (:class:`~openmm_cgkd.model.priors_torch.PriorPotential`), batched.

    ``forward(bead_types [N], positions [B,N,3], boxes [B,3,3], create_graph)`` returns a dict
    with ``energy`` [B], ``bead_energies`` [B,N] and ``forces`` [B,N,3] (kJ/mol, kJ/mol/nm),
    the sums of network, wall and priors: the network learns what the fixed terms leave.
    ``create_graph=True`` keeps the force graph for training on forces. The wall's and the
    priors' parameters are buffers: training never changes them. All-zero boxes: no periodic box.
    """

    def __init__(self, config: PotentialConfig, wall: WallParameters | None = None, density_per_nm3: float = 0.0,
                 priors=None, topology=None, bead_types=None):
        super().__init__()
        self.network = CGPotential(config)
        self.wall_parameters = wall
        self.wall = training_wall(wall, density_per_nm3, config)
        self.prior = training_prior(priors, topology, bead_types, config, self.wall)

    @property
    def config(self) -> PotentialConfig:
        return self.network.config

    @staticmethod
    def _joined_edges(neighbors: nn.Module, pos: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        b, n, _ = pos.shape
        edges, shifts = [], []
        periodic = bool(torch.any(boxes != 0))
        for k in range(b):
            ei, cs = neighbors(pos[k], boxes[k] if periodic else None)
            edges.append(torch.where(ei >= 0, ei + k * n, ei))
            shifts.append(cs.to(pos.dtype) @ boxes[k])
        return torch.cat(edges, 1), torch.cat(shifts, 0)

    def forward(self, bead_types: Tensor, positions: Tensor, boxes: Tensor,
                create_graph: bool = False) -> dict[str, Tensor]:
        b, n, _ = positions.shape
        dtype = self.network.model_dtype()
        pos = positions.detach().to(dtype)
        box = boxes.detach().to(dtype)
        types = bead_types.to(torch.long).repeat(b)
        eye = torch.eye(3, dtype=dtype, device=pos.device)
        with torch.enable_grad():
            flat = pos.reshape(b * n, 3).requires_grad_(True)
            ei, sh = self._joined_edges(self.network.neighbors, pos, box)
            bead = self.network.bead_energies_from_edges(types, flat, ei, sh, eye)
            if self.wall is not None:
                wi, ws = self._joined_edges(self.wall.neighbors, pos, box)
                bead = bead + self.wall.bead_energies_from_edges(types, flat, wi, ws, eye)
            bead = bead.reshape(b, n)
            if self.prior is not None:
                bead = bead + self.prior.bead_energies(flat.reshape(b, n, 3), box)
            energy = bead.sum(1)
            (grad,) = torch.autograd.grad(energy.sum(), flat, create_graph=create_graph)
        return {"energy": energy, "bead_energies": bead, "forces": -grad.reshape(b, n, 3)}
