"""Short-range repulsive wall between beads: the one definition of its parameters.

For a pair of beads of types (i, j) at distance r (nm) below ``cutoff_nm``::

    E(r) = A_ij * (exp(-a_ij * r) - exp(-a_ij * cutoff_nm))      kJ/mol

The constant shift makes the energy continuous at the cutoff and leaves forces unchanged.
The fitting rule (docs/METHOD.md section 3) takes, per pair, the taper point t (nm; the smallest r
where the reference RDF exceeds 0.01), the mean ``|mapped force|`` s (kJ/mol/nm), a width dr (nm)
and a fraction p, and gives a = ln(1/p)/dr and A = s p exp(a t) / a, so that the pair force is
p*s at r = t and s at r = t - dr.

The torch evaluation (training, labels) lives in :mod:`openmm_cgkd.model.wall_torch` and the
OpenMM ``CustomNonbondedForce`` (simulation) in :mod:`openmm_cgkd.serving.wall_force`; both read
this object.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["WallParameters"]

DEFAULT_WIDTH_NM = 0.015  # dr = 0.15 Angstrom
DEFAULT_FRACTION = 0.05  # p


@dataclass
class WallParameters:
    """Per type-pair wall parameters. Matrices are (T, T), symmetric, indexed like ``type_names``."""

    type_names: list[str]
    prefactor_kj_mol: np.ndarray  # A_ij, kJ/mol
    decay_per_nm: np.ndarray  # a_ij, 1/nm
    cutoff_nm: float

    def __post_init__(self) -> None:
        self.type_names = [str(t) for t in self.type_names]
        self.prefactor_kj_mol = np.asarray(self.prefactor_kj_mol, dtype=np.float64)
        self.decay_per_nm = np.asarray(self.decay_per_nm, dtype=np.float64)
        self.cutoff_nm = float(self.cutoff_nm)
        t = len(self.type_names)
        for name in ("prefactor_kj_mol", "decay_per_nm"):
            m = getattr(self, name)
            if m.shape != (t, t):
                raise ValueError(f"wall {name} must be {t}x{t} for types {self.type_names}, got {m.shape}")
            if not np.allclose(m, m.T):
                raise ValueError(f"wall {name} must be symmetric")
            if not np.all(np.isfinite(m)) or np.any(m < 0):
                raise ValueError(f"wall {name} must be finite and non-negative")
        if not self.cutoff_nm > 0:
            raise ValueError(f"wall cutoff must be positive (nm), got {self.cutoff_nm}")

    @property
    def n_types(self) -> int:
        return len(self.type_names)

    @classmethod
    def zero(cls, type_names: list[str], cutoff_nm: float = 0.3) -> "WallParameters":
        """A wall that does nothing (A = 0), for models trained without one."""
        t = len(type_names)
        return cls(list(type_names), np.zeros((t, t)), np.ones((t, t)), cutoff_nm)

    @classmethod
    def from_taper(cls, type_names: list[str], taper_nm: np.ndarray, mean_force_kj_mol_nm: np.ndarray,
                   width_nm: float = DEFAULT_WIDTH_NM, fraction: float = DEFAULT_FRACTION,
                   cutoff_nm: float | None = None) -> "WallParameters":
        """Apply the fitting rule to per-pair taper points t (nm) and force scales s (kJ/mol/nm).

        The default cutoff is max(t) + 10/a, where the force has fallen by e^-10 below p*s.
        """
        t = np.asarray(taper_nm, dtype=np.float64)
        s = np.asarray(mean_force_kj_mol_nm, dtype=np.float64)
        if not 0 < fraction < 1:
            raise ValueError(f"fraction p must be in (0, 1), got {fraction}")
        if not width_nm > 0:
            raise ValueError(f"width dr must be positive (nm), got {width_nm}")
        a = math.log(1.0 / fraction) / width_nm
        decay = np.full(t.shape, a)
        prefactor = s * fraction * np.exp(a * t) / a
        if cutoff_nm is None:
            cutoff_nm = float(t.max() + 10.0 / a)
        return cls(list(type_names), prefactor, decay, cutoff_nm)

    def pair_energy(self, r_nm: np.ndarray, type_i: int, type_j: int) -> np.ndarray:
        """Reference (numpy) energy in kJ/mol of one pair at distances r (nm)."""
        r = np.asarray(r_nm, dtype=np.float64)
        a = self.decay_per_nm[type_i, type_j]
        A = self.prefactor_kj_mol[type_i, type_j]
        e = A * (np.exp(-a * r) - math.exp(-a * self.cutoff_nm))
        return np.where(r < self.cutoff_nm, e, 0.0)

    def to_dict(self) -> dict:
        return {
            "type_names": list(self.type_names),
            "prefactor_kj_mol": self.prefactor_kj_mol.tolist(),
            "decay_per_nm": self.decay_per_nm.tolist(),
            "cutoff_nm": self.cutoff_nm,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "WallParameters":
        missing = {"type_names", "prefactor_kj_mol", "decay_per_nm", "cutoff_nm"} - set(d)
        if missing:
            raise ValueError(f"wall parameters lack {sorted(missing)}")
        unknown = set(d) - {"type_names", "prefactor_kj_mol", "decay_per_nm", "cutoff_nm"}
        if unknown:
            raise ValueError(f"wall parameters have unknown keys {sorted(unknown)}")
        return cls(d["type_names"], d["prefactor_kj_mol"], d["decay_per_nm"], d["cutoff_nm"])
