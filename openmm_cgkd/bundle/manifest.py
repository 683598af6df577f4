"""The manifest of a bundle (``manifest.yaml``; its fields are listed in :mod:`openmm_cgkd.bundle`):
:class:`BeadType`, :class:`BundleManifest` (parse, validate, serialise) and the constants of the layout."""
from __future__ import annotations

import copy
import datetime as _dt
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from openmm_cgkd import __version__
from openmm_cgkd.bundle.errors import BundleError
from openmm_cgkd.bundle.versions import FORMAT_VERSION, check_format_version, check_package_version
from openmm_cgkd.model.wall import WallParameters

__all__ = ["MANIFEST_NAME", "MODULE_FILE", "EAGER_FILE", "UNITS", "MODEL_KINDS", "OUTPUTS", "ENSEMBLE_OUTPUTS",
           "BeadType", "bead_types_from_masses", "BundleManifest"]

MANIFEST_NAME = "manifest.yaml"
MODULE_FILE = "model.pt"
EAGER_FILE = "state_dict.pt"  # weights of the eager module (torch.save of its state_dict)
UNITS = {"length": "nm", "energy": "kJ/mol", "force": "kJ/mol/nm", "mass": "dalton"}
MODEL_KINDS = ("teacher", "ensemble", "student")
OUTPUTS = ["energy", "bead_energies", "forces"]
ENSEMBLE_OUTPUTS = OUTPUTS + ["force_std"]


