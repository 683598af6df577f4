"""The package's own error types: one base, so the ``cgkd`` command can tell a user error
(reported in one line, no traceback) from a bug (a traceback).

Every error the package raises on purpose derives from :class:`CGKDError`. The concrete types
(``BundleError``, ``DatasetError``, ``ServingError``, ``SimulationError``, ...) also keep the
built-in base they had before (``ValueError``, ``RuntimeError``, ``FileNotFoundError``), so
callers that catch those still work. ``exit_code`` is the status ``cgkd`` exits with:
2 for bad usage (an argument or setting no run can use), 1 for a run that failed.

This module imports nothing heavy (no numpy, torch or OpenMM).
"""
from __future__ import annotations

__all__ = ["CGKDError", "CGKDWarning", "UsageError", "MissingFileError", "PlatformError", "BundleError",
           "BundleNotFoundError"]


class CGKDError(Exception):
    """Base of every error the package raises on purpose; the message says what is wrong and
    how to fix it."""

    exit_code = 1


class UsageError(CGKDError, ValueError):
    """An argument or setting that no run can use (checked before any expensive work)."""

    exit_code = 2


class MissingFileError(CGKDError, FileNotFoundError):
    """An input file or directory the user named does not exist."""

    exit_code = 2


class PlatformError(CGKDError, ValueError):
    """The OpenMM platform or torch device asked for is not available here (e.g. CUDA without a GPU)."""

    exit_code = 2


class BundleError(CGKDError, ValueError):
    """A model bundle is missing, corrupt or incompatible; the message says which and why."""

    exit_code = 2  # bad input: usage error


class BundleNotFoundError(BundleError, FileNotFoundError):
    """No bundle at the given path / name."""

    exit_code = 2  # a path or name the user gave: bad usage


class CGKDWarning(UserWarning):
    """A setting the package allows but questions (e.g. MD at another temperature than the
    training data's); ``cgkd`` prints it as one line ``cgkd COMMAND: warning: ...``."""
