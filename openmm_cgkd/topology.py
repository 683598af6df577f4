"""Bead topologies: OpenMM / mdtraj topologies of element-less CG beads, and bead PDB files.

A bead is an atom with no element, alone in a residue. Its residue name and atom name identify
its bead type (by default both are the type's residue code: its first three letters, upper-cased,
e.g. ``Urea`` -> ``URE``; a bundle's or system's bead types name theirs). Masses are never taken
from elements; they come from a model bundle or a CG dataset.

A :class:`BeadType` is one bead type: name, residue and atom names, mass (dalton); model
bundles, CG datasets and registered systems list theirs.

Start configurations without a structure file: :func:`composition_counts` splits N beads by a
composition ratio, :func:`cube_edge_nm` sizes a cube for a number density and
:func:`lattice_configuration` puts the beads on a jittered cubic lattice in it (a system of the
registry gives its composition and density: :meth:`openmm_cgkd.systems.CGSystem.lattice`).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from openmm_cgkd.errors import BundleError

__all__ = ["BeadType", "bead_types_from_masses", "default_residue_name", "bead_topology", "bead_topology_from_counts",
           "topology_bead_names", "dataset_trajectory", "dataset_topology", "topology_bonds", "write_bead_pdb",
           "read_bead_pdb", "composition_counts", "cube_edge_nm",
           "lattice_configuration"]


MIN_BEAD_MASS_DALTON = 1.0  # lighter than a hydrogen atom: no bead; OpenMM crashes on near-zero masses


def default_residue_name(type_name: str) -> str:
    """The residue (and atom) name of a bead type that names none: its first 3 letters, upper-cased."""
    return type_name[:3].upper()


@dataclass
class BeadType:
    """One bead type: its name, how beads of it appear in topologies, and its mass."""

    name: str
    residue_name: str
    atom_names: list[str]
    mass_dalton: float

    def __post_init__(self) -> None:
        self.name = str(self.name)
        self.residue_name = str(self.residue_name)
        if isinstance(self.atom_names, str):
            self.atom_names = [self.atom_names]
        self.atom_names = [str(a) for a in self.atom_names]
        self.mass_dalton = float(self.mass_dalton)
        if not self.name or not self.residue_name or not self.atom_names:
            raise BundleError(f"bead type needs a name, residue name and atom name(s), got {self}")
        if not math.isfinite(self.mass_dalton) or self.mass_dalton < MIN_BEAD_MASS_DALTON:
            raise BundleError(f"bead type {self.name!r} has mass {self.mass_dalton} Da; a bead must weigh at least "
                              f"{MIN_BEAD_MASS_DALTON:g} Da (a hydrogen atom): lighter ones make MD fail")

    @property
    def atom_name(self) -> str:
        return self.atom_names[0]

    def to_dict(self) -> dict:
        return {"name": self.name, "residue_name": self.residue_name, "atom_names": list(self.atom_names),
                "mass_dalton": self.mass_dalton}

    @classmethod
    def from_dict(cls, d: Mapping) -> "BeadType":
        if not isinstance(d, Mapping):
            raise BundleError(f"bead type entry must be a mapping, got {d!r}")
        keys = {"name", "residue_name", "atom_names", "mass_dalton"}
        missing, unknown = keys - set(d), set(d) - keys
        if missing or unknown:
            raise BundleError(f"bead type entry {dict(d)!r}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
        return cls(d["name"], d["residue_name"], d["atom_names"], d["mass_dalton"])


def bead_types_from_masses(masses: Mapping[str, float], residue_names: Mapping[str, str] | None = None,
                           atom_names: Mapping[str, str] | None = None) -> list[BeadType]:
    """Bead types in the mapping's order; residue names default to the topology convention
    (:func:`default_residue_name`), atom names to the residue name."""
    residue_names = dict(residue_names or {})
    atom_names = dict(atom_names or {})
    out = []
    for name, mass in masses.items():
        code = residue_names.get(name, default_residue_name(name))
        out.append(BeadType(name, code, [atom_names.get(name, code)], float(mass)))
    return out


def bead_topology(bead_type_names: Sequence[str], box_nm: np.ndarray | None = None,
                  residue_names: Mapping[str, str] | None = None, atom_names: Mapping[str, str] | None = None,
                  bonds=None):
    """An ``openmm.app.Topology`` with one single-bead residue per entry of ``bead_type_names``.

    ``box_nm`` (3x3, rows are box vectors, nm) makes the topology periodic. Atom names default
    to the residue names. ``bonds`` [B, 2] (bead indices; e.g. ``CGTopology.bonds``) become the
    topology's bonds (CONECT records in a PDB), which is how a served model knows the molecules
    (bonded priors, exclusions).
    """
    from openmm import Vec3, unit
    from openmm.app import Topology

    residue_names = dict(residue_names or {})
    atom_names = dict(atom_names or {})
    top = Topology()
    chain = top.addChain()
    for type_name in bead_type_names:
        code = residue_names.get(type_name, default_residue_name(type_name))
        res = top.addResidue(code, chain)
        top.addAtom(atom_names.get(type_name, code), None, res)
    if bonds is not None and len(bonds):
        atoms = list(top.atoms())
        for i, j in np.asarray(bonds, dtype=np.int64).reshape(-1, 2).tolist():
            top.addBond(atoms[i], atoms[j])
    if box_nm is not None:
        box = np.asarray(box_nm, dtype=float)
        if box.shape != (3, 3):
            raise ValueError(f"box_nm must be 3x3 (rows = box vectors, nm), got shape {box.shape}")
        top.setPeriodicBoxVectors([Vec3(*row) for row in box] * unit.nanometer)
    return top


def bead_topology_from_counts(counts: Mapping[str, int], box_nm: np.ndarray | None = None,
                              residue_names: Mapping[str, str] | None = None):
    """A bead topology with ``counts[type]`` beads of each type, in the mapping's order."""
    names: list[str] = []
    for type_name, n in counts.items():
        if int(n) < 0:
            raise ValueError(f"bead count for {type_name!r} must be >= 0, got {n}")
        names.extend([type_name] * int(n))
    return bead_topology(names, box_nm, residue_names)


