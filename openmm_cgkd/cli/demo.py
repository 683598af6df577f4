"""``cgkd demo``: the main job. Run the default model on the shipped DES system and print ns/day.

The model is the first of these that exists:

1. ``--bundle`` if given;
2. ``models/des-student``: the shipped trained student (see its ``MODEL_CARD.md``);
3. ``models/untrained-demo``: an UNTRAINED graph network (random weights, placeholder wall),
   built on first use by :func:`build_demo_bundle` (``models/build_untrained.py`` does the same).

With the trained student and the shipped AA dataset (``systems/des/reline_252_cg.h5``: 252
molecules of reline mapped to beads), the run starts from the dataset's first equilibrated frame
(pymbar's t0 on the AA potential energy; frame 0 when the dataset has no energies) and ends with
the structural TAEs (RDF, ADF, CDF) of the CG trajectory against the equilibrated frames of that
AA reference, and ns/day.
Without them (or with ``--structure``), the system is ``systems/des/cg_start.pdb``: reline as
250 Cho, 250 Cl and 500 Urea beads in the paper's 4.484 nm box, and only ns/day is reported.
Outputs go to ``runs/demo``. Models and files are found through :mod:`openmm_cgkd.resources` and
the system registry (:mod:`openmm_cgkd.systems`, system ``des``): the demo needs the repository
checkout (or ``$CGKD_MODELS_DIR`` / ``$CGKD_SYSTEMS_DIR``) and says so without it.

``--system NAME`` runs another registered system that ships a student (``models/<NAME>-student``;
a one-line error when it is not there): from its ``cg_start`` structure at the bundle's training
temperature and the bundle's checked time step (``timestep_fs`` in its manifest, else 2 fs), 50 ps
with a frame every 0.1 ps by default. A peptide-like system with a
``ramachandran`` spec and an ``aa_report`` (the AA run's phi/psi analysis, e.g.
``systems/dipeptide/aa_report.json``) is then scored by its phi/psi free energy against that AA
report (JS, TAE, basin populations, transitions; the first 10 % of the frames are discarded);
ns/day is printed in every case.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from openmm_cgkd.cli.simulate import add_md_arguments, check_md_arguments, run_md
from openmm_cgkd.errors import MissingFileError

__all__ = ["register", "build_demo_bundle", "default_structure", "default_reference", "TRAINED_DEFAULT",
           "UNTRAINED_DEFAULT", "DEMO_SYSTEM"]

TRAINED_DEFAULT = "des-student"
UNTRAINED_DEFAULT = "untrained-demo"
DEMO_SYSTEM = "des"  # the registered system the demo runs (openmm_cgkd.systems)
DES_TEMPERATURE_K = 298.1  # the temperature of the DES AA data (systems/des/system.yaml); shipped bundles predate
# the manifest's temperature_K, so the demo names it


def default_structure() -> Path:
    """The demo's start structure without the trained model: the demo system's ``cg_start`` file."""
    from openmm_cgkd.systems import get_system

    return get_system(DEMO_SYSTEM).file("cg_start", must_exist=False)


def default_reference() -> Path:
    """The AA reference (a CG dataset) of the demo system: its ``reference`` file."""
    from openmm_cgkd.systems import get_system

    return get_system(DEMO_SYSTEM).file("reference", must_exist=False)


def build_demo_bundle(path: str | Path, overwrite: bool = False, seed: int = 0) -> Path:
    """The untrained demo bundle: graph network (32 features, 2 layers, Gaussian RBFs, 0.6 nm
    cutoff: cheap enough for a CPU), DES bead types, placeholder wall; random weights (``seed``)."""
    from openmm_cgkd.bundle import build_untrained_bundle, untrained_config

    cfg = untrained_config("graph-network", cutoff_nm=0.6, rbf_type="gauss")
    return build_untrained_bundle(path, cfg, seed=seed, overwrite=overwrite)


def _choose_bundle(requested: str | None) -> str | Path:
    from openmm_cgkd.resources import models_dir

    if requested:
        return requested
    trained = models_dir() / TRAINED_DEFAULT
    if trained.is_dir():
        return trained
    untrained = models_dir() / UNTRAINED_DEFAULT
    if not untrained.is_dir():
        print(f"no trained model: {trained} is missing; building the UNTRAINED demo bundle {untrained} "
              "(random weights, seed 0; takes a few seconds) ...", flush=True)
        build_demo_bundle(untrained)
    return untrained


def _start_from_reference(reference: Path, out: Path) -> tuple[Path, tuple[int, int]]:
    """Write the first equilibrated frame of the AA CG dataset ``reference`` (pymbar's t0 on its AA
    potential energy; 0 when it holds none) as a bead PDB in ``out``; returns the PDB and (that
    frame, the number of frames)."""
    from openmm_cgkd.analysis.equilibration import detect_equilibration
    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.topology import bead_topology, write_bead_pdb

    ds = CGDataset.load(reference)
    first = 0 if ds.potential_energy is None else int(detect_equilibration(ds.potential_energy, ds.times).t0_index)
    names = [ds.type_names[t] for t in ds.bead_types]
    pdb = write_bead_pdb(out / "start.pdb", bead_topology(names, ds.boxes[first]), ds.positions[first],
                         ds.boxes[first])
    return pdb, (first, ds.n_frames)


REFERENCE_STRIDE = 4  # every 4th AA frame is enough for a one-replica demo
MIN_TAE_FRAMES = 20  # fewer CG frames than this: no structural TAEs or stability verdict (noise)
DEFAULT_OUT = Path("runs/demo")


def _print_taes(trajectory: str, topology: Path, reference: Path, window: tuple[int, int], out: Path) -> None:
    """Structural TAEs of the demo trajectory against the AA reference frames ``window`` = (first,
    number of frames) (report in out/analysis)."""
    from openmm_cgkd.analysis.adf import DES_ADF_CUTOFFS
    from openmm_cgkd.analysis.report import AnalysisSettings, analyze_model, write_report

    first, n_frames = window
    kept = len(range(0, n_frames, REFERENCE_STRIDE)) - len(range(0, first, REFERENCE_STRIDE))
    settings = AnalysisSettings(reference_stride=REFERENCE_STRIDE, reference_max_frames=kept, n_blocks=2,
                                adf_cutoffs=DES_ADF_CUTOFFS)
    report = analyze_model([trajectory], reference, topology=str(topology), settings=settings, name="demo")
    write_report(report, out / "analysis")
    print("structure vs the AA reference (total absolute error, lower is better; one short replica):")
    for kind in ("rdf", "adf", "cdf"):
        if kind in report.summary:
            print(f"  {kind.upper()} TAE {report.summary[kind].mean:.3f}  (mean over "
                  f"{len(report.tae.get(kind, {}))} {'pairs' if kind == 'rdf' else 'curves'})")
    print(f"  stable: {'yes' if report.stable else 'NO'}; plots and numbers in {out / 'analysis'}")


SYSTEM_PS = 50.0  # --system other than des: the run's length (ps) at the bundle's time step
SYSTEM_FRAME_PS = 0.1  # and its frame interval (ps)
SYSTEM_DISCARD_FRACTION = 0.1  # of the frames, before the phi/psi score


def _demo(args: argparse.Namespace) -> int:
    from openmm_cgkd.runlock import hold_run_dir

    if args.system != DEMO_SYSTEM:
        return _system_demo(args)
    if args.steps is None:
        args.steps = 2500
    if args.report_interval is None:
        args.report_interval = 25
    if args.temperature is None:
        args.temperature = DES_TEMPERATURE_K
    check_md_arguments(args)
    if args.out == DEFAULT_OUT and not args.resume:
        args.overwrite = True  # the default demo directory is scratch: each demo replaces the last
    with hold_run_dir(args.out, "cgkd demo"):
        return _run_demo(args)


def _run_demo(args: argparse.Namespace) -> int:
    from openmm_cgkd.serving.forcefield import CGKDForceField

    ff = CGKDForceField(_choose_bundle(args.bundle))
    reference = window = None
    if args.structure is None:
        if not ff.is_untrained and default_reference().is_file():
            reference = default_reference()
            args.out.mkdir(parents=True, exist_ok=True)
            args.structure, window = _start_from_reference(reference, args.out)
        else:
            args.structure = default_structure()
    if not args.structure.is_file():
        raise MissingFileError(f"demo structure not found: {args.structure} (regenerate it with "
                                f"`uv run python {args.structure.parent / 'make_cg_start.py'}`)")
    print("cgkd demo: CG molecular dynamics of reline (choline chloride : urea 1:2)")
    print(f"model: {ff.describe()}")
    if window is not None:
        print(f"start: frame {window[0]} of {reference.name}, its first equilibrated frame (pymbar on the AA "
              f"potential energy); scored against its frames {window[0]}-{window[1] - 1}")
    if ff.is_untrained:
        print("NOTE: this model is UNTRAINED (random network weights, placeholder wall). The run shows the "
              "machinery (bundle -> OpenMM System -> MD -> DCD/CSV) and its speed; its trajectory is not "
              "physical. Trained bundles come from the training pipeline (`cgkd pipeline`).")
    result = run_md(ff, args.structure, args, description="demo")
    frames = result.final_step // args.report_interval + 1
    if reference is not None and not args.no_analysis and frames < MIN_TAE_FRAMES:
        print(f"structure vs the AA reference: not scored ({frames} frames; the TAEs and the stability verdict "
              f"need at least {MIN_TAE_FRAMES}: more --steps or a shorter --report-interval)")
    elif reference is not None and not args.no_analysis:
        _print_taes(result.trajectory, args.structure, reference, window, args.out)
    print(f"speed: {result.ns_per_day:.3f} ns/day ({result.platform}, {result.steps_run} steps of "
          f"{args.timestep} fs)")
    return 0


def _system_demo(args: argparse.Namespace) -> int:
    """``--system NAME``: the system's shipped student from its start structure; its phi/psi score
    against the system's AA report when it has a Ramachandran spec and one; ns/day."""
    from openmm_cgkd.resources import models_dir
    from openmm_cgkd.runlock import hold_run_dir
    from openmm_cgkd.serving.forcefield import CGKDForceField
    from openmm_cgkd.systems import get_system

    system = get_system(args.system)
    bundle = args.bundle
    if bundle is None:
        shipped = models_dir() / f"{system.name}-student"
        if not shipped.is_dir():
            raise MissingFileError(f"no shipped student for system {system.name}: {shipped} is not there (ship one "
                                   f"from a finished study with `uv run python models/ship_from_pipeline.py RUN --prefix "
                                   f"{system.name}`, or give --bundle)")
        bundle = shipped
    if args.structure is None:
        args.structure = system.file("cg_start")
    if args.out == DEFAULT_OUT and not args.resume:
        args.overwrite = True
    ff = CGKDForceField(bundle)
    dt_fs = ff.md_timestep_fs(args.timestep)  # the bundle's checked step unless --timestep
    if args.steps is None:
        args.steps = max(1, round(SYSTEM_PS * 1000.0 / dt_fs))
    if args.report_interval is None:
        args.report_interval = max(1, round(SYSTEM_FRAME_PS * 1000.0 / dt_fs))
    check_md_arguments(args)
    with hold_run_dir(args.out, "cgkd demo"):
        print(f"cgkd demo: CG molecular dynamics of {system.name} ({system.spec.description})")
        print(f"model: {ff.describe()}")
        if ff.is_untrained:
            print("NOTE: this model is UNTRAINED (random network weights): the run shows the machinery and its "
                  "speed; its trajectory is not physical.")
        result = run_md(ff, args.structure, args, description="demo")
        if not args.no_analysis:
            _print_phi_psi(system, result, args)
        print(f"speed: {result.ns_per_day:.3f} ns/day ({result.platform}, {result.steps_run} steps of "
              f"{args.timestep} fs)")
    return 0


