"""Ensemble vs student: how much a K-teacher ensemble costs per MD step in OpenMM, compared with
the single-network student that replaces it (the point of knowledge distillation).

What it does: calls :func:`openmm_cgkd.benchmark.md.run_benchmark` (the API behind ``cgkd benchmark``)
for the K-member ensemble served as ONE module, the naive ensemble (K separate TorchForces, forces
scaled by 1/K) and a student, on ``--beads`` DES beads at the reline density; prints the table,
the ratios to the student, and writes the JSON. Untrained networks (random weights): speed does
not depend on the weights. The bare-torch column shows what OpenMM adds on top of the network.

Run time on CPU (2 cores, shared): about 45 s with the defaults (100 beads, K = 8, graph-network
with 32 features and 1 layer, 3 steps x 3 repeats, OMP_NUM_THREADS=1), most of it building and
scripting the 9 untrained networks. Measured that way: student 15 ms/step, ensemble as one module
121 ms/step (8.0x), as 8 TorchForces 110 ms/step (7.2x).

    uv run python examples/compare_speed.py
    uv run python examples/compare_speed.py --beads 1000 --members 8 --architecture tensornet \\
        --platform CUDA --steps 200 --repeats 5        # the paper's system size on a GPU

Units: ms per MD step (or per bare torch call), ns/day at a 2 fs time step.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--beads", type=int, default=100, help="DES beads (default 100; >= 89 for the 1 nm cutoff)")
    p.add_argument("--members", type=int, default=8, help="ensemble size K (default 8)")
    p.add_argument("--architecture", default=None, help="graph-network (CPU default), tensornet (CUDA default), ...")
    p.add_argument("--platform", default="CPU", help="OpenMM platform: CPU (default), CUDA")
    p.add_argument("--embedding-dim", type=int, default=32,
                   help="feature size of the untrained networks (default 32; the shipped configs use 64)")
    p.add_argument("--layers", type=int, default=1, help="interaction layers (default 1; shipped graph-network: 3)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per repeat (default 3)")
    p.add_argument("--repeats", type=int, default=3, help="repeats; medians are reported (default 3)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default 3)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--out", type=Path, default=Path("runs/examples/compare_speed.json"), help="JSON output")
    args = p.parse_args(argv)

    from openmm_cgkd.benchmark.md import BenchmarkSettings, format_goals, format_table, run_benchmark

    settings = BenchmarkSettings(n_beads=args.beads, members=args.members,
                                 architectures=[args.architecture] if args.architecture else None,
                                 models=["ensemble", "naive-ensemble", "student"], platform=args.platform,
                                 embedding_dim=args.embedding_dim, num_layers=args.layers,
                                 threads=args.threads, steps=args.steps, repeats=args.repeats,
                                 warmup_steps=args.warmup)
    result = run_benchmark(settings)
    print()
    print(format_table(result))
    print()
    arch = result.rows[0].architecture
    student = result.row("student", arch).openmm.median_ms
    ensemble = result.row("ensemble", arch).openmm.median_ms
    naive = result.row("naive-ensemble", arch).openmm.median_ms
    k = args.members
    print(f"per MD step on {result.machine['openmm_platform']}, {result.system['n_beads']} beads, {arch}, K = {k}:")
    print(f"  student                     {student:8.2f} ms  (1.00x)")
    print(f"  ensemble as one module      {ensemble:8.2f} ms  ({ensemble / student:.2f}x)")
    print(f"  ensemble as {k} TorchForces  {naive:8.2f} ms  ({naive / student:.2f}x)")
    print("goals:")
    print(format_goals(result))
    if result.untrained:
        print("(untrained networks: the timings are real, the forces are not)")
    print(f"wrote {result.to_json(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