def topology_bead_names(topology) -> list[tuple[str, str]]:
    """(residue name, atom name) of every atom of an OpenMM or mdtraj topology, in order."""
    atoms = topology.atoms() if callable(topology.atoms) else topology.atoms  # OpenMM: method; mdtraj: property
    return [(atom.residue.name, atom.name) for atom in atoms]


def dataset_trajectory(dataset, frames=slice(None)):
    """An ``mdtraj.Trajectory`` of a :class:`~openmm_cgkd.data.dataset.CGDataset` (nm, ps)."""
    import mdtraj as md

    top = md.Topology.from_openmm(dataset_topology(dataset))
    boxes = dataset.boxes[frames]
    traj = md.Trajectory(dataset.positions[frames], top, time=dataset.times[frames])
    if dataset.periodic:
        traj.unitcell_vectors = boxes  # mdtraj's constructor takes lengths/angles, not vectors
    return traj


def dataset_topology(dataset, frame: int | None = 0):
    """The OpenMM bead topology of a :class:`~openmm_cgkd.data.dataset.CGDataset`: its beads in
    order, named as its mapping set them (``dataset.bead_names``; default codes otherwise), its
    bonds and, when periodic and ``frame`` is not None, the box of ``frame`` (ready for
    :func:`write_bead_pdb` and ``CGKDForceField``)."""
    names = [dataset.type_names[t] for t in dataset.bead_types]
    given = dataset.bead_names or {}
    box = dataset.boxes[frame] if dataset.periodic and frame is not None else None
    return bead_topology(names, box, {t: n[0] for t, n in given.items()}, {t: n[1] for t, n in given.items()},
                         bonds=dataset.topology.bonds)


def topology_bonds(topology) -> np.ndarray:
    """[B, 2] bead index pairs of the bonds of an OpenMM or mdtraj topology."""
    bonds = topology.bonds() if callable(topology.bonds) else topology.bonds
    return np.asarray([(b[0].index, b[1].index) for b in bonds], dtype=np.int64).reshape(-1, 2)


