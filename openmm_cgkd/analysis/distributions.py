"""Shared pieces of the structural analysis: the :class:`Distribution` result type, bead types,
periodic-boundary helpers and uniform grids.

Conventions used by every analysis function:

* A trajectory is an ``mdtraj.Trajectory`` of beads (one bead per residue); a bead's type is its
  **residue name** (``CHO``, ``CL``, ``URE`` for the DES system).
* Keys are canonical so that CG and AA results line up whatever the atom order: type names are
  sorted alphabetically; a pair key is ``"A-B"`` (A <= B), a triplet key is ``"J-I-K"`` with the
  *central* type I in the middle and J <= K, a species key is the type name.
* Units: nm for distances, degrees for angles, ps for times.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from openmm_cgkd.errors import CGKDError
from openmm_cgkd.geometry import minimum_image

__all__ = ["Distribution", "AnalysisError", "bead_type_indices", "pair_keys", "uniform_edges",
           "box_half_width", "minimum_image", "pairwise_distances", "require_periodic", "make_trajectory"]


class AnalysisError(CGKDError, ValueError):
    """Input that the structural analysis cannot work with (no box, unknown types, ...)."""

    exit_code = 2  # bad input: usage error


@dataclass
class Distribution:
    """One histogrammed curve on a uniform grid.

    ``values`` is g(r) (dimensionless) for an RDF, and a normalised probability density for an
    ADF (per degree, integrates to 1 over 0-180) and a CDF (per nm, integrates to 1 over the
    grid). ``std`` is the standard deviation over replicas (``None`` for a single trajectory).
    ``n_samples`` counts what was histogrammed (pairs x frames, triplets, merges).
    """

    kind: str  # "rdf" | "adf" | "cdf"
    key: str
    edges: np.ndarray
    values: np.ndarray
    std: np.ndarray | None = None
    n_samples: int = 0
    n_frames: int = 0
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.edges = np.asarray(self.edges, dtype=np.float64)
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.std is not None:
            self.std = np.asarray(self.std, dtype=np.float64)
        if self.edges.ndim != 1 or self.values.shape != (len(self.edges) - 1,):
            raise AnalysisError(f"{self.kind} {self.key}: {len(self.edges)} edges but values of shape "
                                f"{self.values.shape}")

    @property
    def centers(self) -> np.ndarray:
        return 0.5 * (self.edges[1:] + self.edges[:-1])

    @property
    def widths(self) -> np.ndarray:
        return np.diff(self.edges)

    @property
    def unit(self) -> str:
        return "degree" if self.kind == "adf" else "nm"

    def integral(self) -> float:
        return float(np.sum(self.values * self.widths))

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "key": self.key, "unit": self.unit, "edges": self.edges.tolist(),
             "values": self.values.tolist(), "n_samples": int(self.n_samples),
             "n_frames": int(self.n_frames), "meta": dict(self.meta)}
        if self.std is not None:
            d["std"] = self.std.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Distribution":
        return cls(d["kind"], d["key"], np.asarray(d["edges"]), np.asarray(d["values"]),
                   None if d.get("std") is None else np.asarray(d["std"]), int(d.get("n_samples", 0)),
                   int(d.get("n_frames", 0)), dict(d.get("meta", {})))


def bead_type_indices(topology) -> dict[str, np.ndarray]:
    """Atom indices of each bead type (residue name), types sorted by name."""
    atoms = topology.atoms() if callable(topology.atoms) else topology.atoms
    names = np.array([atom.residue.name for atom in atoms])
    if names.size == 0:
        raise AnalysisError("topology has no beads")
    return {name: np.flatnonzero(names == name) for name in sorted(set(names.tolist()))}


def pair_keys(type_names) -> list[tuple[str, str]]:
    """All unordered type pairs (A <= B) of sorted type names, including like pairs."""
    return list(itertools.combinations_with_replacement(sorted(type_names), 2))


def uniform_edges(start: float, stop: float, width: float) -> np.ndarray:
    """Edges of uniform bins of ``width`` from ``start``, the last edge not beyond ``stop``."""
    if width <= 0:
        raise AnalysisError(f"bin width must be positive, got {width}")
    x = (stop - start) / width
    n = int(np.floor(x + 1e-6 * max(1.0, x)))  # tolerate float32 boxes (relative error ~1e-7)
    if n < 1:
        raise AnalysisError(f"grid {start}..{stop} holds no bin of width {width}")
    return start + width * np.arange(n + 1, dtype=np.float64)


def require_periodic(traj) -> np.ndarray:
    """The box vectors (F, 3, 3) nm of ``traj``; raise if it has none."""
    if traj.unitcell_vectors is None:
        raise AnalysisError("trajectory has no periodic box (unit cell); the RDF/ADF/CDF analysis needs one (for a "
                            "system without a box, compare the bond, angle and dihedral distributions: "
                            "openmm_cgkd.analysis.molecules.bonded_distributions, docs/molecules.md)")
    return np.asarray(traj.unitcell_vectors, dtype=np.float64)


def box_half_width(boxes: np.ndarray) -> float:
    """Half the smallest perpendicular width over all frames (nm): the largest distance for which
    the minimum-image convention is unambiguous."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 3, 3)
    vol = np.abs(np.linalg.det(boxes))
    widths = []
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        widths.append(vol / np.linalg.norm(np.cross(boxes[:, j], boxes[:, k]), axis=1))
    return float(0.5 * np.min(widths))


def pairwise_distances(a: np.ndarray, b: np.ndarray, box: np.ndarray, block: int = 512) -> np.ndarray:
    """Minimum-image distance matrix (len(a), len(b)) in nm, computed in row blocks."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    out = np.empty((len(a), len(b)), dtype=np.float64)
    for s in range(0, len(a), block):
        d = minimum_image(b[None, :, :] - a[s:s + block, None, :], box)
        out[s:s + block] = np.sqrt(np.einsum("ijk,ijk->ij", d, d))
    return out


def make_trajectory(positions, bead_type_names, boxes, times=None):
    """An ``mdtraj.Trajectory`` of beads from arrays: ``positions`` (F, N, 3) or (N, 3) nm,
    ``bead_type_names`` (N type names; residue codes via :func:`~openmm_cgkd.topology.bead_topology`),
    ``boxes`` (3, 3) or (F, 3, 3) nm (rows are box vectors), ``times`` (F,) ps."""
    import mdtraj as md

    from openmm_cgkd.topology import bead_topology

    xyz = np.asarray(positions, dtype=np.float32)
    if xyz.ndim == 2:
        xyz = xyz[None]
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.shape == (3, 3):
        boxes = np.tile(boxes, (len(xyz), 1, 1))
    if xyz.shape[1] != len(bead_type_names) or boxes.shape != (len(xyz), 3, 3):
        raise AnalysisError(f"positions {xyz.shape}, {len(bead_type_names)} bead types and boxes {boxes.shape} "
                            "do not fit together")
    top = md.Topology.from_openmm(bead_topology(list(bead_type_names)))
    traj = md.Trajectory(xyz, top, time=None if times is None else np.asarray(times, dtype=np.float64))
    traj.unitcell_vectors = boxes
    return traj
