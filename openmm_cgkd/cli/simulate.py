"""``cgkd simulate``: run CG MD with a model bundle from a bead PDB (DCD + CSV log, ns/day)."""
from __future__ import annotations

import argparse
from pathlib import Path

from openmm_cgkd.cli.common import (add_platform_argument, check_input_file, check_output_dir, nonnegative_float,
                                    nonnegative_int, positive_float, positive_int)
from openmm_cgkd.errors import UsageError

__all__ = ["register", "add_md_arguments", "check_md_arguments", "run_md", "cpu_threads"]

EXIT_UNSAFE = 3  # cgkd check-timestep: the step is not safe


def add_md_arguments(p: argparse.ArgumentParser, *, steps: int, out: str, report_interval: int,
                     temperature: float | None = None) -> None:
    """The MD options shared by ``cgkd simulate`` and ``cgkd demo`` (``temperature``: the default
    in K; None: the bundle's training data's)."""
    p.add_argument("--steps", type=nonnegative_int, default=steps, help=f"MD steps to run (default {steps})")
    p.add_argument("--out", type=Path, default=Path(out), help=f"output directory (default {out})")
    p.add_argument("--temperature", type=positive_float, default=temperature, metavar="K",
                   help="temperature in K (Langevin thermostat and initial velocities; default "
                        + ("the model's training data's, from its bundle; another is allowed with a warning)"
                           if temperature is None else f"{temperature:g})"))
    p.add_argument("--timestep", type=positive_float, default=None, metavar="FS",
                   help="time step in fs (default: the step checked with the model, from its bundle; else 2)")
    p.add_argument("--friction", type=nonnegative_float, default=1.0, metavar="PER_PS",
                   help="Langevin friction coefficient in 1/ps (default 1)")
    p.add_argument("--report-interval", type=positive_int, default=report_interval, metavar="STEPS",
                   help=f"steps between DCD frames and log rows (default {report_interval})")
    p.add_argument("--checkpoint-interval", type=positive_int, default=None, metavar="STEPS",
                   help="write OUT/checkpoint.chk every this many steps and at the end (default: none; "
                        "with --resume every 10 report intervals)")
    p.add_argument("--resume", action="store_true",
                   help="continue from out/checkpoint.chk up to --steps in total, appending to DCD and log; "
                        "refused when the bundle, structure, temperature, time step, friction, seed, report "
                        "interval or platform differ from the run's")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in --out (refused without it; --resume continues one)")
    add_platform_argument(p)
    p.add_argument("--precision", choices=["single", "mixed", "double"], default=None,
                   help="CUDA precision (default: the platform's, 'single')")
    p.add_argument("--cuda-graphs", action="store_true", help="openmm-torch useCUDAGraphs (CUDA only)")
    p.add_argument("--backend", choices=["torchforce", "python"], default="torchforce",
                   help="how OpenMM runs the network: torchforce (openmm-torch TorchForce, TorchScript; default) "
                        "or python (openmm.PythonForce calling the eager model each step)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the eager model (--backend python only; the first steps compile, "
                        "minutes on a CPU)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads of OpenMM's CPU platform and of torch (default: all cores, or 1 when the "
                        "load average exceeds half the cores)")
    p.add_argument("--seed", type=int, default=None, help="seed of the initial velocities and thermostat noise")
    p.add_argument("--minimize", action="store_true", help="minimise the energy before MD")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_md_arguments(args: argparse.Namespace) -> None:
    """What can be checked of the MD options before any model is loaded: the output directory,
    the structure file (when given) and option combinations (:class:`UsageError`)."""
    check_output_dir(args.out)
    if args.steps > 0 and args.report_interval > args.steps:
        raise UsageError(f"--report-interval {args.report_interval} is longer than the run (--steps {args.steps}): "
                         "only the start frame would be written; give a shorter --report-interval or more --steps")
    if args.resume and args.overwrite:
        raise UsageError("give --resume (continue the run in --out) or --overwrite (replace it), not both")
    if getattr(args, "structure", None) is not None:
        check_input_file(args.structure, "structure file")
    if getattr(args, "compile", False) and getattr(args, "backend", "torchforce") != "python":
        raise UsageError("--compile applies torch.compile to the eager model: use it with --backend python")
    if args.cuda_graphs and args.platform not in ("CUDA", "auto"):
        raise UsageError(f"--cuda-graphs needs the CUDA platform, not {args.platform}")
    if args.precision is not None and args.platform in ("CPU", "Reference"):
        raise UsageError(f"--precision is a GPU-platform option; platform {args.platform} has none")
    if args.platform in ("CUDA", "OpenCL", "HIP"):  # not here: that is the error, whatever else was asked
        from openmm_cgkd.platforms import select_platform

        select_platform(args.platform)
    if args.threads is not None and args.platform in ("CUDA", "OpenCL", "HIP", "Reference"):
        raise UsageError(f"--threads sets CPU threads; platform {args.platform} does not use them")


