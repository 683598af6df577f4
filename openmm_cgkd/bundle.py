"""Model bundles: a directory holding a TorchScript CG model and its YAML manifest.

Layout::

    my-model/
        manifest.yaml     what the model is (below)
        model.pt          TorchScript module, the network WITHOUT the wall
        state_dict.pt     the same network's weights as a plain ``state_dict`` (optional)

``model.pt`` has the :class:`~openmm_cgkd.model.potential.CGPotential` forward
``(bead_types [N] long, positions [N,3] nm, box [3,3] nm or None) -> (energy [] kJ/mol,
bead_energies [N] kJ/mol, forces [N,3] kJ/mol/nm)``; an ensemble bundle
(``model_kind: ensemble``) returns a fourth output ``force_std [N,3]`` (population std over
members). ``manifest.outputs`` names them. Both take float32 or float64 positions.

``state_dict.pt`` (written by :func:`save_bundle` since openmm_cgkd 0.1; listed in
``checksums``) holds the weights and buffers of the eager module, so that
:meth:`Bundle.eager_model` rebuilds the network from ``architecture`` (and ``model_kind``,
``num_members``) without TorchScript: the Python-side serving backend and a future without
TorchScript need nothing else. Older bundles lack it; for them the weights are read from the
TorchScript module (same parameter names). Readers that do not know the file ignore it.

``manifest.yaml`` (flat mapping; :class:`BundleManifest` has the same fields):

==================  ==============================================================================
format_version      int, the bundle layout version (:data:`FORMAT_VERSION`)
package_version     openmm_cgkd version that wrote it
created             ISO 8601 UTC time stamp
description         free text
model_kind          ``teacher`` | ``ensemble`` | ``student``
variant             free text, e.g. ``"ensemble; e,F_T,F_AA"`` (students), or null
num_members         int, networks in the module (1 unless ensemble)
module_file         file name of the TorchScript module (``model.pt``)
outputs             names of the module's outputs, in order
units               length nm, energy kJ/mol, force kJ/mol/nm, mass dalton (checked verbatim)
periodic            whether the model expects a periodic box
cutoff_nm           network cutoff (nm), equals ``architecture.cutoff_nm``
bead_types          list of {name, residue_name, atom_names, mass_dalton}; list index = type index
architecture        :class:`~openmm_cgkd.model.potential.PotentialConfig` as a mapping
wall                :meth:`WallParameters.to_dict` (types = bead type names, same order)
training            free mapping: provenance (data, seeds, losses, commit, ...); file paths in it
                    are relative to the bundle directory where it was written, with checksums
checksums           {file name: sha256 hex} of every weights file
==================  ==============================================================================

:func:`load_bundle` imports torchmd-net first (its custom ops must be registered before a
TorchScript model using them loads) and validates everything above, raising
:class:`BundleError` (a ``ValueError``; :class:`BundleNotFoundError` is also a
``FileNotFoundError``) with a message that names the problem.
"""
from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from openmm_cgkd import __version__
from openmm_cgkd.errors import CGKDError
from openmm_cgkd.model.wall import WallParameters

__all__ = ["FORMAT_VERSION", "SUPPORTED_FORMAT_VERSIONS", "MANIFEST_NAME", "MODULE_FILE", "EAGER_FILE", "UNITS",
           "MODEL_KINDS", "build_eager_model",
           "BundleError", "BundleNotFoundError", "BeadType", "BundleManifest", "Bundle", "save_bundle",
           "load_bundle", "read_manifest", "build_untrained_bundle", "untrained_config", "DES_BEAD_TYPES",
           "bead_types_from_masses", "models_dir", "shipped_bundles", "resolve_bundle_path", "sha256_file"]

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
MANIFEST_NAME = "manifest.yaml"
MODULE_FILE = "model.pt"
EAGER_FILE = "state_dict.pt"  # weights of the eager module (torch.save of its state_dict)
UNITS = {"length": "nm", "energy": "kJ/mol", "force": "kJ/mol/nm", "mass": "dalton"}
MODEL_KINDS = ("teacher", "ensemble", "student")
OUTPUTS = ["energy", "bead_energies", "forces"]
ENSEMBLE_OUTPUTS = OUTPUTS + ["force_std"]


