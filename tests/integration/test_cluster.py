"""The pipeline on a Dask cluster (openmm_cgkd.executor): two local workers give the results
of the same pipeline run serially in this process (``cluster.kind: serial``); a worker killed in the middle of an MD replica loses and duplicates nothing
(the replica is retried on a worker and resumes from its checkpoint); a worker that cannot see
the output directory stops the run with one line."""
import gzip
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import yaml
from distributed.diagnostics.plugin import WorkerPlugin

from openmm_cgkd.md.simulation import read_log
from openmm_cgkd.workflow.cache import stage_outputs
from openmm_cgkd.workflow.config import load_pipeline_config
from openmm_cgkd.executor import Executor, SharedFileSystemError
from openmm_cgkd.workflow.run import run_pipeline

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers get the plugin below by value

STEPS, INTERVAL = 200, 10  # resumable runs checkpoint every 10 report intervals: at steps 100 and 200
CONFIG = {
    "out": "run", "dataset": "cg.h5", "dataset_stride": 2, "dataset_max_frames": 36,
    "model": {"architecture": "graph-network", "embedding_dim": 8, "num_layers": 1, "num_rbf": 8, "cutoff_nm": 0.6},
    "split": {"train": 0.7, "val": 0.15, "test": 0.15},
    "trainer": {"max_epochs": 1, "batch_size": 4, "progress_bar": False, "num_threads": 1},
    "teachers": {"members": 2},
    "students": {"variants": ["ensemble-e-ft-faa"]},
    "md": {"replicas": 2, "steps": STEPS, "report_interval": INTERVAL, "teacher_members": 1, "platform": "CPU",
           "threads": 1, "timestep_fs": 4.0},
    "analysis": {"n_blocks": 2},
}


def _write(root: Path, workers: int | None) -> Path:
    """The config on a local cluster of ``workers`` workers (None: serially, in this process)."""
    path = root / "pipe.yaml"
    if workers is None:
        path.write_text(yaml.safe_dump({**CONFIG, "cluster": {"kind": "serial"}}))
    else:
        path.write_text(yaml.safe_dump({**CONFIG, "md": {**CONFIG["md"], "workers": workers}}))
    return path


@pytest.fixture(scope="module")
def serial(tmp_path_factory, tiny_dataset):
    """The tiny pipeline, every task in this process, one after another."""
    root = tmp_path_factory.mktemp("serial")
    tiny_dataset(root / "cg.h5")
    logs = []
    results = run_pipeline(load_pipeline_config(_write(root, None)), log=logs.append)
    assert "[cluster] tasks run one at a time in this process (cluster.kind: serial)" in logs
    return root, results


def _replicas(out: Path) -> dict:
    return {(name, rep.dir.name): rep for name, reps in stage_outputs(out, "md").models.items() for rep in reps}


def _same_md(a: Path, b: Path) -> None:
    """Every replica of run ``b`` has the steps, energies and analysis of the same replica of run ``a``."""
    ra, rb = _replicas(a), _replicas(b)
    assert set(ra) == set(rb) and len(ra) == 6
    for key, rep in ra.items():
        la, lb = read_log(rep.dir / "log.csv"), read_log(rb[key].dir / "log.csv")
        assert lb["step"] == la["step"] == list(range(0, STEPS + 1, INTERVAL)), key  # each row once
        np.testing.assert_allclose(lb["potential_kj_mol"], la["potential_kj_mol"], rtol=1e-6, atol=1e-6)
        x = json.loads(gzip.open(rep.record).read())["analysis"]
        y = json.loads(gzip.open(rb[key].record).read())["analysis"]
        assert x["failed"] == y["failed"] and x["n_frames_used"] == y["n_frames_used"]
        for kind, taes in x["tae"].items():
            assert y["tae"][kind] == pytest.approx(taes, rel=1e-5, abs=1e-9), (key, kind)


def test_two_local_workers_give_the_serial_results(serial, tmp_path, tiny_dataset):
    root, results = serial
    tiny_dataset(tmp_path / "cg.h5")
    logs = []
    two = run_pipeline(load_pipeline_config(_write(tmp_path, 2)), log=logs.append)
    assert any(line.startswith("[cluster] tasks run on a local cluster of 2 worker process(es)") for line in logs)
    assert "[md] 6 replicas, 2 at a time" in logs
    for name, student in results["students"].students.items():  # trained in other processes: same numbers
        assert two["students"].students[name].metrics == student.metrics
    assert two["teachers"].validation_forces == results["teachers"].validation_forces
    _same_md(root / "run", tmp_path / "run")
    for name, model in results["analysis"].models.items():
        for kind in ("rdf", "adf", "cdf"):
            assert two["analysis"].models[name].summary[kind]["mean"] == \
                pytest.approx(model.summary[kind]["mean"], rel=1e-5, abs=1e-9)


