"""The pipeline's worker pool (md.workers > 1): results of every job, and workers that exit cleanly.

A worker that imported torch and drew a tqdm progress bar (as an MD replica does) holds a named
semaphore; terminating it right after its last job leaves that semaphore to the resource tracker,
which then prints "leaked semaphore objects" warnings when `cgkd pipeline` exits. The pool must
let its workers exit on their own."""
import subprocess
import sys

SCRIPT = """
from openmm_cgkd.workflow.stages.md import worker_map

def setup(n):
    import torch  # noqa: F401
    from tqdm import tqdm
    for _ in tqdm(range(n)):
        pass

if __name__ == "__main__":
    print(sorted(worker_map(2, setup, (3,), abs, [-3, 1, -2, 4])))
"""


def test_worker_map_returns_every_result_and_leaks_nothing(tmp_path):
    script = tmp_path / "pool.py"  # spawned workers import the script's functions from a file
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 2, 3, 4]"
    assert "leaked" not in done.stderr and "resource_tracker" not in done.stderr, done.stderr