class BundleError(CGKDError, ValueError):
    """A model bundle is missing, corrupt or incompatible; the message says which and why."""

    exit_code = 2  # bad input: usage error


class BundleNotFoundError(BundleError, FileNotFoundError):
    """No bundle at the given path / name."""

    exit_code = 2  # a path or name the user gave: bad usage


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


def bead_types_from_masses(masses: Mapping[str, float], residue_names: Mapping[str, str] | None = None) -> list[BeadType]:
    """Bead types in the mapping's order; residue and atom names default to the topology
    convention (:func:`openmm_cgkd.topology.default_residue_name`)."""
    from openmm_cgkd.topology import default_residue_name

    residue_names = dict(residue_names or {})
    out = []
    for name, mass in masses.items():
        code = residue_names.get(name, default_residue_name(name))
        out.append(BeadType(name, code, [code], float(mass)))
    return out


# Choline C5H14NO+, chloride, urea CH4N2O: sums of the OPLS-DES atomic masses (shared reference file).
DES_BEAD_TYPES = bead_types_from_masses({"Cho": 104.173, "Cl": 35.45, "Urea": 60.056})


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
                  "architecture", "wall", "training", "checksums")

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
        if fv not in SUPPORTED_FORMAT_VERSIONS:
            raise BundleError(f"{source}: incompatible bundle format_version {fv!r}; this openmm_cgkd "
                              f"{__version__} reads format(s) {list(SUPPORTED_FORMAT_VERSIONS)}")
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in d]
        unknown = sorted(set(d) - set(names))
        if missing:
            raise BundleError(f"{source}: missing keys {missing}")
        if unknown:
            raise BundleError(f"{source}: unknown keys {unknown} (written by another openmm_cgkd version?)")
        _check_package_version(str(d["package_version"]), source)
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
                package_version=str(d["package_version"]), format_version=fv, created=str(d["created"]))
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


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for p in v.split("+")[0].split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if not p.isdigit():
            break
    return tuple(parts) or (0,)


def _check_package_version(bundle_version: str, source: str) -> None:
    """A bundle from a future *incompatible* release (newer major; for 0.x, newer minor) is refused;
    older releases are fine while their format_version is supported."""
    b, mine = _version_tuple(bundle_version), _version_tuple(__version__)
    b_key = b[:2] if b[:1] == (0,) else b[:1]
    m_key = mine[:2] if mine[:1] == (0,) else mine[:1]
    if b_key > m_key:
        raise BundleError(f"{source}: incompatible bundle: written by openmm_cgkd {bundle_version}, newer "
                          f"than the installed {__version__}; upgrade openmm_cgkd")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- bundle

@dataclass
class Bundle:
    """A loaded bundle: ``manifest`` (:class:`BundleManifest`), ``module`` (TorchScript, the
    network without the wall; None when loaded with ``torchscript=False``) and the ``path`` it
    came from (None if built in memory). :meth:`eager_model` rebuilds the plain torch module."""

    manifest: BundleManifest
    module: Any  # torch.jit.ScriptModule or None
    path: Path | None = None
    state_dict: dict | None = None  # from state_dict.pt, when the bundle has one

    def eager_model(self, device: str | None = None):
        """A fresh eager (non-scripted) copy of the network, in eval mode, with the bundle's
        weights: :class:`CGPotential` or :class:`EnsemblePotential` per ``model_kind``.

        Weights come from ``state_dict.pt`` when present, else from the TorchScript module
        (bundles written before ``state_dict.pt`` existed). :class:`BundleError` when neither
        is there or they do not fit the manifest's architecture.
        """
        sd = self.state_dict
        if sd is None:
            if self.module is None:
                raise BundleError(f"bundle {self.path}: no {EAGER_FILE} and no TorchScript module loaded; "
                                  "cannot rebuild the eager model")
            sd = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        model = build_eager_model(self.manifest, sd, source=f"bundle {self.path}")
        return model if device is None else model.to(device)

    @property
    def wall(self) -> WallParameters:
        return self.manifest.wall

    @property
    def type_names(self) -> list[str]:
        return self.manifest.type_names

    def wall_module(self, dtype=None):
        """The wall as a torch module (:class:`~openmm_cgkd.model.wall_torch.WallPotential`)."""
        import torch

        from openmm_cgkd.model.wall_torch import WallPotential

        return WallPotential(self.manifest.wall, dtype=dtype or torch.float32)


