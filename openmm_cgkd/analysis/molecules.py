"""Analysis of molecules: bond, angle and dihedral distributions, intra- and intermolecular pairs.

The molecules of a bead trajectory come from its topology's bonds (a bead PDB's CONECT records,
or a dataset's :class:`~openmm_cgkd.cgtopology.CGTopology`). Per bead-type tuple (type =
residue name, tuples in the direction whose names sort first):

* ``bond``: the distance distribution of bonded beads (nm; density per nm),
* ``angle``: the i-j-k angle distribution (degrees; density per degree, no sin weighting),
* ``dihedral``: the i-j-k-l dihedral distribution (degrees in (-180, 180]; density per degree),

each a normalised density on a fixed grid, so its TAE against the AA reference lies in [0, 2].
:func:`pair_masks` splits bead pairs into intramolecular and intermolecular ones
(:func:`openmm_cgkd.analysis.rdf.compute_rdfs` takes the split): with molecules, the report's
RDFs and its contact check ("closer than the AA") are intermolecular (non-bonded) pairs, and the
intramolecular RDFs are reported apart.
"""
from __future__ import annotations

import numpy as np

from openmm_cgkd.analysis.distributions import AnalysisError, Distribution, uniform_edges
from openmm_cgkd.cgtopology import CGTopology

__all__ = ["trajectory_cg_topology", "bonded_distributions", "BONDED_KINDS", "BOND_EDGES", "ANGLE_EDGES",
           "DIHEDRAL_EDGES"]

BONDED_KINDS = ("bond", "angle", "dihedral")
BOND_EDGES = uniform_edges(0.0, 1.5, 0.005)  # nm
ANGLE_EDGES = uniform_edges(0.0, 180.0, 2.0)  # degree
DIHEDRAL_EDGES = uniform_edges(-180.0, 180.0, 5.0)  # degree


def trajectory_cg_topology(topology) -> CGTopology:
    """The bonds of an mdtraj or OpenMM bead topology as a :class:`CGTopology`."""
    from openmm_cgkd.topology import topology_bonds

    n = topology.getNumAtoms() if hasattr(topology, "getNumAtoms") else topology.n_atoms
    return CGTopology(n, topology_bonds(topology))


def _type_names(topology) -> list[str]:
    atoms = topology.atoms() if callable(topology.atoms) else topology.atoms
    return [a.residue.name for a in atoms]


def _groups(index: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Rows of ``index`` grouped by their type-name tuple, each row put in its canonical direction."""
    out: dict[str, list] = {}
    for row in np.asarray(index, np.int64):
        tup = tuple(names[i] for i in row)
        if tup[::-1] < tup:
            row, tup = row[::-1], tup[::-1]
        out.setdefault("-".join(tup), []).append(row)
    return {k: np.asarray(v) for k, v in sorted(out.items())}


def _density(kind: str, key: str, values: np.ndarray, edges: np.ndarray, n_frames: int) -> Distribution:
    v = np.asarray(values, np.float64).ravel()
    counts, _ = np.histogram(v, edges)
    total = counts.sum()
    dens = counts / (total * np.diff(edges)) if total else np.zeros(len(edges) - 1)
    return Distribution(kind, key, edges, dens, n_samples=int(v.size), n_frames=n_frames,
                        meta={"outside_grid": int(v.size - total)})


def bonded_distributions(traj, topology: CGTopology | None = None) -> dict[str, dict[str, Distribution]]:
    """{``bond`` | ``angle`` | ``dihedral``: {type tuple: density}} of an mdtraj bead trajectory
    (minimum image when it has a box). ``topology`` defaults to the trajectory's bonds; empty
    dicts when no bead is bonded."""
    import mdtraj as md

    topo = trajectory_cg_topology(traj.topology) if topology is None else topology
    if topo.n_beads != traj.n_atoms:
        raise AnalysisError(f"the CG topology has {topo.n_beads} beads, the trajectory {traj.n_atoms}")
    names = _type_names(traj.topology)
    periodic = traj.unitcell_vectors is not None
    out: dict[str, dict[str, Distribution]] = {k: {} for k in BONDED_KINDS}
    for key, rows in _groups(topo.bonds, names).items():
        out["bond"][key] = _density("bond", key, md.compute_distances(traj, rows, periodic=periodic),
                                    BOND_EDGES, traj.n_frames)
    for key, rows in _groups(topo.angles, names).items():
        out["angle"][key] = _density("angle", key, np.degrees(md.compute_angles(traj, rows, periodic=periodic)),
                                     ANGLE_EDGES, traj.n_frames)
    for key, rows in _groups(topo.dihedrals, names).items():
        out["dihedral"][key] = _density("dihedral", key,
                                        np.degrees(md.compute_dihedrals(traj, rows, periodic=periodic)),
                                        DIHEDRAL_EDGES, traj.n_frames)
    return out


def mean_value(dist: Distribution) -> float:
    """The mean of a density on its grid (nm or degree)."""
    w = dist.values * dist.widths
    return float(np.sum(w * dist.centers) / np.sum(w)) if np.sum(w) > 0 else float("nan")
