"""The documentation site builds with warnings as errors, as ``docs/development.md`` says.

``sphinx-build -W --keep-going -b html docs <tmp>`` in a subprocess: MyST pages, the CLI reference
from the argparse parsers (sphinx-argparse), the API reference of every module (autodoc +
autosummary + numpydoc; importing torch for it is most of the time). A broken link, a page left
out of every toctree, a docstring that is no valid reStructuredText or a module that does not
import fails it. About 40 s of CPU on 2 cores.
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

def test_docs_build_without_warnings(tmp_path):
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stderr[-6000:]}"
    for page in ("index.html", "cli.html", "api.html", "des_study.html", "guide/serving.html",
                 "api/generated/openmm_cgkd.serving.forcefield.html"):
        assert (out / page).is_file(), f"{page} was not built"
    cli = (out / "cli.html").read_text()
    for command in ("train-teachers", "train-student", "simulate", "pipeline", "benchmark"):
        assert command in cli, f"the CLI reference lacks cgkd {command}"
    assert "create_system" in (out / "api/generated/openmm_cgkd.serving.forcefield.html").read_text()
