"""The pipeline's report: ``<out>/report.md`` and its figures (what the ``report`` stage writes).

* TAE table: RDF, ADF, CDF per model, mean +- std over the scored replicas, "k of n replicas
  failed", stability, replicas not equilibrated within the fixed discard (pymbar), ns/day;
* the method's findings checked, and the ensemble-distilled student to ship (:func:`best_student`);
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

from openmm_cgkd.analysis.plots import _save
from openmm_cgkd.workflow.config import analysis_settings
from openmm_cgkd.workflow.results import AnalysisResult, MDResult, ReplicaRecord, ReportResult, StudentsResult, \
    TeachersResult, model_kind, student_model, teacher_model

__all__ = ["write_pipeline_report", "summary_stat", "plus_minus", "comparison_markdown", "findings_markdown",
           "lower", "below_teachers", "best_student", "comparison_plot", "model_overlays", "energy_panels",
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


def comparison_markdown(analysis: AnalysisResult, runs: MDResult) -> str:
    """The TAE table (mean +- std over scored replicas, failed replicas counted) with ns/day."""
    models = analysis.models
    lines = ["## Structural error (TAE vs AA; mean +- std over the scored replicas; lower is better)", "",
             "Closest contact: the pair whose g(r) (mean over replicas) is highest below the distance where the "
             "AA g(r) begins (a pairing the AA liquid does not have; 0: none).", "",
             "| model | replicas | RDF | ADF | CDF | stable | not equilibrated within the discard | closest contact "
             "| ns/day | platform |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, a in models.items():
        reps = runs.models.get(name, ())
        failed = f"{a.n_failed} of {a.n_replicas} replicas failed"
        plat = next((r.platform for r in reps if r.platform), "n/a")
        lines.append(f"| {name} | {failed} | {plus_minus(a.summary.get('rdf'))} | {plus_minus(a.summary.get('adf'))} | "
                     f"{plus_minus(a.summary.get('cdf'))} | {'yes' if a.stable else 'NO'} | "
                     f"{', '.join(a.not_equilibrated_within_discard) or 'none'} | {_contact(a)} | {_speed(reps)} | "
                     f"{plat} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ findings
KINDS = ("rdf", "adf", "cdf")
STUDENT_WITHIN = 0.15  # a student "matches" the ensemble when its mean TAE is at most 15 % above it


def _stat(a, kind: str):
    """(mean, std, n) of a model's TAE of ``kind`` over its scored replicas, or None."""
    return summary_stat(a.summary.get(kind) if a is not None else None)


def _resolved(mean_a: float, se_a: float, mean_b: float, se_b: float) -> str:
    """"yes" (a below b) / "no" when the means differ by more than 2 combined standard errors."""
    if abs(mean_a - mean_b) <= 2.0 * math.hypot(se_a, se_b):
        return "not resolved"
    return "yes" if mean_a < mean_b else "no"


def lower(a, b, kind: str) -> str:
    """Is model ``a``'s mean TAE of ``kind`` below model ``b``'s? "yes" / "no" when the difference
    is more than 2 combined standard errors of the two means (std over replicas), else "not
    resolved"; "not resolved (one replica)" when either has a single scored replica (no spread)."""
    sa, sb = _stat(a, kind), _stat(b, kind)
    if sa is None or sb is None:
        return "n/a"
    if min(sa[2], sb[2]) < 2:
        return "not resolved (one replica)"
    return _resolved(sa[0], sa[1] / math.sqrt(sa[2]), sb[0], sb[1] / math.sqrt(sb[2]))


def _means(models, kind: str) -> list[float]:
    """The mean TAEs of ``kind`` of those ``models`` that have scored replicas."""
    return [v[0] for v in (_stat(m, kind) for m in models) if v is not None]


def below_teachers(a, teachers: list, kind: str) -> str:
    """Is model ``a``'s mean TAE of ``kind`` below the median of the single teachers' means? As
    :func:`lower`, the teachers' side uncertain by the spread of their means (std over teachers /
    sqrt(number of teachers): the paper's error bars for single teachers); "not resolved (one
    replica)" / "(one teacher)" when there is no spread to judge by."""
    sa = _stat(a, kind)
    means = _means(teachers, kind)
    if sa is None or not means:
        return "n/a"
    if sa[2] < 2:
        return "not resolved (one replica)"
    if len(means) < 2:
        return "not resolved (one teacher)"
    se_t = float(np.std(means, ddof=1)) / math.sqrt(len(means))
    return _resolved(sa[0], sa[1] / math.sqrt(sa[2]), float(np.median(means)), se_t)


