"""The existing study (systems/des/study) re-read under the rules of docs/evidence.md, from what it
stores: the 36 replica records, their start and final PDBs, and the AA reference.

    uv run python systems/des/evidence_study.py [--study systems/des/study] [--dataset systems/des/reline_252_cg.h5]

* the reference check of the AA reference (from its first frame and from pymbar's t0);
* the 42 verdicts of the report's findings by the new rules (Welch / paired t-tests, Holm, TOST
  within the declared margin, detectable differences), and how many survive with Welch only;
* per model and pair, the coordination number below the AA's closest contact, and the gate;
* drift from t = 0 as far as the records allow: the trajectories are not kept, so the time
  series exist only for the potential energy (every frame) and, for the structure, at frame 0
  (start.pdb), over the scored window (the stored block means) and at the end (final.pdb).

Writes ``systems/des/study_evidence.json`` (override with --out-json) and prints the tables
(Markdown) that docs/evidence.md quotes. Units: nm, ps, kJ/mol.
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _records(study: Path) -> dict[str, list[tuple[Path, dict]]]:
    out: dict[str, list] = {}
    for f in sorted(study.glob("md/*/replica_*/replica.json.gz")):
        out.setdefault(f.parent.parent.name, []).append((f.parent, json.loads(gzip.open(f).read())))
    return out


def reference_section(dataset: Path) -> tuple[dict, list[str]]:
    from openmm_cgkd.analysis.equilibration import detect_equilibration
    from openmm_cgkd.analysis.reference_check import check_reference
    from openmm_cgkd.analysis.report import load_reference
    from openmm_cgkd.data.dataset import CGDataset

    ds = CGDataset.load(dataset)
    traj = load_reference(dataset)
    t0 = detect_equilibration(ds.potential_energy, ds.times).t0_index
    checks = {f"from frame {s}": check_reference(traj, start=s, times=ds.times) for s in (0, t0)}
    lines = ["| start | span (ps) | first-shell pairs | still neighbours at the end | at every frame | "
             "RMS displacement (nm) | neighbour distance (nm) | ratio | frozen |", "|---|---|---|---|---|---|---|---|---|"]
    for name, c in checks.items():
        lines.append(f"| {name} | {c.span_ps:g} | {c.n_pairs} | {100 * c.still:.1f} % | {100 * c.survival:.1f} % | "
                     f"{c.rms_nm:.3f} | {c.neighbour_distance_nm:.3f} | {c.displacement_ratio:.2f} | "
                     f"{'yes' if c.frozen else 'no'} |")
    rms = checks[f"from frame {t0}"].curves["rms_nm"]
    still = checks[f"from frame {t0}"].curves["still"]
    lines += ["", f"From frame {t0}: RMS displacement {rms[1]:.3f} nm after 1 ps, {np.median(rms[1:]):.3f} nm median "
              f"over all lags, {rms.max():.3f} nm at most; still neighbours {100 * still[1:].min():.1f}-"
              f"{100 * still[1:].max():.1f} % at every lag."]
    return {k: c.to_dict() for k, c in checks.items()}, lines


def verdict_section(study: Path) -> tuple[dict, list[str]]:
    from openmm_cgkd.workflow.cache import stage_outputs
    from openmm_cgkd.workflow.report import finding_decisions

    a, md, st = (stage_outputs(study, s) for s in ("analysis", "md", "students"))
    rows = finding_decisions(a, st, md)
    kinds = ("RDF", "ADF", "CDF")
    lines = ["| finding | compared | TAE | test | ratio | p | Holm p | TOST p (Holm) | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    data = []
    for finding, compared, _, decisions in rows:
        for k, d in zip(kinds, decisions):
            t, e = d.test, d.equivalence
            tost = "-" if e is None else f"{e.p_value:.3f} ({d.p_tost_holm:.2f})"
            lines.append(f"| {finding} | {compared} | {k} | {t.test} | {t.mean_a / t.mean_b:.3f} | {t.p_value:.4f} | "
                         f"{d.p_holm:.3f} | {tost} | {d.verdict} |")
            data.append({"finding": finding, "compared": compared, "kind": k, **d.to_dict()})
    n = len(data)
    survive = sum(d.outcome in ("lower", "higher") for *_, ds in rows for d in ds)
    equiv = sum(d.outcome == "equivalent" for *_, ds in rows for d in ds)
    welch = sum(d.outcome in ("lower", "higher") for *_, ds in finding_decisions(a, st, None) for d in ds)
    old = sum(len(re.findall(r"\b(?:RDF|ADF|CDF) (?:yes|no)\b", line.split("|")[-2]))
              for line in (study / "report.md").read_text().splitlines()
              if line.startswith("| ") and line.count("|") == 7)
    lines += ["", f"{survive} of {n} decisions significant after Holm (paired t-tests where the replicas share "
              f"starts and seeds, Welch elsewhere); {welch} of {n} with Welch's test for every comparison; "
              f"{equiv} equivalent within the margin after Holm. The study's report (2 standard errors; \"matches\" "
              f"by a mean at most 15 % above) called {old} of them yes or no."]
    return {"decisions": data, "significant": survive, "significant_welch_only": welch, "equivalent": equiv,
            "old_rule_resolved": old, "n": n}, lines


def contact_section(study: Path, records: dict) -> tuple[dict, list[str]]:
    import mdtraj as md

    from openmm_cgkd.analysis.contacts import contact_coordination, contact_gate
    from openmm_cgkd.analysis.distributions import bead_type_indices
    from openmm_cgkd.analysis.records import curves_from_record
    from openmm_cgkd.analysis.replicas import replica_mean

    ref = curves_from_record(json.loads(gzip.open(study / "md" / "reference.json.gz").read())["curves"])["rdf"]
    first = next(iter(records.values()))[0][0]
    pdb = md.load(str(first / "start.pdb"))
    volume = float(abs(np.linalg.det(pdb.unitcell_vectors[0])))
    counts = {k: len(v) for k, v in bead_type_indices(pdb.topology).items()}
    out, lines = {}, []
    pairs = list(ref)
    lines += ["| model | " + " | ".join(pairs) + " | gate (<= 2 x AA + 0.001) |", "|---|" + "---|" * (len(pairs) + 1)]
    aa = contact_coordination(ref, ref, volume, counts)
    lines.append("| AA (contact, nm) | " + " | ".join(f"{aa[p].reference_per_a:.4f} ({aa[p].contact_nm:.3f})"
                                                     for p in pairs) + " | - |")
    for name, reps in records.items():
        curves = [curves_from_record(r["analysis"]["curves"])["rdf"] for _, r in reps if not r.get("failure")]
        mean = replica_mean(curves)
        cc = contact_coordination(mean, ref, volume, counts)
        gate = contact_gate(cc)
        out[name] = {"coordination": {k: c.to_dict() for k, c in cc.items()}, "gate": gate.to_dict()}
        lines.append(f"| {name} | " + " | ".join(f"{cc[p].model_per_a:.4f}" for p in pairs)
                     + f" | {'pass' if gate.passed else 'FAIL: ' + '; '.join(gate.failed)} |")
    lines += ["", f"Per pair A-B: B beads per A bead closer than the AA's closest contact (the first r where the AA "
              f"g(r) reaches 0.1), from the mean g(r) over the replicas (box {volume:.3f} nm^3; beads: "
              + ", ".join(f"{n} {t}" for t, n in counts.items()) + ")."]
    return {"volume_nm3": volume, "counts": counts, "models": out,
            "aa": {k: c.to_dict() for k, c in aa.items()}}, lines


def drift_section(study: Path, records: dict) -> tuple[dict, list[str]]:
    import mdtraj as md

    from openmm_cgkd.analysis.drift import common_discard, coordination_series, first_minimum, \
        linear_trend, merge_distance_series, over_replicas
    from openmm_cgkd.analysis.records import curves_from_record
    from openmm_cgkd.analysis.statistics import paired_test, welch_test

    ref = curves_from_record(json.loads(gzip.open(study / "md" / "reference.json.gz").read())["curves"])["rdf"]
    cutoffs = {k: first_minimum(g) for k, g in ref.items()}
    per_model = {}
    for name, reps in records.items():
        rows = []
        for rep_dir, r in reps:
            if r.get("failure"):
                continue
            a = r["analysis"]
            start, final = md.load(str(rep_dir / "start.pdb")), md.load(str(rep_dir / "final.pdb"))
            m0, m1 = merge_distance_series(start), merge_distance_series(final)
            c0, c1 = coordination_series(start, cutoffs), coordination_series(final, cutoffs)
            window = {sp: float(np.mean(d["block_means_nm"])) for sp, d in a["stability"]["drift"].items()}
            x = np.asarray(a["energy_series"]["x"])
            e = np.asarray(a["energy_series"]["potential_kj_mol"])
            s0, s1 = a["start_frame"], a["stop_frame"]
            slope_all = linear_trend(x, e)[0]
            slope_win = linear_trend(x[s0:s1], e[s0:s1])[0]
            rows.append({
                "replica": rep_dir.name,
                "merge_window_vs_start": {sp: window[sp] / float(m0[sp][0]) - 1 for sp in window},
                "merge_final_vs_start": {sp: float(m1[sp][0] / m0[sp][0]) - 1 for sp in m0},
                "coordination_start": {k: float(v[0]) for k, v in c0.items()},
                "coordination_final": {k: float(v[0]) for k, v in c1.items()},
                "energy_window_minus_start_kj_mol": float(e[s0:s1].mean() - e[0]),
                "energy_slope_kj_mol_per_ps": {"from_start": slope_all, "window": slope_win},
                "energy_change_in_window_kj_mol": slope_win * float(x[s1 - 1] - x[s0]),
                "pymbar_t0_frames": None if a.get("equilibration") is None else a["equilibration"]["t0_index"]})
        per_model[name] = rows

    def stat(name, get):
        return over_replicas([get(r) for r in per_model[name]])

    species = list(per_model["ensemble-8"][0]["merge_window_vs_start"])
    lines = ["| model | n | " + " | ".join(f"{sp} merge drift (window vs t=0)" for sp in species)
             + " | energy change within the window (kJ/mol) | pymbar t0 (frames) |",
             "|---|---|" + "---|" * (len(species) + 2)]
    summary = {}
    for name in per_model:
        cells, sm = [], {}
        for sp in species:
            m = stat(name, lambda r, sp=sp: r["merge_window_vs_start"][sp])
            sm[sp] = m.to_dict()
            cells.append(f"{100 * m.mean:+.1f} +- {100 * m.se:.1f} %" if m.n > 1 else f"{100 * m.mean:+.1f} %")
        de = stat(name, lambda r: r["energy_change_in_window_kj_mol"])
        t0 = [r["pymbar_t0_frames"] for r in per_model[name]]
        summary[name] = {"merge_window_vs_start": sm, "energy_change_in_window": de.to_dict(), "pymbar_t0": t0}
        lines.append(f"| {name} | {de.n} | " + " | ".join(cells) + f" | {de.mean:+.0f} +- {de.se:.0f} | "
                     f"{', '.join(str(t) for t in t0)} |")
    ens_t0 = [r["pymbar_t0_frames"] for r in per_model["ensemble-8"]]
    discard = common_discard(ens_t0)
    with_e = [r["merge_window_vs_start"]["CHO"] for r in per_model["student-ensemble-e-ft-faa"]]
    without_e = [r["merge_window_vs_start"]["CHO"] for r in per_model["student-ensemble-ft-faa"]]
    w = welch_test(with_e, without_e)
    singles = [t for n, rows in per_model.items() if not n.startswith("ensemble") for t in
               (r["pymbar_t0_frames"] for r in rows)]
    lines += ["", f"Discard from the reference model (ensemble-8, pymbar t0 of its replicas {ens_t0}): "
              f"{discard} frames; single-network replicas with t0 above the study's 100-frame discard: "
              f"{sum(1 for t in singles if t is not None and t > 100)} of {len(singles)} (median "
              f"{np.median([t for t in singles if t is not None]):.0f}).",
              f"Per-bead energies and drift: CHO merge drift {100 * np.mean(with_e):+.1f} % ({{e_T, F_T, F_AA}}) vs "
              f"{100 * np.mean(without_e):+.1f} % ({{F_T, F_AA}}), Welch p = {w.p_value:.3g} (one comparison; "
              f"paired p = {paired_test(with_e, without_e).p_value:.3g})."]
    return {"replicas": per_model, "summary": summary, "discard_from_ensemble_frames": discard,
            "per_bead_energy_cho_drift": {"welch": w.to_dict()}, "cutoffs_nm": cutoffs}, lines


def main(argv=None) -> int:
    from openmm_cgkd.fileio import write_json

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", type=Path, default=HERE / "study")
    p.add_argument("--dataset", type=Path, default=HERE / "reline_252_cg.h5")
    p.add_argument("--out-json", type=Path, default=HERE / "study_evidence.json")
    args = p.parse_args(argv)
    records = _records(args.study)
    out, text = {}, []
    for title, (key, fn) in {"Reference check": ("reference", lambda: reference_section(args.dataset)),
                             "Verdicts": ("verdicts", lambda: verdict_section(args.study)),
                             "Contacts": ("contacts", lambda: contact_section(args.study, records)),
                             "Drift from t = 0": ("drift", lambda: drift_section(args.study, records))}.items():
        data, lines = fn()
        out[key] = data
        text += [f"### {title}", ""] + lines + [""]
    write_json(args.out_json, out)  # strict JSON: NaN written as null
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
