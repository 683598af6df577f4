"""examples/compare_speed.py runs as a script with tiny arguments: ratios printed, JSON written."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run_example(script: str, *args: str, timeout: int = 240) -> str:
    """Run ``examples/<script> args`` with one thread from the repository root; its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(ROOT))
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_compare_speed_prints_ratios_and_writes_json(tmp_path):
    out = tmp_path / "speed.json"
    text = run_example("compare_speed.py", "--beads", "100", "--members", "2", "--steps", "2", "--repeats", "2",
                       "--warmup", "2", "--threads", "1", "--out", str(out))
    assert "ensemble as one module" in text and "ensemble as 2 TorchForces" in text
    data = json.loads(out.read_text())
    assert sorted(r["model"] for r in data["results"]) == ["ensemble", "naive-ensemble", "student"]
    assert all(r["openmm"]["median_ms"] > 0 and r["torch"]["median_ms"] > 0 for r in data["results"])
    assert data["system"]["n_beads"] == 100 and data["untrained"] is True