def write_bead_pdb(path: str | Path, topology, positions_nm: np.ndarray, box_nm: np.ndarray | None = None) -> Path:
    """Write a bead PDB (CRYST1 from ``box_nm`` or the topology's box; an all-zero ``box_nm``, the
    box of non-periodic data, writes no CRYST1) that OpenMM and mdtraj read, with CONECT records
    for the topology's bonds."""
    from openmm import Vec3, unit
    from openmm.app import PDBFile

    pos = np.asarray(positions_nm, dtype=float)
    if pos.shape != (topology.getNumAtoms(), 3):
        raise ValueError(f"positions have shape {pos.shape}; topology has {topology.getNumAtoms()} beads")
    if box_nm is not None and np.any(np.asarray(box_nm, float) != 0):
        topology.setPeriodicBoxVectors([Vec3(*row) for row in np.asarray(box_nm, float)] * unit.nanometer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        PDBFile.writeFile(topology, pos * unit.nanometer, fh)
    return path


def read_bead_pdb(path: str | Path):
    """Read a bead PDB: returns (openmm Topology, positions (N, 3) nm, box (3, 3) nm or None).

    :class:`~openmm_cgkd.errors.MissingFileError` when there is no such file,
    :class:`~openmm_cgkd.errors.UsageError` when it is no PDB or holds no atoms."""
    from openmm import unit
    from openmm.app import PDBFile

    from openmm_cgkd.errors import MissingFileError, UsageError

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"structure file not found: {path}")
    with open(path, errors="replace") as fh:
        if not any(line.startswith(("ATOM", "HETATM")) for line in fh):
            raise UsageError(f"{path} holds no atoms (no ATOM/HETATM records): give a bead PDB with a CRYST1 box, "
                             "e.g. the final.pdb of a run")
    try:
        pdb = PDBFile(str(path))
    except Exception as exc:  # noqa: BLE001 - OpenMM's reader raises many types for a malformed file
        raise UsageError(f"could not read {path} as a PDB file: {exc!r}") from exc
    pos = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    vecs = pdb.topology.getPeriodicBoxVectors()
    box = None if vecs is None else np.asarray(vecs.value_in_unit(unit.nanometer))
    return pdb.topology, pos, box


def composition_counts(composition: Mapping[str, float], n_beads: int) -> dict[str, int]:
    """``n_beads`` split by the ratio ``composition`` ({bead type: weight}, in its order): every type
    but the last gets ``floor(n_beads * weight / total)``, the last takes the remainder."""
    weights = {name: Fraction(w) for name, w in composition.items()}  # exact: no rounding surprises
    if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"a composition needs non-negative weights that sum to > 0, got {dict(composition)}")
    if int(n_beads) < 1:
        raise ValueError(f"n_beads must be >= 1, got {n_beads}")
    total = sum(weights.values())
    names = list(weights)
    counts = {name: math.floor(int(n_beads) * weights[name] / total) for name in names[:-1]}
    counts[names[-1]] = int(n_beads) - sum(counts.values())
    return counts


def cube_edge_nm(n_beads: int, density_per_nm3: float) -> float:
    """Edge (nm) of the cube holding ``n_beads`` at ``density_per_nm3`` (beads per nm^3)."""
    if not density_per_nm3 > 0:
        raise ValueError(f"density_per_nm3 must be > 0, got {density_per_nm3}")
    return float((n_beads / density_per_nm3) ** (1.0 / 3.0))


def lattice_configuration(counts: Mapping[str, int], box_edge_nm: float, seed: int = 0
                          ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(type names [N], positions [N,3] nm, box [3,3] nm)``: ``counts[type]`` beads of each type
    (N in all) on a jittered cubic lattice filling a cube of edge ``box_edge_nm``.

    Sites of a ``ceil(N^(1/3))``^3 lattice filling the box, a random subset of N of them, each
    jittered by up to 10 % of the spacing per axis (at most 0.04 nm); types shuffled. The same
    ``seed`` gives the same configuration.
    """
    if any(int(n) < 0 for n in counts.values()) or sum(int(n) for n in counts.values()) < 1:
        raise ValueError(f"bead counts must be >= 0 with at least one bead, got {dict(counts)}")
    if not box_edge_nm > 0:
        raise ValueError(f"box_edge_nm must be > 0, got {box_edge_nm}")
    names = [name for name, n in counts.items() for _ in range(int(n))]
    n_beads = len(names)
    rng = np.random.default_rng(seed)
    side = int(math.ceil(n_beads ** (1.0 / 3.0) - 1e-9))
    spacing = box_edge_nm / side
    grid = (np.arange(side) + 0.5) * spacing
    sites = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
    sites = sites[rng.permutation(len(sites))[:n_beads]]
    jitter = min(0.04, 0.1 * spacing)
    positions = sites + rng.uniform(-jitter, jitter, sites.shape)
    names = [names[i] for i in rng.permutation(n_beads)]
    return names, positions, np.eye(3) * box_edge_nm
