"""CG MD step time of the shipped bundles: today's release and this checkout side by side, in ONE run.

    uv run python benchmarks/serving_speed.py [--old-ref 13cb8d4] [--repeats 5] [--steps 50]
        [--sizes 252 1000] [--models student ensemble] [--backends torchforce] [--json out.json]

What is timed: milliseconds per OpenMM MD step (``LangevinMiddleIntegrator``, 2 fs, CPU platform, ONE
thread for OpenMM and torch), i.e. the integrator plus every force (the network, the repulsive wall,
the centre-of-mass remover), of the System that ``CGKDForceField.create_system`` builds, for

* ``student``: models/des-student (hipnn-ts, one network),
* ``ensemble``: models/des-teachers (the stacked ensemble of 8, served as its member mean),

at 252 beads (the shipped AA-mapped frame of models/des-student/continuity.npz) and 1,000 beads
(systems/des/cg_start.pdb). Each figure is the median over ``--repeats`` blocks of ``--steps`` steps
after at most ``--minimize`` energy-minimisation iterations (the 1,000-bead start is a jittered
lattice that blows up at 2 fs without) and ``--warmup`` steps.

How both codes run in one run: the old release is exported with ``git archive <old-ref> openmm_cgkd``
into a temporary directory; every (code, model, size) is timed in its own worker process (this
script with ``--worker``) whose ``PYTHONPATH`` starts with that directory (old) or this checkout
(new), one after the other per configuration, old first, so both see the same machine load. The
workers also hand back the energy and forces at the start configuration: the new code must give the
old one's to float32 round-off (printed as the max relative force difference).

The machine load (``os.getloadavg``) is recorded before and after every worker: the figures are
only comparable within one run (the ratio old / new is the robust number). Output: a table on
stdout and a JSON file (``--json``, default ``serving_speed.json``).
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
MODELS = {"student": "models/des-student", "ensemble": "models/des-teachers"}


def _worker(args) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    import openmm
    from openmm import unit

    import openmm_cgkd
    from openmm_cgkd.serving import CGKDForceField
    from openmm_cgkd.topology import bead_topology, read_bead_pdb

    load0 = os.getloadavg()
    ff = CGKDForceField(str(ROOT / MODELS[args.model]))
    if args.size == 252:
        ref = np.load(ROOT / MODELS["student"] / "continuity.npz")
        names = [ff.bundle.type_names[int(t)] for t in ref["bead_types"]]
        box = np.asarray(ref["box_nm"], dtype=float)
        topology = bead_topology(names, box)
        pos = np.asarray(ref["positions_nm"], dtype=float)
    else:
        topology, pos, box = read_bead_pdb(ROOT / "systems/des/cg_start.pdb")
    if len(pos) != args.size:
        raise SystemExit(f"expected {args.size} beads, got {len(pos)}")
    t0 = time.perf_counter()
    system = ff.create_system(topology, box, backend=args.backend)
    integrator = openmm.LangevinMiddleIntegrator(298.1 * unit.kelvin, 1.0 / unit.picosecond, 2.0 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    context.setPositions(pos * unit.nanometer)
    context.setVelocitiesToTemperature(298.1 * unit.kelvin, 1)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = np.asarray(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
    setup_s = time.perf_counter() - t0
    # the 1,000-bead start is a jittered lattice: relax it a little first (same for both codes)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, args.minimize)
    context.setVelocitiesToTemperature(298.1 * unit.kelvin, 1)
    integrator.step(args.warmup)
    context.getState(getPositions=True)
    samples = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        integrator.step(args.steps)
        context.getState(getPositions=True)
        samples.append((time.perf_counter() - t) * 1e3 / args.steps)
    end_e = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    np.save(args.forces_out, forces)
    print("RESULT " + json.dumps({
        # which code ran, never where it lay on this machine
        "code": "checkout" if Path(openmm_cgkd.__file__).resolve().parent == ROOT / "openmm_cgkd" else "old release",
        "samples_ms": samples,
        "median_ms": statistics.median(samples), "energy_kj_mol": energy, "final_energy_kj_mol": end_e,
        "setup_s": setup_s, "load_before": load0, "load_after": os.getloadavg(),
        "torch_threads": torch.get_num_threads()}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old-ref", default="13cb8d4", help="git ref of the release to compare with (default 13cb8d4)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--sizes", type=int, nargs="+", default=[252, 1000], choices=[252, 1000])
    p.add_argument("--models", nargs="+", default=["student", "ensemble"], choices=list(MODELS))
    p.add_argument("--backends", nargs="+", default=["torchforce"], choices=["torchforce", "python"])
    p.add_argument("--minimize", type=int, default=100, help="energy-minimisation iterations before the warm-up")
    p.add_argument("--json", default="serving_speed.json")
    # worker mode (internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--backend", default="torchforce", help=argparse.SUPPRESS)
    p.add_argument("--forces-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        _worker(args)
        return
    import numpy as np

    # here, not at the top: a worker of the old release must not import this checkout's package
    from openmm_cgkd.benchmark.release import old_release, run_worker

    rows = []
    with old_release(ROOT, args.old_ref) as (old_dir, old_sha, new_sha, dirty):
        print(f"old: {args.old_ref} ({old_sha}) exported to {old_dir}; new: {new_sha}{' + local changes' if dirty else ''}")
        print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()}; one thread; "
              f"median of {args.repeats} x {args.steps} steps")
        for backend in args.backends:
            for size in args.sizes:
                for model in args.models:
                    res = {}
                    for code, code_dir in (("old", old_dir), ("new", ROOT)):
                        fo = old_dir / f"forces_{code}.npy"
                        res[code] = run_worker(__file__, code_dir, [
                            "--model", model, "--size", str(size), "--backend", backend, "--repeats", str(args.repeats),
                            "--steps", str(args.steps), "--warmup", str(args.warmup), "--minimize", str(args.minimize),
                            "--forces-out", str(fo)], f"{model} {size}")
                        res[code]["forces"] = np.load(fo)
                    f_old, f_new = res["old"].pop("forces"), res["new"].pop("forces")
                    dev = float(np.abs(f_new - f_old).max() / max(np.abs(f_old).max(), 1e-30))
                    de = abs(res["new"]["energy_kj_mol"] - res["old"]["energy_kj_mol"]) / abs(res["old"]["energy_kj_mol"])
                    row = {"backend": backend, "n_beads": size, "model": model,
                           "old_ms_per_step": res["old"]["median_ms"], "new_ms_per_step": res["new"]["median_ms"],
                           "speedup": res["old"]["median_ms"] / res["new"]["median_ms"],
                           "energy_rel_diff": de, "force_max_rel_diff": dev, "old": res["old"], "new": res["new"]}
                    rows.append(row)
                    print(f"  {backend:10s} {size:5d} beads {model:8s}: old {row['old_ms_per_step']:8.2f} ms/step, "
                          f"new {row['new_ms_per_step']:7.2f} ms/step, x{row['speedup']:.1f}; "
                          f"|dF|/max|F| {dev:.1e}, |dE/E| {de:.1e}; load {res['old']['load_before'][0]:.2f}"
                          f"..{res['new']['load_after'][0]:.2f}", flush=True)
    table = ["| backend | beads | model | old ms/step | new ms/step | old/new | load (1 min) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['backend']} | {r['n_beads']} | {r['model']} | {r['old_ms_per_step']:.2f} | "
                     f"{r['new_ms_per_step']:.2f} | {r['speedup']:.1f} | {r['old']['load_before'][0]:.2f}-"
                     f"{r['new']['load_after'][0]:.2f} |")
    for backend in args.backends:
        for size in args.sizes:
            by = {r["model"]: r for r in rows if r["n_beads"] == size and r["backend"] == backend}
            if "student" in by and "ensemble" in by:
                ratio = by["ensemble"]["new_ms_per_step"] / by["student"]["new_ms_per_step"]
                table.append(f"\n{backend}, {size} beads: ensemble / student (new) = {ratio:.2f}")
    print("\n".join(table))
    out = {"benchmark": "serving_speed", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "old_ref": args.old_ref, "old_sha": old_sha, "new_sha": new_sha, "new_dirty": dirty,
           "machine": {"node": platform.node(), "cpus": os.cpu_count(), "processor": platform.processor(),
                       "load_end": os.getloadavg()},
           "settings": {"repeats": args.repeats, "steps": args.steps, "warmup": args.warmup, "minimize": args.minimize, "threads": 1,
                        "timestep_fs": 2.0, "platform": "CPU"},
           "rows": rows}
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
