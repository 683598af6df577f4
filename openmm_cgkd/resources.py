"""Where the shipped models and systems are: the one place that knows the repository layout.

Shipped bundles (``models/``) and system data (``systems/``: force fields, system definitions,
mappings, start structures, reference datasets) live in the repository, beside the Python
package, not inside it: a wheel holds the code only. They are found, in this order:

1. ``$CGKD_MODELS_DIR`` / ``$CGKD_SYSTEMS_DIR``, when set: a folder of bundles / of systems;
2. the repository checkout the package runs from (``<checkout>/models``, ``<checkout>/systems``),
   recognised by the project's ``pyproject.toml`` in the folder above the package (an editable
   or ``uv run`` install from a clone);
3. otherwise (installed from a wheel) :class:`ResourceNotFoundError`, which says that the
   checkout, or the environment variable, is needed.

This module imports nothing heavy.
"""
from __future__ import annotations

import os
from pathlib import Path

from openmm_cgkd.errors import MissingFileError

__all__ = ["ResourceNotFoundError", "checkout_root", "models_dir", "systems_dir", "MODELS_ENV", "SYSTEMS_ENV"]

MODELS_ENV = "CGKD_MODELS_DIR"
SYSTEMS_ENV = "CGKD_SYSTEMS_DIR"
PROJECT_NAME = "openmm_cgkd"


class ResourceNotFoundError(MissingFileError):
    """Shipped models or systems asked for where there are none (an install without the checkout)."""


def checkout_root() -> Path | None:
    """The repository checkout this package is imported from, or None (installed from a wheel)."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    try:
        text = pyproject.read_text()
    except OSError:
        return None
    return root if f'name = "{PROJECT_NAME}"' in text else None


def _find(env: str, folder: str, what: str) -> Path:
    given = os.environ.get(env)
    if given:
        return Path(given).expanduser()
    root = checkout_root()
    if root is None:
        raise ResourceNotFoundError(
            f"the shipped {what} are not installed with the package: they live in the openmm_cgkd repository "
            f"({folder}/). Run from a checkout (git clone, then `uv run cgkd ...`), or set {env} to a folder "
            f"holding them")
    return root / folder


def models_dir() -> Path:
    """The folder of shipped bundles (``des-student``, ``des-teachers``, ...): ``$CGKD_MODELS_DIR``,
    else ``<checkout>/models``; :class:`ResourceNotFoundError` when neither is there."""
    return _find(MODELS_ENV, "models", "models")


def systems_dir() -> Path:
    """The folder of shipped systems (``des/``, ...): ``$CGKD_SYSTEMS_DIR``, else
    ``<checkout>/systems``; :class:`ResourceNotFoundError` when neither is there."""
    return _find(SYSTEMS_ENV, "systems", "systems")
