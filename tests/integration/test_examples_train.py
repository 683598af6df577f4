"""examples/train_from_own_data.py runs as a script with tiny arguments: teachers, labels and a
student are trained on the synthetic stand-in and their bundles load in CGKDForceField."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run_example(script: str, *args: str, timeout: int = 300) -> str:
    """Run ``examples/<script> args`` with one thread from the repository root; its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(ROOT))
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow  # the whole training chain: ~1 min on an idle 2-core CPU, several minutes when loaded
def test_train_from_own_data_on_synthetic_stand_in(tmp_path):
    from openmm_cgkd.bundle import load_bundle

    out = tmp_path / "train"
    text = run_example("train_from_own_data.py", "--synthetic-frames", "30", "--members", "2", "--epochs", "1",
                       "--embedding-dim", "8", "--out", str(out))
    assert "SYNTHETIC stand-in" in text
    summary = json.loads((out / "summary.json").read_text())
    ens = load_bundle(summary["ensemble_bundle"])
    assert ens.manifest.model_kind == "ensemble" and ens.manifest.num_members == 2
    assert len(summary["member_bundles"]) == 2
    student = load_bundle(summary["student_bundle"])
    assert student.manifest.model_kind == "student" and student.manifest.variant == "ensemble-e-ft-faa"
    assert student.manifest.architecture["architecture"] == "graph-network"
