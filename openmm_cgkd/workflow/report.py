"""The pipeline's report: ``<out>/report.md`` and its figures (what the ``report`` stage writes).

* TAE table: RDF, ADF, CDF per model, mean +- std over the scored replicas, "k of n replicas
  failed", stability, replicas not equilibrated within the fixed discard (pymbar), ns/day;
* with ``analysis.ramachandran`` (a peptide-like molecule): the phi/psi FES score (JS, TAE), basin
  populations against the AA's and transitions per model, the score's noise floor, the FES figure;
* the reference check (has the AA reference rearranged?) and, per model and pair, the
  coordination below the AA's closest contact with the contact gate;
* the method's findings checked by the decision rules of :mod:`openmm_cgkd.analysis.statistics`
  (t-tests, Holm, TOST, detectable differences), and the ensemble-distilled student to ship
  (:func:`best_student`);
* the failed replicas (model, replica, step, reason) and the time-step check;
* training: epochs, early stop, best validation loss, validation force RMSE of the teachers, and
  the learning curves (train and validation loss per epoch) of every model;
* figures: TAE bars (``tae_comparison.png``), per-pair RDF and per-species CDF overlays of all
  models over the AA reference, potential-energy equilibration per model (written by the
  analysis stage in ``analysis/``), and per model its own overlays and time-resolved CDFs
  (``analysis/<model>/``);
* the wall time of every stage, summed over the attempts (resumes) that made it.

Figures are matplotlib ``Figure`` objects on the Agg canvas (:mod:`openmm_cgkd.figures`).
Units: nm, ps, kJ/mol; TAEs are dimensionless (densities) or nm (RDF g(r) areas).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from openmm_cgkd.analysis.contacts import GATE_FACTOR, GATE_FLOOR, contact_gate
from openmm_cgkd.analysis.phipsi import phi_psi_markdown
from openmm_cgkd.analysis.plots import _save
from openmm_cgkd.analysis.statistics import Decision, StatisticsConfig, decide
from openmm_cgkd.fileio import relative_path, write_json
from openmm_cgkd.workflow.config import analysis_settings
from openmm_cgkd.workflow.results import AnalysisResult, MDResult, ReplicaRecord, ReportResult, StudentsResult, \
    TeachersResult, model_kind, student_model, teacher_model

__all__ = ["write_pipeline_report", "summary_stat", "plus_minus", "comparison_markdown", "findings_markdown",
           "finding_decisions", "rules_markdown", "phi_psi_section", "paired", "contacts_markdown", "reference_markdown", "contacts_plot", "drift_markdown", "lower", "below_teachers", "best_student", "comparison_plot", "model_overlays", "energy_panels",
           "learning_curves_plot"]


def summary_stat(s: dict | None):
    """(mean, std, n) of a summary entry ({mean, std, n, ...} over scored replicas), or None when
    no replica was scored."""
    if not s or not s.get("n") or s.get("mean") is None or not math.isfinite(s["mean"]):
        return None
    std = s.get("std")
    return float(s["mean"]), float(std) if std is not None and math.isfinite(std) else 0.0, int(s["n"])


def plus_minus(s: dict | None) -> str:
    """A summary entry as "mean +- std" (just the mean for one replica; "n/a" for none)."""
    v = summary_stat(s)
    if v is None:
        return "n/a"
    return f"{v[0]:.3f} +- {v[1]:.3f}" if v[2] > 1 else f"{v[0]:.3f}"


def _num(value, spec: str) -> str:
    """``value`` formatted by ``spec``; "n/a" when it is missing or not finite (a check that blew up:
    NaN in memory, ``null`` in the JSON files it is read back from)."""
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def _speed(reps: tuple[ReplicaRecord, ...]) -> str:
    v = [r.ns_per_day for r in reps if r.ns_per_day is not None and math.isfinite(r.ns_per_day)]
    return f"{np.mean(v):.3g}" if v else "n/a"


def _contact(a) -> str:
    """The pair with the highest model g(r) below the AA contact distance: "CL-CL g 5.7 at 0.400 nm"."""
    if not a.contacts:
        return "n/a"
    c = max(a.contacts.values(), key=lambda c: c["peak_g"])
    if c["peak_g"] <= 0:
        return "none"
    return f"{c['pair']} g {c['peak_g']:.2g} at {c['peak_r_nm']:.3f} nm (AA from {c['reference_contact_nm']:.3f})"


def _below_contact(a) -> str:
    """The pair with the most neighbours below the AA's closest contact, against the AA, and the
    contact gate: "CHO-CL 0.110 vs AA 0.002 per CHO (FAIL)"."""
    if not a.coordination:
        return "n/a"
    c = max(a.coordination.values(), key=lambda c: c["model_per_a"] - c["reference_per_a"])
    head = c["pair"].split("-")[0]
    gate = contact_gate(a.coordination)
    return (f"{c['pair']} {c['model_per_a']:.3f} vs AA {c['reference_per_a']:.3f} per {head} "
            f"({'pass' if gate.passed else 'FAIL'})")


def comparison_markdown(analysis: AnalysisResult, runs: MDResult) -> str:
    """The TAE table (mean +- std over scored replicas, failed replicas counted) with ns/day."""
    models = analysis.models
    lines = ["## Structural error (TAE vs AA; mean +- std over the scored replicas; lower is better)", "",
             "Closest contact: the pair whose g(r) (mean over replicas) is highest below the distance where the "
             "AA g(r) begins (a pairing the AA liquid does not have; 0: none). Below the AA contact: the pair with "
             f"the most neighbours closer than the AA's closest contact, per bead, against the AA, and the contact "
             f"gate (every pair at most {GATE_FACTOR:g} x the AA's + {GATE_FLOOR:g}).", "",
             "| model | replicas | RDF | ADF | CDF | stable | not equilibrated within the discard | closest contact "
             "| below the AA contact | ns/day | platform |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, a in models.items():
        reps = runs.models.get(name, ())
        failed = f"{a.n_failed} of {a.n_replicas} replicas failed"
        plat = next((r.platform for r in reps if r.platform), "n/a")
        lines.append(f"| {name} | {failed} | {plus_minus(a.summary.get('rdf'))} | {plus_minus(a.summary.get('adf'))} | "
                     f"{plus_minus(a.summary.get('cdf'))} | {'yes' if a.stable else 'NO'} | "
                     f"{', '.join(a.not_equilibrated_within_discard) or 'none'} | {_contact(a)} | {_below_contact(a)} | "
                     f"{_speed(reps)} | {plat} |")
    return "\n".join(lines) + "\n"


def phi_psi_section(analysis: AnalysisResult, dest: Path) -> list[str]:
    """The report's phi/psi section (a study with ``analysis.ramachandran``; none without): FES
    score, basin populations against the AA and transitions per model, the noise floor, the figure."""
    rama = analysis.ramachandran
    if not rama:
        return []
    spec = rama["spec"]
    models = {n: a.ramachandran for n, a in analysis.models.items() if a.ramachandran}
    lines = ["## Backbone dihedrals: the phi/psi free energy", "",
             f"phi = beads {spec['phi']}, psi = beads {spec['psi']}; {spec['bin_deg']:g}-degree bins. Score of each "
             "replica's (phi, psi) histogram against the AA reference's: Jensen-Shannon divergence (JS, nats, 0 to "
             "ln 2) and total absolute error (TAE, 0 to 2), mean +- standard error over replicas. Basin fractions: "
             "mean +- SE over replicas (the AA's: blocks of "
             f"{rama['reference']['populations'][spec['basins'][0]['key']]['block_ps']:g} ps); in brackets the "
             "difference from the AA in combined standard errors (z) and in free energy, -ln(p_model / p_AA) (kT). "
             "Transitions: between basin cores, per ns of scored MD.", ""]
    lines += phi_psi_markdown(models, rama["reference"], spec["basins"])
    fes = analysis.figures.get("fes")
    if fes and Path(fes).is_file():
        lines += ["", f"![phi/psi free energy]({relative_path(fes, dest)})"]
    return lines + [""]


def contacts_markdown(analysis: AnalysisResult) -> str:
    """Per model and pair A-B, the B beads per A bead closer than the AA's closest contact (the AA's
    own in the first row), and the contact gate (:func:`~openmm_cgkd.analysis.contacts.contact_gate`)."""
    models = {n: a for n, a in analysis.models.items() if a.coordination}
    if not models:
        return ""
    pairs = list(next(iter(models.values())).coordination)
    first = next(iter(models.values())).coordination
    lines = ["## Contacts below the AA's closest contact", "",
             "Per pair A-B: B beads per A bead closer than the AA's closest contact (the first r at which the AA "
             f"g(r) reaches 0.1; mean g(r) over the scored replicas). Gate: every pair at most {GATE_FACTOR:g} x the "
             f"AA's + {GATE_FLOOR:g} (docs/evidence.md).", "",
             "| model | " + " | ".join(pairs) + " | gate |", "|---|" + "---|" * (len(pairs) + 1),
             "| AA (contact nm) | " + " | ".join(f"{first[p]['reference_per_a']:.4f} ({first[p]['contact_nm']:.3f})"
                                                 for p in pairs) + " | - |"]
    for name, a in models.items():
        gate = contact_gate(a.coordination)
        lines.append(f"| {name} | " + " | ".join(f"{a.coordination[p]['model_per_a']:.4f}" if p in a.coordination
                                                 else "n/a" for p in pairs)
                     + f" | {'pass' if gate.passed else 'FAIL: ' + '; '.join(gate.failed)} |")
    return "\n".join(lines) + "\n"


def drift_markdown(analysis: AnalysisResult, frame_ps: float) -> str:
    """Per model the drift from t = 0 (:func:`~openmm_cgkd.analysis.drift.model_drift`): mean merge
    distance per species and potential energy, change from frame 0 to the scored window, mean +-
    standard error over replicas; and the discard chosen from the ensemble's replicas
    (:func:`~openmm_cgkd.analysis.drift.common_discard`)."""
    from openmm_cgkd.analysis.drift import common_discard

    models = {n: a for n, a in analysis.models.items() if a.drift}
    if not models:
        return ""
    merge = sorted({k for a in models.values() for k in a.drift if k.startswith("merge:")})

    def cell(d, scale=100.0, unit=" %"):
        c = d["change"]
        se = "" if c["se"] is None or not math.isfinite(c["se"]) else f" +- {scale * c['se']:.1f}"
        return f"{scale * c['mean']:+.1f}{se}{unit}"

    lines = ["## Drift from t = 0 (from each replica's first frame to its scored window; mean +- s.e. over replicas)",
             "", "| model | " + " | ".join(f"{k.split(':')[1]} merge distance" for k in merge)
             + " | potential energy (kJ/mol) | energy slope in the window (kJ/mol/ps) |",
             "|---|" + "---|" * (len(merge) + 2)]
    for name, a in models.items():
        e = a.drift.get("energy")
        lines.append(f"| {name} | " + " | ".join(cell(a.drift[k]) if k in a.drift else "n/a" for k in merge)
                     + f" | {cell(e, 1.0, '') if e else 'n/a'} | "
                     + (f"{e['slope']['mean']:+.3g}" if e else "n/a") + " |")
    ens = [a for n, a in analysis.models.items() if model_kind(n) == "ensemble"]
    if ens and any(t is not None for t in ens[0].pymbar_t0_frames):
        d = common_discard(ens[0].pymbar_t0_frames)
        lines += ["", f"Equilibration discard chosen from the reference model (the ensemble; the largest pymbar t0 "
                  f"of its replicas): {d} frames ({d * frame_ps:g} ps), the same for every model; this run "
                  f"discarded {ens[0].discard_frames}."]
    return "\n".join(lines) + "\n"


def reference_markdown(analysis: AnalysisResult) -> str:
    """The reference check of the AA reference (:mod:`openmm_cgkd.analysis.reference_check`)."""
    c = analysis.reference_check
    if c is None:
        return ""
    return ("## Reference check (has the AA reference rearranged?)\n\n" + c["verdict"] + ".\n\n"
            f"Frozen when at least {100 * c['thresholds']['still']:g} % of the first-shell pairs are still "
            f"neighbours at the end, or the RMS displacement is below {c['thresholds']['displacement_ratio']:g} of "
            "the neighbour distance (docs/evidence.md). A frozen reference's noise floor is that of one packing.\n")


# ------------------------------------------------------------------------------ findings
PHI_PSI_KIND = "phi_psi_js"  # a study with analysis.ramachandran: each replica's phi/psi Jensen-Shannon divergence
KINDS = ("rdf", "adf", "cdf", PHI_PSI_KIND)  # the per-replica scores the findings and the student choice test


def kind_name(kind: str) -> str:
    """A score's short name in tables and verdicts: "RDF", ..., "phi/psi JS"."""
    return "phi/psi JS" if kind == PHI_PSI_KIND else kind.upper()