def build_eager_model(manifest: BundleManifest, state_dict: Mapping, source: str = "bundle"):
    """The eager network a manifest describes, with ``state_dict`` loaded (strictly), on CPU, eval mode.

    ``teacher`` / ``student``: a :class:`CGPotential`; ``ensemble``: an :class:`EnsemblePotential` of
    ``num_members`` members, or for a stacked architecture (``hipnn-ts``) the
    :class:`~openmm_cgkd.model.stacked.StackedEnsemblePotential`. Raises :class:`BundleError` for
    another ``model_kind`` or weights that do not fit the architecture.
    """
    from openmm_cgkd.model.ensemble import EnsemblePotential
    from openmm_cgkd.model.potential import STACKED_ARCHITECTURES, CGPotential
    from openmm_cgkd.model.stacked import StackedEnsemblePotential

    cfg = manifest.potential_config
    if manifest.model_kind in ("teacher", "student"):
        model = CGPotential(cfg)
    elif manifest.model_kind == "ensemble" and cfg.architecture in STACKED_ARCHITECTURES \
            and not any(str(k).startswith("members.") for k in state_dict):
        model = StackedEnsemblePotential(cfg, manifest.num_members)
    elif manifest.model_kind == "ensemble":
        model = EnsemblePotential([CGPotential(cfg) for _ in range(manifest.num_members)])
    else:
        raise BundleError(f"{source}: cannot rebuild the eager model of a {manifest.model_kind!r} bundle")
    try:
        model.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise BundleError(f"{source}: the weights do not fit the manifest's architecture: {first}") from None
    return model.eval()


def read_manifest(path: str | os.PathLike) -> BundleManifest:
    """Parse and validate ``<bundle>/manifest.yaml`` (no weights loaded, checksums not verified)."""
    import yaml

    bundle_dir = _bundle_dir(path)
    mpath = bundle_dir / MANIFEST_NAME
    try:
        data = yaml.safe_load(mpath.read_text())
    except yaml.YAMLError as exc:
        raise BundleError(f"corrupt bundle {bundle_dir}: {MANIFEST_NAME} is not valid YAML: {exc}") from None
    except UnicodeDecodeError:
        raise BundleError(f"corrupt bundle {bundle_dir}: {MANIFEST_NAME} is not text") from None
    return BundleManifest.from_dict(data, source=f"bundle {bundle_dir}")


