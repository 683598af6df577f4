"""Where a pipeline run stands, read from its files alone (``cgkd pipeline CONFIG --status``).

Nothing is trained, simulated or written: the stage markers and clocks (``stages/``), the
training logs of the teachers and students (finished or under way), and the MD replicas'
records (``replica.json.gz``) and logs give, per stage, done / under way / not started with its
wall time, per training run its epochs and best validation loss, and per MD model (every model
the md stage will run, once the students are trained) the replicas finished out of those
planned (failed ones counted) with their mean RDF / ADF / CDF TAEs so far, and about how many
hours of MD are left at the speeds measured so far. The numbers of a
study stopped part-way are partial: the report (``report.md``) is written only when every
replica has run.
"""
from __future__ import annotations

import csv
import json
import socket
import time
from pathlib import Path

import numpy as np

from openmm_cgkd.analysis.records import read_record
from openmm_cgkd.fileio import read_json
from openmm_cgkd.runlock import pid_alive
from openmm_cgkd.workflow.cache import STAGES, stage_outputs
from openmm_cgkd.executor import local_workers
from openmm_cgkd.workflow.stages.md import last_logged_step, models_for_md

__all__ = ["pipeline_status", "md_hours_left"]


def _members(path: Path) -> list:
    """``members.json`` of a stacked student run (which member is which student); [] when absent."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []


def _hours(seconds) -> str:
    return "-" if seconds is None else f"{float(seconds) / 3600:.2f} h"


def _curve(path: Path, loss: str = "val_loss") -> dict | None:
    """{epochs, best, best_epoch, lr} of a per-epoch CSV log (None when it has no epoch yet); the
    epochs trained (a stacked run logs a member's frozen epochs after it stopped, ``stopped`` 1)."""
    try:
        with open(path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get(loss) not in (None, "")]
    except OSError:
        return None
    if not rows:
        return None
    vals = [float(r[loss]) for r in rows]
    k = int(np.argmin(vals))
    trained = [r for r in rows if str(r.get("stopped", "0")).strip() not in ("1", "True", "true")]
    return {"epochs": len(trained), "best": vals[k], "best_epoch": int(float(rows[k].get("epoch", k))),
            "lr": rows[-1].get("lr", "")}


def _clock_state(clock: dict) -> str:
    """State and wall-time cells of a stage without a marker: under way (its process alive: the
    time of the earlier attempts + this one's so far), or stopped (the time its attempts took)."""
    run = clock.get("running")
    if run and run.get("host") == socket.gethostname() and pid_alive(run.get("pid")):
        so_far = float(run.get("seconds_before", 0.0)) + time.time() - float(run.get("since", time.time()))
        return f"under way (pid {run['pid']}) | {_hours(so_far)} so far"
    if run:
        return f"stopped (its process is gone; rerun to resume) | {_hours(clock.get('seconds'))} by then"
    return f"stopped (rerun to resume) | {_hours(clock.get('seconds'))}"


def _stage_lines(out: Path, stages, have_dataset: bool) -> list[str]:
    lines = ["| stage | state | wall time | attempts |", "|---|---|---|---|"]
    for name in stages:
        marker = read_json(out / "stages" / f"{name}.json")
        clock = read_json(out / "stages" / f"{name}.clock.json")
        if name == "aa" and marker is None and clock is None and have_dataset:
            lines.append("| aa | not needed (the dataset exists) | - | - |")
        elif marker is not None and not (clock or {}).get("running"):
            lines.append(f"| {name} | done ({marker.get('finished', '?')}) | {_hours(marker.get('seconds'))} | "
                         f"{marker.get('attempts', '?')} |")
        elif clock is not None:  # with a marker too: the stage is run again (its settings or inputs changed)
            again = f"again (done {marker.get('finished', '?')} with other settings): " if marker is not None else ""
            lines.append(f"| {name} | {again}{_clock_state(clock)} | {clock.get('attempts', '?')} |")
        else:
            lines.append(f"| {name} | not started | - | - |")
    return lines


def _training_lines(out: Path) -> list[str]:
    runs: list[tuple[str, Path, bool]] = []
    teachers = out / "teachers"
    for log in sorted((teachers / "stacked" / "logs").glob("member_*.csv")):
        runs.append((f"teacher {log.stem.split('_')[1]} (stacked)", log, (teachers / "stacked" / "result.json").is_file()))
    for run in sorted((teachers / "members").glob("member_*")):
        if (teachers / "stacked" / "logs").is_dir() and not (run / "logs").is_dir():
            continue  # a member of the stacked run: its bundle only (its log is the stacked run's)
        runs.append((f"teacher {run.name.split('_')[1]}", run / "logs" / "metrics.csv", (run / "result.json").is_file()))
    stacked = out / "students" / "stacked"
    names = {int(m["member"]): Path(m["out"]).name for m in _members(stacked / "members.json")}
    for log in sorted((stacked / "logs").glob("member_*.csv")):
        k = int(log.stem.split("_")[1])
        runs.append((f"student {names.get(k, k)} (stacked)", log, (stacked / "result.json").is_file()))
    for sdir in sorted((out / "students").glob("*")):
        if sdir.is_dir() and sdir.name != "stacked" and not (stacked / "logs").is_dir():
            logs = sdir / "run" / "logs"
            log = logs / "member_00.csv" if (logs / "member_00.csv").is_file() else logs / "metrics.csv"
            runs.append((f"student {sdir.name}", log, (sdir / "run" / "result.json").is_file()))
    lines = ["| run | state | epochs | best val loss (epoch) | lr now |", "|---|---|---|---|---|"]
    for name, log, finished in runs:
        c = _curve(log)
        if c is None:
            lines.append(f"| {name} | {'finished' if finished else 'not started'} | - | - | - |")
            continue
        lines.append(f"| {name} | {'finished' if finished else 'under way'} | {c['epochs']} | "
                     f"{c['best']:.4g} ({c['best_epoch']}) | {c['lr']} |")
    return lines if runs else []


def _tae_means(rec: dict) -> dict[str, float]:
    tae = (rec.get("analysis") or {}).get("tae") or {}
    return {kind: float(np.mean(list(v.values()))) for kind, v in tae.items() if v}


def _tae_stat(good: list[dict[str, float]], kind: str) -> str:
    """"mean ± std" of the replicas' TAE means of ``kind`` (``good``: :func:`_tae_means` of each), "-" for none."""
    v = [g[kind] for g in good if kind in g]
    if not v:
        return "-"
    return f"{np.mean(v):.3f}" + (f" ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else "")


def _planned_replicas(cfg, out: Path) -> dict[str, int]:
    """{model: replicas the md stage will run}, in report order, once the teachers and students
    are trained (empty before)."""
    teachers, students = stage_outputs(out, "teachers"), stage_outputs(out, "students")
    if teachers is None or students is None:
        return {}
    return {name: n for name, (_, n) in models_for_md(cfg, teachers, students).items()}


def md_hours_left(ps_left: dict[str, float], ns_per_day: dict[str, float], workers: int) -> float | None:
    """Wall-clock hours of MD left: each model's simulated time still to run (``ps_left``, ps) at
    its measured speed (``ns_per_day``, measured with ``workers`` replicas at once; a model not
    measured yet takes the mean of those measured), shared by ``workers`` at once. None when
    nothing is measured yet."""
    if not ns_per_day:
        return None
    fallback = float(np.mean(list(ns_per_day.values())))
    days = sum(left / 1000.0 / ns_per_day.get(name, fallback) for name, left in ps_left.items())
    return 24.0 * days / max(1, workers)


def _md_lines(out: Path, n_steps: int | None, planned: dict[str, int],
              length_ps: float) -> tuple[list[str], int, dict[str, float], dict[str, float]]:
    """The MD table, the number of replicas finished, and per model the ps still to run and the
    measured ns/day (for :func:`md_hours_left`)."""
    md = out / "md"
    started = {p.name: p for p in md.glob("*") if p.is_dir() and p.name != "timestep_check"} if md.is_dir() else {}
    names = list(planned) + sorted(set(started) - set(planned))
    if not started:
        return [], 0, {}, {}
    finished = 0
    ps_left, measured = {}, {}
    rows = []
    for name in names:
        mdir = md / name
        recs, running = [], []
        for rep in sorted(mdir.glob("replica_*")):
            rec = read_record(rep / "replica.json.gz")
            if rec is not None:
                recs.append(rec)
            elif (rep / "log.csv").is_file():
                running.append(rep)
        failed = [r for r in recs if r.get("failure")]
        good = [_tae_means(r) for r in recs if not r.get("failure") and not (r.get("analysis") or {}).get("failed")]
        speeds = [r["ns_per_day"] for r in recs if r.get("ns_per_day")]
        under, running_done = [], 0.0
        for rep in running:
            step = last_logged_step(rep / "log.csv")
            frac = None if step is None or not n_steps else step / n_steps
            under.append(rep.name.split('_')[1] + ("" if frac is None else f" {100.0 * frac:.0f}%"))
            running_done += 0.0 if frac is None else min(1.0, frac)
        speed = f"{np.mean(speeds):.3g}" if speeds else "-"
        if speeds:
            measured[name] = float(np.mean(speeds))
        if name in planned:
            ps_left[name] = max(0.0, planned[name] - len(recs) - running_done) * length_ps
        finished += len(recs)
        done = f"{len(recs)} of {planned[name]}" if name in planned else str(len(recs))
        rows.append((f"| {name} | {done} | {len(failed)} | {', '.join(under) or '-'} | ", good, f"{speed} |"))
    # TAE columns only for the kinds some finished replica has (a molecule without a box: none)
    present = {k for _, good, _ in rows for g in good for k in g}
    kinds = [k for k in ("rdf", "adf", "cdf") if k in present or not finished]
    lines = ["| model | replicas finished | failed | under way | " + "".join(f"{k.upper()} TAE | " for k in kinds)
             + "ns/day |", "|---|---|---|---|" + "---|" * len(kinds) + "---|"]
    lines += [head + "".join(f"{_tae_stat(good, k)} | " for k in kinds) + tail for head, good, tail in rows]
    return lines, finished, ps_left, measured


def pipeline_status(cfg) -> str:
    """Markdown: where the run of pipeline config ``cfg`` (:class:`~openmm_cgkd.workflow.config.PipelineConfig`)
    stands (see the module docstring). Reads files only."""
    out = Path(cfg.out)
    if not (out / "stages").is_dir():
        return f"# Pipeline status: {out}\n\nNothing has run yet ({out / 'stages'} does not exist).\n"
    parts = [f"# Pipeline status: {out}", "", "## Stages", "", *_stage_lines(out, STAGES, Path(cfg.dataset).is_file())]
    training = _training_lines(out)
    if training:
        parts += ["", "## Training (validation loss: the trainer's, lower is better)", "", *training]
    planned = _planned_replicas(cfg, out)
    length = cfg.md.n_steps * cfg.md.timestep_fs / 1000.0
    md, finished, ps_left, measured = _md_lines(out, cfg.md.n_steps, planned, length)
    if md:
        total = f" of {sum(planned.values())}" if planned else ""
        parts += ["", f"## MD replicas ({finished}{total} finished; {length:g} ps each; TAEs: mean ± std over the "
                      f"finished, not failed, replicas so far, after the "
                      f"{cfg.md.discard_ps if cfg.md.discard_ps is not None else 0:g} ps discard)", "", *md]
        at_once = local_workers(cfg.md.workers, cfg.md.threads) if cfg.cluster.kind == "local" else 1
        hours = md_hours_left(ps_left, measured, at_once) if planned else None
        if hours is not None and sum(ps_left.values()) > 0:
            parts += ["", f"About {hours:.1f} h of MD left ({sum(ps_left.values()):g} ps to run, "
                          f"{at_once} at once, at each model's ns/day so far; a model without a "
                          "finished replica at the mean of the others)."]
    return "\n".join(parts) + "\n"
