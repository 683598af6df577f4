"""Where the time of one served network call goes (torch.profiler), one thread, shipped bundles.

    uv run python benchmarks/profile_serving.py [--model student|ensemble] [--size 252|1000] [--calls 30]

Profiles the module openmm-torch runs (``TorchForceModule`` around ``served_model(bundle.module)``,
scripted and frozen) on a trajectory-like sequence of calls: the start frame plus small random
moves (0.002 nm per call and component, about an MD step), so that Verlet-list rebuilds are
included at their real rate. Prints the operators by self CPU time (ms per call and share) and
the number of list builds. Not a timed test: the machine's load is printed with it.
"""
import argparse
import os
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="student", choices=["student", "ensemble"])
    p.add_argument("--size", type=int, default=252, choices=[252, 1000])
    p.add_argument("--calls", type=int, default=30)
    p.add_argument("--rows", type=int, default=14)
    args = p.parse_args()
    torch.set_num_threads(1)
    from openmm_cgkd.bundle import load_bundle
    from openmm_cgkd.serving.network_force import TorchForceModule, served_model

    bundle = load_bundle(ROOT / ("models/des-student" if args.model == "student" else "models/des-teachers"))
    if args.size == 252:
        ref = np.load(ROOT / "models/des-student/continuity.npz")
        types, pos, box = ref["bead_types"], ref["positions_nm"], ref["box_nm"]
    else:
        from openmm_cgkd.topology import read_bead_pdb

        from openmm_cgkd.serving import CGKDForceField

        top, pos, box = read_bead_pdb(ROOT / "systems/des/cg_start.pdb")
        types = CGKDForceField(bundle).bead_type_indices(top)
    served = served_model(bundle.module)
    module = torch.jit.freeze(torch.jit.script(TorchForceModule(served, [int(t) for t in types])).eval())
    pos_t = torch.as_tensor(np.asarray(pos), dtype=torch.float64)
    box_t = torch.as_tensor(np.asarray(box), dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        module(pos_t, box_t)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.calls):
            pos_t = pos_t + 0.002 * torch.randn(pos_t.shape, generator=gen, dtype=torch.float64)
            module(pos_t, box_t)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{args.model}, {len(pos_t)} beads, {args.calls} calls, load {os.getloadavg()[0]:.2f}; "
          f"{total / 1e3 / args.calls:.2f} ms per call under the profiler; "
          f"list builds: {int(module.model.neighbors.num_builds)} (incl. the first)")
    print("| operator | ms / call | share |\n|---|---|---|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.rows]:
        print(f"| `{e.key}` | {e.self_cpu_time_total / 1e3 / args.calls:.3f} | {100 * e.self_cpu_time_total / total:.1f} % |")


if __name__ == "__main__":
    main()