def _bundle_dir(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if p.is_file() and p.name == MANIFEST_NAME:
        p = p.parent
    if not p.exists():
        raise BundleNotFoundError(f"model bundle not found: {str(path)!r} does not exist")
    if not p.is_dir():
        raise BundleError(f"not a model bundle: {p} is a file; a bundle is a directory holding {MANIFEST_NAME}")
    if not (p / MANIFEST_NAME).is_file():
        raise BundleNotFoundError(f"not a model bundle: {p} has no {MANIFEST_NAME}")
    return p


def load_bundle(path: str | os.PathLike, map_location: str | None = "cpu", verify_checksums: bool = True,
                torchscript: bool = True) -> Bundle:
    """Load and validate a bundle directory (a path, or the name of a shipped bundle in ``models/``).

    Imports torchmd-net first (custom ops). ``map_location`` is passed to ``torch.jit.load``
    and ``torch.load``. ``torchscript=False`` skips the TorchScript module (``Bundle.module`` is
    None; the bundle must hold ``state_dict.pt``), for the Python-side serving backend.
    """
    import torch

    from openmm_cgkd.model.potential import import_torchmdnet

    import_torchmdnet()
    bundle_dir = _bundle_dir(resolve_bundle_path(path))
    manifest = read_manifest(bundle_dir)
    src = f"bundle {bundle_dir}"
    for fname, digest in manifest.checksums.items():
        fpath = bundle_dir / fname
        if not fpath.is_file():
            raise BundleError(f"{src}: missing file {fname!r} listed in the manifest's checksums")
        if verify_checksums:
            actual = sha256_file(fpath)
            if actual != digest:
                raise BundleError(f"{src}: corrupt file {fname!r}: sha256 {actual} does not match the "
                                  f"manifest's {digest}; the weights were modified or damaged")
    state_dict = None
    if EAGER_FILE in manifest.checksums:
        try:
            state_dict = torch.load(str(bundle_dir / EAGER_FILE), map_location=map_location, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises several kinds on a bad file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"{src}: cannot read {EAGER_FILE}: {first}") from exc
    elif not torchscript:
        raise BundleError(f"{src}: has no {EAGER_FILE} (written before eager weights were bundled); "
                          "load it with torchscript=True")
    module = None
    if torchscript:
        try:
            module = torch.jit.load(str(bundle_dir / manifest.module_file), map_location=map_location)
        except Exception as exc:  # torch raises RuntimeError / ValueError with long C++ traces
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"{src}: cannot load TorchScript module {manifest.module_file!r}: {first}") from exc
        _check_module(module, manifest, src)
    return Bundle(manifest=manifest, module=module, path=bundle_dir, state_dict=state_dict)


def _check_module(module, manifest: BundleManifest, src: str) -> None:
    checks = {"cutoff_nm": manifest.cutoff_nm, "num_types": len(manifest.bead_types),
              "architecture": manifest.architecture["architecture"]}
    if manifest.model_kind == "ensemble":
        checks["num_members"] = manifest.num_members
    for attr, want in checks.items():
        if not hasattr(module, attr):
            raise BundleError(f"{src}: the TorchScript module has no attribute {attr!r}; not an openmm_cgkd "
                              f"{'EnsemblePotential' if manifest.model_kind == 'ensemble' else 'CGPotential'}")
        have = getattr(module, attr)
        if (have != want) if not isinstance(want, float) else abs(float(have) - want) > 1e-9:
            raise BundleError(f"{src}: module {attr} = {have!r} disagrees with the manifest ({want!r})")
    if manifest.model_kind != "ensemble" and hasattr(module, "num_members"):
        raise BundleError(f"{src}: manifest says {manifest.model_kind} but the module is an ensemble")