def cpu_threads(requested: int | None, platform: str | None) -> int | None:
    """Threads for torch and OpenMM's CPU platform: ``requested``, else all cores, except on a
    busy machine (1-minute load average above half the cores), where 1 thread is used: torch's
    OpenMP threads then wait on each other (measured: 13x slower with 2 threads than with 1 on a
    2-core machine at load 7). Sets torch's thread count; returns the OpenMM CPU ``threads``."""
    import os

    import torch

    from openmm_cgkd.platforms import select_platform

    if requested is None:
        if select_platform(platform).name != "CPU":
            return None
        cores = os.cpu_count() or 1
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        if cores == 1 or load <= cores / 2:
            return None
        print(f"busy machine (load average {load:.1f} on {cores} cores): using 1 CPU thread "
              "(--threads N overrides)")
        requested = 1
    torch.set_num_threads(int(requested))
    return int(requested)


def _threads_of_run(args: argparse.Namespace) -> int | None:
    """With ``--resume`` (and a checkpoint to resume from): the CPU threads the run in ``--out`` was
    started with, so that it continues bit-identically (the order of floating-point sums depends
    on the thread count); None otherwise."""
    from openmm_cgkd.fingerprint import read_fingerprint

    if not (args.resume and (args.out / "checkpoint.chk").is_file()):
        return None
    used = (read_fingerprint(args.out) or {}).get("threads") or {}
    n = used.get("openmm")  # set only on the CPU platform
    return int(n) if isinstance(n, int) and n >= 1 else None


