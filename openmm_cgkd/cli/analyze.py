"""``cgkd analyze``: structural validation of CG replicas against an AA reference."""
from __future__ import annotations

import argparse
import json
import sys

from openmm_cgkd.cli.common import check_output_dir, nonnegative_int, positive_float, positive_int

__all__ = ["register", "run"]

EPILOG = """\
examples:
  cgkd analyze --trajectory rep1/traj.dcd rep2/traj.dcd --topology start.pdb \\
               --reference data/des_cg.h5 --energies rep1/log.csv rep2/log.csv --out analysis/
  cgkd analyze --trajectory run.dcd --topology start.pdb --reference aa_beads.dcd \\
               --reference-topology aa_beads.pdb --stride 2 --out analysis/

writes OUT/report.json (all numbers and curves), OUT/summary.md (tables) and PNG plots
(rdf.png, adf_<cutoff>.png, cdf.png, cdf_time.png, tae.png, energy.png). Exit status 0 on
success, 2 on bad usage or input (an argument, a missing or mismatched input file), 3 with
--strict when a replica is broken or clusters.
"""


def register(subparsers) -> None:
    # defaults are AnalysisSettings' (filled in by `run`: importing it here would slow `cgkd --help`)
    p = subparsers.add_parser(
        "analyze", help="RDF/ADF/CDF, TAEs, stability and equilibration of CG replicas vs an AA reference",
        description="Structural validation of one CG model: replicas (trajectories) against an AA reference "
                    "(CG dataset HDF5 or bead trajectory). Units: nm, degree, ps.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trajectory", "-t", nargs="+", required=True, metavar="FILE",
                   help="CG trajectories, one per replica of the model (DCD, or anything mdtraj loads)")
    p.add_argument("--topology", "-p", metavar="PDB", help="bead topology (PDB) of the CG trajectories")
    p.add_argument("--reference", "-r", required=True, metavar="FILE",
                   help="AA reference: CG dataset (HDF5) or a bead trajectory")
    p.add_argument("--reference-topology", metavar="PDB", help="topology of a reference trajectory (default: --topology)")
    p.add_argument("--energies", "-e", nargs="+", metavar="CSV",
                   help="MD logs (CSV), one per trajectory: equilibration detection, and with a temperature column "
                        "(cgkd simulate's log.csv) the temperature and energy-drift part of the stability verdict")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory")
    p.add_argument("--name", default="model", help="model name in the report")
    p.add_argument("--stride", type=positive_int, help="keep every N-th CG frame (default 1)")
    p.add_argument("--discard-frames", type=nonnegative_int,
                   help="equilibration discard: frames (after stride) dropped from the start of EVERY replica; "
                        "pymbar's estimate is reported beside it and a replica not equilibrated within it is flagged")
    p.add_argument("--reference-stride", type=positive_int, help="keep every N-th reference frame (default 1)")
    p.add_argument("--reference-max-frames", type=positive_int, help="use only the last N reference frames")
    p.add_argument("--rdf-r-max", type=positive_float, help="RDF range (nm; capped at half the box)")
    p.add_argument("--rdf-bin-width", type=positive_float, help="RDF bin width (nm)")
    p.add_argument("--rdf-mode", choices=("g", "density"),
                   help="RDF TAE of g(r) itself (default), or of unit-area g(r) curves")
    p.add_argument("--adf-cutoffs", type=positive_float, nargs="+", help="ADF neighbour cutoffs (nm; default: the end of the first shell, the first minimum after "
                        "the first peak, of every bead-type pair's reference g(r))")
    p.add_argument("--adf-bin-width", type=positive_float, help="ADF bin width (degree)")
    p.add_argument("--cdf-bin-width", type=positive_float, help="CDF bin width (nm)")
    p.add_argument("--blocks", type=positive_int, help="blocks of the time-resolved CDFs")
    p.add_argument("--drift-threshold", type=positive_float,
                   help="flag clustering when the mean merge distance shrinks by more than this fraction")
    p.add_argument("--thermostat-temperature", type=positive_float, metavar="K",
                   help="the replicas' thermostat temperature, against which the mean kinetic temperature of each "
                        "--energies log is judged (default: the run's fingerprint.json beside its log.csv)")
    p.add_argument("--no-plots", action="store_true", help="write JSON and Markdown only")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (never shown when stderr is no terminal)")
    p.add_argument("--strict", action="store_true", help="exit 3 when a replica is broken or clusters")
    p.set_defaults(func=run)


