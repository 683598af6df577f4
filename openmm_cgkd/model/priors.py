"""Bonded priors between beads: the one definition of their parameters and energies.

Per bead-type tuple (the types of the bonded beads, in a canonical direction):

* bond i-j, distance r (nm):           E = k_b / 2 (r - r0)^2                      (kJ/mol)
* angle i-j-k, angle theta (rad):      E = k_a / 2 (theta - theta0)^2
* dihedral i-j-k-l, angle phi (rad):   E = sum_n k_n (1 + cos(n phi - delta_n)),  n = 1..M

with k_b in kJ/mol/nm^2, k_a in kJ/mol/rad^2, k_n in kJ/mol and delta_n in rad: exactly OpenMM's
``HarmonicBondForce``, ``HarmonicAngleForce`` and ``PeriodicTorsionForce`` (phi is the IUPAC
dihedral, 0 for cis). They are fitted by Boltzmann inversion of the mapped AA distributions
(:mod:`openmm_cgkd.training.prior_fit`), evaluated in torch by
:mod:`openmm_cgkd.model.priors_torch` and served by :mod:`openmm_cgkd.serving.prior_forces`.

``exclusions`` (2 or 3) says which bonded pairs the wall leaves out: those at most that many
bonds apart (2: 1-2 and 1-3 pairs; 3: also 1-4).

Type tuples are written as type names joined by ``-`` (``"C-C"``, ``"C-C-C"``); the canonical
direction is the one whose tuple of type indices is the smaller of the two readings.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from openmm_cgkd.errors import CGKDError

__all__ = ["BondedPriors", "PriorError", "canonical", "bond_geometry"]


class PriorError(CGKDError, ValueError):
    """Bonded priors that are malformed or that lack parameters for a bonded tuple of bead types."""

    exit_code = 2


def canonical(types: tuple[int, ...]) -> tuple[int, ...]:
    """The canonical direction of a type tuple: the smaller of it and its reverse."""
    t = tuple(int(x) for x in types)
    return min(t, t[::-1])


@dataclass
class BondedPriors:
    """Parameters per type tuple (keys: type-index tuples in canonical direction).

    ``bonds[(ti, tj)] = (r0 nm, k kJ/mol/nm^2)``, ``angles[(ti, tj, tk)] = (theta0 rad, k kJ/mol/rad^2)``,
    ``dihedrals[(ti, tj, tk, tl)] = [(n, k_n kJ/mol, delta_n rad), ...]``.
    """

    type_names: list[str]
    bonds: dict = field(default_factory=dict)
    angles: dict = field(default_factory=dict)
    dihedrals: dict = field(default_factory=dict)
    exclusions: int = 2
    temperature_k: float | None = None  # the temperature of the data they were fitted at

    def __post_init__(self) -> None:
        self.type_names = [str(t) for t in self.type_names]
        if self.exclusions not in (0, 1, 2, 3):
            raise PriorError(f"exclusions must be 0..3 bonds (2: 1-2 and 1-3; 3: also 1-4), got {self.exclusions}")
        for name, size in (("bonds", 2), ("angles", 3), ("dihedrals", 4)):
            table = {}
            for key, val in getattr(self, name).items():
                key = canonical(key)
                if len(key) != size or min(key) < 0 or max(key) >= len(self.type_names):
                    raise PriorError(f"{name} key {key} must be {size} type indices of {self.type_names}")
                table[key] = val
            setattr(self, name, table)
        for key, (x0, k) in list(self.bonds.items()) + list(self.angles.items()):
            if not (np.isfinite(x0) and np.isfinite(k) and k >= 0):
                raise PriorError(f"prior {self.label(key)}: need a finite centre and k >= 0, got ({x0}, {k})")
        for key, terms in self.dihedrals.items():
            for n, k, d in terms:
                if int(n) < 1 or not np.isfinite(k) or not np.isfinite(d):
                    raise PriorError(f"dihedral prior {self.label(key)}: bad term (n={n}, k={k}, delta={d})")

    @classmethod
    def none(cls, type_names: list[str]) -> "BondedPriors":
        """No bonded terms (and no exclusions): a system of one-bead molecules."""
        return cls(list(type_names), exclusions=0)

    @property
    def is_empty(self) -> bool:
        return not (self.bonds or self.angles or self.dihedrals)

    def label(self, key: tuple[int, ...]) -> str:
        return "-".join(self.type_names[k] for k in key)

    # -- per-instance parameters -------------------------------------------------------------
    def _lookup(self, table: dict, what: str, index: np.ndarray, bead_types: np.ndarray) -> list:
        out = []
        for row in np.asarray(index, np.int64).reshape(len(index), -1):
            key = canonical(tuple(bead_types[row]))
            if key not in table:
                raise PriorError(f"no {what} prior for bead types {self.label(key)} (beads {row.tolist()}); the "
                                 f"model knows {sorted(self.label(k) for k in table) or 'none'}: the molecule "
                                 "differs from those it was trained on")
            out.append(table[key])
        return out

    def bond_parameters(self, bonds: np.ndarray, bead_types: np.ndarray) -> np.ndarray:
        """[B, 2] (r0 nm, k kJ/mol/nm^2) of each bond."""
        return np.asarray(self._lookup(self.bonds, "bond", bonds, bead_types), np.float64).reshape(-1, 2)

    def angle_parameters(self, angles: np.ndarray, bead_types: np.ndarray) -> np.ndarray:
        """[A, 2] (theta0 rad, k kJ/mol/rad^2) of each angle."""
        return np.asarray(self._lookup(self.angles, "angle", angles, bead_types), np.float64).reshape(-1, 2)

    def dihedral_terms(self, dihedrals: np.ndarray, bead_types: np.ndarray) -> np.ndarray:
        """[T, 7]: (i, j, k, l, n, k_n kJ/mol, delta_n rad) per Fourier term of each dihedral; empty
        when the priors have no dihedral terms (the dihedrals are then left to the network)."""
        if not self.dihedrals:
            return np.zeros((0, 7))
        rows = []
        for quad, terms in zip(np.asarray(dihedrals, np.int64).reshape(-1, 4),
                               self._lookup(self.dihedrals, "dihedral", dihedrals, bead_types)):
            rows += [[*quad.tolist(), int(n), float(k), float(d)] for n, k, d in terms]
        return np.asarray(rows, np.float64).reshape(-1, 7)

    # -- reference energy (numpy), for tests and analysis -----------------------------------
    def energy(self, positions: np.ndarray, topology, bead_types: np.ndarray,
               box: np.ndarray | None = None) -> float:
        """Total prior energy (kJ/mol) of one frame (numpy, float64; minimum image when ``box``)."""
        x = np.asarray(positions, np.float64)
        e = 0.0
        if topology.n_bonds and self.bonds:
            r = bond_geometry(x, topology.bonds, box)
            p = self.bond_parameters(topology.bonds, bead_types)
            e += float(np.sum(0.5 * p[:, 1] * (r - p[:, 0]) ** 2))
        if len(topology.angles) and self.angles:
            th = bond_geometry(x, topology.angles, box)
            p = self.angle_parameters(topology.angles, bead_types)
            e += float(np.sum(0.5 * p[:, 1] * (th - p[:, 0]) ** 2))
        terms = self.dihedral_terms(topology.dihedrals, bead_types) if len(topology.dihedrals) else np.zeros((0, 7))
        if len(terms):
            phi = bond_geometry(x, terms[:, :4].astype(np.int64), box)
            e += float(np.sum(terms[:, 5] * (1 + np.cos(terms[:, 4] * phi - terms[:, 6]))))
        return e

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "type_names": list(self.type_names), "exclusions": int(self.exclusions),
            "temperature_k": None if self.temperature_k is None else float(self.temperature_k),
            "bonds": {self.label(k): {"r0_nm": float(v[0]), "k_kj_mol_nm2": float(v[1])} for k, v in self.bonds.items()},
            "angles": {self.label(k): {"theta0_rad": float(v[0]), "k_kj_mol_rad2": float(v[1])}
                       for k, v in self.angles.items()},
            "dihedrals": {self.label(k): [{"n": int(n), "k_kj_mol": float(kk), "delta_rad": float(d)}
                                          for n, kk, d in v] for k, v in self.dihedrals.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> "BondedPriors":
        keys = {"type_names", "exclusions", "temperature_k", "bonds", "angles", "dihedrals"}
        if not isinstance(d, dict) or set(d) != keys:
            raise PriorError(f"bonded priors need exactly the keys {sorted(keys)}, got "
                             f"{sorted(d) if isinstance(d, dict) else d!r}")
        names = [str(t) for t in d["type_names"]]

        def key(label: str, size: int) -> tuple[int, ...]:
            parts = str(label).split("-")
            if len(parts) != size or any(p not in names for p in parts):
                raise PriorError(f"prior key {label!r} must be {size} bead type names of {names} joined by '-'")
            return tuple(names.index(p) for p in parts)

        try:
            bonds = {key(k, 2): (float(v["r0_nm"]), float(v["k_kj_mol_nm2"])) for k, v in (d["bonds"] or {}).items()}
            angles = {key(k, 3): (float(v["theta0_rad"]), float(v["k_kj_mol_rad2"]))
                      for k, v in (d["angles"] or {}).items()}
            dihedrals = {key(k, 4): [(int(t["n"]), float(t["k_kj_mol"]), float(t["delta_rad"])) for t in v]
                         for k, v in (d["dihedrals"] or {}).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise PriorError(f"malformed bonded priors: {exc!r}") from None
        t = d["temperature_k"]
        return cls(names, bonds, angles, dihedrals, int(d["exclusions"]), None if t is None else float(t))


def bond_geometry(x: np.ndarray, index: np.ndarray, box: np.ndarray | None = None) -> np.ndarray:
    """Distances (nm, 2 columns), angles (rad, 3 columns) or dihedrals (rad, 4 columns, in
    (-pi, pi]) of the bead tuples ``index`` [M, k] in one frame ``x`` [N, 3] (numpy). Bond vectors
    are taken at the minimum image when ``box`` (rows = vectors) is given."""
    index = np.asarray(index, np.int64)

    def vec(a, b):
        d = x[b] - x[a]
        if box is not None and np.any(box != 0):
            inv = np.linalg.inv(box)
            s = d @ inv
            d = (s - np.round(s)) @ box
        return d

    if index.shape[1] == 2:
        return np.linalg.norm(vec(index[:, 0], index[:, 1]), axis=1)
    if index.shape[1] == 3:
        u, v = vec(index[:, 1], index[:, 0]), vec(index[:, 1], index[:, 2])
        c = np.sum(u * v, 1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
        return np.arccos(np.clip(c, -1.0, 1.0))
    b1, b2, b3 = vec(index[:, 0], index[:, 1]), vec(index[:, 1], index[:, 2]), vec(index[:, 2], index[:, 3])
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    b2hat = b2 / np.linalg.norm(b2, axis=1, keepdims=True)
    return np.arctan2(np.sum(b2hat * np.cross(n1, n2), 1), np.sum(n1 * n2, 1))
