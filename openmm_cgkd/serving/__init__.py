"""Serving CG model bundles in OpenMM: :class:`CGKDForceField` and the forces behind it.

Importing this package does not import torch or OpenMM; the submodules do when used.
"""
from __future__ import annotations

__all__ = ["CGKDForceField", "ServingError", "make_network_force", "make_wall_force"]


def __getattr__(name: str):
    if name in ("CGKDForceField", "ServingError"):
        from . import forcefield
        return getattr(forcefield, name)
    if name == "make_network_force":
        from .network_force import make_network_force
        return make_network_force
    if name == "make_wall_force":
        from .wall_force import make_wall_force
        return make_wall_force
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
