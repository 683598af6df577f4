"""The openmm-ml entry point (group ``openmmml.potentials``, name ``cgkd``): a factory that
imports nothing at module level, because openmm-ml loads its entry points while its own module
is still being imported; the implementation lives in :mod:`openmm_cgkd.serving.openmmml`."""
from __future__ import annotations

__all__ = ["CGKDPotentialImplFactory", "POTENTIAL_NAME"]

POTENTIAL_NAME = "cgkd"


class CGKDPotentialImplFactory:
    """openmm-ml's ``MLPotentialImplFactory`` for ``MLPotential('cgkd', bundle=..., backend=...,
    device=..., compile=...)`` (openmm-ml only calls :meth:`createImpl`)."""

    def createImpl(self, name: str, bundle=None, backend: str = "torchforce", device: str | None = None,
                   compile: bool = False):
        from .openmmml import CGKDPotentialImpl

        return CGKDPotentialImpl(name, bundle, backend=backend, device=device, compile=compile)
