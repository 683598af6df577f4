"""Speed-up of the pipeline's md stage on a local Dask cluster of N workers over one worker.

Trains the tiny pipeline of the tests once (synthetic 24-bead system, 2 teachers, 1 student),
then runs its md stage (R replicas of each of 3 models, analysis included) from scratch on a
local cluster of 1 worker and of each N in --workers, every worker running one replica at a
time on --threads threads. Prints the md stage's wall time (the cluster's start included: the
stage starts it) and the speed-up over one worker, with the machine's load average before and
after each run (the machine may be shared: the figure means little under load).

    uv run python benchmarks/cluster_md_speedup.py [--workers 2] [--replicas 2] [--steps 2000] [--threads 1]

Not a timed test; docs/cluster.md quotes what it printed.
"""
import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from openmm_cgkd.training.synthetic import make_synthetic_system
from openmm_cgkd.workflow.config import load_pipeline_config
from openmm_cgkd.workflow.run import run_pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[2])
    ap.add_argument("--replicas", type=int, default=2, help="per model (3 models)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cgkd-cluster-bench-"))
    syn = make_synthetic_system(n_beads=(12, 12), box_nm=1.9, n_frames=40, steps_per_frame=20,
                                equilibration_steps=200, seed=3)
    syn.dataset.save(root / "cg.h5")
    cfg = {"out": "run", "dataset": "cg.h5", "dataset_stride": 2, "dataset_max_frames": 36,
           "model": {"architecture": "graph-network", "embedding_dim": 8, "num_layers": 1, "num_rbf": 8,
                     "cutoff_nm": 0.6},
           "split": {"train": 0.7, "val": 0.15, "test": 0.15},
           "trainer": {"max_epochs": 1, "batch_size": 4, "progress_bar": False, "num_threads": 1},
           "teachers": {"members": 2}, "students": {"variants": ["ensemble-e-ft-faa"]},
           "md": {"replicas": args.replicas, "steps": args.steps, "report_interval": 50, "teacher_members": 1,
                  "platform": "CPU", "threads": args.threads, "timestep_fs": 4.0, "workers": 1},
           "analysis": {"n_blocks": 2}}
    path = root / "pipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_pipeline(load_pipeline_config(path), only=["teachers", "labels", "students"], log=lambda s: None)
    trained = root / "trained"
    shutil.copytree(root / "run", trained)
    seconds = {}
    for n in [1, *args.workers]:
        shutil.rmtree(root / "run")
        shutil.copytree(trained, root / "run")
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        run_pipeline(load_pipeline_config(path, overrides={"md": {"workers": n}}), only=["md"], log=lambda s: None)
        seconds[n] = time.perf_counter() - t0
        print(f"{n} worker(s): md stage {seconds[n]:.1f} s for {3 * args.replicas} replicas of {args.steps} steps "
              f"(load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after; {os.cpu_count()} cores)",
              flush=True)
    for n in args.workers:
        print(f"speed-up of {n} workers over 1: {seconds[1] / seconds[n]:.2f}x")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
