"""The shipped bundles: where they are (:func:`models_dir`), their names, and bundle names
resolved to paths."""
from __future__ import annotations

import os
from pathlib import Path

from openmm_cgkd.bundle.errors import BundleNotFoundError

__all__ = ["models_dir", "shipped_bundles", "resolve_bundle_path"]

MANIFEST_NAME = "manifest.yaml"  # = openmm_cgkd.bundle.manifest.MANIFEST_NAME

# --------------------------------------------------------------------------- shipped models

def models_dir() -> Path:
    """Where shipped bundles live: ``$CGKD_MODELS_DIR`` or ``<repository>/models``."""
    env = os.environ.get("CGKD_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "models"


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
