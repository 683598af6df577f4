"""The CG topology: which beads are bonded, and the molecules they form.

Two beads are bonded when an AA bond joins an atom of one to an atom of the other, directly or
through atoms that belong to no bead (a partial map: a C-alpha bead is bonded to the next one
through the unmapped backbone atoms C and N). Angles (i-j-k) and proper dihedrals (i-j-k-l) are
every path of 3 and 4 distinct beads along the bonds, in a fixed order (sorted, each path once,
written with its first index below its last). A molecule is a connected set of bonded beads; a
bead with no bond is a molecule of its own.

Exclusions (:meth:`CGTopology.excluded_pairs`): the pairs up to ``max_separation`` bonds apart
(2: 1-2 and 1-3 pairs; 3: also 1-4), which the wall leaves to the bonded priors.

Datasets written before molecules existed carry no topology: they load as one-bead molecules
without bonds (:meth:`CGTopology.unbonded`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from openmm_cgkd.errors import CGKDError

__all__ = ["CGTopology", "TopologyError"]


class TopologyError(CGKDError, ValueError):
    """A CG topology is inconsistent (bond index out of range, a bead bonded to itself, ...)."""

    exit_code = 2


@dataclass
class CGTopology:
    """Bonds between ``n_beads`` beads (``bonds`` [B, 2], 0-based bead indices, i < j, sorted)."""

    n_beads: int
    bonds: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))

    def __post_init__(self) -> None:
        self.n_beads = int(self.n_beads)
        b = np.asarray(self.bonds, dtype=np.int64).reshape(-1, 2)
        if len(b):
            if b.min() < 0 or b.max() >= self.n_beads:
                raise TopologyError(f"bond indices must lie in 0..{self.n_beads - 1}, got {b.min()}..{b.max()}")
            if np.any(b[:, 0] == b[:, 1]):
                raise TopologyError("a bead cannot be bonded to itself")
            b = np.unique(np.sort(b, axis=1), axis=0)
        self.bonds = b
        self._cache: dict = {}

    @classmethod
    def unbonded(cls, n_beads: int) -> "CGTopology":
        """``n_beads`` one-bead molecules (the topology of a dataset that carries none)."""
        return cls(n_beads, np.zeros((0, 2), np.int64))

    @property
    def n_bonds(self) -> int:
        return int(len(self.bonds))

    @property
    def has_bonds(self) -> bool:
        return self.n_bonds > 0

    def neighbours(self) -> list[list[int]]:
        if "nb" not in self._cache:
            nb: list[list[int]] = [[] for _ in range(self.n_beads)]
            for i, j in self.bonds.tolist():
                nb[i].append(j)
                nb[j].append(i)
            self._cache["nb"] = [sorted(x) for x in nb]
        return self._cache["nb"]

    @property
    def angles(self) -> np.ndarray:
        """[A, 3] bead triplets i-j-k (j the centre; i < k)."""
        if "angles" not in self._cache:
            out = [(i, j, k) for j, nb in enumerate(self.neighbours()) for a, i in enumerate(nb) for k in nb[a + 1:]]
            self._cache["angles"] = np.asarray(sorted(out), np.int64).reshape(-1, 3)
        return self._cache["angles"]

    @property
    def dihedrals(self) -> np.ndarray:
        """[D, 4] bead quadruplets i-j-k-l along bonds (distinct beads; i < l)."""
        if "dihedrals" not in self._cache:
            nb = self.neighbours()
            out = set()
            for j, k in self.bonds.tolist():
                for i in nb[j]:
                    if i == k:
                        continue
                    for l in nb[k]:
                        if l in (j, i):
                            continue
                        out.add((i, j, k, l) if i < l else (l, k, j, i))
            self._cache["dihedrals"] = np.asarray(sorted(out), np.int64).reshape(-1, 4)
        return self._cache["dihedrals"]

    @property
    def molecule(self) -> np.ndarray:
        """[N] molecule index of each bead (connected components, numbered in bead order)."""
        if "mol" not in self._cache:
            parent = np.arange(self.n_beads)

            def find(x: int) -> int:
                while parent[x] != x:
                    parent[x] = parent[parent[x]]
                    x = parent[x]
                return x

            for i, j in self.bonds.tolist():
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
            roots = np.array([find(i) for i in range(self.n_beads)], np.int64)
            _, mol = np.unique(roots, return_inverse=True)
            self._cache["mol"] = mol.astype(np.int64)
        return self._cache["mol"]

    @property
    def n_molecules(self) -> int:
        return int(self.molecule.max()) + 1 if self.n_beads else 0

    def excluded_pairs(self, max_separation: int = 2) -> np.ndarray:
        """[P, 2] bead pairs (i < j) at most ``max_separation`` bonds apart (0: none; 2: 1-2 and
        1-3; 3: also 1-4), sorted."""
        if max_separation not in (0, 1, 2, 3):
            raise TopologyError(f"exclusions reach 0 to 3 bonds (1-2, 1-3, 1-4), got {max_separation}")
        key = ("excl", max_separation)
        if key not in self._cache:
            nb = self.neighbours()
            pairs = set()
            for start in range(self.n_beads):
                frontier, seen = {start}, {start}
                for _ in range(max_separation):
                    frontier = {n for f in frontier for n in nb[f]} - seen
                    seen |= frontier
                pairs.update((start, j) for j in seen if j > start)
            self._cache[key] = np.asarray(sorted(pairs), np.int64).reshape(-1, 2)
        return self._cache[key]

    def intramolecular(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Boolean mask: beads ``i`` and ``j`` (index arrays) belong to the same molecule."""
        mol = self.molecule
        return mol[np.asarray(i)] == mol[np.asarray(j)]

    # -- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"n_beads": self.n_beads, "bonds": self.bonds.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "CGTopology":
        if not isinstance(d, dict) or set(d) != {"n_beads", "bonds"}:
            raise TopologyError(f"a CG topology is {{n_beads, bonds}}, got {d!r}")
        return cls(int(d["n_beads"]), np.asarray(d["bonds"], np.int64).reshape(-1, 2))

    def __eq__(self, other) -> bool:
        return isinstance(other, CGTopology) and self.n_beads == other.n_beads \
            and np.array_equal(self.bonds, other.bonds)