def kind_label(kind: str) -> str:
    """A score's column heading: "RDF TAE", ..., "phi/psi JS"."""
    return kind_name(kind) if kind == PHI_PSI_KIND else f"{kind.upper()} TAE"


def _entry(a, kind: str) -> dict | None:
    """Model ``a``'s summary entry of score ``kind`` ({mean, std, n, values} over its scored
    replicas): a TAE from its summary, the phi/psi JS from its ``ramachandran`` part."""
    if a is None:
        return None
    if kind != PHI_PSI_KIND:
        return a.summary.get(kind)
    values = [r["js"] for r in (a.ramachandran or {}).get("replicas", ())]
    if not values:
        return None
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values), "values": values}


def _stat(a, kind: str):
    """(mean, std, n) of a model's score ``kind`` over its scored replicas, or None."""
    return summary_stat(_entry(a, kind))


def _has(models, kind: str) -> bool:
    """Whether any model has a score ``kind`` (a molecule without a box has no RDF/ADF/CDF)."""
    return any(_stat(a, kind) is not None for a in models.values())


def _values(a, kind: str) -> list[float] | None:
    """The per-replica scores ``kind`` of model ``a`` (its scored replicas, in replica order)."""
    entry = _entry(a, kind)
    if not entry or not entry.get("values"):
        return None
    v = [float(x) for x in entry["values"]]
    return v if all(math.isfinite(x) for x in v) else None


