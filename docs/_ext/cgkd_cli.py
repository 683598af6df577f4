"""The ``cgkd`` parser as the CLI reference page shows it (``docs/cli.md``, sphinx-argparse).

sphinx-argparse reads descriptions, epilogs and option help as reStructuredText, while ours are
written for a terminal: preformatted descriptions and examples, and characters such as ``*`` or
``|`` that RST would read as markup. :func:`parser` returns :func:`openmm_cgkd.cli.main.build_parser`
with those texts made safe: text that argparse prints as written (``RawDescriptionHelpFormatter``)
and every epilog become literal blocks, and the rest has its inline markup escaped. The parser of
the commands is not changed.
"""
from __future__ import annotations

import argparse
import re
import textwrap

from openmm_cgkd.cli.main import build_parser

_INLINE = re.compile(r"([\\*|`])")


def _escaped(text: str) -> str:
    """One paragraph of plain text, RST inline markup escaped (``_`` ending a word included)."""
    text = " ".join(text.split())
    text = _INLINE.sub(r"\\\1", text)
    return re.sub(r"(\w)_(?=\W|$)", r"\1\\_", text)


def _literal(text: str) -> str:
    return "::\n\n" + textwrap.indent(textwrap.dedent(text).strip("\n"), "    ") + "\n"


def _raw(parser: argparse.ArgumentParser) -> bool:
    return issubclass(parser.formatter_class, argparse.RawDescriptionHelpFormatter)


def _make_safe(parser: argparse.ArgumentParser) -> None:
    if parser.description:
        parser.description = _literal(parser.description) if _raw(parser) else _escaped(parser.description)
    if parser.epilog:
        parser.epilog = _literal(parser.epilog)
    for action in parser._actions:
        if action.help and action.help != argparse.SUPPRESS:
            action.help = _escaped(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.help:
                    choice.help = _escaped(choice.help)
            for sub in action.choices.values():
                _make_safe(sub)


def parser() -> argparse.ArgumentParser:
    """The ``cgkd`` argument parser with its texts ready for reStructuredText."""
    p = build_parser()
    _make_safe(p)
    return p
