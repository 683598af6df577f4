"""`cgkd pipeline`: the whole method, cached and resumable (see openmm_cgkd.workflow.run)."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pipeline", help="AA data -> teachers -> labels -> students -> MD -> analysis -> report",
        description="Run the whole knowledge-distillation workflow from one YAML config. Each stage is "
                    "cached under <out>/stages/; rerunning skips finished stages and resumes the rest. "
                    "Configs for the DES: systems/des/quick.yaml (CPU, minutes), systems/des/study.yaml (the "
                    "CPU study, resumable from its committed results) and systems/des/paper.yaml (GPU). With "
                    "--sweep the config is a sweep (systems/des/sweep.yaml): one teacher and a short MD per "
                    "grid point of model settings, one table of force errors and structure TAEs.")
    p.add_argument("config", help="pipeline YAML (see systems/des/quick.yaml)")
    p.add_argument("--out", help="override the config's output directory")
    p.add_argument("--dataset", help="override the config's CG dataset (HDF5)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the tasks (teacher members, students, MD replicas) on the Dask scheduler at ADDRESS "
                        "(tcp://host:8786) instead of the config's `cluster:` (default: a local cluster); the "
                        "workers must see the output directory at the same path (docs/cluster.md)")
    p.add_argument("--only", nargs="+", metavar="STAGE",
                   help="run only these stages (earlier ones must be done; later ones are left alone): "
                        "aa teachers labels students md analysis report")
    p.add_argument("--status", action="store_true",
                   help="print where the run stands (stages, training epochs, MD replicas finished with their "
                        "TAEs so far) from its files, and exit: nothing runs")
    p.add_argument("--interim", action="store_true",
                   help="while the md stage is under way (here or in another process): analyse the replicas "
                        "finished so far and write <out>/interim/report.md with its figures; nothing is "
                        "trained or simulated and no stage changes")
    p.add_argument("--sweep", action="store_true",
                   help="CONFIG is a sweep config (see openmm_cgkd/workflow/sweep.py): run every grid point, write sweep.md")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from openmm_cgkd.cli.common import check_output_dir
    from openmm_cgkd.runlock import hold_run_dir
    from openmm_cgkd.workflow.config import load_pipeline_config
    from openmm_cgkd.workflow.run import interim_report, run_pipeline
    from openmm_cgkd.config import ConfigError

    if sum(map(bool, (args.status, args.interim, args.sweep, args.only))) > 1:
        raise ConfigError("give at most one of --status, --interim, --sweep and --only")
    if args.sweep:
        from openmm_cgkd.workflow.sweep import load_sweep_config, run_sweep

        if args.dataset:
            raise ConfigError("--dataset does not apply to a sweep (its base config names the dataset)")
        sweep = load_sweep_config(args.config)
        if args.out:
            sweep.out = args.out
        if sweep.out:
            with hold_run_dir(check_output_dir(sweep.out), "cgkd pipeline --sweep"):
                run_sweep(sweep)
        else:
            run_sweep(sweep)
        return 0
    cfg = load_pipeline_config(args.config)  # a bad config: ConfigError, reported by `cgkd` (exit 2)
    if args.out:
        cfg.out = args.out
    if args.dataset:
        cfg.dataset = args.dataset
    if args.scheduler:
        from openmm_cgkd.config import config_from_dict
        from openmm_cgkd.executor import ClusterConfig

        if cfg.md.workers is not None:
            raise ConfigError("--scheduler: the config's md.workers sizes a local cluster; leave it out")
        cfg.cluster = config_from_dict(ClusterConfig, {"kind": "address", "address": args.scheduler,
                                                       "retries": cfg.cluster.retries}, "--scheduler")
    if args.status:
        from openmm_cgkd.workflow.status import pipeline_status

        print(pipeline_status(cfg), end="")
        return 0
    if args.interim:
        result = interim_report(cfg)
        if result is not None:
            print(f"interim report: {result.report}")
        return 0
    with hold_run_dir(check_output_dir(cfg.out), "cgkd pipeline"):  # one pipeline per directory
        run_pipeline(cfg, only=args.only)
    return 0
