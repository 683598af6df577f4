"""The pipeline's `cluster:` settings: a bad one is one ConfigError line; a dask-jobqueue cluster's
generated batch script carries the declared resources (no batch system needed)."""
import os
import subprocess
import sys

import pytest
import yaml

from openmm_cgkd.config import ConfigError, config_from_dict
from openmm_cgkd.workflow.config import load_pipeline_config
from openmm_cgkd.executor import ClusterConfig, make_jobqueue_cluster

SLURM = {"kind": "slurm", "queue": "gpu", "account": "cgkd-lab", "cores": 8, "memory": "32GiB",
         "walltime": "08:00:00", "gpus": 2, "job_extra": ["--constraint=a100"],
         "job_script_prologue": ["module load cuda"], "adaptive_min": 0, "adaptive_max": 4}


@pytest.mark.parametrize("cluster, match", [
    ({"kind": "kubernetes"}, "cluster: kind must be one of local, serial, address, slurm, pbs, lsf"),
    ({"kind": "address"}, "cluster: address"),
    ({"kind": "local", "queue": "gpu"}, "cluster: queue applies to kind slurm, pbs or lsf, not local"),
    ({"kind": "slurm", "walltime": "8h"}, "cluster: walltime must be HH:MM:SS"),
    ({"kind": "slurm", "memory": "lots"}, "cluster: memory must be a size"),
    ({"kind": "slurm", "cores": 6, "gpus": 4}, "must be a multiple of gpus"),
    ({"kind": "slurm", "adaptive_max": 4}, "give both adaptive_min and adaptive_max"),
    ({"kind": "slurm", "adaptive_min": 5, "adaptive_max": 4}, "adaptive_min <= adaptive_max"),
    ({"kind": "slurm", "cores": "eight"}, "cluster.cores must be an integer"),
    ({"kind": "local", "workers": 0}, "cluster: workers"),
    ({"kind": "serial", "workers": 2}, "cluster: workers"),
    ({"kind": "serial", "queue": "gpu"}, "cluster: queue applies to kind slurm, pbs or lsf, not serial"),
])
def test_a_bad_cluster_config_is_a_config_error(tmp_path, cluster, match):
    p = tmp_path / "pipe.yaml"
    p.write_text(yaml.safe_dump({"dataset": "cg.h5", "cluster": cluster}))
    with pytest.raises(ConfigError, match=match) as err:
        load_pipeline_config(p)
    assert "\n" not in str(err.value)


def test_cluster_errors_reach_the_user_as_one_line(tmp_path):
    p = tmp_path / "pipe.yaml"
    p.write_text(yaml.safe_dump({"dataset": "cg.h5", "cluster": {"kind": "slurm", "walltime": "8h"}}))
    done = subprocess.run([sys.executable, "-m", "openmm_cgkd.cli.main", "pipeline", str(p)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "cgkd pipeline: error: cluster: walltime must be HH:MM:SS, got '8h'"], done.stderr


def test_md_workers_and_teachers_parallel_are_not_cluster_settings(tmp_path):
    p = tmp_path / "pipe.yaml"
    p.write_text(yaml.safe_dump({"dataset": "cg.h5", "md": {"workers": 2}, "cluster": SLURM}))
    with pytest.raises(ConfigError, match="md.workers sizes the local cluster"):
        load_pipeline_config(p)
    p.write_text(yaml.safe_dump({"dataset": "cg.h5", "teachers": {"members": 2, "parallel": 2}}))
    with pytest.raises(ConfigError, match="teachers.parallel is for `cgkd train-teachers`"):
        load_pipeline_config(p)


def test_slurm_job_script_declares_the_resources():
    cluster = make_jobqueue_cluster(config_from_dict(ClusterConfig, SLURM))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    lines = script.splitlines()
    for directive in ("#SBATCH -J cgkd-worker", "#SBATCH -p gpu", "#SBATCH -A cgkd-lab", "#SBATCH --cpus-per-task=8", "#SBATCH -t 08:00:00",
                      "#SBATCH --gres=gpu:2", "#SBATCH --constraint=a100"):
        assert directive in lines, (directive, script)
    assert any(line.startswith("#SBATCH --mem=") for line in lines)
    assert "module load cuda" in lines
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert "--nworkers 2" in worker  # one worker per GPU ...
    assert "--nthreads 4" in worker  # ... with half of the job's cores each
    assert "--resources CPU=4,GPU=1" in worker  # the resources the tasks ask for


def test_pbs_and_lsf_ask_for_the_gpus():
    for kind, needle in (("pbs", "ngpus=2"), ("lsf", '-gpu "num=2"')):
        cluster = make_jobqueue_cluster(config_from_dict(ClusterConfig, {**SLURM, "kind": kind}))
        try:
            assert needle in cluster.job_script(), kind
        finally:
            cluster.close()


def _task(job):
    if job == "refuse":
        raise ConfigError("task says no")
    return job, os.getpid()


def test_serial_runs_the_tasks_here_in_order_without_dask(tmp_path):
    """kind: serial: every task in this process, in the order given, no Dask client started; a
    task's user error reaches the caller as itself."""
    from openmm_cgkd.executor import Executor

    lines = []
    with Executor(ClusterConfig(kind="serial"), shared_dir=tmp_path, log=lines.append, progress=False) as ex:
        out = list(ex.map(_task, [3, 1, 2], ["a", "b", "c"]))
        assert ex.slots == 1 and ex._client is None
        with pytest.raises(ConfigError, match="task says no"):
            list(ex.map(_task, [1, "refuse", 2], ["a", "b", "c"]))
    assert out == [(3, (3, os.getpid())), (1, (1, os.getpid())), (2, (2, os.getpid()))]
    assert lines == ["[cluster] tasks run one at a time in this process (cluster.kind: serial)"]
    assert not (tmp_path / ".cluster").exists()
