"""Untrained bundles: randomly initialised networks with a placeholder wall, for demos and tests.

Their bead types and the density that sizes the neighbour budget come from a registered system
(:mod:`openmm_cgkd.systems`; default ``des``), never from numbers written here.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from openmm_cgkd.bundle.io import save_bundle
from openmm_cgkd.model.wall import WallParameters
from openmm_cgkd.systems import DEFAULT_SYSTEM, get_system
from openmm_cgkd.topology import BeadType

__all__ = ["untrained_config", "build_untrained_bundle", "placeholder_wall", "SOLUTE_MAX_NEIGHBORS"]

SOLUTE_MAX_NEIGHBORS = 32  # neighbour budget of a system without a box (one small molecule: every bead)


# --------------------------------------------------------------------------- untrained bundles

def untrained_config(architecture: str = "graph-network", *, system: str = DEFAULT_SYSTEM, **overrides):
    """A small, CPU-friendly :class:`PotentialConfig` for the registered ``system`` (its bead
    types; 1.0 nm cutoff; ``max_num_neighbors`` sized for its bead density, or
    :data:`SOLUTE_MAX_NEIGHBORS` for a system without a box: one small molecule); ``overrides``
    replace fields."""
    from openmm_cgkd.model.potential import PotentialConfig, suggest_max_num_neighbors

    cg = get_system(system)
    cutoff = float(overrides.pop("cutoff_nm", 1.0))
    neighbours = suggest_max_num_neighbors(cg.bead_density_per_nm3, cutoff) if cg.periodic else SOLUTE_MAX_NEIGHBORS
    base = dict(architecture=architecture, num_types=len(cg.type_names), cutoff_nm=cutoff, embedding_dim=32,
                num_layers=2, num_rbf=16, max_num_neighbors=neighbours, num_heads=4)
    base.update(overrides)
    return PotentialConfig(**base)


def placeholder_wall(type_names: Sequence[str]) -> WallParameters:
    """A plausible repulsive wall for untrained demo models (taper 0.30 nm, 300 kJ/mol/nm for
    every pair): keeps beads apart in MD. Trained bundles fit theirs from the AA RDFs."""
    t = len(type_names)
    return WallParameters.from_taper(list(type_names), np.full((t, t), 0.30), np.full((t, t), 300.0))


def build_untrained_bundle(path: str | os.PathLike, config=None, *, bead_types: Sequence[BeadType] | None = None,
                           wall: WallParameters | None = None, model_kind: str = "student", num_members: int = 1,
                           seed: int = 0, overwrite: bool = False, description: str | None = None,
                           system: str = DEFAULT_SYSTEM, periodic: bool | None = None) -> Path:
    """A bundle of randomly initialised network(s): for demos and tests until trained models ship.

    Defaults: the bead types of the registered ``system`` (``des``), :func:`untrained_config`,
    a placeholder wall; with
    ``num_members > 1`` (or ``model_kind='ensemble'``) an ensemble of members seeded
    ``seed, seed+1, ...`` (for a stacked architecture, ``hipnn-ts``, one
    :class:`~openmm_cgkd.model.stacked.StackedEnsemblePotential` whose member k equals that
    one-network model). ``periodic``: whether the model uses a box (default: whether ``system``
    has one). The manifest says plainly that the model is untrained.
    """
    import torch

    from openmm_cgkd.model.ensemble import EnsemblePotential
    from openmm_cgkd.model.potential import STACKED_ARCHITECTURES, CGPotential
    from openmm_cgkd.model.stacked import StackedEnsemblePotential

    bts = list(bead_types or get_system(system).bead_types())
    cfg = config or untrained_config(system=system, num_types=len(bts))
    if cfg.num_types != len(bts):
        raise ValueError(f"config.num_types {cfg.num_types} != number of bead types {len(bts)}")
    wall = wall or placeholder_wall([b.name for b in bts])
    if model_kind == "ensemble" and num_members == 1:
        num_members = 2
    if num_members > 1 and cfg.architecture in STACKED_ARCHITECTURES:
        model = StackedEnsemblePotential(cfg, num_members, seeds=[seed + k for k in range(num_members)])
    else:
        members = []
        for k in range(num_members):
            torch.manual_seed(seed + k)
            members.append(CGPotential(cfg))
        model = EnsemblePotential(members) if num_members > 1 else members[0]
    kind = "ensemble" if num_members > 1 else model_kind
    return save_bundle(path, model, bead_types=bts, wall=wall, model_kind=kind, variant="untrained",
                       training={"trained": False, "seed": seed, "note": "UNTRAINED: random weights, for demos only"},
                       description=description or "UNTRAINED model (random weights, placeholder wall): "
                                                  "a stand-in until trained bundles ship; its physics is meaningless",
                       overwrite=overwrite, periodic=get_system(system).periodic if periodic is None else periodic)