def _starts(runs: MDResult | None, name: str) -> list[tuple[int, int]] | None:
    """(start frame, seed) of the scored (not failed) replicas of ``name``, in replica order."""
    if runs is None or name not in runs.models:
        return None
    return [(r.start_frame, r.seed) for r in runs.models[name] if not r.failed]


def paired(runs: MDResult | None, name_a: str, name_b: str) -> bool:
    """Do the scored replicas of models ``name_a`` and ``name_b`` share their starts and seeds,
    one for one (replica k of both from the same frame with the same seed)? Then they are
    compared by the paired t-test."""
    sa, sb = _starts(runs, name_a), _starts(runs, name_b)
    return sa is not None and sa == sb and len(sa) >= 2


def _teacher_means(teachers: list, kind: str) -> list[float] | None:
    """The single teachers' mean TAEs of ``kind``: the sample "a single teacher" is judged by."""
    v = [m[0] for m in (_stat(t, kind) for t in teachers) if m is not None]
    return v or None


def lower(a, b, kind: str, is_paired: bool = False, rules: StatisticsConfig | None = None) -> Decision:
    """Model ``a``'s TAEs of ``kind`` against model ``b``'s as one decision
    (:func:`~openmm_cgkd.analysis.statistics.decide`: Welch, or paired when ``is_paired``): its
    ``verdict`` "lower (Holm-adjusted p = ...)" / "higher (...)" / "not resolved (detectable
    difference >= X)" / "n/a (fewer than 2 replicas)"."""
    return decide([(kind, _values(a, kind), _values(b, kind), is_paired, False)], rules)[0]


def below_teachers(a, teachers: list, kind: str, rules: StatisticsConfig | None = None) -> Decision:
    """Model ``a``'s TAEs of ``kind`` against the single teachers' mean TAEs (one value per
    teacher: Welch), as :func:`lower`."""
    return decide([(kind, _values(a, kind), _teacher_means(teachers, kind), False, False)], rules)[0]


