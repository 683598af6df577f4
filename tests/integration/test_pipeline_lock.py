"""Two `cgkd pipeline` processes started at once on one directory (issue 24: both trained the same
stages, one died with a traceback, the other's logs held every epoch twice): exactly one runs,
the other is refused with the lock's one line naming the winner, and the winner's run is whole.
The race is run on the teachers stage alone (``--only teachers``): the stage that was trained twice."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_two_pipelines_on_one_directory_one_runs_one_is_refused(tmp_path, tiny_dataset):
    tiny_dataset(tmp_path / "cg.h5", n_frames=24)
    cfg = {"out": str(tmp_path / "run"), "dataset": str(tmp_path / "cg.h5"),
           "model": {"architecture": "graph-network", "embedding_dim": 8, "num_layers": 1, "num_rbf": 4,
                     "cutoff_nm": 0.6},
           "split": {"train": 0.7, "val": 0.15, "test": 0.15},
           "trainer": {"max_epochs": 2, "batch_size": 4, "progress_bar": False, "num_threads": 1},
           "teachers": {"members": 2}, "students": {"variants": ["ensemble-e-ft-faa"]},
           "md": {"replicas": 1, "steps": 20, "report_interval": 5, "teacher_members": 1, "platform": "CPU",
                  "threads": 1}, "analysis": {"n_blocks": 2}, "cluster": {"kind": "serial"}}
    (tmp_path / "pipe.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CGKD_DEBUG": ""}
    argv = [sys.executable, "-m", "openmm_cgkd.cli.main", "pipeline", str(tmp_path / "pipe.yaml"), "--only", "teachers"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              cwd=str(tmp_path)) for _ in range(2)]
    results = [(p.pid, *p.communicate(timeout=900), p.returncode) for p in procs]
    codes = sorted(r[3] for r in results)
    assert codes == [0, 1], [(r[3], r[2][-2000:]) for r in results]
    (winner, _, _, _), = [r for r in results if r[3] == 0]
    (_, out, err, _), = [r for r in results if r[3] == 1]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cgkd pipeline: error: "), err
    assert "in use by another cgkd pipeline" in lines[0] and f"pid {winner}" in lines[0], lines[0]
    assert "Traceback" not in err and "[teachers]" not in out  # refused before any stage
    # the winner's run is whole: the stage done once, each member's epochs logged once
    run = tmp_path / "run"
    assert (run / "stages" / "teachers.json").is_file() and not (run / "stages" / "labels.json").exists()
    logs = sorted(run.rglob("metrics.csv"))
    assert len(logs) == 2  # one per member
    for path in logs:
        with open(path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("val_loss")]
        epochs = [r["epoch"] for r in rows]
        assert len(epochs) == len(set(epochs)) == 2, (path, epochs)
    assert json.loads((run / ".cgkd-run.lock").read_text() or "{}") == {}  # released, no holder left
