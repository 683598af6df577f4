"""The CG time step check of one bundle at several steps, from one frame of a CG dataset.

    uv run python systems/des/check_timestep.py BUNDLE [--dataset systems/des/reline_252_cg.h5]
        [--frame 300] [--timesteps 2,4,5] [--nvt-ps 20] [--nve-ps 20] [--out check.json]

For each step: :func:`openmm_cgkd.md.timestep_check.check_timestep` (NVT kinetic temperature against
the thermostat's, then the NVE total-energy drift and RMS per bead), same start frame and seed.
The pipeline runs the same check on its first student at ``md.timestep_fs``; this script compares
steps on any model before a study commits to one. Units: fs, ps, K, kJ/mol.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path, help="model bundle directory")
    p.add_argument("--dataset", type=Path, default=HERE / "reline_252_cg.h5", help="CG dataset to start from")
    p.add_argument("--frame", type=int, default=300, help="start frame (default: 300, an equilibrated one)")
    p.add_argument("--timesteps", default="2,4,5", help="comma-separated steps in fs")
    p.add_argument("--nvt-ps", type=float, default=20.0)
    p.add_argument("--nve-ps", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, help="JSON of the results (with the series)")
    args = p.parse_args(argv)

    import torch

    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.md.timestep_check import check_timestep
    from openmm_cgkd.topology import bead_topology

    torch.set_num_threads(args.threads)
    ds = CGDataset.load(args.dataset)
    if not 0 <= args.frame < ds.n_frames:
        raise SystemExit(f"--frame {args.frame}: {args.dataset.name} has frames 0-{ds.n_frames - 1}")
    names = [ds.type_names[t] for t in ds.bead_types]
    box = ds.boxes[args.frame]
    results = {}
    for dt in (float(x) for x in args.timesteps.split(",")):
        r = check_timestep(args.bundle, bead_topology(names, box), ds.positions[args.frame], box, timestep_fs=dt,
                           nvt_ps=args.nvt_ps, nve_ps=args.nve_ps, platform="CPU", threads=args.threads, seed=7)
        print(r.summary(), flush=True)
        results[f"{dt:g}"] = r.to_dict(series=True)
    if args.out:
        args.out.write_text(json.dumps({"dataset": args.dataset.name, "frame": args.frame, "results": results},
                                       indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