def run_md(ff, structure: Path, args: argparse.Namespace, description: str = "MD"):
    """Build the simulation of ``structure`` with force field ``ff`` and run it as ``args`` say.
    ``--resume`` continues a run only if the bundle's and the structure's contents and the MD
    settings are those it was started with (else a clear error; nothing is appended)."""
    from openmm_cgkd.fileio import file_sha256
    from openmm_cgkd.fingerprint import bundle_checksum, digest
    from openmm_cgkd.md.simulation import run_simulation
    from openmm import unit

    from openmm_cgkd.topology import read_bead_pdb

    threads = cpu_threads(args.threads if args.threads is not None else _threads_of_run(args), args.platform)
    topology, positions, box = read_bead_pdb(structure)
    if not ff.periodic:  # a model without a periodic box ignores the structure's CRYST1
        box = None
    simulation = ff.create_simulation(
        topology, positions, box_vectors=box, temperature=args.temperature, friction_per_ps=args.friction,
        timestep_fs=args.timestep, platform=args.platform, precision=args.precision,
        use_cuda_graphs=args.cuda_graphs, seed=args.seed, threads=threads, backend=args.backend,
        compile=args.compile)
    n = topology.getNumAtoms()
    args.temperature = simulation.integrator.getTemperature().value_in_unit(unit.kelvin)
    args.timestep = simulation.integrator.getStepSize().value_in_unit(unit.femtosecond)
    print(f"system: {n} beads from {structure}; platform {simulation.context.getPlatform().getName()}, "
          f"network via {args.backend}{' (torch.compile)' if args.compile else ''}; "
          f"{args.timestep} fs step, {args.temperature} K, friction {args.friction}/ps")
    minimized = args.minimize and not (args.resume and (args.out / "checkpoint.chk").exists())
    if minimized:
        _minimize(simulation)
    watch = None
    if getattr(args, "watch", None):  # the uncertainty watch: the teachers judge the student's frames
        from openmm_cgkd.serving.uncertainty import UncertaintyReporter

        watch = UncertaintyReporter(args.watch, args.watch_interval, threshold=args.watch_threshold,
                                    file=args.out / "uncertainty.csv", append=args.resume)
        simulation.reporters.append(watch)
        print(f"uncertainty watch: {args.watch} every {args.watch_interval} steps, threshold "
              f"{watch.threshold:.4g} kJ/mol/nm -> {args.out / 'uncertainty.csv'}")
    result = run_simulation(simulation, args.steps, args.out, report_interval=args.report_interval,
                            checkpoint_interval=args.checkpoint_interval, progress=not args.no_progress,
                            resume=args.resume, description=description, overwrite=args.overwrite,
                            minimized=minimized,
                            inputs={"bundle": bundle_checksum(ff.path) if ff.path else digest(ff.manifest.checksums),
                                    "structure": file_sha256(structure)})
    print(f"ran {result.steps_run} steps ({result.simulated_ps:.3f} ps) in {result.wall_seconds:.1f} s "
          f"on {result.platform}: {result.ns_per_day:.3f} ns/day")
    print(f"final potential energy {result.final_potential_kj_mol:.2f} kJ/mol, "
          f"temperature {result.final_temperature_k:.1f} K")
    print(f"wrote {result.trajectory}, {result.log}, {result.final_structure}")
    if watch is not None:
        watch.close()
        w = watch.summary()
        print(f"uncertainty watch: {w['reports']} frames, largest ensemble force spread "
              f"{w['max_spread_kj_mol_nm']:.4g} kJ/mol/nm, {w['over_threshold']} over the threshold "
              f"{w['threshold_kj_mol_nm']:.4g}" + (f" (first at step {w['first_step_over']})" if w["over_threshold"]
                                                 else ""))
    return result


def _minimize(simulation) -> None:
    """``simulation.minimizeEnergy()``; a minimisation that ends in NaN is a one-line
    :class:`~openmm_cgkd.md.restart.SimulationError` naming the closest pair."""
    import openmm
    from openmm import unit

    from openmm_cgkd.geometry import closest_pair
    from openmm_cgkd.md.restart import SimulationError

    try:
        simulation.minimizeEnergy()
        state = simulation.context.getState(getEnergy=True, getPositions=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        failed = None if energy == energy and abs(energy) != float("inf") else f"the energy is {energy}"
    except openmm.OpenMMException as exc:
        failed, state = str(exc).strip().splitlines()[0] if str(exc).strip() else "OpenMM error", None
    if failed:
        where = ""
        if state is not None:
            import numpy as np

            pos = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
            if np.all(np.isfinite(pos)):
                box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) \
                    if simulation.system.usesPeriodicBoundaryConditions() else None
                i, j, d = closest_pair(pos, box)
                where = f"; closest pair: beads {i} and {j}, {d:.3f} nm apart"
        raise SimulationError(f"energy minimisation failed ({failed}){where}: fix the structure (overlapping "
                              "beads) or the model")


def _simulate(args: argparse.Namespace) -> int:
    from openmm_cgkd.serving.forcefield import CGKDForceField

    from openmm_cgkd.runlock import hold_run_dir

    check_md_arguments(args)
    with hold_run_dir(args.out, "cgkd simulate"):  # a second run on --out: refused before the model loads
        ff = CGKDForceField(args.bundle)
        print(f"model: {ff.describe()}")
        run_md(ff, args.structure, args)
    return 0


