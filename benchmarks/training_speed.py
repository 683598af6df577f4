"""Label stage and student training throughput: today's release and this checkout side by side, in ONE run.

    uv run python benchmarks/training_speed.py [--old-ref 13cb8d4] [--frames 32] [--repeats 3]
        [--stages labels train] [--json training_speed.json]

What is timed (frames per second, one thread, CPU), on the first ``--frames`` frames of the
shipped dataset systems/des/reline_252_cg.h5 (252 beads, periodic):

* ``labels``: :func:`openmm_cgkd.training.labels.predict_labels` with the shipped teacher
  ensemble (models/des-teachers, 8 stacked hipnn-ts members): member-mean forces, per-bead
  energies, energies and the member force spread, network + wall, of every frame;
* ``train``: one epoch of a hipnn-ts student (the teachers' architecture, one member of
  :class:`~openmm_cgkd.training.stacked.StackedTrainable`, what ``cgkd train student`` runs), batches
  of 8 frames, loss weights w_aa = 2, w_ft = 1, w_e = 5 (the mapped forces, the labels' forces and
  per-bead energies: every term the students use), Adam step with member gradient clipping. The
  labels it trains on are made first by the same code (not timed).

Each figure is the median over ``--repeats`` passes (labels) or epochs (train) after one warm-up
pass, in wall-clock time and in the process's CPU time (``time.process_time``: the CPU it got,
less sensitive to the load of a busy machine than the wall clock).

How both codes run in one run: as in benchmarks/serving_speed.py, the old release is exported with
``git archive <old-ref> openmm_cgkd`` into a temporary directory and every (code, stage) runs in its
own worker process (this script with ``--worker``) whose ``PYTHONPATH`` starts with that directory
(old) or this checkout (new), old first. The label workers hand back their forces: the new labels
must equal the old ones to float32 round-off (printed). The machine load (``os.getloadavg``) is
recorded before and after every worker. Output: a table and a JSON file (``--json``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASET = "systems/des/reline_252_cg.h5"
TEACHERS = "models/des-teachers"


def _timed(fn, repeats: int) -> tuple[list[float], list[float]]:
    """(wall s, CPU s) of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return wall, cpu


