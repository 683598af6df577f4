"""``cgkd train-teachers``, ``cgkd label``, ``cgkd train-student``: the training stage.

Errors follow the ``cgkd`` convention (:mod:`openmm_cgkd.cli.common`): a bad config is exit 2,
the hardware asked for (``--accelerator gpu``, ``--device cuda``) is checked before training.
"""
from __future__ import annotations

import argparse
import sys

import contextlib

from openmm_cgkd.cli.common import check_output_dir, nonnegative_int, positive_int
from openmm_cgkd.errors import UsageError

__all__ = ["register"]

EPILOG_TEACHERS = """\
example:
  cgkd train-teachers configs/training/des-teachers.yaml --out runs/teachers
writes OUT/ensemble/ (the ensemble bundle), OUT/members/member_KK/bundle/ (one teacher bundle
each), OUT/metrics.json and PNG plots. Rerunning resumes a killed run; finished members are kept.
"""
EPILOG_LABEL = """\
example:
  cgkd label --dataset data/des_cg.h5 --teachers runs/teachers/ensemble
  cgkd label --dataset data/des_cg.h5 --teachers runs/teachers/ensemble --member 0 --out data/des_cg_t0.h5
adds F_T, e_T, E_T and the member force spread to the dataset (or to a copy with --out).
"""
EPILOG_STUDENT = """\
example:
  cgkd train-student configs/training/des-student.yaml --variant ensemble-e-ft-faa --out runs/student
writes OUT/bundle/ (the student bundle), OUT/metrics.json and PNG plots. Variants:
"""


def register(subparsers) -> None:
    from openmm_cgkd.training.variants import VARIANTS  # torch-free: `cgkd --help` stays fast

    raw = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("train-teachers", help="train K teacher networks (different seeds) on mapped AA forces",
                              description="Train an ensemble of CG teachers on a CG dataset (YAML config).",
                              epilog=EPILOG_TEACHERS, formatter_class=raw)
    p.add_argument("config", help="teachers YAML config (e.g. configs/training/des-teachers.yaml)")
    p.add_argument("--dataset", help="CG dataset (HDF5); overrides the config")
    p.add_argument("--out", help="output directory; overrides the config")
    p.add_argument("--members", type=positive_int, help="number of teachers K")
    _window_args(p)
    _common_trainer_args(p)
    p.set_defaults(func=_run_teachers)

    p = subparsers.add_parser("label", help="write teacher labels (F_T, e_T, E_T, force std) into a dataset",
                              description="Run a teacher or ensemble bundle over every frame of a CG dataset.",
                              epilog=EPILOG_LABEL, formatter_class=raw)
    p.add_argument("config", nargs="?", help="labels YAML config (optional; the flags below suffice)")
    p.add_argument("--dataset", help="CG dataset (HDF5)")
    p.add_argument("--teachers", help="teacher or ensemble bundle directory")
    p.add_argument("--member", type=nonnegative_int,
                   help="label with this one member of an ensemble (single-teacher labels)")
    p.add_argument("--out", help="write a labelled copy here instead of labelling the dataset in place")
    p.add_argument("--device", help="torch device: auto (default), cpu, cuda, cuda:1 ...")
    _window_args(p)
    p.set_defaults(func=_run_label)

    variants = "\n".join(f"  {name:24s} {v.source:8s} targets {{{', '.join(v.targets)}}}  "
                         + " ".join(f"{k}={w:g}" for k, w in v.weights.as_dict().items() if w)
                         for name, v in VARIANTS.items())
    p = subparsers.add_parser("train-student", help="train a student on teacher labels (a paper variant or free weights)",
                              description="Distil a CG student from labelled data (YAML config).",
                              epilog=EPILOG_STUDENT + variants, formatter_class=raw)
    p.add_argument("config", help="student YAML config (e.g. configs/training/des-student.yaml)")
    p.add_argument("--dataset", help="labelled CG dataset (HDF5); overrides the config")
    p.add_argument("--out", help="output directory; overrides the config")
    p.add_argument("--variant", choices=sorted(VARIANTS), help="student variant preset; overrides the config")
    _window_args(p)
    _common_trainer_args(p)
    p.set_defaults(func=_run_student)


def _span(kind):
    """argparse type of ``START:STOP`` (either may be empty) of ints or floats."""
    def parse(text: str):
        parts = text.split(":")
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"{text!r} is not START:STOP (e.g. 100:1600, or 100: for all from 100)")
        try:
            lo, hi = (kind(p) if p.strip() else None for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: START and STOP must be {kind.__name__} numbers") from None
        if lo is not None and hi is not None and hi <= lo:
            raise argparse.ArgumentTypeError(f"{text!r}: STOP must be above START")
        return lo, hi
    return parse


def _window_args(p) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--frames", type=_span(int), metavar="START:STOP",
                   help="use only these frames of the dataset (indices, STOP excluded; e.g. 200:1700 drops the "
                        "first 200 as equilibration)")
    g.add_argument("--time-ps", type=_span(float), metavar="START:STOP",
                   help="use only the frames with START <= time < STOP (ps, the dataset's times)")


def _window(args) -> dict | None:
    if getattr(args, "frames", None) is not None:
        return {"frames": args.frames}
    if getattr(args, "time_ps", None) is not None:
        return {"time_ps": args.time_ps}
    return None


