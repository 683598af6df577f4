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

Limit: ``MLPotential("cgkd").createMixedSystem`` (an ML region inside an MM System) is not
supported. openmm-ml's embeddings read every atom's element (link atoms), which beads do not
have, and a CG model has no MM counterpart to hand its region over from. It is refused with
one :class:`~openmm_cgkd.serving.forcefield.ServingError` line whatever the embedding.
``potential.createSystem(topology)`` serves a bead system, and
``CGKDForceField(bundle).add_forces(system, topology, atoms=[...])`` adds the model to a subset
of the particles of an existing System.
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

    def getSupportedEmbeddings(self) -> list[str]:
        """Every embedding name: :meth:`createMixedSystem` (ours) refuses them all in one line,
        instead of openmm-ml's embeddings failing on element-less beads."""
        try:
            from openmmml import MLPotential

            names = list(getattr(MLPotential, "_embeddingFactories", {}))
        except ImportError:  # pragma: no cover - only openmm-ml calls this
            names = []
        return sorted({"mechanical", *names})

    def createMixedSystem(self, topology, system, atoms, forceGroup, interpolate, embedding, returnInfo=False,
                          **args):
        """Refused (see the module doc): mixed ML/MM systems of bead models are not supported."""
        from .forcefield import ServingError

        raise ServingError(f"MLPotential({self.name!r}).createMixedSystem is not supported for CG bead models "
                           f"(embedding {embedding!r}: openmm-ml's embeddings need atoms with elements); use "
                           "createSystem(topology) for a bead system, or CGKDForceField(bundle).add_forces(system, "
                           "topology, atoms=[...]) to add the model to part of an existing System")

    def getMLLongRange(self) -> bool:
        """The model is short-ranged (network and wall cutoffs), also with periodic boundaries."""
        return False