def save_bundle(path: str | os.PathLike, model, *, bead_types: Sequence[BeadType | Mapping], wall: WallParameters,
                model_kind: str, variant: str | None = None, training: Mapping | None = None,
                description: str = "", periodic: bool = True, config=None, overwrite: bool = False) -> Path:
    """Write ``model`` (a :class:`CGPotential`, :class:`EnsemblePotential`,
    :class:`~openmm_cgkd.model.stacked.StackedEnsemblePotential` or their TorchScript module; the
    network only, no wall) and its manifest to the directory ``path``: the
    TorchScript module (``model.pt``) and its weights as a plain state_dict (``state_dict.pt``).

    The module is scripted on CPU with ``create_graph=False`` and ``check_errors=True``; the
    caller's module is not modified. ``config`` (a ``PotentialConfig``) is only needed for an
    already-scripted module. ``model_kind`` is ``teacher``, ``student`` or ``ensemble`` (an
    ensemble module must be saved as ``ensemble``). The directory is written atomically;
    an existing one is replaced only with ``overwrite=True``. Absolute paths in ``training`` and
    ``description`` are written relative to the bundle directory
    (:func:`openmm_cgkd.provenance.make_portable`). Returns the bundle directory.
    """
    import torch

    from openmm_cgkd.model.ensemble import EnsemblePotential
    from openmm_cgkd.model.potential import CGPotential
    from openmm_cgkd.model.stacked import StackedEnsemblePotential
    from openmm_cgkd.provenance import make_portable

    out = Path(path).expanduser()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    if isinstance(model, (CGPotential, EnsemblePotential, StackedEnsemblePotential)):
        config = model.config
        num_members = model.num_members if isinstance(model, (EnsemblePotential, StackedEnsemblePotential)) else 1
        eager = copy.deepcopy(model).cpu().eval()
        eager.create_graph = False
        eager.set_check_errors(True)
        scripted = torch.jit.script(eager)
    elif isinstance(model, torch.jit.ScriptModule):
        if config is None:
            raise ValueError("saving an already-scripted module needs config= (its PotentialConfig)")
        scripted = model
        num_members = int(model.num_members) if hasattr(model, "num_members") else 1
    else:
        raise TypeError(f"cannot bundle a {type(model).__name__}; give a CGPotential, EnsemblePotential or "
                        "StackedEnsemblePotential")
    is_ensemble = hasattr(scripted, "num_members")
    if (model_kind == "ensemble") != is_ensemble:
        raise ValueError(f"model_kind {model_kind!r} does not match the module "
                         f"({'an ensemble' if is_ensemble else 'a single network'})")
    bts = [b if isinstance(b, BeadType) else BeadType.from_dict(b) for b in bead_types]
    architecture = config.to_dict()
    # the module's actual dtype wins (e.g. after model.double())
    architecture["dtype"] = str(next(scripted.parameters()).dtype).replace("torch.", "")
    manifest = BundleManifest(bead_types=bts, cutoff_nm=config.cutoff_nm, wall=wall, model_kind=model_kind,
                              architecture=architecture, variant=variant, num_members=num_members,
                              periodic=bool(periodic),
                              # provenance names its inputs relative to the bundle, never by absolute paths
                              training=make_portable(_plain(dict(training or {})), out),
                              description=make_portable(description, out),
                              outputs=list(ENSEMBLE_OUTPUTS if is_ensemble else OUTPUTS))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        torch.jit.save(scripted, str(tmp / MODULE_FILE))
        torch.save({k: v.detach().cpu().clone() for k, v in scripted.state_dict().items()}, str(tmp / EAGER_FILE))
        manifest.checksums = {MODULE_FILE: sha256_file(tmp / MODULE_FILE), EAGER_FILE: sha256_file(tmp / EAGER_FILE)}
        manifest.validate(source=f"bundle {out}")
        _check_module(scripted, manifest, f"bundle {out}")
        (tmp / MANIFEST_NAME).write_text(manifest.to_yaml())
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# --------------------------------------------------------------------------- untrained bundles

def untrained_config(architecture: str = "graph-network", **overrides):
    """A small, CPU-friendly :class:`PotentialConfig` for the DES system (1.0 nm cutoff,
    ``max_num_neighbors`` sized for its density, 1000 beads / 4.484^3 nm^3)."""
    from openmm_cgkd.model.potential import PotentialConfig, suggest_max_num_neighbors

    cutoff = float(overrides.pop("cutoff_nm", 1.0))
    base = dict(architecture=architecture, num_types=len(DES_BEAD_TYPES), cutoff_nm=cutoff, embedding_dim=32,
                num_layers=2, num_rbf=16, max_num_neighbors=suggest_max_num_neighbors(1000 / 4.484 ** 3, cutoff),
                num_heads=4)
    base.update(overrides)
    return PotentialConfig(**base)