PAPER_RECIPE = "ensemble-e-ft-faa"  # the paper's best student: ensemble labels, {e_T, F_T, F_AA}
BEST_STUDENT_RULE = ("fewest failed replicas, then stable; then the one significantly lower (t-tests, Holm over "
                     "all the candidates' comparisons) than every other ensemble-distilled student in at least one "
                     "TAE and higher in none; else the paper's recipe {e_T, F_T, F_AA}")  # as the report states it


def best_student(analysis: AnalysisResult, students: StudentsResult, runs: MDResult | None = None,
                 rules: StatisticsConfig | None = None) -> tuple[str, str]:
    """The ensemble-distilled student to ship, by a rule fixed before the results: (variant, why).

    1. the fewest failed replicas (as a fraction), then stable before not stable, then passing
       the contact gate (:func:`~openmm_cgkd.analysis.contacts.contact_gate`) before failing it
       (where the contacts were measured);
    2. of those, the one significantly lower than every other in at least one TAE and
       significantly higher in none (t-tests, paired where the replicas share starts and seeds,
       Holm's correction over every comparison of every pair of candidates in every TAE);
    3. when no single one is (the replicas cannot choose), the paper's recipe ``ensemble-e-ft-faa``
       if it is left, else the lowest sum of mean TAEs.

    Raises ``LookupError`` when no ensemble-distilled student has been analysed."""
    cands = {v: analysis.models[student_model(v)] for v, s in students.students.items()
             if s.labels == "ensemble" and student_model(v) in analysis.models}
    if not cands:
        raise LookupError("no ensemble-distilled student has been analysed")
    fail = {v: a.n_failed / max(a.n_replicas, 1) for v, a in cands.items()}
    left = {v: a for v, a in cands.items() if fail[v] == min(fail.values())}
    if any(a.stable for a in left.values()):
        left = {v: a for v, a in left.items() if a.stable}
    dropped = sorted(set(cands) - set(left))
    pre = f"{', '.join(dropped)} left out (more failed replicas or not stable); " if dropped else ""
    gated = {v: contact_gate(a.coordination).passed for v, a in left.items() if a.coordination}
    if any(gated.values()):
        failing = sorted(v for v, ok in gated.items() if not ok)
        left = {v: a for v, a in left.items() if gated.get(v, True)}
        pre += f"{', '.join(failing)} left out (failed the contact gate); " if failing else ""
    if len(left) == 1:
        (v,) = left
        return v, (pre + "the only candidate left") if pre else "the only ensemble-distilled student"
    kinds = [k for k in KINDS if all(_stat(a, k) is not None for a in left.values())]
    pairs = [(v, w) for v in left for w in left if v < w]
    questions = [(f"{v}|{w}|{k}", _values(left[v], k), _values(left[w], k),
                  paired(runs, student_model(v), student_model(w)), False) for v, w in pairs for k in kinds]
    outcome = {d.label: d.outcome for d in decide(questions, rules)}

    def beats(v, w) -> bool:
        flip = {"lower": "higher", "higher": "lower"}
        got = [outcome[f"{v}|{w}|{k}"] if v < w else flip.get(outcome[f"{w}|{v}|{k}"], "not resolved")
               for k in kinds]
        return "lower" in got and "higher" not in got

    winners = [v for v in left if all(beats(v, w) for w in left if w != v)]
    if len(winners) == 1:
        v = winners[0]
        return v, pre + (f"significantly lower than {', '.join(w for w in left if w != v)} in at least one TAE, "
                         "higher in none")
    if PAPER_RECIPE in left:
        return PAPER_RECIPE, pre + "the replicas do not resolve a better one: the paper's recipe {e_T, F_T, F_AA}"
    v = min(left, key=lambda w: sum(_stat(left[w], k)[0] for k in kinds))
    return v, pre + "the replicas do not resolve a better one: the lowest sum of mean TAEs"


def _cells(models: list, kinds) -> str:
    """Table cells: per kind the models' mean TAEs, "a vs b"."""
    cells = []
    for kind in kinds:
        vals = [_stat(m, kind) for m in models]
        cells.append(" vs ".join("n/a" if v is None else f"{v[0]:.3f}" for v in vals))
    return " | ".join(cells)


def rules_markdown(rules: StatisticsConfig) -> str:
    """The decision rules in one paragraph (docs/evidence.md states them in full)."""
    return (f"Each verdict is a test on the per-replica scores: Welch's t-test, or the paired t-test where the two "
            f"models' replicas share their starts and seeds; two-sided p-values, Holm's correction over all the "
            f"decisions of this table (family-wise alpha {rules.alpha:g}). \"lower\" / \"higher\": significant "
            f"after Holm. \"Equivalent within {100 * rules.equivalence_margin:g} %\" (asked where a finding says "
            f"\"matches\" or \"inherits\" or \"no difference\"): two one-sided tests that the ratio of mean "
            f"scores lies in {1 - rules.equivalence_margin:g}-{1 + rules.equivalence_margin:g} (Fieller-type, the "
            f"margin declared in the config before the runs), Holm over those tests. Otherwise \"not resolved\", "
            f"with the smallest difference of means these replicas could have detected (two-sided alpha "
            f"{rules.alpha:g}, power {rules.power:g}, from the observed spreads; a lower bound). A single teacher "
            f"is judged by the teachers' mean TAEs, one value per teacher.")