class KillFirstReplica(WorkerPlugin):
    """Kills (SIGKILL) the worker process that runs the first MD replica, once its first
    checkpoint is on disk, after writing down how far the replica had got."""

    def __init__(self, out: str, flag: str):
        self.out, self.flag = Path(out), Path(flag)

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing" or not str(key).startswith("md-"):
            return
        try:
            os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # only the first replica
        except FileExistsError:
            return
        name, rr, _ = str(key)[len("md-"):].rsplit("-", 2)
        rep_dir = self.out / "md" / name / f"replica_{int(rr[1:]):02d}"
        threading.Thread(target=self._kill, args=(rep_dir,), daemon=True).start()

    def _kill(self, rep_dir: Path) -> None:
        end = time.time() + 300
        while not (rep_dir / "checkpoint.chk").exists() and time.time() < end:
            time.sleep(0.005)
        rows = len(read_log(rep_dir / "log.csv")["step"]) if (rep_dir / "log.csv").is_file() else 0
        self.flag.write_text(json.dumps({"pid": os.getpid(), "replica": str(rep_dir), "rows": rows}))
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_killed_mid_replica_loses_and_duplicates_nothing(serial, tmp_path):
    root, _ = serial
    shutil.copytree(root / "run", tmp_path / "run")  # markers hold relative paths: the copy resumes
    shutil.copy(root / "cg.h5", tmp_path / "cg.h5")
    shutil.rmtree(tmp_path / "run" / "md")
    for stage in ("md", "analysis", "report"):
        (tmp_path / "run" / "stages" / f"{stage}.json").unlink()
    cfg = load_pipeline_config(_write(tmp_path, 2))
    flag = tmp_path / "killed.json"
    logs = []
    with Executor(cfg.cluster, workers=2, threads=1, shared_dir=cfg.out, log=logs.append) as ex:
        ex.client.register_plugin(KillFirstReplica(cfg.out, str(flag)))
        pids = set(ex.client.run(os.getpid).values())
        results = run_pipeline(cfg, log=logs.append, executor=ex)
        after = set(ex.client.run(os.getpid).values())
    killed = json.loads(flag.read_text())
    assert killed["pid"] in pids and killed["pid"] not in after  # that worker died (its nanny started another)
    assert 0 < killed["rows"] <= STEPS // INTERVAL  # ... in the middle of its replica (of 1 + STEPS / INTERVAL rows)
    assert sum(len(reps) for reps in results["md"].models.values()) == 6
    assert len([x for x in logs if "ns/day on" in x]) == 6  # each replica reported once
    _same_md(root / "run", tmp_path / "run")  # every row and frame there, once, as in the undisturbed run
    import mdtraj

    undisturbed = _replicas(root / "run")
    for key, rep in _replicas(tmp_path / "run").items():
        frames = [mdtraj.load(str(r.dir / "trajectory.dcd"), top=str(r.dir / "start.pdb")).n_frames
                  for r in (rep, undisturbed[key])]
        assert frames[0] == frames[1] >= STEPS // INTERVAL, key


def test_a_worker_that_cannot_see_the_output_directory_stops_the_run(tmp_path):
    with Executor(workers=1, shared_dir=tmp_path, log=lambda line: None, progress=False) as ex:
        ex.client  # the cluster and its marker file
        for marker in (tmp_path / ".cluster").iterdir():
            marker.unlink()  # as if the workers mounted another file system
        with pytest.raises(SharedFileSystemError, match="cannot see the run's output directory") as err:
            list(ex.map(abs, [-1], ["x"]))
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


def test_the_progress_count_survives_a_key_the_scheduler_does_not_hold(tmp_path):
    """The progress bar's "running N" asks the scheduler about the batch's keys; one it does not
    hold at that moment (a loaded machine: submitted but not registered yet, or forgotten) made
    the scheduler raise KeyError, which ended the whole pipeline run with a traceback."""
    with Executor(workers=1, shared_dir=tmp_path, log=lambda line: None, progress=False) as ex:
        assert ex._running({"md-no-such-task-000000"}) == 0
        assert [out for _, out in ex.map(abs, [-3], ["x"])] == [3]
