"""The DES study's goals (issue 9) checked against a pipeline report, as markdown for the README.

    uv run python systems/des/study_goals.py systems/des/study/report.json
    uv run python systems/des/study_goals.py systems/des/study/interim/report.json   # while MD runs

Reads ``report.json`` (written by the report stage, or by ``cgkd pipeline --interim``) and prints:

* per model: RDF / ADF / CDF TAE (mean +- std over the scored replicas, n), failed replicas,
  stability, and the Cl-Cl and Cho-Cl contacts below the AA contact distance (the highest model
  g(r) where the AA g(r) is still below 0.1);
* the issue's absolute goals for each ensemble-distilled student, yes / no with the numbers:
  stable in every replica; RDF TAE <= 0.10 and CDF TAE <= 0.25; no Cl-Cl pairing (no model g(r)
  of 1 or more below the AA contact);
* the reference's noise floor.

The relative goals (within 15 % of the ensemble, better than the median single teacher) are the
report's own section "The method's findings, checked" (report.md), with their statistics. A goal
on a model without scored replicas is "n/a". TAEs are dimensionless; distances in nm.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from openmm_cgkd.workflow.report import plus_minus, summary_stat
from openmm_cgkd.workflow.results import model_kind

RDF_GOAL, CDF_GOAL = 0.10, 0.25
PAIRING_G = 1.0  # a contact peak: the model's g(r) reaches the bulk density where the AA has no pair
KINDS = ("rdf", "adf", "cdf")


def _mean(model: dict, kind: str) -> float | None:
    v = summary_stat(model["summary"].get(kind))
    return None if v is None else v[0]


def _contact(model: dict, pair: str) -> str:
    c = (model.get("contacts") or {}).get(pair)
    if c is None:
        return "n/a"
    if not c["peak_g"]:
        return "none"
    return f"g {c['peak_g']:.2g} at {c['peak_r_nm']:.3f} (AA from {c['reference_contact_nm']:.3f})"


def _yes(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "NO")


def goals(report: dict) -> str:
    """The markdown of the per-model table, the goals and the noise floor (see the module docstring)."""
    models = report["analysis"]["models"]
    lines = ["| model | replicas | RDF TAE | ADF TAE | CDF TAE | stable | CL-CL contact | CHO-CL contact |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in models.items():
        lines.append(f"| {name} | {m['n_replicas'] - m['n_failed']} of {m['n_replicas']} ran to the end | "
                     + " | ".join(plus_minus(m["summary"].get(k)) for k in KINDS)
                     + f" | {'yes' if m['stable'] else 'NO'} | {_contact(m, 'CL-CL')} | {_contact(m, 'CHO-CL')} |")
    students = {n: m for n, m in models.items() if model_kind(n) == "student" and n.startswith("student-ensemble-")}
    if students:
        lines += ["", "| goal | " + " | ".join(students) + " |", "|---|" + "---|" * len(students)]
    else:
        lines += ["", "No ensemble-distilled student has a finished replica yet."]

    def row(goal: str, fn) -> None:
        if students:
            lines.append(f"| {goal} | " + " | ".join(fn(m) for m in students.values()) + " |")

    def at_most(kind: str, goal: float):
        def verdict(m) -> str:
            v = _mean(m, kind)
            return "n/a" if v is None else f"{_yes(v <= goal)} ({v:.3f})"
        return verdict

    row("stable in every replica", lambda m: _yes(m["n_failed"] == 0 and m["stable"]))
    row(f"RDF TAE <= {RDF_GOAL:g}", at_most("rdf", RDF_GOAL))
    row(f"CDF TAE <= {CDF_GOAL:g}", at_most("cdf", CDF_GOAL))

    def no_pairing(m):
        c = (m.get("contacts") or {}).get("CL-CL")
        return "n/a" if c is None else _yes(c["peak_g"] < PAIRING_G) + f" (peak g {c['peak_g']:.2g})"

    row(f"no Cl-Cl pairing (g < {PAIRING_G:g} below the AA contact)", no_pairing)
    floor = report["analysis"].get("noise_floor")
    if floor:
        lines += ["", f"Noise floor (blocks of {floor['block_frames']} reference frames against the other half, "
                      f"{floor['n_blocks']} blocks): "
                  + ", ".join(f"{k.upper()} {floor['summary'][k]['mean']:.3f}" for k in KINDS if k in floor["summary"])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", type=Path, help="report.json of a pipeline run (or of its interim report)")
    args = p.parse_args(argv)
    print(goals(json.loads(args.report.read_text())), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
