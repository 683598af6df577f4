"""System definitions (YAML): force field, composition, box, temperature, MD settings.

Smaller (or larger) boxes at the same density come from :meth:`SystemDefinition.resized`: the
composition is scaled keeping its ratios and the cubic box edge by (mass ratio)^(1/3).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from openmm_cgkd.data.opls import ForceField, load_forcefield
from openmm_cgkd.errors import MissingFileError, UsageError
from openmm_cgkd.fileio import file_sha256

__all__ = ["SystemDefinition", "AVOGADRO_G_PER_DALTON"]

AVOGADRO_G_PER_DALTON = 1.66053906660e-24  # g per dalton


# the keys of a system definition file (anything else is a typo, refused)
_KEYS = ("name", "forcefield", "mapping", "composition", "box_nm", "temperature_K", "timestep_fs",
         "friction_per_ps", "cutoff_nm", "constraints", "scale_14")
_CONSTRAINTS = (None, "HBonds")  # what openmm_cgkd.data.opls.create_system supports


@dataclass
class SystemDefinition:
    name: str
    forcefield_path: Path
    composition: dict[str, int]
    box_nm: float
    temperature_K: float = 298.1
    timestep_fs: float = 2.0
    friction_per_ps: float = 1.0
    cutoff_nm: float = 1.2
    constraints: str | None = "HBonds"
    mapping_path: Path | None = None
    scale_14: float | None = None  # 1-4 Coulomb and LJ scale; None = the force field's (OPLS-DES: 0.5)
    source: str = ""
    _ff: ForceField | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SystemDefinition":
        import yaml

        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"system definition not found: {path} (the DES one is systems/des/system.yaml)")
        try:
            d = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise UsageError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(d, dict):
            raise UsageError(f"{path} is not a system definition (a YAML mapping with forcefield, composition, box_nm)")
        base = path.parent
        extra = sorted(str(k) for k in d if k not in _KEYS)
        if extra:  # a misspelt setting must not run at its default
            raise UsageError(f"{path}: unknown key(s) {extra}; known keys: {', '.join(_KEYS)}")
        missing = [k for k in ("forcefield", "composition", "box_nm", "temperature_K") if k not in d]
        if missing:  # temperature_K too: the data's temperature is never assumed (it is every model's default)
            raise UsageError(f"{path}: missing key(s) {missing}")
        if not isinstance(d["composition"], dict):
            raise UsageError(f"{path}: composition must be a mapping of molecule -> count, got {d['composition']!r}")

        def number(key, default, kind=float):
            value = d.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
                raise UsageError(f"{path}: {key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
            if not math.isfinite(value):
                raise UsageError(f"{path}: {key} must be finite, got {value!r}")
            return kind(value)

        composition = {}
        for k, v in d["composition"].items():
            if isinstance(v, bool) or not isinstance(v, int):
                raise UsageError(f"{path}: composition.{k} must be an integer count, got {v!r}")
            composition[str(k)] = int(v)
        constraints = d.get("constraints", "HBonds")
        if constraints not in _CONSTRAINTS:
            raise UsageError(f"{path}: constraints must be one of {list(_CONSTRAINTS)}, got {constraints!r}")
        new = cls(
            name=str(d.get("name", path.stem)), forcefield_path=(base / str(d["forcefield"])).resolve(),
            composition=composition, box_nm=number("box_nm", None),
            temperature_K=number("temperature_K", None), timestep_fs=number("timestep_fs", 2.0),
            friction_per_ps=number("friction_per_ps", 1.0), cutoff_nm=number("cutoff_nm", 1.2),
            constraints=constraints,
            scale_14=None if d.get("scale_14") is None else number("scale_14", None),
            mapping_path=(base / str(d["mapping"])).resolve() if d.get("mapping") else None,
            source=str(path.resolve()))
        if not (new.temperature_K > 0 and new.timestep_fs > 0 and new.friction_per_ps >= 0 and new.cutoff_nm > 0):
            raise UsageError(f"{path}: need temperature_K > 0, timestep_fs > 0, friction_per_ps >= 0 and "
                             f"cutoff_nm > 0, got {new.temperature_K}, {new.timestep_fs}, {new.friction_per_ps}, "
                             f"{new.cutoff_nm}")
        if new.scale_14 is not None and not 0.0 <= new.scale_14 <= 1.0:
            raise UsageError(f"{path}: scale_14 must lie in [0, 1], got {new.scale_14}")
        if not new.forcefield_path.is_file():
            raise MissingFileError(f"{path}: force field {new.forcefield_path.name} not found next to it")
        unknown = [k for k in new.composition if k not in new.forcefield.molecules]
        if unknown:
            raise UsageError(f"{path}: composition names molecule(s) {unknown} that the force field "
                             f"{new.forcefield_path.name} lacks (it has {sorted(new.forcefield.molecules)})")
        if any(v < 0 for v in new.composition.values()) or new.n_molecules == 0 or not new.box_nm > 0:
            raise UsageError(f"{path}: molecule counts must be >= 0 (not all 0) and box_nm > 0")
        return new

    @property
    def forcefield(self) -> ForceField:
        """The force field, with ``scale_14`` applied to its 1-4 Coulomb and LJ scales when set."""
        if self._ff is None:
            ff = load_forcefield(self.forcefield_path)
            if self.scale_14 is not None:
                if not 0.0 <= self.scale_14 <= 1.0:
                    raise ValueError(f"scale_14 must lie in [0, 1], got {self.scale_14}")
                ff = replace(ff, fudge_lj=self.scale_14, fudge_qq=self.scale_14)
            self._ff = ff
        return self._ff

    @property
    def n_molecules(self) -> int:
        return int(sum(self.composition.values()))

    @property
    def n_atoms(self) -> int:
        ff = self.forcefield
        return int(sum(ff.molecules[k].n_atoms * n for k, n in self.composition.items()))

    @property
    def total_mass(self) -> float:
        ff = self.forcefield
        return float(sum(ff.molecules[k].mass * n for k, n in self.composition.items()))

    @property
    def density_g_cm3(self) -> float:
        return self.total_mass * AVOGADRO_G_PER_DALTON / (self.box_nm * 1e-7) ** 3

    def box_vectors(self) -> np.ndarray:
        return np.eye(3) * self.box_nm

    def resized(self, n_molecules: int | None = None, scale: float | None = None) -> "SystemDefinition":
        """Same density and composition ratios, ``n_molecules`` in total (or counts x ``scale``).

        :class:`~openmm_cgkd.errors.UsageError` when ``n_molecules`` cannot keep the ratios exactly
        (e.g. 3 for reline's 1:1:2): the message names the nearest sizes that can."""
        if (n_molecules is None) == (scale is None):
            raise UsageError("give exactly one of n_molecules or scale")
        if n_molecules is not None and int(n_molecules) < 1:
            raise UsageError(f"the molecule count must be >= 1, got {n_molecules}")
        if scale is None:
            scale = n_molecules / self.n_molecules
        if not scale > 0:
            raise UsageError(f"scale must be positive, got {scale}")
        comp = self._scaled_counts(scale)
        if n_molecules is not None and sum(comp.values()) != int(n_molecules):
            fits = [m for m in range(1, int(n_molecules) + 4 * self.n_molecules + 1)
                    if sum(self._scaled_counts(m / self.n_molecules).values()) == m]
            near = sorted(fits, key=lambda m: (abs(m - n_molecules), m))[:2]
            ratio = ":".join(str(v) for v in self.composition.values())
            raise UsageError(f"{n_molecules} molecules cannot keep the composition {ratio} "
                             f"({', '.join(self.composition)}): it rounds to "
                             f"{'/'.join(str(v) for v in comp.values())} = {sum(comp.values())} molecules; "
                             f"nearest sizes that keep it: {', '.join(map(str, sorted(near)))}")
        new = replace(self, composition=comp, _ff=self._ff)
        mass_ratio = new.total_mass / self.total_mass
        new.box_nm = self.box_nm * mass_ratio ** (1.0 / 3.0)
        new.name = f"{self.name}-{new.n_molecules}"
        return new

    def _scaled_counts(self, scale: float) -> dict[str, int]:
        return {k: max(1, int(round(v * scale))) if v > 0 else 0 for k, v in self.composition.items()}

    def to_dict(self, relative_to: str | Path | None = None) -> dict:
        """Portable description: file paths relative to ``relative_to`` (a run directory) plus the
        force field's sha256, never an absolute path of this machine."""
        base = Path(relative_to).resolve() if relative_to is not None else Path.cwd()

        def rel(p) -> str:
            return os.path.relpath(Path(p).resolve(), base) if p else ""

        ff = self.forcefield
        return {"name": self.name, "forcefield": rel(self.forcefield_path),
                "forcefield_sha256": file_sha256(self.forcefield_path),
                "scale_14": {"coulomb": ff.fudge_qq, "lj": ff.fudge_lj},
                "composition": dict(self.composition),
                "box_nm": self.box_nm, "temperature_K": self.temperature_K, "timestep_fs": self.timestep_fs,
                "friction_per_ps": self.friction_per_ps, "cutoff_nm": self.cutoff_nm,
                "constraints": self.constraints, "density_g_cm3": round(self.density_g_cm3, 5),
                "n_atoms": self.n_atoms, "source": rel(self.source)}