def finding_decisions(analysis: AnalysisResult, students: StudentsResult, runs: MDResult | None = None,
                      rules: StatisticsConfig | None = None) -> list[tuple[str, str, list[str], list[Decision]]]:
    """The method's findings as one family of decisions: per row (finding, compared, table
    cells per kind, decisions per kind), in report order. Holm runs over all of them."""
    models = analysis.models
    kinds = [k for k in KINDS if _has(models, k)]
    teachers = {n: a for n, a in models.items() if model_kind(n) == "teacher"}
    ens_name = next((n for n in models if model_kind(n) == "ensemble"), "ensemble")
    ensemble = models.get(ens_name)
    rows: list[tuple[str, str, list[str], list[tuple]]] = []

    def mean_teacher_cells(a) -> list[str]:
        out = []
        for k in kinds:
            m, t = _stat(a, k), _teacher_means(list(teachers.values()), k)
            out.append(f"{'n/a' if m is None else format(m[0], '.3f')} vs "
                       f"{'n/a' if t is None else format(float(np.mean(t)), '.3f')}")
        return out

    def vs_teachers(a) -> list[tuple]:
        return [(k, _values(a, k), _teacher_means(list(teachers.values()), k), False, False) for k in kinds]

    def vs(a_name, b_name, equivalence) -> list[tuple]:
        a, b = models[a_name], models[b_name]
        return [(k, _values(a, k), _values(b, k), paired(runs, a_name, b_name), equivalence) for k in kinds]

    if ensemble is not None and teachers:
        rows.append(("the ensemble beats a single teacher", f"{ens_name} vs the teachers' mean",
                     mean_teacher_cells(ensemble), vs_teachers(ensemble)))
    ens_students = {student_model(n): s for n, s in students.students.items() if s.labels == "ensemble"}
    for name in ens_students:
        if name not in models:
            continue
        if ensemble is not None:
            rows.append(("the student matches the ensemble", f"{name} vs {ens_name}",
                         _cells([models[name], ensemble], kinds).split(" | "), vs(name, ens_name, True)))
        if teachers:
            rows.append(("the student beats a single teacher", f"{name} vs the teachers' mean",
                         mean_teacher_cells(models[name]), vs_teachers(models[name])))
    with_e = [n for n, s in ens_students.items() if s.variant == "ensemble-e-ft-faa" and n in models]
    without_e = [n for n, s in ens_students.items() if s.variant == "ensemble-ft-faa" and n in models]
    if with_e and without_e:
        rows.append(("per-bead energies help", f"{with_e[0]} vs {without_e[0]}",
                     _cells([models[with_e[0]], models[without_e[0]]], kinds).split(" | "),
                     vs(with_e[0], without_e[0], True)))
    singles = {n: s for n, s in students.students.items() if s.labels != "ensemble" and s.member is not None}
    for n, s in singles.items():
        a_name, t_name = student_model(n), teacher_model(s.member)
        if a_name in models and t_name in models:
            rows.append(("a single-teacher student inherits its teacher", f"{a_name} vs {t_name}",
                         _cells([models[a_name], models[t_name]], kinds).split(" | "), vs(a_name, t_name, True)))
    if with_e:
        for n, s in singles.items():
            a_name = student_model(n)
            if a_name in models and s.variant == "single-e-ft-faa":
                rows.append(("ensemble labels beat one teacher's", f"{with_e[0]} vs {a_name}",
                             _cells([models[with_e[0]], models[a_name]], kinds).split(" | "),
                             vs(with_e[0], a_name, False)))
    questions = [q for row in rows for q in row[3]]
    decisions = iter(decide(questions, rules))
    return [(f, c, cells, [next(decisions) for _ in qs]) for f, c, cells, qs in rows]


def findings_markdown(analysis: AnalysisResult, students: StudentsResult, runs: MDResult | None = None,
                      rules: StatisticsConfig | None = None) -> str:
    """The method's findings (ensemble better than its teachers; ensemble-distilled students stable
    and as good as the ensemble, better than a single teacher; per-bead energies matter; students
    of one teacher inherit its errors) checked against this run's TAEs by the decision rules of
    :mod:`openmm_cgkd.analysis.statistics` (``rules``; pairing from ``runs``), with the
    reference's noise floor."""
    rules = rules or StatisticsConfig()
    models = analysis.models
    kinds = [k for k in KINDS if _has(models, k)]
    teachers = {n: a for n, a in models.items() if model_kind(n) == "teacher"}
    head = ["## The method's findings, checked (means over the scored replicas of each score: the TAEs of the "
            "structure, the Jensen-Shannon divergence of the phi/psi distribution; lower is better)", "",
            rules_markdown(rules), ""]
    floor = analysis.noise_floor
    if floor is not None:
        span = f"{floor.block_ps:g} ps, " if floor.block_ps is not None else ""
        head += [f"Noise floor (blocks of {span}{floor.block_frames} reference frames, as long as the part of a replica "
                 f"that is scored, against the other half of the reference; {floor.n_blocks} blocks): "
                 + ", ".join(f"{k.upper()} {floor.summary[k].mean:.3f} +- {floor.summary[k].std:.3f}"
                             for k in kinds if k in floor.summary)
                 + ". A model TAE near it cannot be told from the AA reference.", ""]
    table = ["| finding | compared | " + " | ".join(kind_label(k) for k in kinds) + " | verdicts |",
             "|---|---|" + "---|" * len(kinds) + "---|"]
    if teachers:
        unstable = sum(1 for a in teachers.values() if not a.stable)
        late = sum(len(a.not_equilibrated_within_discard) for a in teachers.values())
        n_rep = sum(a.n_replicas for a in teachers.values())
        table.append(f"| single teachers drift or cluster | {len(teachers)} teachers, {n_rep} replicas | "
                     + " | ".join("-" for _ in kinds)
                     + f" | {unstable} of {len(teachers)} teachers not stable; {late} replica(s) not equilibrated "
                       "within the discard |")
    rows = finding_decisions(analysis, students, runs, rules)
    for finding, compared, cells, decisions in rows:
        verdicts = "; ".join(f"{kind_name(k)} {d.verdict}" for k, d in zip(kinds, decisions))
        table.append(f"| {finding} | {compared} | {' | '.join(cells)} | {verdicts} |")
    if len(table) == 2:
        return ""
    counts = {}
    for *_, decisions in rows:
        for d in decisions:
            counts[d.outcome] = counts.get(d.outcome, 0) + 1
    tally = (f"Of {sum(counts.values())} decisions: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
             + ".") if counts else ""
    return "\n".join(head + table + ["", tally]) + "\n"


