"""``cgkd refine``: remove a student's short-range traps by labelling its own MD frames with the
ensemble and fine-tuning on them (:mod:`openmm_cgkd.workflow.refine`).

Errors follow the ``cgkd`` convention (:mod:`openmm_cgkd.cli.common`): bad settings or inputs are
exit 2, one line each.
"""
from __future__ import annotations

import argparse
import sys

from openmm_cgkd.cli.common import add_platform_argument, check_output_dir, positive_float, positive_int

__all__ = ["register"]

EPILOG = """\
example:
  cgkd refine --student runs/student/bundle --ensemble runs/teachers/ensemble \\
      --dataset runs/labels.h5 --out runs/refine --rounds 3
each round runs the student's short MD from training frames, labels with the ensemble the frames
where a pair comes closer than the dataset's closest contact (or the ensemble's force spread is
high), fine-tunes the student on its data plus those frames and writes OUT/round_KK/bundle and
OUT/round_KK/record.json; a last round checks the final student's MD. Rerunning resumes.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("refine", help="fine-tune a student on ensemble labels of its own MD frames "
                                             "(removes short-range traps)",
                              description="Refine a student where its training data are thin: label its own MD "
                                          "frames with the teacher ensemble and fine-tune, round after round.",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="refine YAML config (optional; the flags below override it)")
    p.add_argument("--student", help="student bundle (directory or shipped name)")
    p.add_argument("--ensemble", help="the teachers' ensemble bundle")
    p.add_argument("--dataset", help="the student's labelled training dataset (HDF5)")
    p.add_argument("--out", help="output directory (default runs/refine)")
    p.add_argument("--rounds", type=positive_int, help="fine-tune rounds at most (default 3)")
    p.add_argument("--replicas", type=positive_int, help="MD replicas per round (default 4)")
    p.add_argument("--steps", type=positive_int, help="MD steps per replica (default 5000)")
    p.add_argument("--interval", type=positive_int, help="MD steps between kept frames (default 50)")
    p.add_argument("--temperature", type=positive_float,
                   help="MD temperature (K; default: the dataset's, else the student's training temperature)")
    p.add_argument("--max-new-frames", type=positive_int, help="frames labelled per round at most (default 200)")
    p.add_argument("--epochs", type=positive_int, help="fine-tune epochs per round (default 5)")
    p.add_argument("--lr", type=positive_float, help="fine-tune learning rate (default 1e-4)")
    p.add_argument("--spread-threshold", type=positive_float,
                   help="ensemble force spread (kJ/mol/nm) above which a frame is taken (default: the ensemble's "
                        "watch threshold)")
    add_platform_argument(p, extra=" for the student's MD")
    p.add_argument("--device", help="torch device of labelling and fine-tune: auto (default), cpu, cuda ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _overrides(args) -> dict:
    over: dict = {}
    for key in ("student", "ensemble", "dataset", "out", "rounds", "max_new_frames", "spread_threshold", "device"):
        value = getattr(args, key, None)
        if value is not None:
            over[key] = value
    md = {k: v for k, v in (("replicas", args.replicas), ("steps", args.steps), ("interval_steps", args.interval),
                                        ("temperature_K", args.temperature))
          if v is not None}
    if args.platform != "auto":
        md["platform"] = args.platform
    if md:
        over["md"] = md
    ft = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr)) if v is not None}
    if ft:
        over["fine_tune"] = ft
    return over


def _run(args) -> int:
    from openmm_cgkd.config import config_from_dict, load_config
    from openmm_cgkd.training.config import RefineConfig

    over = _overrides(args)
    cfg = load_config(RefineConfig, args.config, over) if args.config else config_from_dict(RefineConfig, over)
    check_output_dir(cfg.out)
    from openmm_cgkd.runlock import hold_run_dir
    from openmm_cgkd.workflow.refine import refine_student

    with hold_run_dir(cfg.out, "cgkd refine"):
        res = refine_student(cfg, progress=not args.no_progress and sys.stderr.isatty())
    last = res.rounds[-1]
    coord = ", ".join(f"{p} {c['per_a']:.4f}" for p, c in last["coordination_below_contact"].items())
    print(f"refine: {len(res.rounds)} round(s), {'converged' if res.converged else 'not converged'}; final student "
          f"{res.final_bundle}\ncoordination below the contact of its MD (per A bead): {coord}; records in {res.out}")
    return 0