def _print_phi_psi(system, result, args: argparse.Namespace) -> None:
    """The run's phi/psi against the system's AA report (when the system has a ``ramachandran``
    spec and an ``aa_report``); writes OUT/analysis/ramachandran.json and fes.png."""
    import json

    from openmm_cgkd.analysis.phipsi import model_phi_psi, reference_from_dict, trajectory_phi_psi
    from openmm_cgkd.analysis.plots import plot_fes_panels
    from openmm_cgkd.analysis.ramachandran import RamachandranSpec
    from openmm_cgkd.analysis.report import load_trajectory
    from openmm_cgkd.fileio import write_json

    files = system.spec.files
    if "ramachandran" not in files or "aa_report" not in files:
        print(f"no phi/psi score: system {system.name} names no ramachandran spec and AA report")
        return
    report_path = system.file("aa_report", must_exist=False)
    if not report_path.is_file():
        print(f"no phi/psi score: the AA report {report_path} is not there")
        return
    spec = RamachandranSpec.from_yaml(system.file("ramachandran"))
    reference = reference_from_dict(json.loads(report_path.read_text()), spec)
    traj = load_trajectory(result.trajectory, args.structure)
    start = int(traj.n_frames * SYSTEM_DISCARD_FRACTION)
    frame_ps = args.report_interval * args.timestep / 1000.0
    if traj.n_frames - start < 4:
        print(f"no phi/psi score: {traj.n_frames} frames (at least 5 are needed: more --steps)")
        return
    series = trajectory_phi_psi(traj[start:], spec, frame_ps, start * frame_ps)
    model = model_phi_psi("demo", {"run": series}, reference, spec)
    out = args.out / "analysis"
    write_json(out / "ramachandran.json", {"units": {"angle": "degree", "time": "ps", "free_energy": "kT"},
                                           "spec": spec.to_dict(), "reference": str(report_path.name),
                                           "model": model.to_dict(fes=True)})
    plot_fes_panels({"AA": reference.fes, "demo": model.fes}, out / "fes.png", basins=spec.basins,
                    scores={"demo": f"JS {model.js.mean:.3f}, TAE {model.tae.mean:.2f}"})
    print(f"phi/psi vs the AA ({report_path.name}, {reference.span_ns:.3g} ns), {series.span_ps:.3g} ps after a "
          f"{start * frame_ps:.3g} ps discard (one short run: expect more than a long one):")
    print(f"  FES score: JS {model.js.mean:.4f} nats, TAE {model.tae.mean:.3f}")
    floor = reference.noise_floor
    if floor and floor.get("n_blocks"):
        print(f"  the AA against itself: {floor['block_ps']:g} ps blocks vs the other half JS "
              f"{floor['block_mean']['js']:.4f}, TAE {floor['block_mean']['tae']:.3f}; halves JS "
              f"{floor['halves']['js']:.4f}, TAE {floor['halves']['tae']:.3f}")
    for k, p in model.populations.items():
        ref = reference.populations[k]
        print(f"  {p.name:24s} {p.fraction:.3f} (AA {ref.fraction:.3f} +- {ref.se:.3f})")
    print(f"  transitions between basin cores: {model.replicas[0].transitions} "
          f"({model.transitions_per_ns.mean:.3g} per ns); plots and numbers in {out}")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="the main job: short MD of the DES system with the default model; prints ns/day",
        description="Run a short Langevin MD of reline with the default model bundle "
                    f"(models/{TRAINED_DEFAULT} when shipped, else the UNTRAINED models/{UNTRAINED_DEFAULT}, "
                    "built on first use); with the trained model, start from the shipped AA dataset and print "
                    "the structural TAEs against it; print the speed in ns/day.")
    p.add_argument("--bundle", default=None, help="use this bundle (path or shipped name) instead of the default")
    p.add_argument("--structure", type=Path, default=None,
                   help="bead PDB to start from (default: the first equilibrated frame of "
                        "systems/des/reline_252_cg.h5 with the "
                        "trained model, else systems/des/cg_start.pdb)")
    p.add_argument("--system", default=DEMO_SYSTEM, metavar="NAME",
                   help="a registered system (a folder of the systems directory) whose student is shipped as "
                        "NAME-student in the models directory, e.g. dipeptide: its start structure, its phi/psi score "
                        f"against its AA report when it has one (default {DEMO_SYSTEM})")
    p.add_argument("--no-analysis", action="store_true", help="skip the structural TAEs against the AA reference")
    add_md_arguments(p, steps=2500, out=str(DEFAULT_OUT), report_interval=25,
                     temperature=DES_TEMPERATURE_K)
    # per system: the DES 2500 steps, a frame every 25, 298.1 K; others SYSTEM_PS and SYSTEM_FRAME_PS at the
    # bundle's time step, and its training temperature (filled in by _demo)
    p.set_defaults(func=_demo, steps=None, report_interval=None, temperature=None)


if __name__ == "__main__":  # pragma: no cover
    from openmm_cgkd.cli.main import main

    sys.exit(main(["demo", *sys.argv[1:]]))
