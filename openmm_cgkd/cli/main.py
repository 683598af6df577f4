"""Entry point of the ``cgkd`` command.

Each stage lives in its own module under ``openmm_cgkd.cli`` that defines
``register(subparsers)``: it adds its sub-command(s) and sets ``func`` (a callable taking the
parsed ``argparse.Namespace`` and returning an exit code). Add new modules to ``STAGE_MODULES``.
Registering must stay cheap (no torch, numpy or OpenMM import): ``cgkd --help`` answers at once.

Errors: :func:`main` turns the package's own errors (:class:`openmm_cgkd.errors.CGKDError`) into
one line ``cgkd COMMAND: error: ...`` on stderr and the error's exit code (2 bad usage, 1 failed
run); ``--debug`` (before or after COMMAND) or ``CGKD_DEBUG=1`` prints the traceback as well.
Any other exception is a bug and propagates with its traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import traceback

from openmm_cgkd.version import __version__
from openmm_cgkd.errors import CGKDError

DEBUG_HELP = "on an error, print the full traceback too (also: CGKD_DEBUG=1)"

# Order = order in `cgkd --help`.
STAGE_MODULES: list[str] = ["demo", "aa", "simulate", "train", "refine", "analyze", "benchmark", "pipeline"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cgkd",
        description="Knowledge-distilled coarse-grained force fields for OpenMM. "
                    "Units everywhere: nm, ps, kJ/mol, dalton, kelvin.")
    parser.add_argument("--version", action="version", version=f"openmm_cgkd {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_MODULES:
        importlib.import_module(f"openmm_cgkd.cli.{name}").register(sub)
    for command in sub.choices.values():  # `cgkd COMMAND ... --debug` works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


@contextlib.contextmanager
def _one_line_warnings(command: str):
    """While the command runs, the package's warnings (:class:`~openmm_cgkd.errors.CGKDWarning`)
    print as one line each, ``cgkd COMMAND: warning: ...`` (others as Python prints them)."""
    import warnings

    from openmm_cgkd.errors import CGKDWarning

    default = warnings.formatwarning

    def one_line(message, category, filename, lineno, line=None):
        if issubclass(category, CGKDWarning):
            return f"cgkd {command}: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = default


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = bool(getattr(args, "debug", False)) or os.environ.get("CGKD_DEBUG", "") not in ("", "0")
    try:
        with _one_line_warnings(args.command):
            return int(args.func(args) or 0)
    except CGKDError as exc:
        if debug:
            traceback.print_exc()
        print(f"cgkd {args.command}: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"cgkd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