PAPER_RECIPE = "ensemble-e-ft-faa"  # the paper's best student: ensemble labels, {e_T, F_T, F_AA}
BEST_STUDENT_RULE = ("fewest failed replicas, then stable; then the one resolved lower than every other "
                     "ensemble-distilled student in at least one TAE and higher in none; else the paper's recipe "
                     "{e_T, F_T, F_AA}")  # what best_student does, as the report states it


def best_student(analysis: AnalysisResult, students: StudentsResult) -> tuple[str, str]:
    """The ensemble-distilled student to ship, by a rule fixed before the results: (variant, why).

    1. the fewest failed replicas (as a fraction), then stable before not stable;
    2. of those, the one resolved lower (:func:`lower`) than every other in at least one TAE and
       resolved higher in none;
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
    if len(left) == 1:
        (v,) = left
        return v, (pre + "the only candidate left") if pre else "the only ensemble-distilled student"
    kinds = [k for k in KINDS if all(_stat(a, k) is not None for a in left.values())]

    def beats(a, b) -> bool:
        verdicts = [lower(a, b, k) for k in kinds]
        return "yes" in verdicts and "no" not in verdicts

    winners = [v for v, a in left.items() if all(beats(a, b) for w, b in left.items() if w != v)]
    if len(winners) == 1:
        v = winners[0]
        return v, pre + f"resolved lower than {', '.join(w for w in left if w != v)} in at least one TAE, higher in none"
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


def findings_markdown(analysis: AnalysisResult, students: StudentsResult) -> str:
    """The method's findings (ensemble better than its teachers; ensemble-distilled students stable
    and as good as the ensemble, better than a single teacher; per-bead energies matter; students
    of one teacher inherit its errors) checked against this run's TAEs, with the reference's noise
    floor. Every row says what was compared; "not resolved" when the replicas cannot tell."""
    models = analysis.models
    kinds = [k for k in KINDS if any(k in a.summary for a in models.values())]
    teachers = {n: a for n, a in models.items() if model_kind(n) == "teacher"}
    ens_name = next((n for n in models if model_kind(n) == "ensemble"), "ensemble")
    ensemble = models.get(ens_name)
    head = ["## The method's findings, checked (TAE means over the scored replicas; lower is better)", "",
            "A difference counts (yes / no) when it exceeds 2 combined standard errors of the two means "
            "(std over replicas; for the median teacher, the std of the teachers' means over the number of "
            "teachers); otherwise it is \"not resolved\" with these replicas, as it is with one replica. "
            f"\"Matches the ensemble\": mean TAE at most {100 * STUDENT_WITHIN:g} % above the ensemble's.", ""]
    floor = analysis.noise_floor
    if floor is not None:
        head += [f"Noise floor (blocks of {floor.block_frames} reference frames, as many as a replica is scored "
                 f"on, against the other half of the reference; {floor.n_blocks} blocks): "
                 + ", ".join(f"{k.upper()} {floor.summary[k].mean:.3f} +- {floor.summary[k].std:.3f}"
                             for k in kinds if k in floor.summary)
                 + ". A model TAE near it cannot be told from the AA reference.", ""]
    rows = ["| finding | compared | " + " | ".join(f"{k.upper()} TAE" for k in kinds) + " | holds? |",
            "|---|---|" + "---|" * len(kinds) + "---|"]

    def median_teacher(kind):
        vals = _means(teachers.values(), kind)
        return float(np.median(vals)) if vals else None

    def below_median(a, kind):
        return below_teachers(a, list(teachers.values()), kind)

    def verdicts(fn) -> str:
        return ", ".join(f"{k.upper()} {fn(k)}" for k in kinds)

    def median_cells(a) -> str:
        out = []
        for k in kinds:
            m, med = _stat(a, k), median_teacher(k)
            out.append(f"{'n/a' if m is None else format(m[0], '.3f')} vs "
                       f"{'n/a' if med is None else format(med, '.3f')}")
        return " | ".join(out)

    def stability(a) -> str:
        return "n/a" if a is None else (f"{a.n_failed} of {a.n_replicas} failed, "
                                        + ("stable" if a.stable else "NOT stable (drift or clustering)"))

    if teachers:
        unstable = sum(1 for a in teachers.values() if not a.stable)
        late = sum(len(a.not_equilibrated_within_discard) for a in teachers.values())
        n_rep = sum(a.n_replicas for a in teachers.values())
        rows.append(f"| single teachers drift or cluster | {len(teachers)} teachers, {n_rep} replicas | "
                    + " | ".join("-" for _ in kinds)
                    + f" | {unstable} of {len(teachers)} teachers not stable; {late} replica(s) not equilibrated "
                      "within the discard |")
    if ensemble is not None and teachers:
        rows.append(f"| the ensemble beats a single teacher | {ens_name} vs median teacher | {median_cells(ensemble)} "
                    f"| {verdicts(lambda k: below_median(ensemble, k))}; {stability(ensemble)} |")
    ens_students = {student_model(n): s for n, s in students.students.items() if s.labels == "ensemble"}
    for name, s in ens_students.items():
        a = models.get(name)
        if a is None:
            continue
        within = lambda k, a=a: ("n/a" if _stat(a, k) is None or _stat(ensemble, k) is None else  # noqa: E731
                                 "yes" if _stat(a, k)[0] <= (1 + STUDENT_WITHIN) * _stat(ensemble, k)[0] else "no")
        if ensemble is not None:
            rows.append(f"| the student matches the ensemble | {name} vs {ens_name} | {_cells([a, ensemble], kinds)} "
                        f"| {verdicts(within)}; {stability(a)} |")
        if teachers:
            rows.append(f"| the student beats a single teacher | {name} vs median teacher | {median_cells(a)} | "
                        f"{verdicts(lambda k, a=a: below_median(a, k))} |")
    with_e = [n for n, s in ens_students.items() if s.variant == "ensemble-e-ft-faa"]
    without_e = [n for n, s in ens_students.items() if s.variant == "ensemble-ft-faa"]
    if with_e and without_e and with_e[0] in models and without_e[0] in models:
        a, b = models[with_e[0]], models[without_e[0]]
        rows.append(f"| per-bead energies help | {with_e[0]} vs {without_e[0]} | {_cells([a, b], kinds)} | "
                    f"{verdicts(lambda k: lower(a, b, k))} |")
    singles = {n: s for n, s in students.students.items() if s.labels != "ensemble" and s.member is not None}
    for n, s in singles.items():
        a, t = models.get(student_model(n)), models.get(teacher_model(s.member))
        if a is None or t is None:
            continue
        rows.append(f"| a single-teacher student inherits its teacher | {student_model(n)} vs {teacher_model(s.member)} | "
                    f"{_cells([a, t], kinds)} | better than its teacher: {verdicts(lambda k: lower(a, t, k))} |")
    if with_e and with_e[0] in models:
        best = models[with_e[0]]
        for n, s in singles.items():
            a = models.get(student_model(n))
            if a is not None and s.variant == "single-e-ft-faa":
                rows.append(f"| ensemble labels beat one teacher's | {with_e[0]} vs {student_model(n)} | "
                            f"{_cells([best, a], kinds)} | {verdicts(lambda k, a=a: lower(best, a, k))} |")
    if len(rows) == 2:
        return ""
    return "\n".join(head + rows) + "\n"


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


def write_pipeline_report(out: Path, cfg, teachers: TeachersResult, students: StudentsResult, runs: MDResult,
                          analysis: AnalysisResult, times: dict, log=print, dest: Path | None = None,
                          note: str | None = None) -> ReportResult:
    """Write ``report.md``, ``report.json``, ``tae_comparison.png`` and ``learning_curves.png`` of
    the run in ``out`` into ``dest`` (default ``out``); returns their paths. ``note``: a paragraph
    under the title (the interim report says what it is)."""
    from openmm_cgkd.provenance import make_portable, relative_path

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
             f"replica at {md.temperature_K:g} K (Langevin, friction {md.friction_per_ps:g}/ps), frames every "
             f"{md.interval_steps * md.timestep_fs / 1000:g} ps; every replica starts from its own training frame "
             f"with its own seed. The first {analysis_settings(cfg).discard_frames} frame(s) of every replica of "
             "every model are discarded (pymbar's equilibration time is a check).", "",
             comparison_markdown(analysis, runs), "![TAE comparison](tae_comparison.png)", "",
             findings_markdown(analysis, students)]
    try:
        best = best_student(analysis, students)
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
            lines.append(f"| {name} | {c['timestep_fs']:g} | {c['nve_drift_kj_mol_per_ns_per_bead']:+.3g} | "
                         f"{c['nve_drift_kT_per_ns_per_bead']:+.3g} | {c['nve_rms_kj_mol_per_bead']:.3g} | "
                         f"{c['nvt_mean_temperature_K']:.1f} +- {c['nvt_temperature_sem_K']:.1f} | "
                         f"{c['target_temperature_K']:g} | {verdict} |")
        lines += ["", f"Limits: |drift| <= {next(iter(checks.values()))['max_drift_kT_per_ns']:g} kT/ns per bead, "
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
    (dest / "report.json").write_text(json.dumps(make_portable(data, dest), indent=1, default=str))
    log(text)
    return ReportResult(report=dest / "report.md", plot=dest / "tae_comparison.png", report_json=dest / "report.json",
                        learning_curves=lc)
