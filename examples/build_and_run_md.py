"""Build a bead System with ``CGKDForceField.create_system`` and run a short Langevin MD, writing a DCD.

What it does, step by step:

1. picks a model bundle: ``--bundle`` (a path or a shipped name in ``models/``), else the shipped
   ``des-student`` if present, else ``models/untrained-demo`` if ``cgkd demo`` built it, else it
   builds an UNTRAINED stand-in bundle (random weights, placeholder wall) in
   ``OUT/untrained-student`` -- fine to show the machinery, meaningless physics;
2. takes a start structure: ``--structure`` (a bead PDB with a CRYST1 box), else it places
   ``--beads`` DES beads (Cho:Cl:Urea 1:1:2) on a jittered lattice at the reline CG density and
   writes them to ``OUT/start.pdb``;
3. builds the ``openmm.System`` with ``CGKDForceField.create_system`` (network as a TorchForce, the
   repulsive wall as a CustomNonbondedForce, bead masses from the bundle) and runs it with plain
   OpenMM: ``LangevinMiddleIntegrator``, ``DCDReporter`` (``OUT/trajectory.dcd``) and
   ``StateDataReporter`` (``OUT/log.csv``, also echoed to the terminal).

Run time on CPU (2 cores, shared): about 60 s with the defaults (250 beads, 500 steps of 2 fs,
the untrained graph-network demo bundle, OMP_NUM_THREADS=1): ~10 s of MD (10 ns/day), the rest
Python / TorchScript start-up (and building the untrained bundle when none exists).

    uv run python examples/build_and_run_md.py
    uv run python examples/build_and_run_md.py --beads 60 --steps 20 --out /tmp/md   # seconds
    uv run python examples/build_and_run_md.py --bundle models/des-student \\
        --structure systems/des/cg_start.pdb --steps 50000 --platform CUDA         # a real run

Units: nm, ps, fs (time step), K, kJ/mol.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=None, help="model bundle (path or shipped name); default: see above")
    p.add_argument("--structure", type=Path, default=None, help="bead PDB with a CRYST1 box")
    p.add_argument("--beads", type=int, default=250, help="DES beads when no --structure (default 250, >= 89)")
    p.add_argument("--steps", type=int, default=500, help="MD steps (default 500)")
    p.add_argument("--report-interval", type=int, default=50, help="steps between DCD frames / log rows")
    p.add_argument("--timestep", type=float, default=2.0, help="fs (default 2)")
    p.add_argument("--temperature", type=float, default=298.1, help="K (default 298.1)")
    p.add_argument("--platform", default="auto", help="OpenMM platform: auto (CUDA if present, else CPU), CPU, CUDA")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/examples/md"), help="output directory")
    args = p.parse_args(argv)

    import openmm
    from openmm import app, unit

    from openmm_cgkd.bundle import build_untrained_bundle, shipped_bundles
    from openmm_cgkd.serving.forcefield import CGKDForceField
    from openmm_cgkd.platforms import select_platform
    from openmm_cgkd.systems import get_system
    from openmm_cgkd.topology import bead_topology, read_bead_pdb, write_bead_pdb

    args.out.mkdir(parents=True, exist_ok=True)

    # 1. the model
    bundle = args.bundle
    if bundle is None:
        shipped = shipped_bundles()
        if "des-student" in shipped:
            bundle = "des-student"
        elif "untrained-demo" in shipped:  # what `cgkd demo` builds on first use
            bundle = "untrained-demo"
        else:
            bundle = build_untrained_bundle(args.out / "untrained-student", seed=args.seed, overwrite=True)
    ff = CGKDForceField(bundle)
    print(f"model: {ff.describe()}")

    # 2. the start structure
    structure = args.structure
    if structure is None:
        names, positions, box = get_system("des").lattice(args.beads, seed=args.seed)
        residues = {b.name: b.residue_name for b in ff.bead_types}
        structure = write_bead_pdb(args.out / "start.pdb", bead_topology(names, box, residues), positions, box)
    topology, positions, box = read_bead_pdb(structure)
    print(f"structure: {topology.getNumAtoms()} beads from {structure}, box {box.diagonal().round(3).tolist()} nm")

    # 3. the System, and plain OpenMM from here on
    system = ff.create_system(topology)  # the box comes from the PDB's CRYST1 record
    print("forces: " + ", ".join(f"{system.getForce(i).getName()} ({type(system.getForce(i)).__name__})"
                                 for i in range(system.getNumForces())))
    choice = select_platform(args.platform)
    integrator = openmm.LangevinMiddleIntegrator(args.temperature * unit.kelvin, 1.0 / unit.picosecond,
                                                 args.timestep * unit.femtosecond)
    integrator.setRandomNumberSeed(args.seed)
    simulation = app.Simulation(topology, system, integrator, choice.platform, choice.properties)
    simulation.context.setPositions(positions * unit.nanometer)
    if args.structure is None:
        # a lattice puts some beads inside the repulsive wall of a trained model: relax it first
        e0 = simulation.context.getState(getEnergy=True).getPotentialEnergy()
        simulation.minimizeEnergy(maxIterations=200)
        e1 = simulation.context.getState(getEnergy=True).getPotentialEnergy()
        print(f"minimised the lattice: {e0.value_in_unit(unit.kilojoule_per_mole):.4g} -> "
              f"{e1.value_in_unit(unit.kilojoule_per_mole):.4g} kJ/mol")
    simulation.context.setVelocitiesToTemperature(args.temperature * unit.kelvin, args.seed)
    dcd_path = args.out / "trajectory.dcd"
    simulation.reporters.append(app.DCDReporter(str(dcd_path), args.report_interval))
    fields = dict(step=True, time=True, potentialEnergy=True, temperature=True, speed=True)
    simulation.reporters.append(app.StateDataReporter(str(args.out / "log.csv"), args.report_interval, **fields))
    simulation.reporters.append(app.StateDataReporter(sys.stdout, max(args.report_interval, args.steps // 5),
                                                      totalSteps=args.steps, progress=True, **fields))
    print(f"running {args.steps} steps of {args.timestep} fs on {choice.name}")
    t0 = time.perf_counter()
    simulation.step(args.steps)
    wall = time.perf_counter() - t0
    ns_day = args.steps * args.timestep * 1e-6 / (wall / 86400.0)
    print(f"done: {args.steps * args.timestep / 1000:.3f} ps in {wall:.1f} s ({ns_day:.3f} ns/day); "
          f"wrote {dcd_path} ({args.steps // args.report_interval} frames) and {args.out / 'log.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
