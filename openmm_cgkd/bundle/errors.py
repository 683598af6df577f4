"""The errors of model bundles."""
from __future__ import annotations

from openmm_cgkd.errors import CGKDError

__all__ = ["BundleError", "BundleNotFoundError"]


class BundleError(CGKDError, ValueError):
    """A model bundle is missing, corrupt or incompatible; the message says which and why."""

    exit_code = 2  # bad input: usage error


class BundleNotFoundError(BundleError, FileNotFoundError):
    """No bundle at the given path / name."""

    exit_code = 2  # a path or name the user gave: bad usage
