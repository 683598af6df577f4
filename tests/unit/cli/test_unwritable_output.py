"""A read-only output location is refused in one line, exit 2, BEFORE any model, dataset or
torch loads (issue 24: it was a PermissionError traceback after the model had loaded).

Tests run as root, where chmod does not stop a write, so the check's probe (``os.access``) is
made to answer "not writable" for one directory."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
SYSTEM = str(ROOT / "systems" / "des" / "system.yaml")

# Runs `cgkd ARGV` with os.access denying writes under RO; prints the status and what was imported.
PROBE = """
import json, os, sys
ro, argv = sys.argv[1], json.loads(sys.argv[2])
real = os.access
def access(path, mode, *a, **k):
    if mode & os.W_OK and os.path.abspath(path).startswith(ro):
        return False
    return real(path, mode, *a, **k)
os.access = access
from openmm_cgkd.cli.main import main
try:
    code = main(argv)
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "openmm": "openmm" in sys.modules}))
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("unwritable")
    (d / "ro").mkdir()
    (d / "start.pdb").write_text("END\n")  # only its existence is checked before the output
    (d / "cg.h5").write_bytes(b"")
    (d / "bundle").mkdir()
    model = {"architecture": "graph-network", "embedding_dim": 8, "num_layers": 1, "num_rbf": 4, "cutoff_nm": 0.6}
    (d / "teachers.yaml").write_text(yaml.safe_dump({"dataset": str(d / "cg.h5"), "out": str(d / "ro" / "t"),
                                                     "members": 1, "model": model}))
    (d / "pipeline.yaml").write_text(yaml.safe_dump({"dataset": str(d / "cg.h5"), "out": str(d / "ro" / "p"),
                                                     "model": model}))
    return d


CASES = {
    "simulate": ["simulate", "--bundle", "{d}/bundle", "--structure", "{d}/start.pdb", "--out", "{d}/ro/sim"],
    "train-teachers": ["train-teachers", "{d}/teachers.yaml"],
    "pipeline": ["pipeline", "{d}/pipeline.yaml"],
    "aa-run": ["aa-run", "--system", SYSTEM, "--run-dir", "{d}/ro/aa"],
    "aa-build": ["aa-build", "--system", SYSTEM, "--out", "{d}/ro/built.pdb"],
    "label": ["label", "--dataset", "{d}/cg.h5", "--teachers", "{d}/bundle", "--out", "{d}/ro/labels.h5"],
}


@pytest.mark.parametrize("command", list(CASES))
def test_an_unwritable_output_is_one_line_exit_2_before_torch_loads(inputs, command):
    argv = [a.format(d=inputs) for a in CASES[command]]
    proc = subprocess.run([sys.executable, "-c", PROBE, str(inputs / "ro"), json.dumps(argv)], capture_output=True,
                          text=True, timeout=300, cwd=str(ROOT), env={**os.environ, "CGKD_DEBUG": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert result["code"] == 2, proc.stderr
    assert len(err) == 1 and err[0].startswith(f"cgkd {command}: error: "), proc.stderr
    assert "is not writable" in err[0] and str(inputs / "ro") in err[0], err[0]
    assert not result["torch"], "torch was imported before the output location was checked"
    assert list((inputs / "ro").iterdir()) == []  # nothing created


def test_simulate_checks_the_output_before_the_model_loads(inputs, monkeypatch, capsys):
    """In this process: the model loader, patched to fail the test, is never called."""
    import openmm_cgkd.serving.forcefield as forcefield
    from openmm_cgkd.cli.main import main

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the output location was checked")

    real = os.access
    ro = str(inputs / "ro")
    monkeypatch.setattr(os, "access", lambda p, m, *a, **k: False if m & os.W_OK and os.path.abspath(p).startswith(ro)
                        else real(p, m, *a, **k))
    monkeypatch.setattr(forcefield, "CGKDForceField", no_load)
    code = main([a.format(d=inputs) for a in CASES["simulate"]])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("cgkd simulate: error: --out") and "not writable" in err
