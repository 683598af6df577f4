"""Sphinx configuration of the openmm_cgkd documentation site.

Build: ``uv run sphinx-build -W -b html docs docs/_build/html`` (warnings are errors, as in CI:
``tests/integration/test_docs_build.py``). Pages are MyST Markdown; the CLI reference comes from
the argparse parsers (sphinx-argparse), the API reference from the numpydoc docstrings (autodoc +
autosummary, generated into ``docs/api/generated/`` on every build).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))  # cgkd_cli: the parser for the CLI page

from openmm_cgkd import __version__  # noqa: E402  (the package is light to import)

project = "openmm_cgkd"
author = "the openmm_cgkd developers"
copyright = "2026, the openmm_cgkd developers"
release = __version__
version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinxarg.ext",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
highlight_language = "text"   # literal blocks without a language (CLI examples, diagrams) stay plain
smartquotes = False           # `--resume` in help texts stays two hyphens, quotes stay straight

# MyST: headings get anchors (links like [the study](des_study.md#the-studys-results))
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference: every module of the package, found by recursion (no hand-kept module list)
# Generated afresh on every build: a module moved or removed leaves no stale page behind
shutil.rmtree(Path(__file__).resolve().parent / "api" / "generated", ignore_errors=True)
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    # a name a module re-exports in __all__ is documented once, where it is defined
    "ignore-module-all": True,
}
autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False  # not the docstrings of Lightning's hooks
autodoc_typehints = "none"          # numpydoc's Parameters sections carry the types and units
autodoc_preserve_defaults = True
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "furo"
html_title = f"openmm_cgkd {release}"
html_static_path: list[str] = []
