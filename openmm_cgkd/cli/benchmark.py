"""``cgkd benchmark``: ms/step and ns/day of teacher, ensemble (one module and naive) and student."""
from __future__ import annotations

import argparse
from pathlib import Path

from openmm_cgkd.cli.common import (add_platform_argument, check_input_file, check_output_file, nonnegative_int,
                                    positive_float, positive_int)

__all__ = ["register"]

# = openmm_cgkd.benchmark.md.MODEL_NAMES (not imported here: it imports torch)
MODEL_NAMES = ("teacher", "ensemble", "naive-ensemble", "student")

EPILOG = """\
examples:
  # CPU (defaults: 250 beads of the des system, graph-network, K = 8, 5 steps x 3 repeats)
  cgkd benchmark --out runs/benchmark/cpu.json
  # GPU, the paper's system size, TensorNet, with and without CUDA graphs
  cgkd benchmark --platform CUDA --beads 1000 --architecture tensornet --cuda-graphs both \\
      --steps 200 --warmup 50 --repeats 5 --out runs/benchmark/cuda.json
  # the stacked HIP-NN-TS ensemble, plus training throughput (K = 8 stacked vs 8 one by one)
  cgkd benchmark --beads 252 --architecture hipnn-ts --threads 2 --training --out runs/benchmark/stacked.json
  # trained bundles on your own structure
  cgkd benchmark --ensemble-bundle models/des-teachers --student-bundle models/des-student \\
      --structure systems/des/cg_start.pdb --platform CUDA
"""