def _check_timestep(args: argparse.Namespace) -> int:
    """`cgkd check-timestep`: NVT + NVE of a bundle at a time step (openmm_cgkd.md.timestep_check)."""
    import json

    from openmm_cgkd.md.timestep_check import check_timestep
    from openmm_cgkd.serving.forcefield import CGKDForceField
    from openmm_cgkd.topology import read_bead_pdb

    structure = check_input_file(args.structure, "structure file")
    ff = CGKDForceField(args.bundle)
    topology, positions, box = read_bead_pdb(structure)
    if not ff.periodic:  # a model without a periodic box ignores the structure's CRYST1
        box = None
    threads = cpu_threads(args.threads, args.platform)
    results = []
    for dt in args.timestep:
        res = check_timestep(ff, topology, positions, box, timestep_fs=dt, temperature_K=args.temperature,
                             nvt_ps=args.nvt_ps, nve_ps=args.nve_ps, platform=args.platform, threads=threads,
                             seed=args.seed)
        print(res.summary())
        results.append(res.to_dict())
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all(r["safe"] for r in results) else EXIT_UNSAFE


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate", help="run CG MD with a model bundle (DCD + CSV log, ns/day)",
        description="Run Langevin MD of a bead system with a model bundle; writes OUT/trajectory.dcd, "
                    "OUT/log.csv (step, time_ps, potential/kinetic/total kJ/mol, temperature K, ns/day), "
                    "OUT/final.pdb and OUT/run.json. Units: nm, ps, kJ/mol, K.")
    p.add_argument("--bundle", required=True,
                   help="model bundle: a path, or the name of a shipped bundle in models/")
    p.add_argument("--structure", type=Path, required=True,
                   help="bead PDB (residue/atom names as the bundle's bead types) with a CRYST1 box for a periodic "
                        "model and CONECT records for a model of molecules (e.g. cgkd start-structure)")
    add_md_arguments(p, steps=1000, out="runs/simulate", report_interval=100)
    p.add_argument("--watch", default=None, metavar="ENSEMBLE",
                   help="uncertainty watch: an ensemble bundle evaluated every --watch-interval steps on the "
                        "current frame; logs its force spread to OUT/uncertainty.csv and warns above the threshold")
    p.add_argument("--watch-interval", type=positive_int, default=100, metavar="STEPS",
                   help="steps between watch evaluations (default 100)")
    p.add_argument("--watch-threshold", type=positive_float, default=None, metavar="KJ_MOL_NM",
                   help="watch threshold in kJ/mol/nm (default: the ensemble manifest's, written by stacked "
                        "teacher training)")
    p.set_defaults(func=_simulate)

    p = subparsers.add_parser(
        "check-timestep", help="is a CG time step safe for a bundle? short NVT + NVE runs (exit 3 if not)",
        description="Run the bundle from a bead PDB for --nvt-ps of Langevin NVT and then --nve-ps of NVE (velocity "
                    "Verlet) at each --timestep: the NVT kinetic temperature against the thermostat and the NVE "
                    "total-energy drift (kT per ns per bead; limit 0.05) decide whether the step is safe "
                    "(openmm_cgkd.md.timestep_check). Light beads (water: 18 Da) need shorter steps than the "
                    "DES's 35-104 Da beads. Exit 0 when every step is safe, 3 when one is not. Units: fs, ps, K.")
    p.add_argument("--bundle", required=True, help="model bundle: a path, or the name of a shipped bundle")
    p.add_argument("--structure", type=Path, required=True, help="bead PDB with a CRYST1 box for a periodic model and CONECT "
                   "records for a model of molecules (e.g. cgkd start-structure)")
    p.add_argument("--timestep", type=positive_float, nargs="+", required=True, metavar="FS",
                   help="time step(s) to check, fs (e.g. 1 2 4)")
    p.add_argument("--temperature", type=positive_float, default=None, metavar="K",
                   help="thermostat temperature (default: the model's training data's, from its bundle)")
    p.add_argument("--nvt-ps", type=nonnegative_float, default=10.0, help="NVT length, ps (default 10)")
    p.add_argument("--nve-ps", type=positive_float, default=10.0, help="NVE length, ps (default 10)")
    add_platform_argument(p)
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--seed", type=int, default=1, help="velocity / thermostat seed (default 1)")
    p.add_argument("--json", default=None, help="also write the results (one object per step) to this JSON file")
    p.set_defaults(func=_check_timestep)