def contacts_plot(coordination: dict[str, dict], path: Path, title: str = "") -> Path:
    """Per pair A-B (``coordination``: :attr:`ModelAnalysis.coordination`), the B beads per A bead
    closer than the AA's closest contact: model and AA bars, and the gate's limit (dashed)."""
    from openmm_cgkd.figures import new_figure

    pairs = list(coordination)
    fig = new_figure(figsize=(1.1 * max(3, len(pairs)) + 1.5, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(pairs))
    model = [coordination[p]["model_per_a"] for p in pairs]
    aa = [coordination[p]["reference_per_a"] for p in pairs]
    ax.bar(x - 0.2, model, 0.4, color="C3", label="model")
    ax.bar(x + 0.2, aa, 0.4, color="0.4", label="AA")
    limit = [GATE_FACTOR * v + GATE_FLOOR for v in aa]
    ax.hlines(limit, x - 0.4, x + 0.4, colors="k", linestyles="--", lw=1, label="gate")
    ax.set_xticks(x, [f"{p}\n< {coordination[p]['contact_nm']:.3f} nm" for p in pairs], fontsize=7)
    ax.set_ylabel("neighbours per bead (B per A)")
    ax.set_title(title or "Coordination below the AA's closest contact", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path, tight=True)


def comparison_plot(analysis: AnalysisResult, path: Path) -> Path:
    """Grouped bar chart of summary TAEs with error bars, one group per kind (rdf, adf, cdf)."""
    from openmm_cgkd.figures import colormap, new_figure

    models = analysis.models
    kinds = [k for k in ("rdf", "adf", "cdf") if any(k in a.summary for a in models.values())]
    names = list(models)
    fig = new_figure(figsize=(4.5 * max(1, len(kinds)), 4))
    axes = fig.subplots(1, max(1, len(kinds)), squeeze=False)
    colours = colormap("tab10")(np.arange(len(names)) % 10)
    for ax, kind in zip(axes[0], kinds):
        means = [models[n].summary.get(kind, {}).get("mean") for n in names]
        stds = [models[n].summary.get(kind, {}).get("std") for n in names]
        means = [np.nan if m is None else m for m in means]
        stds = [0.0 if s is None or not math.isfinite(s) else s for s in stds]
        ax.bar(range(len(names)), means, yerr=stds, color=colours, capsize=3)
        floor = analysis.noise_floor.summary.get(kind) if analysis.noise_floor is not None else None
        if floor is not None and math.isfinite(floor.mean):
            ax.axhline(floor.mean, color="0.3", ls="--", lw=1, label="noise floor (reference vs itself)")
            ax.legend(fontsize=7, loc="upper left")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{kind.upper()} TAE")
        ax.set_ylabel("TAE (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def _grid(n: int, ncols: int = 3, size=(3.8, 2.8)):
    from openmm_cgkd.figures import new_figure

    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig = new_figure(figsize=(size[0] * ncols + 0.8, size[1] * nrows + 0.9))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()[:n]


def model_overlays(reports: dict, kind: str, path: Path) -> Path:
    """Per curve (pair for ``rdf``, species for ``cdf``): every model's mean over its scored
    replicas (coloured) over the AA reference (black, dashed)."""
    from openmm_cgkd.analysis.plots import XLABELS, YLABELS

    scored = {n: r for n, r in reports.items() if r.good_replicas}
    reference = next(iter(reports.values())).reference.get(kind, {})
    keys = [k for k in reference if any(k in r.mean.get(kind, {}) for r in scored.values())]
    fig, axes = _grid(max(1, len(keys)))
    for ax, key in zip(axes, keys):
        ref = reference[key]
        for i, (name, rep) in enumerate(scored.items()):
            if key in rep.mean[kind]:
                m = rep.mean[kind][key]
                ax.plot(m.centers, m.values, color=f"C{i % 10}", lw=1.0, label=name)
        ax.plot(ref.centers, ref.values, "k--", lw=1.3, label="AA")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel(XLABELS.get(kind, ""))
        ax.set_ylabel(YLABELS.get(kind, ""))
    if keys:
        axes[0].legend(fontsize=6)
    fig.suptitle(f"{kind.upper()}: models (mean over replicas) vs AA")
    return _save(fig, path, tight=True)


def energy_panels(reports: dict, discard_ps: float, path: Path) -> Path:
    """One panel per model: the potential energy of each replica against time, the fixed discard
    (grey line) and pymbar's equilibration time of each replica (dotted)."""
    fig, axes = _grid(max(1, len(reports)), ncols=3, size=(4.2, 2.8))
    for ax, (name, rep) in zip(axes, reports.items()):
        for i, r in enumerate(rep.replicas):
            if r.energy_series is None:
                continue
            x, e = r.energy_series
            ax.plot(x, e, color=f"C{i % 10}", lw=0.7, label=r.name + (" (failed)" if r.failed else ""))
            if r.equilibration is not None and 0 <= r.equilibration.t0_index < len(x):
                ax.axvline(x[r.equilibration.t0_index], color=f"C{i % 10}", ls=":", lw=1)
        ax.axvline(discard_ps, color="0.5", lw=1.2)
        ax.set_title(f"{name}: {rep.n_failed} of {len(rep.replicas)} failed", fontsize=8)
        ax.set_xlabel("time (ps)")
        ax.set_ylabel("potential energy (kJ/mol)")
        ax.legend(fontsize=5)
    title = f"Potential energy per replica (grey: the {discard_ps:g} ps discard; dotted: pymbar t0)"
    fig.suptitle(title if len(reports) > 1 else title.replace(" (", "\n(", 1), fontsize=9)  # one panel: narrow
    return _save(fig, path, tight=True)


def learning_curves_plot(curves: dict[str, dict[str, str | Path]], path: Path) -> Path:
    """One panel per model (``curves``: {model: {run label: metrics.csv}}): train (dashed) and
    validation (solid) loss per epoch, log scale."""
    from openmm_cgkd.training.metrics import read_metrics_csv

    fig, axes = _grid(max(1, len(curves)), ncols=3, size=(4.0, 2.8))
    for ax, (model, runs) in zip(axes, curves.items()):
        for i, (label, csv_path) in enumerate(runs.items()):
            if not Path(csv_path).is_file():
                continue
            data = read_metrics_csv(csv_path)
            for key, style in (("train_loss", "--"), ("val_loss", "-")):
                if data.get(key):
                    ep, val = zip(*sorted(data[key].items()))
                    ax.plot(ep, val, style, color=f"C{i % 10}", lw=0.9,
                            label=f"{label} {key.split('_')[0]}" if len(runs) <= 2 else None)
        ax.set_yscale("log")
        ax.set_title(model, fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        if len(runs) <= 2:
            ax.legend(fontsize=6)
    fig.suptitle("Learning curves (dashed: training, solid: validation)")
    return _save(fig, path, tight=True)


def _num(v, fmt: str) -> str:
    """``v`` formatted by ``fmt``; "n/a" for a number that is missing (None: strict JSON's NaN)."""
    return "n/a" if v is None else format(v, fmt)


def _hms(seconds) -> str:
    if seconds is None:
        return "n/a"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _training_rows(teachers: TeachersResult, students: StudentsResult) -> list[str]:
    rows = ["| model | epochs | stopped early | best val loss | val-block force RMSE (kJ/mol/nm) |", "|---|---|---|---|---|"]
    val = teachers.validation_forces
    for k, run in enumerate(teachers.runs):
        rmse = f"{val[k]['rmse']:.2f}" if k < len(val) else "n/a"
        rows.append(f"| teacher {k:02d} | {run.epochs} | {run.stopped_early} | "
                    f"{'n/a' if run.best_val_loss is None else format(run.best_val_loss, '.4g')} | {rmse} |")
    for name, s in students.students.items():
        run = s.run
        rows.append(f"| student {name} | {run.epochs} | {run.stopped_early} | "
                    f"{'n/a' if run.best_val_loss is None else format(run.best_val_loss, '.4g')} | - |")
    return rows


def _md_temperature(cfg) -> str:
    """The MD temperature of the report: the config's, else the data's (the default of MD)."""
    if cfg.md.temperature_K is not None:
        return f"{cfg.md.temperature_K:g} K"
    import h5py

    try:
        with h5py.File(cfg.dataset, "r") as h5:
            t = h5.attrs.get("temperature_K")
    except OSError:
        t = None
    return "the data's temperature" + ("" if t is None else f", {float(t):g} K")


def write_pipeline_report(out: Path, cfg, teachers: TeachersResult, students: StudentsResult, runs: MDResult,
                          analysis: AnalysisResult, times: dict, log=print, dest: Path | None = None,
                          note: str | None = None) -> ReportResult:
    """Write ``report.md``, ``report.json``, ``tae_comparison.png`` and ``learning_curves.png`` of
    the run in ``out`` into ``dest`` (default ``out``); returns their paths. ``note``: a paragraph
    under the title (the interim report says what it is)."""
    out = Path(out)
    dest = out if dest is None else Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rel = lambda p: relative_path(p, dest)  # noqa: E731
    stamp = {}
    if (out / "data" / "cg.json").is_file():
        stamp = json.loads((out / "data" / "cg.json").read_text())
    md = cfg.md
    lines = ["# openmm_cgkd pipeline report", ""] + ([note, ""] if note else []) + [
             f"Dataset: `{Path(cfg.dataset).name}`" + (f" ({stamp['selection']})" if stamp.get("selection") else "")
             + f"; split {cfg.split.train:g}/{cfg.split.val:g}/{cfg.split.test:g} in contiguous blocks, "
             f"{cfg.split.gap_frames} frame(s) left out between blocks.",
             f"Model: `{json.dumps(cfg.model, sort_keys=True)}`; {len(teachers.members)} teachers.",
             f"MD: {md.n_steps} steps of {md.timestep_fs:g} fs ({md.n_steps * md.timestep_fs / 1000:g} ps) per "
             f"replica at {_md_temperature(cfg)} (Langevin, friction {md.friction_per_ps:g}/ps), frames every "
             f"{md.interval_steps * md.timestep_fs / 1000:g} ps; every replica starts from its own training frame "
             f"with its own seed. The first {analysis_settings(cfg).discard_frames} frame(s) of every replica of "
             "every model are discarded (pymbar's equilibration time is a check).", "",
             reference_markdown(analysis), comparison_markdown(analysis, runs),
             "![TAE comparison](tae_comparison.png)", "", *phi_psi_section(analysis, dest),
             contacts_markdown(analysis),
             drift_markdown(analysis, md.interval_steps * md.timestep_fs / 1000.0 * analysis_settings(cfg).stride),
             findings_markdown(analysis, students, runs, cfg.statistics)]
    try:
        best = best_student(analysis, students, runs, cfg.statistics)
    except LookupError:
        best = None
    if best is not None:
        lines += ["## The student to ship", "",
                  f"**{best[0]}**: {best[1]} (rule, fixed before the results: {BEST_STUDENT_RULE}). "
                  "`models/ship_from_pipeline.py` ships it by default.", ""]
    failures = [(name, f) for name, a in analysis.models.items() for f in a.failures]
    lines += ["## Failed replicas", ""]
    if failures:
        lines += ["| model | replica | step | reason |", "|---|---|---|---|"]
        lines += [f"| {n} | {f['replica']} | {f['step']} | {f['reason']} |" for n, f in failures]
    else:
        lines.append("None: every replica ran to its end.")
    lines += ["", "## Time step check", ""]
    checks = runs.timestep_check
    if checks:
        lines += ["| model | step (fs) | NVE drift (kJ/mol/ns per bead) | (kT/ns per bead) | NVE RMS (kJ/mol per bead) | "
                  "NVT temperature (K) | target (K) | verdict |", "|---|---|---|---|---|---|---|---|"]
        for name, c in checks.items():
            verdict = "safe" if c["safe"] else ("blew up: " + c["blew_up"] if c.get("blew_up") else "NOT safe")
            lines.append(f"| {name} | {c['timestep_fs']:g} | {_num(c['nve_drift_kj_mol_per_ns_per_bead'], '+.3g')} | "
                         f"{_num(c['nve_drift_kT_per_ns_per_bead'], '+.3g')}"
                         + (f" +- {_num(c['nve_drift_se_kT_per_ns_per_bead'], '.2g')}"
                            if "nve_drift_se_kT_per_ns_per_bead" in c else "") + " | "
                         f"{_num(c['nve_rms_kj_mol_per_bead'], '.3g')} | "
                         f"{_num(c['nvt_mean_temperature_K'], '.1f')} +- {_num(c['nvt_temperature_sem_K'], '.1f')} | "
                         f"{c['target_temperature_K']:g} | {verdict} |")
        lines += ["", f"Limits: |drift| <= {next(iter(checks.values()))['max_drift_kT_per_ns']:g} kT/ns per bead "
                  "up to 2 standard errors, "
                  f"NVT temperature within {100 * next(iter(checks.values()))['max_temperature_error']:g} % of the "
                  "target up to 2 standard errors."]
    else:
        lines.append("Not run (md.timestep_check.nve_ps = 0).")

    curves = {"teachers": {f"member {k}": r.metrics_csv for k, r in enumerate(teachers.runs)}}
    curves.update({f"student {n}": {"student": s.run.metrics_csv} for n, s in students.students.items()})
    lc = learning_curves_plot(curves, dest / "learning_curves.png")
    lines += ["", "## Training", ""] + _training_rows(teachers, students) + ["", f"![learning curves]({lc.name})", ""]

    figs = analysis.figures
    lines += ["## Structure and equilibration", ""]
    for key, title in (("rdf_overlay", "Per-pair RDFs"), ("cdf_overlay", "Per-species CDFs"),
                       ("energy", "Potential-energy equilibration")):
        if figs.get(key) and Path(figs[key]).is_file():
            lines += [f"![{title}]({rel(figs[key])})", ""]
    lines += ["Per model (its replicas' mean with a +-1 std band over the AA reference, time-resolved CDFs, "
              "potential energy, stability and pymbar per replica):", ""]
    for name, a in analysis.models.items():
        d = a.dir
        links = [f"[{f.stem}]({rel(f)})" for f in (d / "summary.md", d / "rdf.png", d / "cdf.png", d / "cdf_time.png",
                                                    d / "energy.png") if f.is_file()]
        lines.append(f"- {name}: " + ", ".join(links))
    lines += ["", "## Wall time per stage (summed over the attempts that made it)", "",
              "| stage | wall time (h:mm:ss) | attempts |", "|---|---|---|"]
    for stage, t in times.items():
        if t is not None:
            lines.append(f"| {stage} | {_hms(t.get('seconds'))} | {t.get('attempts')} |")
    text = "\n".join(lines) + "\n"
    (dest / "report.md").write_text(text)
    comparison_plot(analysis, dest / "tae_comparison.png")
    trained = teachers.to_dict()
    data = {"analysis": analysis.to_dict(), "md": runs.to_dict(),
            "teachers": {k: trained[k] for k in ("runs", "validation_forces", "metrics")},
            "students": students.to_dict(), "seconds": times,
            "best_student": None if best is None else {"variant": best[0], "why": best[1]}}
    write_json(dest / "report.json", data, portable=True, newline=False)
    log(text)
    return ReportResult(report=dest / "report.md", plot=dest / "tae_comparison.png", report_json=dest / "report.json",
                        learning_curves=lc)
