"""``cgkd aa-build``, ``cgkd aa-run``, ``cgkd map``: all-atom reference data and the AA -> CG mapping.

Every argument is checked before any packing, minimisation, MD or mapping starts; errors follow
the ``cgkd`` convention (:mod:`openmm_cgkd.cli.common`). Without ``--system`` / ``--mapping`` the
files of the registered system :data:`DEFAULT_SYSTEM` are used (:mod:`openmm_cgkd.systems`:
``systems/des/system.yaml`` and ``mapping.yaml`` in the checkout).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from openmm_cgkd.cli.common import (add_platform_argument, check_input_file, check_output_dir, check_output_file,
                                    nonnegative_float, nonnegative_int, positive_float, positive_int)
from openmm_cgkd.errors import MissingFileError, UsageError

DEFAULT_SYSTEM = "des"  # the registered system whose files are the defaults (openmm_cgkd.systems)
FORCE_UNIT_NAMES = ("kJ/mol/nm", "kJ/mol/A", "kcal/mol/A", "kcal/mol/nm")  # = data.external.FORCE_UNITS


def _add_system_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("system")
    g.add_argument("--system", default=None,
                   help="system definition YAML: an OPLS molecule file with composition and box, OpenMM force "
                        "field XML files with a structure (PDB/PDBx), or a GROMACS .top with a .gro "
                        "(docs/own_system.md); default: the "
                        f"{DEFAULT_SYSTEM} system's, systems/des/system.yaml: reline, 250 choline / 250 Cl / 500 urea "
                        "in 4.484 nm)")
    size = g.add_mutually_exclusive_group()
    size.add_argument("--molecules", type=positive_int, metavar="N",
                      help="total molecule count of a packed (OPLS) system; composition ratios and density "
                           "are kept exactly, else the "
                           "command refuses and names the nearest sizes that keep them "
                           "(e.g. 252 -> 63 choline, 63 Cl, 126 urea in a 2.832 nm box; reline needs a multiple of 4)")
    size.add_argument("--scale", type=positive_float, metavar="F",
                      help="multiply every molecule count of a packed (OPLS) system by F (same density)")
    g.add_argument("--cutoff", type=positive_float, metavar="NM",
                   help="nonbonded cutoff in nm (default: the system file's; must be below half the box; "
                        "not with nonbonded: NoCutoff)")


def _system_file(role: str) -> Path:
    """The default file ``role`` of the registered system :data:`DEFAULT_SYSTEM`."""
    from openmm_cgkd.systems import get_system

    return get_system(DEFAULT_SYSTEM).file(role)


def _load_system(args):
    from openmm_cgkd.data.systemdef import SystemDefinition

    sysdef = SystemDefinition.from_yaml(check_input_file(args.system, "system definition (--system)")
                                        if args.system else _system_file("aa_system"))
    if args.molecules is not None:
        sysdef = sysdef.resized(n_molecules=args.molecules)
    elif args.scale is not None:
        sysdef = sysdef.resized(scale=args.scale)
    if getattr(args, "cutoff", None) is not None:
        if sysdef.periodic and args.cutoff >= 0.5 * sysdef.box_nm:
            raise UsageError(f"--cutoff {args.cutoff} nm is not below half the {sysdef.box_nm:.3f} nm box; "
                             f"use at most {0.49 * sysdef.box_nm:.3f} nm or a larger system")
        if sysdef.kind != "opls" and sysdef.nonbonded == "NoCutoff":
            raise UsageError(f"--cutoff: the system's nonbonded method is NoCutoff ({sysdef.source})")
        sysdef.cutoff_nm = float(args.cutoff)
    if sysdef.periodic and sysdef.cutoff_nm >= 0.5 * sysdef.box_nm:
        new = round(0.49 * sysdef.box_nm, 3)
        print(f"note: cutoff {sysdef.cutoff_nm} nm is not below half the {sysdef.box_nm:.3f} nm box; using {new} nm",
              file=sys.stderr)
        sysdef.cutoff_nm = new
    return sysdef


def _cmd_build(args) -> int:
    from openmm_cgkd.data.build import build_box
    from openmm_cgkd.platforms import select_platform

    out = check_output_file(args.out, "--out", (".pdb",))
    sysdef = _load_system(args)
    if args.threads is not None and args.threads > 1:
        print(f"note: --threads {args.threads}: the minimised box is not reproducible bit for bit (one thread is)",
              file=sys.stderr)
    build_box(sysdef, out, seed=args.seed, minimise_steps=args.max_iterations,
              platform=select_platform(args.platform, args.threads))
    return 0


def _protocol(args, sysdef):
    from openmm_cgkd.data.aamd import Protocol

    def given(value, default):
        return default if value is None else value

    return Protocol(temperature_K=given(args.temperature, sysdef.temperature_K),
                    timestep_fs=given(args.timestep, sysdef.timestep_fs), thermostat=args.thermostat,
                    friction_per_ps=given(args.friction, sysdef.friction_per_ps), hydrogen_mass_da=args.hydrogen_mass,
                    anneal_ps=args.anneal_ps, anneal_temperature_K=args.anneal_temperature, hot_ps=args.hot_ps,
                    equilibration_ps=args.equilibration_ps, production_ps=args.production_ps,
                    frame_interval_ps=args.frame_interval_ps, checkpoint_every_frames=args.checkpoint_every,
                    seed=args.seed).validate()


def _cmd_run(args) -> int:
    """Check everything (nothing is created on bad input), then run under the lock of --run-dir."""
    from openmm_cgkd.data.aamd import run_aa
    from openmm_cgkd.data.build import build_box
    from openmm_cgkd.data.mapping import MappingSpec
    from openmm_cgkd.platforms import select_platform
    from openmm_cgkd.runlock import hold_run_dir

    run_dir = check_output_dir(args.run_dir, "--run-dir")
    structure = None if args.structure is None else check_input_file(args.structure, "starting structure (--structure)")
    if args.mapping and args.no_mapping:
        raise UsageError("give --mapping or --no-mapping, not both")
    sysdef = _load_system(args)
    protocol = _protocol(args, sysdef)
    mapping = None
    if not args.no_mapping:
        path = args.mapping or sysdef.mapping_path
        mapping = MappingSpec.from_yaml(check_input_file(path, "mapping spec (--mapping)")) if path else None
    if structure is not None and structure.suffix.lower() != ".pdb":
        raise UsageError(f"--structure {structure}: give a PDB (a .gro or PDBx structure goes in the system "
                         "definition's `structure:`, which a new run minimises and starts from)")
    if structure is not None and not (run_dir / "run.json").is_file():
        n = _pdb_atom_count(structure)
        if n != sysdef.n_atoms:
            raise UsageError(f"--structure {structure} has {n} atoms; the system ({sysdef.n_molecules} molecules: "
                             f"{sysdef.composition}) has {sysdef.n_atoms}: "
                             + ("pack a box with `cgkd aa-build` and the same --system / --molecules / --scale"
                                if sysdef.kind == "opls" else "give a structure of this system, atoms in its order"))
    with hold_run_dir(run_dir, "cgkd aa-run"):  # one run per --run-dir
        if structure is None and not (run_dir / "run.json").is_file():
            structure = run_dir / "built.pdb"
            if not structure.is_file():
                build_box(sysdef, structure, seed=args.seed,  # reproducible: the minimiser's own threads
                          platform=select_platform(args.platform))
        summary = run_aa(run_dir, sysdef, protocol, structure, platform=args.platform,
                         threads=args.threads, progress=not args.no_progress, mapping=mapping)
    return 0 if summary["finished"] else 3


def _pdb_atom_count(path: Path) -> int:
    with open(path, errors="replace") as fh:
        return sum(1 for line in fh if line.startswith(("ATOM", "HETATM")))


def _add_map_arguments(p) -> None:
    g = p.add_argument_group("input")
    g.add_argument("--run-dir", help="`cgkd aa-run` directory (its committed production frames are used)")
    g.add_argument("--trajectory", help="AA trajectory: .trr (GROMACS, with forces) or any mdtraj format")
    g.add_argument("--topology", help="topology for --trajectory: .gro, .pdb (or .top for GROMACS)")
    g.add_argument("--forces", help="(frames, atoms, 3) force array: .npy, or .h5/.npz with a 'forces' dataset")
    g.add_argument("--force-unit", default="kJ/mol/nm", choices=FORCE_UNIT_NAMES,
                   help="unit of the --forces array (TRR files are always kJ/mol/nm)")
    g.add_argument("--masses", help="per-atom masses (dalton), .npy or text, overriding the topology's; required "
                                    "with a .pdb/.gro topology (masses are never taken from elements) unless the "
                                    "trajectory is a ForceReporter file, which records the System's masses")
    g.add_argument("--timestep-ps", type=positive_float,
                   help="time between saved frames (ps) for formats that store no times (DCD, PDB, XYZ: required "
                        "there), or whose times are all equal")
    g.add_argument("--temperature", type=positive_float, metavar="K",
                   help="the AA data's temperature, recorded in the dataset as the default of CG MD (an aa-run "
                        "directory, a ForceReporter file or --mdp bring their own)")
    g.add_argument("--mdp", help="the GROMACS .mdp of the run: its ref_t is the data's temperature")
    o = p.add_argument_group("mapping and output")
    o.add_argument("--mapping", default=None,
                   help="mapping spec YAML (required unless --system names a registered system)")
    o.add_argument("--system", default=None, metavar="NAME",
                   help="a registered system (e.g. des) whose mapping to use when --mapping is not given")
    o.add_argument("--out", required=True, help="output CG dataset (.h5)")
    o.add_argument("--stride", type=positive_int, default=1, help="keep every STRIDE-th frame")
    o.add_argument("--max-frames", type=positive_int, help="keep at most this many frames (after stride)")
    o.add_argument("--no-unit-check", action="store_true",
                   help="skip the plausibility checks of force magnitudes and atom density")
    o.add_argument("--note", default="", help="free text stored in the dataset provenance")


def _cmd_map(args) -> int:
    """`cgkd map`: every input checked first, then read, mapped and written."""
    if bool(args.run_dir) == bool(args.trajectory):
        raise UsageError("give exactly one of --run-dir or --trajectory (with --topology)")
    out = check_output_file(args.out, "--out", (".h5", ".hdf5"))
    if args.mapping and args.system:
        raise UsageError("give --mapping or --system, not both")
    if args.mapping:
        mapping = check_input_file(args.mapping, "mapping spec (--mapping)")
    elif args.system:
        from openmm_cgkd.systems import get_system

        mapping = get_system(args.system).file("mapping")
    else:
        raise UsageError("give the mapping spec (--mapping FILE.yaml; docs/own_system.md shows how to write one), "
                         "or --system NAME for a registered system's")
    if args.run_dir:
        if not Path(args.run_dir).is_dir():
            raise MissingFileError(f"--run-dir {args.run_dir}: no such directory")
        for opt in ("topology", "forces", "masses", "timestep_ps", "mdp"):
            if getattr(args, opt) is not None:
                raise UsageError(f"--{opt.replace('_', '-')} goes with --trajectory; an aa-run directory brings "
                                 "its own topology, forces, masses and times")
        if args.force_unit != "kJ/mol/nm":
            raise UsageError("--force-unit goes with --forces; an aa-run directory holds kJ/mol/nm")
    else:
        if not args.topology:
            raise UsageError("--trajectory needs --topology (.gro, .pdb or .top)")
        check_input_file(args.trajectory, "trajectory (--trajectory)")
        check_input_file(args.topology, "topology (--topology)")
        if args.forces:
            check_input_file(args.forces, "force array (--forces)")
        elif args.force_unit != "kJ/mol/nm":
            raise UsageError("--force-unit is the unit of a --forces array; TRR files are always kJ/mol/nm")
        if args.masses:
            check_input_file(args.masses, "masses (--masses)")
        if args.mdp:
            check_input_file(args.mdp, "GROMACS run parameters (--mdp)")

    from openmm_cgkd.data import external
    from openmm_cgkd.data.mapping import MappingSpec, map_trajectory

    spec = MappingSpec.from_yaml(mapping)
    if args.run_dir:
        aa = external.load_run(args.run_dir, check_units=not args.no_unit_check)
    else:
        masses = external.read_masses(args.masses) if args.masses else None
        aa = external.load_trajectory(args.trajectory, args.topology, forces=args.forces, force_unit=args.force_unit,
                                      masses=masses, timestep_ps=args.timestep_ps, check_units=not args.no_unit_check,
                                      mdp=args.mdp)
    extra = {"note": args.note} if args.note else {}
    ds = map_trajectory(aa, spec, stride=args.stride, max_frames=args.max_frames, provenance=extra,
                        temperature_K=args.temperature)
    ds.save(out)
    if ds.temperature_K is None:
        print("warning: the data's temperature is unknown (not recorded in the input): pass --temperature K (or "
              "--mdp), else every MD command will ask for it", file=sys.stderr)
    print(json.dumps({"out": str(out), "frames": ds.n_frames, "beads": ds.n_beads, "types": ds.type_counts(),
                      "bonds": ds.topology.n_bonds, "molecules": ds.topology.n_molecules, "periodic": ds.periodic,
                      "time_ps": [float(ds.times[0]), float(ds.times[-1])], "temperature_K": ds.temperature_K}))
    return 0


def _cmd_start_structure(args) -> int:
    """`cgkd start-structure`: one frame of a CG dataset as a bead PDB (CRYST1 = its box; none
    for non-periodic data; CONECT = its bonds)."""
    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.topology import dataset_topology, write_bead_pdb

    out = check_output_file(args.out, "--out", (".pdb",))
    ds = CGDataset.load(check_input_file(args.dataset, "CG dataset (--dataset)"))
    frame = args.frame if args.frame >= 0 else ds.n_frames + args.frame
    if not 0 <= frame < ds.n_frames:
        raise UsageError(f"--frame {args.frame}: the dataset has frames 0..{ds.n_frames - 1}")
    box = ds.boxes[frame] if ds.periodic else None
    write_bead_pdb(out, dataset_topology(ds, frame), ds.positions[frame], box)
    t = "unknown (give --temperature to cgkd simulate)" if ds.temperature_K is None else f"{ds.temperature_K:g} K"
    print(f"wrote {out}: frame {frame} (t = {ds.times[frame]:g} ps) of {args.dataset}, {ds.n_beads} beads; "
          f"{'' if ds.periodic else 'no periodic box, '}{ds.topology.n_bonds} bonds; data temperature {t}")
    return 0


def register(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    # ------------------------------------------------------------------ aa-build
    p = sub.add_parser(
        "aa-build", formatter_class=fmt,
        help="pack an AA box (packmol) at the system's density and minimise it, or minimise a given structure",
        description="Pack the molecules of a system definition into its cubic box with packmol (random,\n"
                    "non-overlapping, 2 A tolerance), minimise the energy (L-BFGS, OPLS-DES, PME) and write a\n"
                    "PDB whose CRYST1 record is the box. Smaller boxes at the same density: --molecules/--scale.\n"
                    "A system given by OpenMM XML files or a GROMACS .top with its structure is not packed:\n"
                    "its structure is minimised and written.\n\n"
                    "example:  cgkd aa-build --molecules 252 --out runs/des252/built.pdb")
    _add_system_args(p)
    p.add_argument("--out", required=True, help="output PDB (positions in the system's atom order)")
    p.add_argument("--seed", type=int, default=1, help="packmol random seed (default 1)")
    p.add_argument("--max-iterations", type=nonnegative_int, default=0,
                   help="minimiser iteration cap (0 = until converged)")
    add_platform_argument(p)
    p.add_argument("--threads", type=positive_int,
                   help="CPU threads of the minimiser (default 1: the same --seed then gives the same box, bit for "
                        "bit; more threads are not reproducible)")
    p.set_defaults(func=_cmd_build)

    # ------------------------------------------------------------------ aa-run
    p = sub.add_parser(
        "aa-run", formatter_class=fmt, help="resumable AA MD: anneal, NVT equilibration, production with forces",
        description="Run (or resume) all-atom MD of a system definition in RUN_DIR:\n"
                    "  optional anneal (linear cool-down from --anneal-temperature), NVT equilibration, then NVT\n"
                    "  production that saves positions (nm), total atomic forces (kJ/mol/nm), box (nm), potential\n"
                    "  energy (kJ/mol) and time (ps) every --frame-interval-ps to RUN_DIR/frames/*.h5, and\n"
                    "  RUN_DIR/production.h5 when done.\n"
                    "Kill it at any time and rerun the SAME command: it continues from the last checkpoint with\n"
                    "no frame lost or duplicated (a larger --production-ps extends a finished run).\n"
                    "Without --structure a new run packs and minimises its own box (RUN_DIR/built.pdb).\n"
                    "Exit code 0 when production is complete.\n\n"
                    "example:  cgkd aa-run --molecules 252 --run-dir runs/des252 --anneal-ps 20 \\\n"
                    "              --equilibration-ps 100 --production-ps 250 --frame-interval-ps 0.5")
    _add_system_args(p)
    p.add_argument("--run-dir", required=True, help="directory holding the run's checkpoints and frames")
    p.add_argument("--structure", help="starting PDB from `cgkd aa-build` (new runs only; default: RUN_DIR/built.pdb, "
                                       "packed or minimised from the system definition's structure)")
    g = p.add_argument_group("protocol")
    g.add_argument("--temperature", type=positive_float, help="K (default: the system file's, 298.1 for reline)")
    g.add_argument("--thermostat", choices=["langevin", "nose-hoover"], default="langevin",
                   help="LangevinMiddle (default) or Nose-Hoover chain")
    g.add_argument("--friction", type=positive_float, help="Langevin friction / Nose-Hoover collision frequency, 1/ps")
    g.add_argument("--timestep", type=positive_float, metavar="FS", help="time step, fs (default: the system file's)")
    g.add_argument("--hydrogen-mass", type=positive_float, metavar="DA",
                   help="repartition hydrogen masses to DA dalton (from the bonded heavy atom) for the integrator "
                        "only, e.g. 3 with --timestep 4; the mapping still uses physical masses")
    g.add_argument("--mapping", help="map each part to beads during the run (RUN_DIR/cg/, small enough to keep in "
                                     "git; RUN_DIR/cg.h5 when done); default: the system file's mapping")
    g.add_argument("--no-mapping", action="store_true", help="do not map during the run")
    g.add_argument("--anneal-ps", type=nonnegative_float, default=0.0, help="anneal length, ps (0 = none)")
    g.add_argument("--anneal-temperature", type=positive_float, default=400.0, help="anneal start temperature, K")
    g.add_argument("--hot-ps", type=nonnegative_float, default=0.0,
                   help="hold at --anneal-temperature this long before the cool-down, ps (decorrelates a packing; 0 = none)")
    g.add_argument("--equilibration-ps", type=nonnegative_float, default=100.0,
                   help="NVT equilibration, ps (default 100)")
    g.add_argument("--production-ps", type=positive_float, default=500.0, help="production length, ps (default 500)")
    g.add_argument("--frame-interval-ps", type=positive_float, default=1.0,
                   help="time between saved frames, ps (default 1; at least one time step)")
    g.add_argument("--checkpoint-every", type=positive_int, default=10, metavar="FRAMES",
                   help="frames per part file / checkpoint (default 10)")
    g.add_argument("--seed", type=int, default=1, help="velocity / thermostat / packing seed")
    add_platform_argument(g)
    g.add_argument("--threads", type=positive_int, help="CPU platform threads (default: all cores)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_run)

    # ------------------------------------------------------------------ map
    p = sub.add_parser(
        "map", formatter_class=fmt, help="map AA positions/forces to a CG dataset (HDF5)",
        description="Map an all-atom trajectory WITH FORCES to coarse-grained beads and write a CG dataset\n"
                    "(openmm_cgkd.data.dataset format: float32 positions nm, forces kJ/mol/nm, boxes, times,\n"
                    "bead types, masses, AA potential energy, provenance).\n"
                    "  bead position = centre of mass of its atoms (molecule made whole across the box)\n"
                    "  bead force    = sum of its atoms' forces;  bead mass = sum of its atoms' masses\n\n"
                    "inputs (one of):\n"
                    "  --run-dir DIR                      an `cgkd aa-run` directory (partial runs too)\n"
                    "  --trajectory X.trr --topology T    GROMACS TRR with forces; T = .gro, .pdb or .top\n"
                    "  --trajectory X --topology T --forces F.npy\n"
                    "                                     any mdtraj-readable trajectory (dcd, xtc, h5, nc, pdb)\n"
                    "                                     plus a (frames, atoms, 3) force array\n\n"
                    "  --trajectory F.h5 --topology T     a file of openmm_cgkd.data.reporter.ForceReporter\n"
                    "                                     (your own OpenMM script) with the system's PDB\n\n"
                    "temperature: an aa-run's protocol, a ForceReporter file's thermostat, --mdp (ref_t) or\n"
                    "--temperature; it is the default temperature of CG MD with models trained on the data.\n\n"
                    "example:  cgkd map --run-dir runs/des252 --mapping systems/des/mapping.yaml --out des_cg.h5")
    _add_map_arguments(p)
    p.set_defaults(func=_cmd_map)

    # ------------------------------------------------------------------ start-structure
    p = sub.add_parser(
        "start-structure", formatter_class=fmt, help="write a frame of a CG dataset as a bead PDB (a start for MD)",
        description="Write frame K of a CG dataset as a bead PDB: one residue per bead, named as the mapping's\n"
                    "bead_names (the names the model bundle expects), CRYST1 = the frame's box. The start\n"
                    "structure of `cgkd simulate`.\n\n"
                    "example:  cgkd start-structure --dataset cg.h5 --frame -1 --out start.pdb")
    p.add_argument("--dataset", required=True, help="CG dataset (HDF5) from `cgkd map`")
    p.add_argument("--frame", type=int, default=0, help="frame index (negative: from the end; default 0)")
    p.add_argument("--out", required=True, help="output bead PDB")
    p.set_defaults(func=_cmd_start_structure)
