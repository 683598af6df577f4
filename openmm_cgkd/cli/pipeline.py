"""`cgkd pipeline`: the whole method, cached and resumable (see openmm_cgkd.pipeline)."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pipeline", help="AA data -> teachers -> labels -> students -> MD -> analysis -> report",
        description="Run the whole knowledge-distillation workflow from one YAML config. Each stage is "
                    "cached under <out>/stages/; rerunning skips finished stages and resumes the rest. "
                    "Configs for the DES: systems/des/quick.yaml (CPU, minutes) and systems/des/paper.yaml (GPU).")
    p.add_argument("config", help="pipeline YAML (see systems/des/quick.yaml)")
    p.add_argument("--out", help="override the config's output directory")
    p.add_argument("--dataset", help="override the config's CG dataset (HDF5)")
    p.add_argument("--only", nargs="+", metavar="STAGE",
                   help="run only these stages (earlier ones must be done): aa teachers labels students md analysis report")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from openmm_cgkd.pipeline import load_pipeline_config, run_pipeline

    cfg = load_pipeline_config(args.config)  # a bad config: ConfigError, reported by `cgkd` (exit 2)
    if args.out:
        cfg.out = args.out
    if args.dataset:
        cfg.dataset = args.dataset
    run_pipeline(cfg, only=args.only)
    return 0