def _placeholder_wall(type_names: Sequence[str]) -> WallParameters:
    """A plausible repulsive wall for untrained demo models (taper 0.30 nm, 300 kJ/mol/nm for
    every pair): keeps beads apart in MD. Trained bundles fit theirs from the AA RDFs."""
    t = len(type_names)
    return WallParameters.from_taper(list(type_names), np.full((t, t), 0.30), np.full((t, t), 300.0))


def build_untrained_bundle(path: str | os.PathLike, config=None, *, bead_types: Sequence[BeadType] | None = None,
                           wall: WallParameters | None = None, model_kind: str = "student", num_members: int = 1,
                           seed: int = 0, overwrite: bool = False, description: str | None = None) -> Path:
    """A bundle of randomly initialised network(s): for demos and tests until trained models ship.

    Defaults: the DES bead types, :func:`untrained_config`, a placeholder wall; with
    ``num_members > 1`` (or ``model_kind='ensemble'``) an ensemble of members seeded
    ``seed, seed+1, ...`` (for a stacked architecture, ``hipnn-ts``, one
    :class:`~openmm_cgkd.model.stacked.StackedEnsemblePotential` whose member k equals that
    one-network model). The manifest says plainly that the model is untrained.
    """
    import torch

    from openmm_cgkd.model.ensemble import EnsemblePotential
    from openmm_cgkd.model.potential import STACKED_ARCHITECTURES, CGPotential
    from openmm_cgkd.model.stacked import StackedEnsemblePotential

    bts = list(bead_types or DES_BEAD_TYPES)
    cfg = config or untrained_config(num_types=len(bts))
    if cfg.num_types != len(bts):
        raise ValueError(f"config.num_types {cfg.num_types} != number of bead types {len(bts)}")
    wall = wall or _placeholder_wall([b.name for b in bts])
    if model_kind == "ensemble" and num_members == 1:
        num_members = 2
    if num_members > 1 and cfg.architecture in STACKED_ARCHITECTURES:
        model = StackedEnsemblePotential(cfg, num_members, seeds=[seed + k for k in range(num_members)])
    else:
        members = []
        for k in range(num_members):
            torch.manual_seed(seed + k)
            members.append(CGPotential(cfg))
        model = EnsemblePotential(members) if num_members > 1 else members[0]
    kind = "ensemble" if num_members > 1 else model_kind
    return save_bundle(path, model, bead_types=bts, wall=wall, model_kind=kind, variant="untrained",
                       training={"trained": False, "seed": seed, "note": "UNTRAINED: random weights, for demos only"},
                       description=description or "UNTRAINED model (random weights, placeholder wall): "
                                                  "a stand-in until trained bundles ship; its physics is meaningless",
                       overwrite=overwrite)


# --------------------------------------------------------------------------- shipped models

def models_dir() -> Path:
    """Where shipped bundles live: ``$CGKD_MODELS_DIR`` or ``<repository>/models``."""
    env = os.environ.get("CGKD_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1] / "models"


def shipped_bundles() -> list[str]:
    """Names of the bundles in :func:`models_dir` (directories holding a manifest)."""
    root = models_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST_NAME).is_file())


def resolve_bundle_path(name_or_path: str | os.PathLike) -> Path:
    """A bundle path as given (if it exists), else the shipped bundle ``models/<name>``
    (e.g. ``"des-student"``); :class:`BundleNotFoundError` listing the shipped names otherwise."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    if len(p.parts) == 1:
        shipped = models_dir() / p
        if shipped.exists():
            return shipped
    raise BundleNotFoundError(f"model bundle not found: {str(name_or_path)!r} is neither a path nor the name of "
                              f"a shipped bundle in {models_dir()} (shipped: {shipped_bundles() or 'none'})")
