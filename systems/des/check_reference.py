"""Is the AA reference equilibrated and stationary? Figures for the README and the dataset card.

    uv run python systems/des/check_reference.py [--dataset systems/des/reline_252_cg.h5 | --run-dir DIR]

* pymbar's equilibration detection on the AA potential energy of the production frames (kJ/mol):
  t0 near 0 means the production is equilibrated from its start;
* structure stationarity: the equilibrated production split in two halves, the first half analysed
  against the second as if it were a model (RDF, ADF, CDF TAE per curve; the same settings as
  `cgkd analyze`). Differences of this size are sampling noise, the floor of every model TAE.

Writes ``systems/des/reference_check.json`` and ``docs/figures/reference_equilibration.png``
(paths relative to the repository; override with --out-json / --out-png).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def main(argv=None) -> int:
    from openmm_cgkd.analysis.equilibration import detect_equilibration
    from openmm_cgkd.analysis.report import AnalysisSettings, analyze_model
    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.topology import dataset_trajectory

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", type=Path, help="CG dataset (.h5) with the AA potential energy")
    src.add_argument("--run-dir", type=Path, default=HERE / "aa_reline_252",
                     help="aa-run directory with mapped parts (default: systems/des/aa_reline_252)")
    p.add_argument("--out-json", type=Path, default=HERE / "reference_check.json")
    p.add_argument("--out-png", type=Path, default=ROOT / "docs" / "figures" / "reference_equilibration.png")
    args = p.parse_args(argv)

    if args.dataset:
        ds, name = CGDataset.load(args.dataset), args.dataset.name
    else:
        from openmm_cgkd.data.aamd import read_mapped

        ds, name = read_mapped(args.run_dir), f"{args.run_dir.name} (mapped parts)"
    if ds.potential_energy is None:
        raise SystemExit(f"{name} holds no AA potential energy")
    eq = detect_equilibration(ds.potential_energy, ds.times)
    start = eq.t0_index
    n = ds.n_frames - start
    half = n // 2
    first = dataset_trajectory(ds, slice(start, start + half))
    second = dataset_trajectory(ds, slice(start + half, start + 2 * half))
    report = analyze_model([first], second, name="first half", settings=AnalysisSettings())
    tae = {kind: {k: round(v.mean, 4) for k, v in curves.items()} for kind, curves in report.tae.items()}
    out = {
        "dataset": name, "frames": int(ds.n_frames), "time_ps": [float(ds.times[0]), float(ds.times[-1])],
        "equilibration": eq.to_dict(),
        "halves": {"frames_each": int(half), "first_ps": [float(ds.times[start]), float(ds.times[start + half - 1])],
                   "second_ps": [float(ds.times[start + half]), float(ds.times[start + 2 * half - 1])],
                   "summary_tae": {k: round(v.mean, 4) for k, v in report.summary.items()}, "tae": tae},
        "note": "TAE between the two halves of the equilibrated production: the sampling-noise floor of model TAEs",
    }
    args.out_json.write_text(json.dumps(out, indent=1) + "\n")

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    e = ds.potential_energy
    ax.plot(ds.times, e, lw=0.5, color="0.6", label="AA potential energy")
    w = max(1, len(e) // 30)
    run = np.convolve(e, np.ones(w) / w, mode="valid")
    ax.plot(ds.times[w // 2: w // 2 + len(run)], run, color="C0", lw=1.5, label=f"running mean ({w} frames)")
    ax.axvline(ds.times[start], color="C3", ls=":", label=f"pymbar t0 = {ds.times[start]:.0f} ps")
    ax.axvline(ds.times[start + half], color="k", ls="--", lw=0.8, label="halves split")
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("potential energy (kJ/mol)")
    ax.set_title(f"{name}: {ds.n_frames} frames", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    args.out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out_png, dpi=120)
    print(json.dumps({"t0_ps": eq.t0_time, "halves_summary_tae": out["halves"]["summary_tae"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
