"""The phi/psi analysis of the AA dipeptide run: the reference every CG model of it is scored against.

    uv run python systems/dipeptide/aa_report.py [--run-dir systems/dipeptide/aa] [--block-ps 2000]
                                                 [--replica-ps 10000]

Reads the run's committed mapped frames (:func:`openmm_cgkd.data.aamd.read_mapped`), takes phi
and psi and the basins from ``ramachandran.yaml`` (the system's ``ramachandran`` file) and writes

* ``systems/dipeptide/aa_report.json``: the frames and time used; the FES histogram (kT grid);
  basin populations +- standard errors from blocks of ``--block-ps`` ps (and the errors at other
  block lengths, to check they have reached their plateau); transitions between basin cores with
  their times; the FES score of the first half against the second (JS, TAE: the noise floor) and
  of blocks of ``--replica-ps`` (the length of a CG replica) against the other half;
* ``docs/figures/dipeptide_aa_fes.png`` (the AA FES with the basins) and
  ``docs/figures/dipeptide_aa_timeline.png`` (phi(t), psi(t) and the core last visited).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BLOCK_SCAN_PS = (100.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0)


def main(argv=None) -> int:
    from openmm_cgkd.analysis.plots import plot_dihedral_timeline, plot_fes_panels
    from openmm_cgkd.analysis.ramachandran import (RamachandranSpec, basin_populations, basin_transitions,
                                                   block_average, committed_cores, fes_noise_floor, free_energy_surface, phi_psi)
    from openmm_cgkd.data.aamd import read_mapped
    from openmm_cgkd.data.mapping import MappingSpec
    from openmm_cgkd.fileio import write_json
    from openmm_cgkd.systems import get_system

    system = get_system("dipeptide")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, default=system.file("aa_run", must_exist=False),
                   help="aa-run directory with mapped parts (default: systems/dipeptide/aa)")
    p.add_argument("--block-ps", type=float, default=2000.0, help="block length of the standard errors (ps)")
    p.add_argument("--replica-ps", type=float, default=10000.0,
                   help="length of a CG replica (ps): the noise floor's blocks (default 10000)")
    p.add_argument("--out-json", type=Path, default=system.file("aa_report", must_exist=False))
    p.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    args = p.parse_args(argv)

    spec = RamachandranSpec.from_yaml(system.file("ramachandran"))
    # the system's mapping spec, not run.json's record of it: that record lacks allow_unmapped
    ds = read_mapped(args.run_dir, mapping=MappingSpec.from_yaml(system.file("mapping")))
    phi, psi = phi_psi(ds.positions, spec)
    t = ds.times
    span_ps = float(t[-1] - t[0] + np.median(np.diff(t)))
    fes = free_energy_surface(phi, psi, spec.bin_deg)
    pops = basin_populations(phi, psi, t, spec.basins, args.block_ps)
    scan = {b.key: {f"{bp:g}": block_average(b.in_region(phi, psi), t, bp).se
                    for bp in BLOCK_SCAN_PS if span_ps / bp >= 4} for b in spec.basins}
    trans = basin_transitions(phi, psi, t, spec.basins)
    floor = fes_noise_floor(phi, psi, t, spec.bin_deg, block_ps=args.replica_ps if span_ps >= 2 * args.replica_ps else None)
    # mean time between transitions out of each core (ps): time committed to it over exits from it
    state = committed_cores(phi, psi, spec.basins)
    dt = float(np.median(np.diff(t)))
    dwell = {}
    for i, b in enumerate(spec.basins):
        exits = int(trans.counts[i].sum())
        dwell[b.key] = {"committed_ps": float(np.sum(state == i) * dt), "exits": exits,
                        "mean_dwell_ps": float(np.sum(state == i) * dt / exits) if exits else None}
    report = {
        "system": system.name, "source": "read_mapped(aa run): committed mapped production frames",
        "frames": int(t.size), "start_ps": float(t[0]), "end_ps": float(t[-1]), "span_ns": span_ps / 1000.0,
        "frame_interval_ps": dt, "temperature_K": ds.temperature_K,
        "phi_beads": spec.phi, "psi_beads": spec.psi, "bin_deg": spec.bin_deg,
        "populations": {k: v.to_dict() for k, v in pops.items()},
        "outside_basins_fraction": float(1.0 - sum(v.fraction for v in pops.values())),
        "population_se_by_block_ps": scan,
        "transitions": trans.to_dict(), "dwell": dwell,
        "noise_floor": floor.to_dict(),
        "fes": fes.to_dict(),
    }
    write_json(args.out_json, report)
    plot_fes_panels({"AA": fes}, args.figures / "dipeptide_aa_fes.png", basins=spec.basins,
                    title=f"ACE-ALA-NME amber14/GBn2 300 K, {span_ps / 1000:.1f} ns")
    plot_dihedral_timeline(t, phi, psi, args.figures / "dipeptide_aa_timeline.png", basins=spec.basins,
                           title=f"AA dipeptide: {trans.total} transitions between basin cores")
    print(f"{t.size} frames, {span_ps / 1000:.2f} ns")
    for k, v in pops.items():
        print(f"  {v.name:22s} {v.fraction:.3f} +- {v.se:.3f}   F {v.free_energy_kT:.2f} +- {v.free_energy_se_kT:.2f} kT"
              f"   SE by block ps {json.dumps({bp: round(se, 4) for bp, se in scan[k].items()})}")
    print(f"  transitions {trans.total}: " + ", ".join(
        f"{a}->{b} {int(trans.counts[i, j])}" for i, a in enumerate(trans.keys) for j, b in enumerate(trans.keys) if i != j))
    print(f"  noise floor halves: JS {floor.halves.js:.4f}, TAE {floor.halves.tae:.4f}"
          + (f"; {len(floor.blocks)} blocks of {args.replica_ps:g} ps vs other half: JS {floor.block_mean().js:.4f} "
             f"+- {floor.block_std().js:.4f}, TAE {floor.block_mean().tae:.4f} +- {floor.block_std().tae:.4f}"
             if floor.blocks else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
