"""Entry point of the ``cgkd`` command.

Each stage lives in its own module under ``openmm_cgkd.cli`` that defines
``register(subparsers)``: it adds its sub-command(s) and sets ``func`` (a callable taking the
parsed ``argparse.Namespace`` and returning an exit code). Add new modules to ``STAGE_MODULES``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from openmm_cgkd import __version__

# Order = order in `cgkd --help`.
STAGE_MODULES: list[str] = ["demo", "aa", "simulate", "train", "analyze", "benchmark", "pipeline"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cgkd",
        description="Knowledge-distilled coarse-grained force fields for OpenMM. "
                    "Units everywhere: nm, ps, kJ/mol, dalton, kelvin.")
    parser.add_argument("--version", action="version", version=f"openmm_cgkd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_MODULES:
        importlib.import_module(f"openmm_cgkd.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