# --------------------------------------------------------------------------- bead types

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
        if not math.isfinite(self.mass_dalton) or self.mass_dalton <= 0:
            raise BundleError(f"bead type {self.name!r} has mass {self.mass_dalton} Da; masses must be positive")

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
    (:func:`openmm_cgkd.topology.default_residue_name`), atom names to the residue name."""
    from openmm_cgkd.topology import default_residue_name

    residue_names = dict(residue_names or {})
    atom_names = dict(atom_names or {})
    out = []
    for name, mass in masses.items():
        code = residue_names.get(name, default_residue_name(name))
        out.append(BeadType(name, code, [atom_names.get(name, code)], float(mass)))
    return out



# --------------------------------------------------------------------------- manifest

def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class BundleManifest:
    """The parsed, validated ``manifest.yaml`` of a bundle (see the module docstring)."""

    bead_types: list[BeadType]
    cutoff_nm: float
    wall: WallParameters
    model_kind: str
    architecture: dict
    variant: str | None = None
    num_members: int = 1
    periodic: bool = True
    training: dict = field(default_factory=dict)
    description: str = ""
    module_file: str = MODULE_FILE
    outputs: list[str] = field(default_factory=lambda: list(OUTPUTS))
    units: dict = field(default_factory=lambda: dict(UNITS))
    checksums: dict = field(default_factory=dict)
    package_version: str = __version__
    format_version: int = FORMAT_VERSION
    created: str = field(default_factory=_utc_now)
    temperature_K: float | None = None  # the training data's temperature (K); None: unknown

    # -- convenience -----------------------------------------------------------------------
    @property
    def type_names(self) -> list[str]:
        return [b.name for b in self.bead_types]

    @property
    def masses_dalton(self) -> np.ndarray:
        return np.array([b.mass_dalton for b in self.bead_types], dtype=np.float64)

    @property
    def potential_config(self):
        from openmm_cgkd.model.potential import PotentialConfig

        return PotentialConfig.from_dict(self.architecture)

    # -- (de)serialisation -----------------------------------------------------------------
    _KEY_ORDER = ("format_version", "package_version", "created", "description", "model_kind", "variant",
                  "num_members", "module_file", "outputs", "units", "periodic", "cutoff_nm", "bead_types",
                  "architecture", "wall", "training", "checksums", "temperature_K")
    _OPTIONAL = ("temperature_K",)  # keys older bundles lack

    def to_dict(self) -> dict:
        d = {k: None for k in self._KEY_ORDER}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "bead_types":
                v = [b.to_dict() for b in v]
            elif f.name == "wall":
                v = v.to_dict()
            elif isinstance(v, (dict, list)):
                v = copy.deepcopy(v)
            d[f.name] = v
        return _plain(d)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)

    @classmethod
    def from_dict(cls, d: Any, source: str = "manifest") -> "BundleManifest":
        """Parse and validate (raises :class:`BundleError` naming what is wrong)."""
        if not isinstance(d, Mapping):
            raise BundleError(f"{source}: must be a YAML mapping, got {type(d).__name__}")
        # format first: a newer layout may legitimately have other keys
        if "format_version" not in d:
            raise BundleError(f"{source}: no format_version; not an openmm_cgkd model bundle manifest")
        fv = d["format_version"]
        check_format_version(fv, source)
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in d and n not in cls._OPTIONAL]
        unknown = sorted(set(d) - set(names))
        if missing:
            raise BundleError(f"{source}: missing keys {missing}")
        if unknown:
            raise BundleError(f"{source}: unknown keys {unknown} (written by another openmm_cgkd version?)")
        check_package_version(str(d["package_version"]), source)
        try:
            bead_types = [BeadType.from_dict(b) for b in (d["bead_types"] or [])]
            wall = WallParameters.from_dict(d["wall"]) if isinstance(d["wall"], Mapping) else None
        except BundleError as exc:
            raise BundleError(f"{source}: {exc}") from None
        except (ValueError, TypeError) as exc:
            raise BundleError(f"{source}: invalid wall parameters: {exc}") from None
        if wall is None:
            raise BundleError(f"{source}: wall must be a mapping (WallParameters.to_dict())")
        m = cls(bead_types=bead_types, cutoff_nm=d["cutoff_nm"], wall=wall, model_kind=d["model_kind"],
                architecture=d["architecture"], variant=d["variant"], num_members=d["num_members"],
                periodic=d["periodic"], training=d["training"], description=d["description"],
                module_file=d["module_file"], outputs=d["outputs"], units=d["units"], checksums=d["checksums"],
                package_version=str(d["package_version"]), format_version=fv, created=str(d["created"]),
                temperature_K=d.get("temperature_K"))
        m.validate(source)
        return m

    def validate(self, source: str = "manifest") -> None:
        """Check internal consistency; raises :class:`BundleError`."""
        from openmm_cgkd.model.potential import PotentialConfig

        def fail(msg: str):
            raise BundleError(f"{source}: {msg}")

        if not self.bead_types:
            fail("bead_types is empty")
        names = self.type_names
        if len(set(names)) != len(names):
            fail(f"bead type names are not unique: {names}")
        seen: dict[tuple[str, str], str] = {}
        for b in self.bead_types:
            for a in b.atom_names:
                key = (b.residue_name, a)
                if key in seen:
                    fail(f"residue/atom {key} names two bead types ({seen[key]!r} and {b.name!r})")
                seen[key] = b.name
        if self.units != UNITS:
            fail(f"incompatible units {self.units}; openmm_cgkd models use {UNITS}")
        if self.model_kind not in MODEL_KINDS:
            fail(f"model_kind {self.model_kind!r} is not one of {list(MODEL_KINDS)}")
        if not isinstance(self.num_members, int) or self.num_members < 1:
            fail(f"num_members must be a positive integer, got {self.num_members!r}")
        if self.model_kind != "ensemble" and self.num_members != 1:
            fail(f"a {self.model_kind} bundle holds one network, got num_members {self.num_members}")
        expected_outputs = ENSEMBLE_OUTPUTS if self.model_kind == "ensemble" else OUTPUTS
        if list(self.outputs) != expected_outputs:
            fail(f"outputs {self.outputs} do not match a {self.model_kind} model ({expected_outputs})")
        if not isinstance(self.periodic, bool):
            fail(f"periodic must be true or false, got {self.periodic!r}")
        if not isinstance(self.architecture, Mapping):
            fail("architecture must be a mapping (PotentialConfig)")
        try:
            cfg = PotentialConfig.from_dict(dict(self.architecture))
        except (ValueError, TypeError) as exc:
            fail(f"invalid architecture: {exc}")
        try:
            self.cutoff_nm = float(self.cutoff_nm)
        except (TypeError, ValueError):
            fail(f"cutoff_nm must be a number (nm), got {self.cutoff_nm!r}")
        if not self.cutoff_nm > 0 or abs(self.cutoff_nm - cfg.cutoff_nm) > 1e-12:
            fail(f"cutoff_nm {self.cutoff_nm} disagrees with architecture.cutoff_nm {cfg.cutoff_nm}")
        if cfg.num_types != len(self.bead_types):
            fail(f"architecture.num_types {cfg.num_types} != number of bead types {len(self.bead_types)}")
        if self.wall.type_names != names:
            fail(f"wall types {self.wall.type_names} differ from the bead types {names} (same names, same order)")
        if not isinstance(self.training, Mapping):
            fail("training (provenance) must be a mapping")
        if self.temperature_K is not None:
            try:
                self.temperature_K = float(self.temperature_K)
            except (TypeError, ValueError):
                fail(f"temperature_K must be a number (K) or null, got {self.temperature_K!r}")
            if not 0.0 < self.temperature_K < 1.0e4:
                fail(f"temperature_K {self.temperature_K} is not a temperature in K")
        if not isinstance(self.module_file, str) or not self.module_file or "/" in self.module_file \
                or "\\" in self.module_file or self.module_file.startswith("."):
            fail(f"module_file must be a plain file name, got {self.module_file!r}")
        if not isinstance(self.checksums, Mapping) or self.module_file not in self.checksums:
            fail(f"checksums must give the sha256 of {self.module_file!r}")
        for fname, digest in self.checksums.items():
            if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
                fail(f"checksum of {fname!r} is not a sha256 hex digest: {digest!r}")


def _plain(x):
    """YAML-safe plain python values (numpy scalars/arrays -> python)."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return x
