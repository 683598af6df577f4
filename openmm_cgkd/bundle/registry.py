"""The shipped bundles: where they are (:func:`models_dir`, from :mod:`openmm_cgkd.resources`),
their names, and bundle names resolved to paths."""
from __future__ import annotations

import os
from pathlib import Path

from openmm_cgkd.errors import BundleNotFoundError
from openmm_cgkd.resources import ResourceNotFoundError, models_dir

__all__ = ["models_dir", "shipped_bundles", "resolve_bundle_path"]

MANIFEST_NAME = "manifest.yaml"  # = openmm_cgkd.bundle.manifest.MANIFEST_NAME


def shipped_bundles() -> list[str]:
    """Names of the bundles in :func:`models_dir` (directories holding a manifest); none when
    the installation has no shipped models."""
    try:
        root = models_dir()
    except ResourceNotFoundError:
        return []
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST_NAME).is_file())


def resolve_bundle_path(name_or_path: str | os.PathLike) -> Path:
    """A bundle path as given (if it exists), else the shipped bundle ``<models>/<name>``
    (e.g. ``"des-student"``); :class:`BundleNotFoundError` listing the shipped names otherwise
    (or saying that this installation has no shipped models)."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    try:
        root = models_dir()
    except ResourceNotFoundError as exc:
        raise BundleNotFoundError(f"model bundle not found: {str(name_or_path)!r} is not a path, and {exc}") from None
    if len(p.parts) == 1 and (root / p).exists():
        return root / p
    raise BundleNotFoundError(f"model bundle not found: {str(name_or_path)!r} is neither a path nor the name of "
                              f"a shipped bundle in {root} (shipped: {shipped_bundles() or 'none'})")
