"""The manifest of a bundle (``manifest.yaml``; its fields are listed in :mod:`openmm_cgkd.bundle`):
:class:`BundleManifest` (parse, validate, serialise) and the constants of the layout."""
from __future__ import annotations

import copy
import datetime as _dt
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import numpy as np

from openmm_cgkd.version import __version__
from openmm_cgkd.errors import BundleError
from openmm_cgkd.fileio import plain_values
from openmm_cgkd.bundle.versions import (FORMAT_VERSION, MANIFEST_CHECKSUM_SINCE, check_format_version,
                                         check_package_version)
from openmm_cgkd.model.wall import WallParameters
from openmm_cgkd.topology import BeadType

__all__ = ["MANIFEST_NAME", "MODULE_FILE", "EAGER_FILE", "UNITS", "MODEL_KINDS", "OUTPUTS", "ENSEMBLE_OUTPUTS",
           "BundleManifest"]

MANIFEST_NAME = "manifest.yaml"
MODULE_FILE = "model.pt"
EAGER_FILE = "state_dict.pt"  # weights of the eager module (torch.save of its state_dict)
UNITS = {"length": "nm", "energy": "kJ/mol", "force": "kJ/mol/nm", "mass": "dalton"}
MODEL_KINDS = ("teacher", "ensemble", "student")
OUTPUTS = ["energy", "bead_energies", "forces"]
ENSEMBLE_OUTPUTS = OUTPUTS + ["force_std"]


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
    timestep_fs: float | None = None  # the MD time step checked with this model (fs); None: not checked

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
                  "architecture", "wall", "training", "checksums", "temperature_K", "timestep_fs")
    _OPTIONAL = ("temperature_K", "timestep_fs")  # keys older bundles lack

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
        if d["timestep_fs"] is None:  # written only when known: a manifest without it reads as before
            del d["timestep_fs"]
        return plain_values(d, finite=False)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)

    def to_sealed_yaml(self) -> str:
        """:meth:`to_yaml` with ``checksums["manifest"]`` set to the checksum of the content
        (format 2 and later; see :func:`verify_manifest_checksum`): what a bundle's manifest.yaml
        holds. Every writer of a manifest (a new bundle, a re-based copy) writes this."""
        import yaml

        if self.format_version >= MANIFEST_CHECKSUM_SINCE:
            self.checksums = {k: v for k, v in self.checksums.items() if k != MANIFEST_CHECKSUM}
            self.checksums[MANIFEST_CHECKSUM] = manifest_content_sha256(yaml.safe_load(self.to_yaml()))
        return self.to_yaml()

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
                temperature_K=d.get("temperature_K"), timestep_fs=d.get("timestep_fs"))
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
        if self.timestep_fs is not None:
            try:
                self.timestep_fs = float(self.timestep_fs)
            except (TypeError, ValueError):
                fail(f"timestep_fs must be a number (fs) or null, got {self.timestep_fs!r}")
            if not 0.0 < self.timestep_fs <= 100.0:
                fail(f"timestep_fs {self.timestep_fs} is not an MD time step in fs")
        if not isinstance(self.module_file, str) or not self.module_file or "/" in self.module_file \
                or "\\" in self.module_file or self.module_file.startswith("."):
            fail(f"module_file must be a plain file name, got {self.module_file!r}")
        if not isinstance(self.checksums, Mapping) or self.module_file not in self.checksums:
            fail(f"checksums must give the sha256 of {self.module_file!r}")
        for fname, digest in self.checksums.items():
            if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
                fail(f"checksum of {fname!r} is not a sha256 hex digest: {digest!r}")


MANIFEST_CHECKSUM = "manifest"  # the checksums key of the manifest's own content (format 2 and later)


def manifest_content_sha256(data: Mapping) -> str:
    """sha256 (hex) of a manifest's content as read from YAML (``data``), without its own entry
    ``checksums["manifest"]``: canonical JSON (sorted keys), so the layout of the file (key order,
    quoting, comments) does not count, every value does."""
    import hashlib
    import json

    d = dict(data)
    d["checksums"] = {k: v for k, v in dict(d.get("checksums") or {}).items() if k != MANIFEST_CHECKSUM}
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def verify_manifest_checksum(data: Mapping, source: str) -> None:
    """:class:`BundleError` when a manifest of format 2 or later (``data``: as read from YAML) has
    no checksum of its content, or one that no longer matches: the manifest was edited after the
    bundle was written. Format-1 manifests (written before the manifest was covered) pass."""
    fv = data.get("format_version")
    if not isinstance(fv, int) or fv < MANIFEST_CHECKSUM_SINCE:
        return
    stored = dict(data.get("checksums") or {}).get(MANIFEST_CHECKSUM)
    if stored is None:
        raise BundleError(f"{source}: manifest.yaml has no checksum of its own (checksums.manifest), required by "
                          f"format_version {fv}: it was edited or damaged; restore it or save the bundle again")
    if manifest_content_sha256(data) != stored:
        raise BundleError(f"{source}: manifest.yaml was edited after the bundle was written (its content no longer "
                          "matches checksums.manifest); restore it, or save the bundle again")
