"""Fixtures shared by the integration tests."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _run_example(script: str, *args: str, timeout: int = 240) -> str:
    """Run ``examples/<script> args`` with one thread from the repository root; its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(ROOT))
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture
def run_example():
    """``run_example(script, *args, timeout=240) -> stdout`` of an ``examples/`` script (must exit 0)."""
    return _run_example


def _save_tiny_dataset(path: Path, n_frames: int = 40, seed: int = 3) -> Path:
    """The tiny synthetic CG system of the pipeline tests (2 x 12 beads, 1.9 nm box) saved to ``path``."""
    from openmm_cgkd.training.synthetic import make_synthetic_system

    syn = make_synthetic_system(n_beads=(12, 12), box_nm=1.9, n_frames=n_frames, steps_per_frame=20,
                                equilibration_steps=200, seed=seed)
    syn.dataset.save(path)
    return path


@pytest.fixture(scope="session")
def tiny_dataset():
    """``tiny_dataset(path, n_frames=40, seed=3) -> path``: save the pipeline tests' synthetic dataset."""
    return _save_tiny_dataset


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch thread for a module's tiny systems (threads only add synchronisation cost and
    stall badly on a loaded machine); restored afterwards. Use with
    ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
