"""Reading and writing bundle directories: :class:`Bundle`, :func:`load_bundle` (checksums,
TorchScript module, eager weights), :func:`save_bundle` (atomic), :func:`read_manifest` and
:func:`build_eager_model`."""
from __future__ import annotations

import copy
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from openmm_cgkd.errors import BundleError, BundleNotFoundError
from openmm_cgkd.bundle.manifest import (EAGER_FILE, ENSEMBLE_OUTPUTS, MANIFEST_CHECKSUM, MANIFEST_NAME, MODULE_FILE,
                                         OUTPUTS, BundleManifest, verify_manifest_checksum)
from openmm_cgkd.bundle.registry import resolve_bundle_path
from openmm_cgkd.fileio import file_sha256, plain_values
from openmm_cgkd.model.wall import WallParameters
from openmm_cgkd.topology import BeadType

__all__ = ["Bundle", "build_eager_model", "read_manifest", "load_bundle", "save_bundle", "PRIORS_FILE"]

PRIORS_FILE = "priors.yaml"  # bonded priors (BondedPriors.to_dict()), covered by the manifest's checksums

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
    priors: Any = None  # BondedPriors from priors.yaml; None: no bonded terms (bundles of one-bead molecules)

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

    from openmm_cgkd.quiet import import_torchmdnet

    import_torchmdnet()
    bundle_dir = _bundle_dir(resolve_bundle_path(path))
    manifest = read_manifest(bundle_dir)
    src = f"bundle {bundle_dir}"
    if verify_checksums:
        import yaml

        verify_manifest_checksum(yaml.safe_load((bundle_dir / MANIFEST_NAME).read_text()), src)
    for fname, digest in manifest.checksums.items():
        if fname == MANIFEST_CHECKSUM:
            continue
        fpath = bundle_dir / fname
        if not fpath.is_file():
            raise BundleError(f"{src}: missing file {fname!r} listed in the manifest's checksums")
        if verify_checksums:
            actual = file_sha256(fpath)
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
    priors = _read_priors(bundle_dir, manifest, src)
    module = None
    if torchscript:
        try:
            module = torch.jit.load(str(bundle_dir / manifest.module_file), map_location=map_location)
        except Exception as exc:  # torch raises RuntimeError / ValueError with long C++ traces
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"{src}: cannot load TorchScript module {manifest.module_file!r}: {first}") from exc
        _check_module(module, manifest, src)
    return Bundle(manifest=manifest, module=module, path=bundle_dir, state_dict=state_dict, priors=priors)


def _read_priors(bundle_dir: Path, manifest: BundleManifest, src: str):
    """The bundle's bonded priors (None when it has no ``priors.yaml``: bundles before molecules)."""
    if PRIORS_FILE not in manifest.checksums:
        return None
    import yaml

    from openmm_cgkd.model.priors import BondedPriors, PriorError

    try:
        priors = BondedPriors.from_dict(yaml.safe_load((bundle_dir / PRIORS_FILE).read_text()))
    except (yaml.YAMLError, PriorError, UnicodeDecodeError) as exc:
        raise BundleError(f"{src}: corrupt {PRIORS_FILE}: {exc}") from None
    if priors.type_names != manifest.type_names:
        raise BundleError(f"{src}: {PRIORS_FILE} names bead types {priors.type_names}, the manifest "
                          f"{manifest.type_names}")
    return priors


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
                description: str = "", periodic: bool = True, config=None, overwrite: bool = False,
                priors=None, temperature_K: float | None = None, timestep_fs: float | None = None) -> Path:
    """Write ``model`` (a :class:`CGPotential`, :class:`EnsemblePotential`,
    :class:`~openmm_cgkd.model.stacked.StackedEnsemblePotential` or their TorchScript module; the
    network only, no wall) and its manifest to the directory ``path``: the
    TorchScript module (``model.pt``) and its weights as a plain state_dict (``state_dict.pt``).

    The module is scripted on CPU with ``create_graph=False`` and ``check_errors=True``; the
    caller's module is not modified. ``config`` (a ``PotentialConfig``) is only needed for an
    already-scripted module. ``model_kind`` is ``teacher``, ``student`` or ``ensemble`` (an
    ensemble module must be saved as ``ensemble``). The directory is written atomically;
    an existing one is replaced only with ``overwrite=True``. ``priors``
    (:class:`~openmm_cgkd.model.priors.BondedPriors`) are written to ``priors.yaml``, under the
    manifest's checksums. ``temperature_K``: the training data's temperature (K; None: unknown), the
    default of MD with the model; ``timestep_fs``: the MD time step checked with it (fs; None: not
    checked, MD defaults to 2 fs). Absolute paths in ``training`` and
    ``description`` are written relative to the bundle directory
    (:func:`openmm_cgkd.fileio.make_portable`). Returns the bundle directory.
    """
    import torch

    from openmm_cgkd.model.ensemble import EnsemblePotential
    from openmm_cgkd.model.potential import CGPotential
    from openmm_cgkd.model.stacked import StackedEnsemblePotential
    from openmm_cgkd.fileio import make_portable

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
                              training=make_portable(plain_values(dict(training or {}), finite=False), out),
                              description=make_portable(description, out),
                              outputs=list(ENSEMBLE_OUTPUTS if is_ensemble else OUTPUTS),
                              temperature_K=temperature_K, timestep_fs=timestep_fs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        torch.jit.save(scripted, str(tmp / MODULE_FILE))
        torch.save({k: v.detach().cpu().clone() for k, v in scripted.state_dict().items()}, str(tmp / EAGER_FILE))
        manifest.checksums = {MODULE_FILE: file_sha256(tmp / MODULE_FILE), EAGER_FILE: file_sha256(tmp / EAGER_FILE)}
        if priors is not None:
            import yaml

            if list(priors.type_names) != [b.name for b in bts]:
                raise BundleError(f"priors name bead types {priors.type_names}, the bundle {[b.name for b in bts]}")
            (tmp / PRIORS_FILE).write_text(yaml.safe_dump(priors.to_dict(), sort_keys=False))
            manifest.checksums[PRIORS_FILE] = file_sha256(tmp / PRIORS_FILE)
        manifest.validate(source=f"bundle {out}")
        _check_module(scripted, manifest, f"bundle {out}")
        (tmp / MANIFEST_NAME).write_text(manifest.to_sealed_yaml())
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