def _worker(args) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    import openmm_cgkd
    from openmm_cgkd.bundle import load_bundle
    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.training.labels import predict_labels

    load0 = os.getloadavg()
    ds = CGDataset.load(ROOT / DATASET).select_frames(np.arange(args.frames))
    bundle = load_bundle(ROOT / TEACHERS)
    out = {"code": "checkout" if Path(openmm_cgkd.__file__).resolve().parent == ROOT / "openmm_cgkd" else "old release"}
    if args.stage == "labels":
        result = {}

        def run():
            result["labels"] = predict_labels(bundle, ds, device="cpu")

        wall, cpu = _timed(run, args.repeats)
        lab = result["labels"]
        np.savez(args.arrays_out, forces=lab.forces, energy=lab.energy, force_std=lab.force_std)
    else:
        from openmm_cgkd.model.potential import PotentialConfig
        from openmm_cgkd.training.config import LossWeights
        from openmm_cgkd.training.data import FrameDataset, make_loader
        from openmm_cgkd.training.model import number_density
        from openmm_cgkd.training.stacked import StackedAdam, StackedTrainable, member_losses

        ds.labels = predict_labels(bundle, ds, device="cpu")
        man = bundle.manifest
        pcfg = PotentialConfig.from_dict(dict(man.architecture))
        torch.manual_seed(0)
        model = StackedTrainable(pcfg, 1, [0], man.wall, number_density(ds.positions, ds.boxes))
        types = torch.from_numpy(ds.bead_types.astype(np.int64))
        loader = make_loader(FrameDataset(ds, np.arange(ds.n_frames), require_labels=True), 8, shuffle=True, seed=0)
        opt = StackedAdam(model.network.parameters(), torch.tensor([1e-3], dtype=torch.float64))
        weights = LossWeights(w_aa=2.0, w_ft=1.0, w_e=5.0, w_E=0.0)
        epoch = [0]

        def run():
            loader.sampler.set_epoch(epoch[0])
            epoch[0] += 1
            model.train()
            for batch in loader:
                pred = model(types, batch["positions"], batch["box"])
                losses, _ = member_losses(pred, batch, weights)
                opt.zero_grad()
                losses.sum().backward()
                opt.clip_member_grad_norm(1.0)
                opt.step()

        wall, cpu = _timed(run, args.repeats)
    out.update({"stage": args.stage, "frames": int(ds.n_frames), "wall_s": wall, "cpu_s": cpu,
                "frames_per_s_wall": ds.n_frames / statistics.median(wall),
                "frames_per_s_cpu": ds.n_frames / statistics.median(cpu),
                "load_before": load0, "load_after": os.getloadavg(), "torch_threads": torch.get_num_threads()})
    print("RESULT " + json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old-ref", default="13cb8d4", help="git ref of the release to compare with (default 13cb8d4)")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--stages", nargs="+", default=["labels", "train"], choices=["labels", "train"])
    p.add_argument("--json", default="training_speed.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--stage", help=argparse.SUPPRESS)
    p.add_argument("--arrays-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        _worker(args)
        return
    import numpy as np

    # here, not at the top: a worker of the old release must not import this checkout's package
    from openmm_cgkd.benchmark.release import old_release, run_worker

    rows = []
    with old_release(ROOT, args.old_ref) as (old_dir, old_sha, new_sha, dirty):
        print(f"old: {args.old_ref} ({old_sha}); new: {new_sha}{' + local changes' if dirty else ''}")
        print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()}; one thread; "
              f"{args.frames} frames, median of {args.repeats}")
        for stage in args.stages:
            res = {}
            for code, code_dir in (("old", old_dir), ("new", ROOT)):
                res[code] = run_worker(__file__, code_dir, [
                    "--stage", stage, "--frames", str(args.frames), "--repeats", str(args.repeats),
                    "--arrays-out", str(old_dir / f"arrays_{code}.npz")], stage)
            row = {"stage": stage, "frames": args.frames, "old": res["old"], "new": res["new"]}
            for clock in ("wall", "cpu"):
                row[f"old_frames_per_s_{clock}"] = res["old"][f"frames_per_s_{clock}"]
                row[f"new_frames_per_s_{clock}"] = res["new"][f"frames_per_s_{clock}"]
                row[f"speedup_{clock}"] = row[f"new_frames_per_s_{clock}"] / row[f"old_frames_per_s_{clock}"]
            if stage == "labels":
                a, b = np.load(old_dir / "arrays_old.npz"), np.load(old_dir / "arrays_new.npz")
                scale = float(np.abs(a["forces"]).max())
                row["force_max_rel_diff"] = float(np.abs(b["forces"] - a["forces"]).max()) / scale
                row["force_std_max_rel_diff"] = float(np.abs(b["force_std"] - a["force_std"]).max()) / scale
                row["energy_max_rel_diff"] = float(np.abs(b["energy"] - a["energy"]).max()
                                                   / np.abs(a["energy"]).max())
            rows.append(row)
            extra = (f"; labels |dF|/max|F| {row['force_max_rel_diff']:.1e}, spread {row['force_std_max_rel_diff']:.1e}"
                     if stage == "labels" else "")
            print(f"  {stage:7s}: old {row['old_frames_per_s_wall']:7.2f} frames/s, new {row['new_frames_per_s_wall']:7.2f}"
                  f" (x{row['speedup_wall']:.1f} wall; CPU time x{row['speedup_cpu']:.1f}); load "
                  f"{res['old']['load_before'][0]:.2f}..{res['new']['load_after'][0]:.2f}{extra}", flush=True)
    table = ["| stage | old frames/s | new frames/s | new/old (wall) | new/old (CPU time) | load (1 min) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['stage']} | {r['old_frames_per_s_wall']:.2f} | {r['new_frames_per_s_wall']:.2f} | "
                     f"{r['speedup_wall']:.1f} | {r['speedup_cpu']:.1f} | {r['old']['load_before'][0]:.2f}-"
                     f"{r['new']['load_after'][0]:.2f} |")
    print("\n".join(table))
    out = {"benchmark": "training_speed", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "old_ref": args.old_ref, "old_sha": old_sha, "new_sha": new_sha, "new_dirty": dirty,
           "machine": {"node": platform.node(), "cpus": os.cpu_count(), "processor": platform.processor(),
                       "load_end": os.getloadavg()},
           "settings": {"frames": args.frames, "repeats": args.repeats, "threads": 1, "dataset": DATASET,
                        "teachers": TEACHERS, "batch_size": 8},
           "rows": rows}
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