def _run(args: argparse.Namespace) -> int:
    if args.structure is not None:
        check_input_file(args.structure, "structure (--structure)")
    comparison = None
    if args.release_comparison:
        from openmm_cgkd.benchmark.release import release_comparison

        for path in args.release_comparison:
            check_input_file(path, "--release-comparison")
        comparison = release_comparison(args.release_comparison)  # read before the (long) timing
    if args.out:
        check_output_file(args.out, "--out", (".json",))
    from openmm_cgkd.benchmark.md import BenchmarkSettings, format_goals, format_table, run_benchmark

    settings = BenchmarkSettings.from_dict(dict(
        n_beads=args.beads, system=args.system, architectures=args.architecture, members=args.members,
        models=args.models,
        embedding_dim=args.embedding_dim, num_layers=args.layers, num_rbf=args.num_rbf, cutoff_nm=args.cutoff,
        platform=args.platform, precision=args.precision, cuda_graphs=args.cuda_graphs, threads=args.threads,
        steps=args.steps, warmup_steps=args.warmup, repeats=args.repeats, timestep_fs=args.timestep,
        temperature_k=args.temperature, wall=not args.no_wall, seed=args.seed,
        structure=str(args.structure) if args.structure else None,
        ensemble_bundle=args.ensemble_bundle, student_bundle=args.student_bundle, skip_torch=args.skip_torch,
        backends=args.backend, static_shapes={"auto": None, "on": True, "off": False}[args.static_shapes]))
    result = run_benchmark(settings, progress=not args.no_progress)
    m = result.machine
    print()
    print(f"machine: {m.get('cpu')} ({m.get('cpu_count')} CPUs, torch threads {m.get('torch_threads')}"
          f"{', load ' + format(m['load_average_1min'], '.1f') if 'load_average_1min' in m else ''})"
          f"{', GPU ' + m['gpu'] if 'gpu' in m else ''}; OpenMM {m['openmm']} platform {m['openmm_platform']}, "
          f"torch {m['torch']}")
    print(f"system: {result.system['description']}; wall {'on' if settings.wall else 'off'}; "
          f"{settings.steps} steps x {settings.repeats} repeats after {settings.warmup_steps} warm-up, "
          f"{settings.timestep_fs} fs; medians")
    if result.untrained:
        print("UNTRAINED models (random weights): the timings are real, the physics is not "
              "(speed does not depend on the weights)")
    print()
    print(format_table(result))
    print("\n'nets' = networks evaluated per step, 'forces' = network force objects; overhead = OpenMM ms/step / "
          "torch ms/call - 1")
    print("goals:")
    print(format_goals(result))
    training = None
    if args.training:
        from openmm_cgkd.benchmark.training import (TrainingBenchmarkSettings, format_training_table,
                                                    run_training_benchmark)

        print(f"\ntraining throughput ({args.members} stacked hipnn-ts members vs one by one; batches of "
              f"{args.training_batch} frames of {args.beads} beads):")
        training = run_training_benchmark(TrainingBenchmarkSettings(
            n_beads=args.beads, system=args.system, members=args.members, batch_size=args.training_batch,
            steps=args.training_steps, warmup_steps=1, repeats=args.repeats, threads=args.threads, seed=args.seed,
            embedding_dim=args.embedding_dim, num_layers=args.layers, num_rbf=args.num_rbf, cutoff_nm=args.cutoff,
            device="cuda" if m.get("openmm_platform") == "CUDA" else "cpu"))  # on the GPU the MD ran on
        print(format_training_table(training))
    if comparison is not None:
        from openmm_cgkd.benchmark.release import format_release_comparison

        print("\nold release vs this code (from the comparison scripts' results):")
        print(format_release_comparison(comparison))
    if args.out:
        path = result.to_json(args.out)
        if training is not None or comparison is not None:  # their own sections of the same JSON
            import json

            data = json.loads(path.read_text())
            if training is not None:
                data["training"] = training.to_dict()
            if comparison is not None:
                data["release_comparison"] = comparison
            path.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")
        print(f"\nwrote {path}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "benchmark", help="inference speed: teacher, K-ensemble (one module / K forces), student; OpenMM vs torch",
        description="Measure ms/step and ns/day in OpenMM for one teacher, the K-member ensemble as ONE module, "
                    "the naive ensemble (K separate TorchForces, each scaled by 1/K) and a student, plus the bare "
                    "torch call of the same modules (no OpenMM) so the OpenMM overhead shows. System: N beads of "
                    "a registered system (--system; default des: Cho:Cl:Urea 1:1:2 at the reline CG density, 1000 "
                    "beads per 4.484^3 nm^3) in its composition and at its reference density, or --structure. Untrained models unless bundles are given (fine for speed; said in the output). "
                    "Prints a table and the goals (ensemble <= 2x student; OpenMM overhead <= 10%%), writes JSON.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--beads", type=positive_int, default=250,
                   help="number of beads of the system (default 250; des: >= 89 for a 1 nm cutoff)")
    p.add_argument("--system", default="des",
                   help="registered system (systems/<name>/cg_system.yaml) whose composition, density and bead "
                        "types the lattice and the untrained models take (default des)")
    p.add_argument("--structure", type=Path, default=None, help="bead PDB with a CRYST1 box instead of --beads")
    p.add_argument("--ensemble-bundle", default=None,
                   help="ensemble bundle (path or shipped name); teacher = its member 0 (default: untrained)")
    p.add_argument("--student-bundle", default=None, help="student bundle (default: untrained, same architecture)")
    p.add_argument("--architecture", nargs="+", default=None,
                   choices=["graph-network", "tensornet", "equivariant-transformer", "hipnn-ts"],
                   help="architecture(s) of the untrained models (default: graph-network on CPU, tensornet on CUDA)")
    p.add_argument("--members", type=positive_int, default=8, help="ensemble size K (default 8)")
    p.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=list(MODEL_NAMES),
                   help="which models to time (default: all)")
    p.add_argument("--embedding-dim", type=positive_int, default=None,
                   help="untrained models: feature size (default: the shipped config's, openmm_cgkd/model/configs)")
    p.add_argument("--layers", type=positive_int, default=None,
                   help="untrained models: interaction layers (default: config's)")
    p.add_argument("--num-rbf", type=positive_int, default=None,
                   help="untrained models: radial basis functions (default: config's)")
    p.add_argument("--cutoff", type=positive_float, default=None, metavar="NM",
                   help="untrained models: cutoff in nm (default: config's, 1.0)")
    add_platform_argument(p, default="CPU")
    p.add_argument("--precision", choices=["single", "mixed", "double"], default=None, help="CUDA precision")
    p.add_argument("--cuda-graphs", choices=["off", "on", "both"], default="off",
                   help="openmm-torch useCUDAGraphs (CUDA only; 'both' times each model with and without)")
    p.add_argument("--static-shapes", choices=["auto", "on", "off"], default="auto",
                   help="untrained models: a fixed-size (padded) pair list, which CUDA graphs need (tensornet, "
                        "hipnn-ts); auto (default) = on with --cuda-graphs on/both where the architecture has it")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for OpenMM and torch (default: all)")
    p.add_argument("--steps", type=positive_int, default=5, help="timed MD steps (and torch calls) per repeat (default 5)")
    p.add_argument("--warmup", type=nonnegative_int, default=3,
                   help="untimed warm-up steps / calls after the first evaluation (default 3; TorchScript optimises during the first 2-3 calls)")
    p.add_argument("--repeats", type=positive_int, default=3, help="timed repeats; the median is reported (default 3)")
    p.add_argument("--timestep", type=positive_float, default=2.0, metavar="FS", help="MD time step in fs (default 2)")
    p.add_argument("--temperature", type=positive_float, default=298.1, metavar="K",
                   help="temperature in K (default 298.1)")
    p.add_argument("--no-wall", action="store_true", help="leave the repulsive wall force out of the System")
    p.add_argument("--skip-torch", action="store_true", help="do not time the bare torch call")
    p.add_argument("--backend", nargs="+", choices=["torchforce", "python"], default=["torchforce", "python"],
                   help="serving backend(s) of the network force to time: torchforce (openmm-torch TorchForce) "
                        "and/or python (openmm.PythonForce, eager model); default both")
    p.add_argument("--training", action="store_true",
                   help="also time training: K stacked hipnn-ts members vs K one by one (frames/s; JSON section "
                        "'training'; on the GPU when the platform is CUDA)")
    p.add_argument("--training-batch", type=positive_int, default=8, help="--training: frames per batch (default 8)")
    p.add_argument("--training-steps", type=positive_int, default=2,
                   help="--training: timed optimiser steps per repeat (default 2)")
    p.add_argument("--release-comparison", nargs="+", type=Path, default=None, metavar="JSON",
                   help="results of benchmarks/serving_speed.py and/or benchmarks/training_speed.py (the old release "
                        "vs this code: MD ms/step, labels and training frames/s, machine and load) to print and "
                        "record in the JSON (section 'release_comparison')")
    p.add_argument("--seed", type=int, default=0, help="seed of the lattice, weights and velocities")
    p.add_argument("--out", type=Path, default=Path("runs/benchmark/benchmark.json"),
                   help="JSON output (default runs/benchmark/benchmark.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