def _reference_and_contacts(args: argparse.Namespace, settings, report):
    """The reference check of the AA reference (None with a warning when it has too few frames)
    and the model's coordination below the AA's closest contact per pair."""
    import numpy as np

    from openmm_cgkd.analysis.contacts import contact_coordination
    from openmm_cgkd.analysis.distributions import AnalysisError, bead_type_indices
    from openmm_cgkd.analysis.reference_check import check_reference
    from openmm_cgkd.analysis.report import load_reference

    ref = load_reference(args.reference, args.reference_topology or args.topology, settings.reference_stride,
                         settings.reference_max_frames)
    try:
        check = check_reference(ref)
    except AnalysisError as exc:
        print(f"reference check: not made ({exc})")
        check = None
    coordination = {}
    if report.good_replicas and report.skipped is None:  # no box: no RDF, no coordination
        volume = float(np.mean(np.abs(np.linalg.det(np.asarray(ref.unitcell_vectors, dtype=np.float64)))))
        counts = {k: len(v) for k, v in bead_type_indices(ref.topology).items()}
        coordination = contact_coordination(report.mean["rdf"], report.reference["rdf"], volume, counts)
    return check, coordination


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from openmm_cgkd.analysis.contacts import contact_gate
    from openmm_cgkd.analysis.report import AnalysisSettings, analyze_model, write_report

    out = check_output_dir(args.out)
    given = {"rdf_r_max": args.rdf_r_max, "rdf_bin_width": args.rdf_bin_width, "rdf_mode": args.rdf_mode,
             "adf_cutoffs": None if args.adf_cutoffs is None else tuple(args.adf_cutoffs),
             "adf_bin_width": args.adf_bin_width, "cdf_bin_width": args.cdf_bin_width, "n_blocks": args.blocks,
             "drift_threshold": args.drift_threshold, "stride": args.stride, "discard_frames": args.discard_frames,
             "reference_stride": args.reference_stride, "reference_max_frames": args.reference_max_frames}
    settings = AnalysisSettings.from_dict({k: v for k, v in given.items() if v is not None})
    report = analyze_model(args.trajectory, args.reference, topology=args.topology,
                           reference_topology=args.reference_topology, energies=args.energies,
                           settings=settings, name=args.name, progress=not args.no_progress and sys.stderr.isatty(),
                           thermostat_K=args.thermostat_temperature)
    written = write_report(report, out, plots=not args.no_plots)
    check, coordination = _reference_and_contacts(args, settings, report)
    written["reference_check"] = out / "reference_check.json"
    written["reference_check"].write_text(json.dumps(None if check is None else check.to_dict(), indent=1) + "\n")
    print(f"{report.name}: {len(report.good_replicas)}/{len(report.replicas)} replica(s) analysed, "
          f"{report.n_failed} of {len(report.replicas)} failed")
    if report.skipped is not None:
        print(f"  RDF, ADF and CDF not computed: {report.skipped}")
    for key, stat in report.summary.items():
        if stat.n:
            spread = f" ± {stat.std:.3g}" if stat.n > 1 else ""
            print(f"  TAE {key:<10} {stat.mean:.4g}{spread}")
    for kind, m in (report.molecular or {}).items():
        for key, stat in m["tae"].items():
            if stat.n:
                print(f"  TAE {kind} {key}: {stat.mean:.4g}" + (f" ± {stat.std:.3g}" if stat.n > 1 else ""))
    for r in report.replicas:
        eq = "" if r.equilibration is None else (
            f", equilibrated from sample {r.equilibration.t0_index} (pymbar)"
            + ("" if r.equilibrated_within_discard else ": NOT within the discard"))
        flags = [sp for sp, dr in r.stability.drift.items() if dr.flagged]
        state = f"FAILED ({r.failure})" if r.failed else ("stable" if r.stability.stable else
                                                          "clustering: " + ", ".join(flags) if flags else "broken frames")
        print(f"  {r.name}: frames {r.start_frame}-{r.stop_frame - 1} used{eq}; {state}")
    if check is not None:
        print(f"reference check: {check.verdict}")
    if coordination:
        gate = contact_gate(coordination)
        print("below the AA's closest contact (neighbours per bead, model vs AA): " + ", ".join(
            f"{k} {c.model_per_a:.4f} vs {c.reference_per_a:.4f}" for k, c in coordination.items())
              + f"; contact gate: {'pass' if gate.passed else 'FAIL (' + '; '.join(gate.failed) + ')'}")
    print(f"wrote {written['json']}, {written['markdown']}, {written['reference_check'].name}"
          + (f" and {sum(k.endswith('_png') for k in written)} PNG plots" if not args.no_plots else "")
          + f" in {Path(args.out)}")
    return 3 if args.strict and not report.stable else 0
