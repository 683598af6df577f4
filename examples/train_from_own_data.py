"""Train K teachers and a distilled student from your own all-atom data, with the Python API.

What it does (the method of docs/METHOD.md section 2, one stage per call):

1. **CG dataset**: maps your AA trajectory with forces to beads (``--trajectory``, ``--topology``,
   ``--mapping``, and ``--forces`` unless the trajectory is a GROMACS TRR with forces), or reads an
   already mapped CGDataset (``--dataset``). With neither, it samples a small SYNTHETIC stand-in
   (two bead types, Lennard-Jones pairs, noisy force labels; ``openmm_cgkd.training.synthetic``)
   so the script runs anywhere -- replace it with your data;
2. **teachers**: ``train_teachers`` trains ``--members`` networks (seeds 0..K-1) on the mapped
   forces, fits the repulsive wall, writes one bundle per member and the ensemble bundle;
3. **labels**: ``make_labels`` stores the ensemble's forces, per-bead and system energies for
   every frame in a labelled copy of the dataset;
4. **student**: ``train_student`` trains one network on {e_T, F_T, F_AA} (variant
   ``ensemble-e-ft-faa``, the paper's best recipe) and writes its bundle.

Every stage resumes from its checkpoints when rerun. The bundles are what ``CGKDForceField``,
``cgkd simulate`` and ``examples/build_and_run_md.py --bundle`` take.

Run time on CPU (2 cores, shared): about 1-2 minutes with the defaults (synthetic stand-in of 60
frames, 2 teachers, tiny graph-network, 2 epochs each): numbers from such a run are a smoke test,
not a model. For real data use the architecture configs in ``openmm_cgkd/model/configs`` and
``--epochs`` in the hundreds, on a GPU.

    uv run python examples/train_from_own_data.py                      # synthetic stand-in
    uv run python examples/train_from_own_data.py --trajectory md.trr --topology topol.top \\
        --mapping my_mapping.yaml --members 8 --epochs 200 --architecture tensornet --out runs/mine
    uv run python examples/train_from_own_data.py --dataset runs/des252/cg.h5 --members 8 --epochs 200

Units: nm, ps, kJ/mol, kJ/mol/nm, dalton.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def make_dataset(args: argparse.Namespace, out: Path) -> Path:
    """Path of the CG dataset (HDF5) to train on: mapped, given, or a synthetic stand-in."""
    if args.dataset:
        return Path(args.dataset)
    path = out / "cg.h5"
    if args.trajectory:
        from openmm_cgkd.data.external import load_trajectory, read_masses
        from openmm_cgkd.data.mapping import MappingSpec, map_trajectory

        if not (args.topology and args.mapping):
            raise SystemExit("--trajectory needs --topology and --mapping")
        aa = load_trajectory(args.trajectory, args.topology, forces=args.forces, force_unit=args.force_unit,
                             timestep_ps=args.timestep_ps, masses=read_masses(args.masses) if args.masses else None)
        dataset = map_trajectory(aa, MappingSpec.from_yaml(args.mapping), temperature_K=args.temperature)
        print(f"mapped {args.trajectory}: {dataset.n_frames} frames of {dataset.n_beads} beads")
    else:
        from openmm_cgkd.training.synthetic import make_synthetic_system

        print("no data given: sampling a SYNTHETIC stand-in (2 bead types, noisy LJ forces)")
        dataset = make_synthetic_system(n_beads=(24, 24), box_nm=1.9, n_frames=args.synthetic_frames,
                                        equilibration_steps=500, steps_per_frame=20, seed=args.seed).dataset
    dataset.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("data (default: a synthetic stand-in)")
    src.add_argument("--dataset", default=None, help="an already mapped CG dataset (HDF5, `cgkd map` output)")
    src.add_argument("--trajectory", default=None, help="AA trajectory (GROMACS TRR with forces, or any mdtraj format)")
    src.add_argument("--topology", default=None, help="AA topology (.gro, .pdb, .top)")
    src.add_argument("--forces", default=None, help="force array (.npy/.npz/.h5) when the trajectory has none")
    src.add_argument("--force-unit", default="kJ/mol/nm", help="unit of --forces (default kJ/mol/nm)")
    src.add_argument("--masses", default=None,
                     help="per-atom masses (dalton, .npy or text): required with a .gro/.pdb topology (never elements)")
    src.add_argument("--mapping", default=None, help="mapping YAML (see systems/des/mapping.yaml)")
    src.add_argument("--timestep-ps", type=float, default=None,
                     help="ps between saved frames, for formats that store no times (DCD, PDB)")
    src.add_argument("--temperature", type=float, default=None,
                     help="K, the AA run's temperature (recorded in the dataset and the bundles)")
    src.add_argument("--synthetic-frames", type=int, default=60, help="frames of the synthetic stand-in (default 60)")
    p.add_argument("--members", type=int, default=2, help="teachers K (default 2; the paper uses 8)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per network (default 2: a smoke test)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--architecture", default="graph-network", help="graph-network, tensornet, equivariant-transformer")
    p.add_argument("--embedding-dim", type=int, default=16)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--cutoff", type=float, default=0.8, help="network cutoff in nm (default 0.8; box >= 2x)")
    p.add_argument("--variant", default="ensemble-e-ft-faa", help="student variant (default: {e_T, F_T, F_AA})")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/examples/train"), help="output directory")
    args = p.parse_args(argv)

    from openmm_cgkd.training.config import LabelsConfig, StudentConfig, TeachersConfig, TrainerConfig
    from openmm_cgkd.training.labels import make_labels
    from openmm_cgkd.training.students import train_student
    from openmm_cgkd.training.teachers import train_teachers

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    dataset = make_dataset(args, out)
    model = {"architecture": args.architecture, "embedding_dim": args.embedding_dim, "num_layers": args.layers,
             "num_rbf": 16, "rbf_type": "gauss", "cutoff_nm": args.cutoff}

    def trainer() -> TrainerConfig:
        return TrainerConfig(max_epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                             accelerator="auto", num_threads=args.threads, progress_bar=False)

    teachers = train_teachers(TeachersConfig(dataset=str(dataset), out=str(out / "teachers"), model=model,
                                             members=args.members, parallel=1, trainer=trainer()))
    print(f"teachers: ensemble bundle {teachers.ensemble_bundle}; member bundles in {teachers.out / 'members'}")
    labelled = make_labels(LabelsConfig(dataset=str(dataset), teachers=str(teachers.ensemble_bundle),
                                        out=str(out / "labelled.h5")))
    print(f"labels: {labelled}")
    student = train_student(StudentConfig(dataset=str(labelled), out=str(out / "student"), variant=args.variant,
                                          trainer=trainer()))
    print(f"student ({student.variant}): bundle {student.bundle}")
    summary = {"dataset": str(dataset), "ensemble_bundle": str(teachers.ensemble_bundle),
               "member_bundles": [str(b) for b in teachers.member_bundles], "labelled_dataset": str(labelled),
               "student_bundle": str(student.bundle), "teacher_test_metrics": teachers.metrics.get("ensemble", {}),
               "student_test_metrics": student.metrics.get("student", {})}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"wrote {out / 'summary.json'}")
    print(f"next: python examples/build_and_run_md.py --bundle {student.bundle} --structure <your bead PDB>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
