"""What every ``cgkd`` command shares: argument types that refuse bad values while parsing
(before any model is loaded or any MD runs), the ``--platform`` option, and checks of
input files and output directories.

The error convention (applied by :func:`openmm_cgkd.cli.main.main`): a user error prints one
line ``cgkd COMMAND: error: <what is wrong and how to fix it>`` on stderr, no traceback, and
exits with 2 (bad usage: an argument, setting or input file no run can use) or 1 (a run that
failed); ``cgkd --debug COMMAND ...`` (or ``CGKD_DEBUG=1``) adds the traceback. Only the
package's own error types (:class:`openmm_cgkd.errors.CGKDError`) count as user errors; any
other exception is a bug and keeps its traceback.

This module imports nothing heavy: ``cgkd --help`` must answer in well under a second.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from openmm_cgkd.errors import MissingFileError, UsageError
from openmm_cgkd.paths import output_dir_problem

__all__ = ["positive_int", "nonnegative_int", "positive_float", "nonnegative_float", "PLATFORM_NAMES",
           "platform_name", "add_platform_argument", "PLATFORM_HELP", "check_input_file", "check_output_dir",
           "check_output_file"]

# OpenMM platforms by name; "auto" = CUDA when a GPU is usable, else CPU (the same for every command).
PLATFORM_NAMES = ("auto", "CUDA", "CPU", "Reference", "OpenCL", "HIP")
PLATFORM_HELP = "OpenMM platform: auto (CUDA when a GPU is usable, else CPU), CUDA, CPU or Reference"


def _number(kind, text: str, ok, need: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {need}, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(int, text, lambda v: v >= 1, ">= 1")


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(int, text, lambda v: v >= 0, ">= 0")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(float, text, lambda v: 0 < v < float("inf"), "a finite number > 0")


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _number(float, text, lambda v: 0 <= v < float("inf"), "a finite number >= 0")


def platform_name(text: str) -> str:
    """argparse type: a platform name, any case, returned as spelled in :data:`PLATFORM_NAMES`."""
    for name in PLATFORM_NAMES:
        if str(text).lower() == name.lower():
            return name
    raise argparse.ArgumentTypeError(f"unknown platform {text!r}; choose one of {', '.join(PLATFORM_NAMES)}")


def add_platform_argument(p, default: str = "auto", extra: str = "") -> None:
    """``--platform`` with :func:`platform_name` as type (``auto`` means the same everywhere)."""
    p.add_argument("--platform", type=platform_name, default=default, metavar="NAME",
                   help=f"{PLATFORM_HELP} (default {default}){extra}")


def check_input_file(path, what: str, hint: str = "") -> Path:
    """``path`` as a Path; :class:`MissingFileError` when it is not an existing file."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory; give a file{hint}")
    if not path.is_file():
        raise MissingFileError(f"{what} not found: {path}{hint}")
    return path


def check_output_dir(path, option: str = "--out") -> Path:
    """``path`` as a Path; :class:`UsageError` when it names an existing file (not a directory),
    lies under one, or cannot be written (it, or the nearest existing directory above it, is not
    writable): checked before anything is loaded (:func:`~openmm_cgkd.fileio.output_dir_problem`)."""
    path = Path(path)
    problem = output_dir_problem(path)
    if problem:
        raise UsageError(f"{option} {path}: {problem}")
    return path


def check_output_file(path, option: str = "--out", suffixes: tuple[str, ...] = ()) -> Path:
    """``path`` as a Path; :class:`UsageError` when it is a directory, lies under a file, or
    lacks one of ``suffixes`` (e.g. ('.h5',))."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory; give a file name")
    check_output_dir(path.parent, option)
    if suffixes and path.suffix.lower() not in suffixes:
        raise UsageError(f"{option} {path}: expected a {' or '.join(suffixes)} file name")
    return path
