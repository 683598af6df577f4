"""The phi/psi analysis of the AA dipeptide run: the reference every CG model of it is scored against.

    uv run python systems/dipeptide/aa_report.py [--run-dir systems/dipeptide/aa] [--block-ps 1000]
                                                 [--replica-ps 5000] [--independent systems/dipeptide/aa_f]

Reads the run's committed mapped frames (:func:`openmm_cgkd.data.aamd.read_mapped`), takes phi
and psi and the basins from ``ramachandran.yaml`` (the system's ``ramachandran`` file) and writes

* ``systems/dipeptide/aa_report.json``: the frames and time used; the FES histogram (kT grid);
  basin populations +- standard errors from blocks of ``--block-ps`` ps (and the errors at other
  block lengths, to check they have reached their plateau); transitions between basin cores with
  their times; the FES score of the first half against the second (JS, TAE: the noise floor) and
  of blocks of ``--replica-ps`` (the length of a CG replica) against the other half;
* ``docs/figures/dipeptide_aa_fes.png`` (the AA FES with the basins) and
  ``docs/figures/dipeptide_aa_timeline.png`` (phi(t), psi(t) and the core last visited).

``--independent DIR`` scores a second, independent AA run of the same system (another seed; its
own mapped frames, the same bead positions) against the first: its FES score (JS, TAE) and its
basin populations against the first's in standard errors, written under ``independent_run``,
with ``docs/figures/dipeptide_aa_fes_independent.png`` (the two surfaces side by side). It is the
noise floor of an FES score between two runs of these lengths.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def main(argv=None) -> int:
    from openmm_cgkd.analysis.plots import plot_dihedral_timeline, plot_fes_panels
    from openmm_cgkd.analysis.ramachandran import RamachandranSpec, analyze_phi_psi, phi_psi
    from openmm_cgkd.data.aamd import read_mapped
    from openmm_cgkd.data.mapping import MappingSpec
    from openmm_cgkd.fileio import write_json
    from openmm_cgkd.systems import get_system

    system = get_system("dipeptide")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, default=system.file("aa_run", must_exist=False),
                   help="aa-run directory with mapped parts (default: systems/dipeptide/aa)")
    p.add_argument("--block-ps", type=float, default=1000.0,
                   help="block length of the standard errors (ps; default 1000, >> the ~20 ps correlation time of "
                        "the beta/alpha_R populations)")
    p.add_argument("--replica-ps", type=float, default=5000.0,
                   help="length of a CG replica (ps): the noise floor's blocks (default 5000)")
    p.add_argument("--source", default="",
                   help="where the frames came from (e.g. the commit of the run's mapped parts), recorded as is")
    p.add_argument("--independent", type=Path, default=None, metavar="DIR",
                   help="a second, independent aa-run directory of the system: scored against the first")
    p.add_argument("--out-json", type=Path, default=system.file("aa_report", must_exist=False))
    p.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    args = p.parse_args(argv)

    spec = RamachandranSpec.from_yaml(system.file("ramachandran"))
    # the system's mapping spec, not run.json's record of it: that record lacks allow_unmapped
    ds = read_mapped(args.run_dir, mapping=MappingSpec.from_yaml(system.file("mapping")))
    phi, psi = phi_psi(ds.positions, spec)
    res = analyze_phi_psi(phi, psi, ds.times, spec, args.block_ps, args.replica_ps)
    report = {"system": system.name, "source": args.source or "read_mapped(aa run): committed mapped frames",
              "temperature_K": ds.temperature_K, "phi_beads": spec.phi, "psi_beads": spec.psi,
              "end_ps": float(ds.times[-1]), **res.to_dict()}
    if args.independent is not None:
        report["independent_run"] = _independent(args.independent, res, spec, args)
    write_json(args.out_json, report)
    ns = res.span_ps / 1000.0
    plot_fes_panels({"AA": res.fes}, args.figures / "dipeptide_aa_fes.png", basins=spec.basins,
                    title=f"ACE-ALA-NME amber14/GBn2 300 K, {ns:.1f} ns")
    plot_dihedral_timeline(ds.times, phi, psi, args.figures / "dipeptide_aa_timeline.png", basins=spec.basins,
                           title=f"AA dipeptide, {ns:.1f} ns: {res.transitions.total} transitions between basin cores")
    print(f"{res.frames} frames, {ns:.2f} ns")
    for k, v in res.populations.items():
        scan = {f"{bp:g}": round(se, 4) for bp, se in res.se_by_block_ps[k].items()}
        print(f"  {v.name:22s} {v.fraction:.4f} +- {v.se:.4f}   "
              f"F {v.free_energy_kT:.2f} +- {v.free_energy_se_kT:.2f} kT"
              f"   mean dwell {'-' if res.dwell_ps[k] is None else round(res.dwell_ps[k], 1)} ps"
              f"   SE by block ps {json.dumps(scan)}")
    tr = res.transitions
    print(f"  transitions {tr.total}: " + ", ".join(
        f"{a}->{b} {int(tr.counts[i, j])}" for i, a in enumerate(tr.keys) for j, b in enumerate(tr.keys) if i != j))
    floor = res.noise_floor
    print(f"  noise floor halves: JS {floor.halves.js:.4f}, TAE {floor.halves.tae:.4f}"
          + (f"; {len(floor.blocks)} blocks of {args.replica_ps:g} ps vs other half: JS {floor.block_mean().js:.4f} "
             f"+- {floor.block_std().js:.4f}, TAE {floor.block_mean().tae:.4f} +- {floor.block_std().tae:.4f}"
             if floor.blocks else ""))
    return 0


def _independent(run_dir: Path, first, spec, args) -> dict:
    """The second run (its own recorded mapping: the same bead positions) against the first."""
    from openmm_cgkd.analysis.plots import plot_fes_panels
    from openmm_cgkd.analysis.ramachandran import analyze_phi_psi, compare_populations, fes_score, phi_psi
    from openmm_cgkd.data.aamd import read_mapped
    from openmm_cgkd.fileio import relative_path

    ds = read_mapped(run_dir)
    phi, psi = phi_psi(ds.positions, spec)
    second = analyze_phi_psi(phi, psi, ds.times, spec, args.block_ps, args.replica_ps)
    score = fes_score(second.fes, first.fes)
    diff = compare_populations(second.populations, first.populations)
    print(f"independent run {run_dir.name}: {second.frames} frames, {second.span_ps / 1000.0:.2f} ns; FES vs the "
          f"first: JS {score.js:.4f}, TAE {score.tae:.4f}")
    for k, d in diff.items():
        pop = second.populations[k]
        print(f"  {pop.name:22s} {pop.fraction:.4f} +- {pop.se:.4f}  (first {first.populations[k].fraction:.4f}; "
              f"difference {d.difference:+.4f}, z {'-' if d.z is None else f'{d.z:+.2f}'})")
    plot_fes_panels({f"AA {first.span_ps / 1000.0:.0f} ns": first.fes,
                     f"AA independent {second.span_ps / 1000.0:.0f} ns": second.fes},
                    args.figures / "dipeptide_aa_fes_independent.png", basins=spec.basins,
                    scores={f"AA independent {second.span_ps / 1000.0:.0f} ns": f"JS {score.js:.3f}, TAE {score.tae:.2f}"})
    return {"run_dir": relative_path(run_dir.resolve(), ROOT), "frames": second.frames,
            "span_ns": second.span_ps / 1000.0, "fes_score_vs_first": score.to_dict(),
            "populations": {k: v.to_dict() for k, v in second.populations.items()},
            "population_differences": {k: d.to_dict() for k, d in diff.items()},
            "transitions": second.transitions.to_dict()}


if __name__ == "__main__":
    raise SystemExit(main())