def _windowed(train, window: dict | None):
    """``train(cfg)`` on the frames ``window`` of ``cfg.dataset`` (all of them without a window)."""
    if window is None:
        return train

    def run(cfg):
        from openmm_cgkd.data.dataset import CGDataset

        if not cfg.dataset:
            raise UsageError("a frame window needs a dataset (--dataset or the config's `dataset:`)")
        return train(cfg, dataset=CGDataset.load(cfg.dataset).window(**window))
    return run


def _common_trainer_args(p) -> None:
    p.add_argument("--max-epochs", type=positive_int, help="override trainer.max_epochs")
    p.add_argument("--accelerator", choices=["auto", "cpu", "gpu", "cuda"],
                   help="override trainer.accelerator (auto: the GPU when one is usable, else the CPU)")
    p.add_argument("--devices", help="override trainer.devices (a count, or 'auto')")
    p.add_argument("--strategy", help="override trainer.strategy (auto, ddp, ...)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _overrides(args, *keys: str) -> dict:
    over: dict = {}
    for key in keys:
        value = getattr(args, key, None)
        if value is not None:
            over[key] = value
    trainer = {}
    if getattr(args, "max_epochs", None) is not None:
        trainer["max_epochs"] = args.max_epochs
    for key in ("accelerator", "strategy"):
        if getattr(args, key, None):
            trainer[key] = getattr(args, key)
    if getattr(args, "devices", None):
        trainer["devices"] = int(args.devices) if str(args.devices).isdigit() else args.devices
    if getattr(args, "no_progress", False):
        trainer["progress_bar"] = False
    if trainer:
        over["trainer"] = trainer
    return over


def _run_stage(args, config_cls, keys: tuple[str, ...], train, report) -> int:
    """Load the YAML config with the flags' overrides, check the hardware it asks for, run
    ``train`` on it and print ``report(result)``."""
    from openmm_cgkd.config import load_config

    cfg = load_config(config_cls, args.config, _overrides(args, *keys))
    check_output_dir(cfg.out)  # before torch loads
    from openmm_cgkd.training.devices import check_accelerator
    from openmm_cgkd.training.rundir import is_global_zero

    check_accelerator(cfg.trainer.accelerator, cfg.trainer.devices)
    with _run_lock(cfg.out, f"cgkd {args.command}"):
        res = train(cfg)
    if is_global_zero():  # DDP helper processes stay quiet: rank 0 reports
        print(report(res))
    return 0


def _run_lock(target, what: str, is_file: bool = False):
    """The run lock of ``target`` (:func:`openmm_cgkd.runlock.hold_run_dir`); none in the helper
    processes of a multi-process (DDP) run, which rerun this command while rank 0 holds it."""
    from openmm_cgkd.runlock import hold_run_dir
    from openmm_cgkd.training.rundir import is_global_zero

    return hold_run_dir(target, what, is_file=is_file) if is_global_zero() else contextlib.nullcontext()


def _forces_line(m: dict, what: str, out) -> str:
    return (f"test block, {what} vs AA: RMSE {m['rmse']:.3f} MAE {m['mae']:.3f} kJ/mol/nm, R^2 {m['r2']:.3f}; "
            f"metrics in {out / 'metrics.json'}")


def _train_teachers(cfg, **kwargs):
    from openmm_cgkd.training.teachers import train_teachers  # torch and Lightning: after the checks

    return train_teachers(cfg, **kwargs)


def _train_student(cfg, **kwargs):
    from openmm_cgkd.training.students import train_student  # torch and Lightning: after the checks

    return train_student(cfg, **kwargs)


def _run_teachers(args) -> int:
    from openmm_cgkd.training.config import TeachersConfig

    return _run_stage(args, TeachersConfig, ("dataset", "out", "members"), _windowed(_train_teachers, _window(args)),
                      lambda res: (
        f"teachers: {len(res.member_bundles)} members; ensemble bundle {res.ensemble_bundle}\n"
        + _forces_line(res.metrics["ensemble"]["forces_vs_aa"], "ensemble forces", res.out)))


def _run_label(args) -> int:
    from openmm_cgkd.cli.common import check_output_file
    from openmm_cgkd.config import config_from_dict, load_config
    from openmm_cgkd.training.config import LabelsConfig

    over = _overrides(args, "dataset", "teachers", "member", "out", "device")
    cfg = load_config(LabelsConfig, args.config, over) if args.config else config_from_dict(LabelsConfig, over)
    target = cfg.out or cfg.dataset
    if target:  # before torch loads
        check_output_file(target, "--out" if cfg.out else "--dataset")
    from openmm_cgkd.training.devices import torch_device
    from openmm_cgkd.training.labels import make_labels

    torch_device(cfg.device)  # a GPU asked for where there is none: refused before any work
    with _run_lock(target, "cgkd label", is_file=True) if target else contextlib.nullcontext():
        path = make_labels(cfg, progress=sys.stderr.isatty(), window=_window(args))
    print(f"labels written to {path}")
    return 0


def _run_student(args) -> int:
    from openmm_cgkd.training.config import StudentConfig

    return _run_stage(args, StudentConfig, ("dataset", "out", "variant"), _windowed(_train_student, _window(args)),
                      lambda res: (
        f"student '{res.variant}': bundle {res.bundle}\n"
        + _forces_line(res.metrics["student"]["forces_vs_aa"], "forces", res.out)))
