"""examples/build_and_run_md.py runs as a script with tiny arguments and writes a readable DCD;
every example has a docstring saying what it does and its CPU run time."""
import ast
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"



@pytest.mark.parametrize("script", ["build_and_run_md.py", "compare_speed.py", "train_from_own_data.py"])
def test_example_has_docstring_with_cpu_run_time(script):
    doc = ast.get_docstring(ast.parse((EXAMPLES / script).read_text()))
    assert doc and "Run time on CPU" in doc and "What it does" in doc


def test_build_and_run_md_writes_a_dcd(tmp_path, run_example):
    md = pytest.importorskip("mdtraj")
    out = tmp_path / "md"
    text = run_example("build_and_run_md.py", "--beads", "100", "--steps", "20", "--report-interval", "5",
                       "--platform", "CPU", "--out", str(out))
    assert "model: " in text and "cgkd_network" in text and "cgkd_wall" in text
    traj = md.load(str(out / "trajectory.dcd"), top=str(out / "start.pdb"))
    assert traj.n_atoms == 100 and traj.n_frames == 4
    assert math.isclose(float(traj.unitcell_lengths[0, 0]), (100 / (1000 / 4.484 ** 3)) ** (1 / 3), rel_tol=1e-4)
    assert all(math.isfinite(v) for v in traj.xyz.ravel())
    rows = (out / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4  # header + one row per report


