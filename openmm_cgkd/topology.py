"""Bead topologies: OpenMM / mdtraj topologies of element-less CG beads, and bead PDB files.

A bead is an atom with no element, alone in a residue. Its residue name and atom name identify
its bead type (by default both are the type's residue code: its first three letters, upper-cased,
e.g. ``Urea`` -> ``URE``; a bundle's or system's bead types name theirs). Masses are never taken
from elements; they come from a model bundle or a CG dataset.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["default_residue_name", "bead_topology", "bead_topology_from_counts", "topology_bead_names",
           "dataset_trajectory", "write_bead_pdb", "read_bead_pdb"]

def default_residue_name(type_name: str) -> str:
    """The residue (and atom) name of a bead type that names none: its first 3 letters, upper-cased."""
    return type_name[:3].upper()


def bead_topology(bead_type_names: Sequence[str], box_nm: np.ndarray | None = None,
                  residue_names: Mapping[str, str] | None = None):
    """An ``openmm.app.Topology`` with one single-bead residue per entry of ``bead_type_names``.

    ``box_nm`` (3x3, rows are box vectors, nm) makes the topology periodic.
    """
    from openmm import Vec3, unit
    from openmm.app import Topology

    residue_names = dict(residue_names or {})
    top = Topology()
    chain = top.addChain()
    for type_name in bead_type_names:
        code = residue_names.get(type_name, default_residue_name(type_name))
        res = top.addResidue(code, chain)
        top.addAtom(code, None, res)
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

    names = [dataset.type_names[t] for t in dataset.bead_types]
    top = md.Topology.from_openmm(bead_topology(names))
    boxes = dataset.boxes[frames]
    traj = md.Trajectory(dataset.positions[frames], top, time=dataset.times[frames])
    traj.unitcell_vectors = boxes  # mdtraj's constructor takes lengths/angles, not vectors
    return traj


def write_bead_pdb(path: str | Path, topology, positions_nm: np.ndarray, box_nm: np.ndarray | None = None) -> Path:
    """Write a bead PDB (CRYST1 from ``box_nm`` or the topology's box) that OpenMM and mdtraj read."""
    from openmm import Vec3, unit
    from openmm.app import PDBFile

    pos = np.asarray(positions_nm, dtype=float)
    if pos.shape != (topology.getNumAtoms(), 3):
        raise ValueError(f"positions have shape {pos.shape}; topology has {topology.getNumAtoms()} beads")
    if box_nm is not None:
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
