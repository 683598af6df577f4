"""openmm-ml backend: ``MLPotential('cgkd', bundle=...)`` serves a model bundle.

openmm-ml (package ``openmmml``, not a dependency of openmm_cgkd) finds the factory
:class:`~openmm_cgkd.serving.openmmml_plugin.CGKDPotentialImplFactory` through the entry point
``cgkd`` of the group ``openmmml.potentials`` (``pyproject.toml``)::

    from openmmml import MLPotential
    potential = MLPotential("cgkd", bundle="des-student")        # a path or a shipped name
    system = potential.createSystem(topology)                      # a bead topology with a box

``MLPotential(...)`` options (passed to :class:`~openmm_cgkd.serving.openmmml_plugin.CGKDPotentialImplFactory`): ``bundle``
(required), ``backend`` (``"torchforce"``, the default, or ``"python"``), ``device`` and
``compile`` (python backend; see :mod:`.network_force`). ``createSystem`` / ``addForces``
options: ``cudaGraphs`` (openmm-torch ``useCUDAGraphs``; models with static shapes only).

openmm-ml builds the System itself and gives atoms without an element (our beads) mass 0;
:meth:`CGKDPotentialImpl.addForces` sets every served bead's mass from the bundle (dalton).
The ``atoms`` subset is supported (the network sees only those beads; the wall acts within
them) and so is ``forceGroup`` (network and wall both go there). Everything else is
:meth:`CGKDForceField.add_forces`. The energies and forces are those of
``CGKDForceField(bundle).create_system(topology)``.
"""
from __future__ import annotations

from collections.abc import Iterable

try:  # openmm-ml present: an implementation of its interface
    from openmmml.mlpotential import MLPotentialImpl
except ImportError:  # pragma: no cover - openmm-ml absent: the class still works on its own
    MLPotentialImpl = object


__all__ = ["CGKDPotentialImpl"]


class CGKDPotentialImpl(MLPotentialImpl):
    """A loaded bundle (:class:`CGKDForceField`) that adds its forces to openmm-ml's System."""

    def __init__(self, name: str, bundle, *, backend: str = "torchforce", device: str | None = None,
                 compile: bool = False):
        from .forcefield import CGKDForceField, ServingError
        from .network_force import BACKENDS

        if bundle is None:
            raise ServingError(f"MLPotential({name!r}) needs bundle=: a bundle directory, a shipped model name "
                               "(e.g. 'des-student') or a loaded Bundle")
        if backend not in BACKENDS:
            raise ServingError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
        if backend == "torchforce" and (compile or device is not None):
            raise ServingError("device and compile are options of backend='python'")
        self.name = name
        self.forcefield = CGKDForceField(bundle)
        self.backend = backend
        self.device = device
        self.compile = bool(compile)

    def addForces(self, topology, system, atoms: Iterable[int] | None, forceGroup: int, *,
                  cudaGraphs: bool = False) -> None:
        """Add the network and wall forces (group ``forceGroup``) for ``atoms`` (None: all atoms)
        and set those particles' masses from the bundle."""
        props = {"useCUDAGraphs": "true"} if cudaGraphs else None
        self.forcefield.add_forces(system, topology, None if atoms is None else list(atoms),
                                   force_group=forceGroup, backend=self.backend, device=self.device,
                                   compile=self.compile, network_properties=props)

    def getMLLongRange(self) -> bool:
        """The model is short-ranged (network and wall cutoffs), also with periodic boundaries."""
        return False
