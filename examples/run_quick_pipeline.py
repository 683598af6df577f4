"""The whole method on the shipped DES data: AA dataset -> 8 teachers -> ensemble labels ->
student {e_T, F_T, F_AA} -> MD replicas of a teacher, the ensemble and the student -> structural
analysis -> a report comparing them (TAE table with error bars, ns/day table, bar chart).

What it does: loads ``systems/des/quick.yaml`` (or ``--config``), prints the plan, and runs
:func:`openmm_cgkd.workflow.run.run_pipeline` (the API behind ``cgkd pipeline``). Every stage is
cached under the output directory: rerun the script after an interruption and it continues.
``--check`` only validates the config and prints the plan (a second).

Run time on CPU (2 cores, shared with other jobs): about 20 minutes (teachers 12 min, labels 5,
student 1.5, MD 1, analysis 0.3); most of it is training the 8 teachers.

    uv run python examples/run_quick_pipeline.py                 # writes runs/des-quick/report.md
    uv run python examples/run_quick_pipeline.py --check
    uv run python examples/run_quick_pipeline.py --config systems/des/paper.yaml   # on a GPU

Units: nm, ps, K, kJ/mol; TAEs are dimensionless (densities) or nm (RDF g(r) areas).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "systems" / "des" / "quick.yaml", help="pipeline YAML")
    p.add_argument("--out", help="output directory (default: the config's)")
    p.add_argument("--check", action="store_true", help="validate the config, print the plan, run nothing")
    args = p.parse_args(argv)

    from openmm_cgkd.workflow.cache import STAGES
    from openmm_cgkd.workflow.config import load_pipeline_config
    from openmm_cgkd.workflow.run import run_pipeline

    cfg = load_pipeline_config(args.config)
    if args.out:
        cfg.out = args.out
    print(f"config: {args.config}\ndataset: {cfg.dataset}\noutput: {cfg.out}")
    print(f"teachers: {cfg.teachers.get('members', 8)} x {cfg.model.get('architecture', cfg.model.get('base'))}; "
          f"students: {', '.join(cfg.students.variants)}; MD: {cfg.md.replicas} replicas x {cfg.md.n_steps} steps")
    print("stages: " + " -> ".join(STAGES))
    if args.check:
        if not Path(cfg.dataset).is_file() and cfg.aa is None:
            print(f"error: dataset {cfg.dataset} does not exist and the config has no aa section")
            return 1
        return 0
    run_pipeline(cfg)
    print(f"report: {Path(cfg.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
