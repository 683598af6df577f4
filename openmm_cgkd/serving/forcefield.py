"""``CGKDForceField``: serve a model bundle in OpenMM (the shape of openmm-ml's ``MLPotential``)::

    from openmm_cgkd import CGKDForceField
    ff = CGKDForceField("models/untrained")                # a bundle path or a shipped name
    system = ff.create_system(topology)                    # box from the topology or box_vectors=
    simulation = ff.create_simulation(topology, positions)   # at the training data's temperature

The System holds one particle per bead, with the bead type's mass (dalton) from the bundle
manifest, the network as a ``TorchForce`` (or, with ``backend="python"``, an ``openmm.PythonForce``
running the eager model; :mod:`.network_force`), the repulsive wall as a
``CustomNonbondedForce`` (:mod:`.wall_force`), the bonded priors of a model of molecules as
OpenMM's standard bonded forces (:mod:`.prior_forces`; the bonds are the topology's, e.g. a bead
PDB's CONECT records, and the wall leaves the bonded pairs out) and, by default, a
``CMMotionRemover``.
:meth:`CGKDForceField.add_forces` adds the model to a System built elsewhere (openmm-ml's
``MLPotential('cgkd', ...)`` uses it, :mod:`.openmmml`).

Beads are identified by (residue name, atom name), mapped to bead types by the manifest.
Positions and boxes: ``openmm.unit`` quantities, or plain numbers in nm.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from openmm_cgkd.geometry import closest_pair

from openmm_cgkd.errors import CGKDError
from openmm_cgkd.plausibility import bead_spacing_problem
from openmm_cgkd.model.wall import WallParameters
from openmm_cgkd.topology import topology_bead_names

__all__ = ["CGKDForceField", "ServingError"]


class ServingError(CGKDError, ValueError):
    """Input that a model cannot serve: unknown bead, bad box, bad positions, ..."""

    exit_code = 2  # bad input: usage error


# --------------------------------------------------------------------------- unit helpers

def _nm(x, what: str) -> np.ndarray:
    """Strip an openmm.unit length (or take plain numbers as nm) -> float64 array."""
    from openmm import unit

    if unit.is_quantity(x):
        x = x.value_in_unit(unit.nanometer)
    elif isinstance(x, (list, tuple)) and x and unit.is_quantity(x[0]):
        x = [v.value_in_unit(unit.nanometer) for v in x]
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ServingError(f"{what} must be numbers in nm or an openmm.unit length quantity: {exc}") from None


def _box_matrix(box, what: str = "box_vectors") -> np.ndarray:
    arr = _nm(box, what)
    if arr.shape == (3,):
        arr = np.diag(arr)
    if arr.shape != (3, 3):
        raise ServingError(f"{what} must be 3 box vectors (3x3, nm) or 3 edge lengths; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ServingError(f"{what} contain NaN or inf: {arr.tolist()}")
    return arr


def _number(x, unit_, what: str, name: str) -> float:
    """``x`` (a number in ``name`` units, or an openmm.unit Quantity compatible with ``unit_``) as
    a float; :class:`ServingError` when it is neither."""
    from openmm import unit

    if unit.is_quantity(x):
        if not x.unit.is_compatible(unit_):
            raise ServingError(f"{what} must be in {name} (or a compatible openmm.unit quantity), got {x}")
        x = x.value_in_unit(unit_)
    try:
        return float(x)
    except (TypeError, ValueError):
        raise ServingError(f"{what} must be a number in {name} or an openmm.unit quantity, got {x!r}") from None


def _kelvin(t) -> float:
    from openmm import unit

    t = _number(t, unit.kelvin, "temperature", "K")
    if not 0 < t < math.inf:
        raise ServingError(f"temperature must be positive and finite (K), got {t}")
    return t


def _femtoseconds(dt) -> float:
    from openmm import unit

    dt = _number(dt, unit.femtosecond, "timestep", "fs")
    if not 0 < dt < math.inf:
        raise ServingError(f"timestep must be positive and finite (fs), got {dt}")
    return dt


def _per_picosecond(gamma) -> float:
    from openmm import unit

    gamma = _number(gamma, unit.picosecond ** -1, "friction", "1/ps")
    if not 0 <= gamma < math.inf:
        raise ServingError(f"friction must be >= 0 and finite (1/ps), got {gamma}")
    return gamma


COINCIDENT_NM = 0.005  # beads closer than this: one position given twice (no force field separates them)
MAX_EXTENT_IN_BOXES = 5.0  # positions spread over more box lengths than this: a unit error, not diffusion
DEFAULT_TIMESTEP_FS = 2.0  # MD time step (fs) of a bundle that records no checked one


def _start_problem(pos: np.ndarray, box: np.ndarray | None, topology) -> str | None:
    """A message when the start cannot be simulated: two beads at one position, or positions
    spread over many box lengths (Angstrom given for nm with a box in nm); else None."""
    if box is not None:
        edges = np.linalg.norm(box, axis=1)
        extent = pos.max(axis=0) - pos.min(axis=0)
        if np.any(extent > MAX_EXTENT_IN_BOXES * edges):
            return (f"positions span {', '.join(f'{v:.4g}' for v in extent)} nm but the box edges are "
                    f"{', '.join(f'{v:.4g}' for v in edges)} nm: are the positions in Angstrom? Convert them to "
                    "nm (divide by 10)")
    if len(pos) > 1:
        i, j, d = closest_pair(pos, box)
        if d < COINCIDENT_NM:
            return (f"beads {i} and {j} are {d:.2g} nm apart (one position given twice?): no force field or "
                    "minimiser can separate coincident beads; fix the structure")
    return None


# --------------------------------------------------------------------------- the force field

class CGKDForceField:
    """A CG model bundle served in OpenMM.

    ``bundle``: a bundle directory, the name of a shipped bundle in ``models/``, or a loaded
    :class:`~openmm_cgkd.bundle.Bundle` (loading validates it: :class:`~openmm_cgkd.bundle.BundleError`
    on a missing, corrupt or incompatible bundle).
    """

    def __init__(self, bundle):
        from openmm_cgkd.bundle import Bundle, load_bundle

        if not isinstance(bundle, Bundle):
            bundle = load_bundle(bundle)
        self.bundle = bundle
        self.path: Path | None = bundle.path
        manifest = bundle.manifest
        self.manifest = manifest
        self.bead_types = list(manifest.bead_types)
        self.type_names = manifest.type_names
        self.cutoff_nm = float(manifest.cutoff_nm)
        self.wall: WallParameters = manifest.wall
        self.periodic = bool(manifest.periodic)
        self._lookup: dict[tuple[str, str], int] = {
            (bt.residue_name, atom): k for k, bt in enumerate(self.bead_types) for atom in bt.atom_names}

    @property
    def is_untrained(self) -> bool:
        return self.manifest.training.get("trained") is False or self.manifest.variant == "untrained"

    def describe(self) -> str:
        """One line: what the model is and where it came from."""
        m = self.manifest
        arch = m.architecture.get("architecture", "?")
        kind = m.model_kind + (f" x{m.num_members}" if m.num_members > 1 else "")
        variant = f" ({m.variant})" if m.variant else ""
        types = ", ".join(f"{b.name} {b.mass_dalton:g} Da" for b in self.bead_types)
        where = f" from {self.path}" if self.path else ""
        text = f"{kind}{variant} {arch}, cutoff {self.cutoff_nm:g} nm, wall cutoff {self.wall.cutoff_nm:g} nm; " \
               f"bead types {types}{where}"
        pr = self.bundle.priors
        if pr is not None:
            excl = {0: "none", 1: "1-2", 2: "1-2, 1-3", 3: "1-2, 1-3, 1-4"}[pr.exclusions]
            text += (f"; molecules: bonded priors for {len(pr.bonds)} bond, {len(pr.angles)} angle, "
                     f"{len(pr.dihedrals)} dihedral type(s), wall exclusions {excl}")
        if not self.periodic:
            text += "; no periodic box"
        if self.is_untrained:
            text += " -- UNTRAINED (random weights): a stand-in to show the machinery, not a physical model"
        return text

    @property
    def interaction_cutoff_nm(self) -> float:
        """The longest range of any term (network or wall), nm."""
        return max(self.cutoff_nm, self.wall.cutoff_nm)

    # -- topology ------------------------------------------------------------------------
    def bead_type_indices(self, topology, atoms: Sequence[int] | None = None) -> np.ndarray:
        """Bead type index of every atom of an OpenMM or mdtraj topology (by residue, atom name),
        or of the atoms with indices ``atoms`` only."""
        names = topology_bead_names(topology)
        index = range(len(names)) if atoms is None else [int(i) for i in atoms]
        types = np.empty(len(index), dtype=np.int64)
        for k, i in enumerate(index):
            if not 0 <= i < len(names):
                raise ServingError(f"atom index {i} is outside the topology ({len(names)} atoms)")
            res, atom = names[i]
            kind = self._lookup.get((res.strip(), atom.strip()))
            if kind is None:
                known = ", ".join(f"{b.name} ({b.residue_name}/{'|'.join(b.atom_names)})" for b in self.bead_types)
                raise ServingError(f"unknown bead type: atom {i} (residue {res!r}, atom {atom!r}) matches no "
                                   f"bead type of this model; known types (residue/atom): {known}")
            types[k] = kind
        if len(types) == 0:
            raise ServingError("the topology has no beads")
        return types

    def masses(self, bead_types: Sequence[int]) -> np.ndarray:
        return np.array([self.bead_types[int(k)].mass_dalton for k in bead_types], dtype=np.float64)

    def _box(self, topology, box_vectors) -> np.ndarray | None:
        if not self.periodic:
            if box_vectors is not None:
                raise ServingError("this model is non-periodic; do not give it box_vectors")
            return None  # a box the topology may carry is ignored
        if box_vectors is None and hasattr(topology, "getPeriodicBoxVectors"):
            box_vectors = topology.getPeriodicBoxVectors()
        if box_vectors is None:
            raise ServingError("non-periodic topology for a periodic model: the topology has no periodic "
                               "box and no box_vectors were given (set CRYST1 in the PDB or pass box_vectors)")
        box = _box_matrix(box_vectors)
        from openmm_cgkd.model.potential import check_box

        try:
            check_box(box, self.interaction_cutoff_nm)
        except ValueError as exc:
            raise ServingError(f"bad box for this model (network cutoff {self.cutoff_nm} nm, wall cutoff "
                               f"{self.wall.cutoff_nm} nm): {exc}") from None
        return box

    # -- System ---------------------------------------------------------------------------
    def create_system(self, topology, box_vectors=None, *, remove_cm_motion: bool = True,
                      use_cuda_graphs: bool = False, network_properties: dict | None = None,
                      backend: str = "torchforce", device: str | None = None, compile: bool = False):
        """An ``openmm.System`` of the beads of ``topology`` (OpenMM or mdtraj).

        ``box_vectors`` (3x3 or 3 lengths, nm or a quantity) default to the topology's box.
        ``use_cuda_graphs`` sets openmm-torch's ``useCUDAGraphs`` (CUDA platform only; needs a model
        with ``static_shapes``, and serves a copy with the host-side error checks off).
        ``backend``: ``"torchforce"`` (default; openmm-torch ``TorchForce``, TorchScript) or
        ``"python"`` (``openmm.PythonForce`` running the eager model on ``device``, default CUDA
        when torch sees a GPU else CPU; ``compile=True`` applies ``torch.compile``).
        """
        import openmm

        types = self.bead_type_indices(topology)
        box = self._box(topology, box_vectors)
        system = openmm.System()
        for m in self.masses(types):
            system.addParticle(m)
        if box is not None:
            system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
        props = dict(network_properties or {})
        if use_cuda_graphs:
            props["useCUDAGraphs"] = "true"
        self._add_model_forces(system, types, None, 0, props, backend, device, compile, self._bonds(topology))
        if remove_cm_motion:
            system.addForce(openmm.CMMotionRemover())
        return system

    def add_forces(self, system, topology, atoms: Sequence[int] | None = None, *, force_group: int = 0,
                   backend: str = "torchforce", device: str | None = None, compile: bool = False,
                   network_properties: dict | None = None) -> None:
        """Add the model (network + wall forces, group ``force_group``) to an existing ``system``
        whose particles are the atoms of the OpenMM ``topology``, acting on ``atoms`` (indices; None:
        all). The masses of those particles are set from the bundle (dalton), replacing what the
        System had (openmm-ml gives element-less atoms mass 0). The box is the topology's (a
        periodic model needs one). With a subset the wall acts only within it (an interaction
        group) and the network sees only those beads. Other options as :meth:`create_system`.
        """
        n = topology.getNumAtoms()
        if system.getNumParticles() != n:
            raise ServingError(f"the System has {system.getNumParticles()} particles but the topology {n} atoms")
        if not 0 <= int(force_group) <= 31:
            raise ServingError(f"force_group must lie in 0..31 (OpenMM force groups), got {force_group}")
        particles = None
        if atoms is not None:
            particles = [int(i) for i in atoms]
            if not particles:
                raise ServingError("atoms is empty: give the indices of the beads the model acts on, or None for all")
            if len(set(particles)) != len(particles):
                raise ServingError("atoms lists an index more than once")
        types = self.bead_type_indices(topology, particles)
        self._box(topology, None)  # a periodic model needs the topology's box, wide enough
        for i, m in zip(range(n) if particles is None else particles, self.masses(types)):
            system.setParticleMass(i, float(m))
        if particles == list(range(n)):
            particles = None
        bonds = self._bonds(topology)
        if particles is not None and len(bonds):
            inside = np.zeros(n, bool)
            inside[particles] = True
            bonds = bonds[inside[bonds[:, 0]] & inside[bonds[:, 1]]]
        self._add_model_forces(system, types, particles, int(force_group), dict(network_properties or {}),
                               backend, device, compile, bonds)

    def _bonds(self, topology) -> np.ndarray:
        """[B, 2] bonded bead pairs of ``topology``, checked against the model: a model of molecules
        needs them, a model of one-bead molecules refuses them."""
        from openmm_cgkd.topology import topology_bonds

        bonds = topology_bonds(topology)
        priors = self.bundle.priors
        if priors is None and len(bonds):
            raise ServingError(f"the topology has {len(bonds)} bonds between beads but this model was trained on "
                               "one-bead molecules (its bundle has no bonded priors): give a topology without bonds, "
                               "or a model trained on these molecules")
        if priors is not None and not len(bonds):
            raise ServingError("this model is of bonded beads (molecules) but the topology has no bonds: give the "
                               "beads' bonds (CONECT records in the bead PDB, e.g. one written by "
                               "openmm_cgkd.topology.write_bead_pdb from a dataset topology)")
        return bonds

    def _add_model_forces(self, system, types: np.ndarray, particles: list[int] | None, force_group: int,
                          props: dict, backend: str, device: str | None, compile: bool,
                          bonds: np.ndarray | None = None) -> None:
        """The network, wall and prior forces of beads ``types`` (system particles ``particles``,
        None = all); ``bonds`` [B, 2] in system particle indices."""
        from openmm_cgkd.cgtopology import CGTopology
        from openmm_cgkd.model.priors import PriorError

        from .network_force import check_backend, make_network_force
        from .prior_forces import make_prior_forces
        from .wall_force import make_wall_force

        try:
            check_backend(backend)
        except ValueError as exc:
            raise ServingError(str(exc)) from None
        if str(props.get("useCUDAGraphs", "false")).lower() == "true":
            if backend != "torchforce":
                raise ServingError("use_cuda_graphs is an openmm-torch (torchforce backend) option; the python "
                                   "backend can use compile=True instead")
            if not self.manifest.architecture.get("static_shapes", False):
                raise ServingError(f"CUDA graphs need static shapes, but this "
                                   f"{self.manifest.architecture.get('architecture')} model has a variable-size "
                                   "pair list (static_shapes: false); run without use_cuda_graphs, or use a "
                                   "model built with static_shapes (tensornet)")
        if backend == "torchforce":
            if self.bundle.module is None:
                raise ServingError("this bundle was loaded without its TorchScript module (torchscript=False); "
                                   "serve it with backend='python'")
            model = self.bundle.module
        else:
            model = self.bundle.eager_model()
        n_types = int(getattr(model, "num_types", len(self.bead_types)))
        if len(types) and not (0 <= int(types.min()) and int(types.max()) < n_types):  # once, not per MD step
            raise ServingError(f"bead type indices {int(types.min())}..{int(types.max())} do not fit the network's "
                               f"{n_types} bead types")
        try:
            network = make_network_force(model, types.tolist(), periodic=self.periodic, properties=props,
                                         force_group=force_group, backend=backend, particles=particles,
                                         device=device, compile=compile)
        except ValueError as exc:
            raise ServingError(str(exc)) from None
        system.addForce(network)
        all_types = np.zeros(system.getNumParticles(), dtype=np.int64)
        all_types[slice(None) if particles is None else particles] = types
        priors = self.bundle.priors
        exclusions, prior_forces = None, []
        if priors is not None:
            cgtop = CGTopology(system.getNumParticles(), np.zeros((0, 2)) if bonds is None else bonds)
            exclusions = cgtop.excluded_pairs(priors.exclusions)
            try:
                prior_forces = make_prior_forces(priors, cgtop, all_types, self.periodic)
            except PriorError as exc:
                raise ServingError(str(exc)) from None
        # every particle needs a wall type; with a subset an interaction group keeps the wall inside it
        wall = make_wall_force(self.wall, all_types.tolist(), periodic=self.periodic, exclusions=exclusions)
        if particles is not None:
            wall.addInteractionGroup(particles, particles)
        wall.setForceGroup(force_group)
        system.addForce(wall)
        for f in prior_forces:
            f.setForceGroup(force_group)
            system.addForce(f)

    # -- Simulation -----------------------------------------------------------------------
    def md_temperature(self, temperature=None) -> float:
        """The MD temperature (K): ``temperature`` (K or a Quantity), else the training data's
        (``manifest.temperature_K``). A bundle that records none needs ``temperature``
        (:class:`ServingError`); one that differs from the data's by more than 0.5 K is allowed
        with a :class:`~openmm_cgkd.errors.CGKDWarning`: the model learned the data's free energy
        surface, which depends on temperature."""
        import warnings

        from openmm_cgkd.errors import CGKDWarning

        data = self.manifest.temperature_K
        if temperature is None:
            if data is None:
                raise ServingError(f"the bundle {self.path or ''} does not record its training data's temperature "
                                   "(made before it was recorded, or mapped without one): give the temperature "
                                   "(--temperature K; md.temperature_K in a pipeline config)")
            return float(data)
        kelvin = _kelvin(temperature)
        if data is not None and abs(kelvin - data) > 0.5:
            warnings.warn(CGKDWarning(f"MD at {kelvin:g} K, but the model was trained on data at {data:g} K: a CG "
                                      "potential is a free energy, valid at its data's temperature"), stacklevel=3)
        return kelvin

    def md_timestep_fs(self, timestep=None) -> float:
        """The MD time step (fs): ``timestep`` (fs or a Quantity), else the step checked with this
        model (``manifest.timestep_fs``, written when a study's models are shipped), else
        :data:`DEFAULT_TIMESTEP_FS`."""
        if timestep is None:
            timestep = self.manifest.timestep_fs if self.manifest.timestep_fs is not None else DEFAULT_TIMESTEP_FS
        return _femtoseconds(timestep)

    def create_simulation(self, topology, positions, *, box_vectors=None, temperature=None,
                          friction_per_ps: float = 1.0, timestep_fs=None, platform: str | None = None,
                          precision: str | None = None, use_cuda_graphs: bool = False, seed: int | None = None,
                          remove_cm_motion: bool = True, integrator=None, threads: int | None = None,
                          backend: str = "torchforce", compile: bool = False):
        """An ``openmm.app.Simulation`` at ``temperature`` (K; default: the training data's,
        :meth:`md_temperature`), positions set, velocities drawn.

        Default integrator: ``LangevinMiddleIntegrator(temperature, friction, timestep)``.
        ``platform``: 'CUDA', 'CPU', 'Reference' or None/'auto' (CUDA when present, else CPU).
        ``seed`` makes the thermostat noise and the initial velocities reproducible.
        ``timestep_fs``: default :meth:`md_timestep_fs` (the bundle's checked step, else 2 fs).
        ``temperature`` (K), ``timestep_fs`` (fs) and ``friction_per_ps`` (1/ps) are numbers in
        those units or openmm.unit Quantities (``300*unit.kelvin``, ``4*unit.femtoseconds``,
        ``1/unit.picosecond``). Refused before anything is built (:class:`ServingError`): a
        non-finite or non-positive setting, two beads at one position, positions spread over many
        box lengths or spaced implausibly (Angstrom given as nm).
        ``backend`` / ``compile``: as :meth:`create_system` (the python backend runs torch on
        CUDA when the platform is CUDA, else on CPU).
        """
        import openmm
        from openmm import app, unit

        from openmm_cgkd.platforms import select_platform

        n = topology.getNumAtoms() if hasattr(topology, "getNumAtoms") else topology.n_atoms
        pos = self.check_positions(positions, n)
        box_nm = self._box(topology, box_vectors)
        problem = bead_spacing_problem(pos, box_nm) or _start_problem(pos, box_nm, topology)  # Angstrom as nm?
        if problem:
            raise ServingError(problem)
        if integrator is None:
            dt_fs, gamma = self.md_timestep_fs(timestep_fs), _per_picosecond(friction_per_ps)
        kelvin = self.md_temperature(temperature)
        choice = select_platform(platform, precision=precision, use_cuda_graphs=use_cuda_graphs, threads=threads)
        device = None if backend == "torchforce" else ("cuda" if choice.name == "CUDA" else "cpu")
        system = self.create_system(topology, box_vectors, remove_cm_motion=remove_cm_motion,
                                    network_properties=choice.network_properties, backend=backend, device=device,
                                    compile=compile)
        if integrator is None:
            integrator = openmm.LangevinMiddleIntegrator(kelvin * unit.kelvin, gamma / unit.picosecond,
                                                         dt_fs * unit.femtosecond)
            if seed is not None:
                integrator.setRandomNumberSeed(int(seed))
        omm_top = topology if isinstance(topology, app.Topology) else topology.to_openmm()
        box = system.getDefaultPeriodicBoxVectors() if self.periodic else None
        if box is not None:
            omm_top.setPeriodicBoxVectors(box)
        simulation = app.Simulation(omm_top, system, integrator, choice.platform, choice.properties)
        simulation.context.setPositions(pos * unit.nanometer)
        if seed is None:
            simulation.context.setVelocitiesToTemperature(kelvin * unit.kelvin)
        else:
            simulation.context.setVelocitiesToTemperature(kelvin * unit.kelvin, int(seed))
        return simulation

    @staticmethod
    def check_positions(positions, n_beads: int) -> np.ndarray:
        """Positions as an (N, 3) float64 array in nm; clear errors on a count mismatch or NaN/inf."""
        pos = _nm(positions, "positions")
        if pos.ndim != 2 or pos.shape[1] != 3:
            raise ServingError(f"positions must be (N, 3) in nm, got shape {pos.shape}")
        if pos.shape[0] != n_beads:
            raise ServingError(f"particle count mismatch: {pos.shape[0]} positions for a topology of {n_beads} beads")
        bad = ~np.isfinite(pos).all(axis=1)
        if bad.any():
            idx = np.flatnonzero(bad)
            raise ServingError(f"positions contain NaN or inf for {idx.size} bead(s), first indices {idx[:10].tolist()}")
        return pos
