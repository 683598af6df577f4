"""The report's check of the method's findings (openmm_cgkd.workflow.report.findings_markdown) on
hand-made TAEs whose answers are known: what it compares, and when replicas cannot tell."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from openmm_cgkd.analysis.noise import NoiseFloor
from openmm_cgkd.analysis.replicas import replica_stat
from openmm_cgkd.workflow.report import below_teachers, best_student, findings_markdown, lower
from openmm_cgkd.workflow.results import AnalysisResult, ModelAnalysis, StudentResult, StudentsResult, TrainingRun


def _model(rdf: list[float], cdf: list[float] | None = None, stable: bool = True, failed: int = 0) -> ModelAnalysis:
    summary = {"rdf": replica_stat(rdf).to_dict(), "cdf": replica_stat(cdf or rdf).to_dict()}
    return ModelAnalysis(summary, stable, Path("/x"), len(rdf) + failed, failed, (), (), 100, ())


def _student(variant: str, labels: str, member=None) -> StudentResult:
    return StudentResult(variant, labels, member, {}, Path("/b"), TrainingRun(10, True, 1.0, Path("/m.csv")))


def _row(text: str, start: str, compared: str) -> str:
    rows = [line for line in text.splitlines() if line.startswith(f"| {start}") and compared in line]
    assert len(rows) == 1, (start, compared, text)
    return rows[0]


@pytest.mark.parametrize("a, b, expected", [
    ([0.10, 0.11, 0.09, 0.10], [0.20, 0.21, 0.19, 0.20], "lower"),
    ([0.20, 0.21, 0.19, 0.20], [0.10, 0.11, 0.09, 0.10], "higher"),
    ([0.10, 0.20, 0.05, 0.25], [0.16, 0.12, 0.22, 0.14], "not resolved"),  # spread swamps the difference
])
def test_a_difference_counts_only_when_significant(a, b, expected):
    d = lower(_model(a), _model(b), "rdf")
    assert d.outcome == expected
    assert d.test.p_value == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)


def test_the_old_two_standard_error_line_is_not_significant():
    a, b = [0.10, 0.12], [0.14, 0.16]  # 0.04 apart > 2 combined s.e. (0.0283): "yes" under the old rule
    d = lower(_model(a), _model(b), "rdf")
    assert d.outcome == "not resolved" and d.test.p_value == pytest.approx(0.106, abs=0.001)  # t 2.83, 2 df
    assert "detectable difference >= " in d.verdict and d.detectable > 0.04
    assert lower(_model(a), None, "rdf").verdict.startswith("n/a")
    # paired: the same starts cancel the common offsets
    a, b = [0.10, 0.20, 0.30, 0.40], [0.11, 0.21, 0.315, 0.41]
    assert lower(_model(a), _model(b), "rdf").outcome == "not resolved"
    assert lower(_model(a), _model(b), "rdf", is_paired=True).outcome == "lower"


def test_one_replica_resolves_nothing():
    assert lower(_model([0.10]), _model([0.30, 0.31]), "rdf").verdict == "n/a (fewer than 2 replicas)"
    assert below_teachers(_model([0.10]), [_model([0.3, 0.3]), _model([0.4, 0.4])], "rdf").outcome == "n/a"
    assert below_teachers(_model([0.10, 0.11]), [_model([0.3, 0.3])], "rdf").outcome == "n/a"


def test_a_single_teacher_is_judged_by_the_spread_of_the_teachers_means():
    teachers = [_model([0.20, 0.20]), _model([0.30, 0.30]), _model([0.40, 0.40])]
    model = [0.149, 0.151, 0.15, 0.15]
    d = below_teachers(_model(model), teachers, "rdf")
    assert d.outcome == "not resolved"  # 0.15 below: t 2.6 on 2 df
    assert d.test.p_value == pytest.approx(stats.ttest_ind(model, [0.2, 0.3, 0.4], equal_var=False).pvalue)
    assert below_teachers(_model([0.049, 0.051, 0.05, 0.05]), teachers, "rdf").outcome == "lower"
    assert below_teachers(_model([0.45, 0.45]), [], "rdf").outcome == "n/a"


def test_the_findings_of_a_run_that_reproduces_the_paper():
    models = {
        "teacher-00": _model([0.24, 0.26], stable=False), "teacher-01": _model([0.26, 0.26]),
        "teacher-02": _model([0.27, 0.27]),
        "ensemble-8": _model([0.100, 0.101, 0.100, 0.099]),
        "student-ensemble-e-ft-faa": _model([0.101, 0.102, 0.100, 0.101]),
        "student-ensemble-ft-faa": _model([0.20, 0.21, 0.19, 0.20]),
        "student-single-e-ft-faa-teacher00": _model([0.25, 0.26, 0.24, 0.25]),
    }
    floor = NoiseFloor(200, 6, 1296, {"rdf": replica_stat([0.03] * 6), "cdf": replica_stat([0.07] * 6)})
    students = StudentsResult({"ensemble-e-ft-faa": _student("ensemble-e-ft-faa", "ensemble"),
                               "ensemble-ft-faa": _student("ensemble-ft-faa", "ensemble"),
                               "single-e-ft-faa-teacher00": _student("single-e-ft-faa", "member_00", 0)})
    text = findings_markdown(AnalysisResult(models, {}, floor), students)
    assert "Noise floor (blocks of 200 reference frames" in text and "RDF 0.030 +- 0.000" in text
    assert "Holm's correction" in text and "Equivalent within 15 %" in text
    assert "1 of 3 teachers not stable" in _row(text, "single teachers", "3 teachers")
    ens = _row(text, "the ensemble beats", "ensemble-8 vs the teachers' mean")
    assert "0.100 vs 0.260" in ens and "RDF lower (Holm-adjusted p = " in ens  # teachers' means 0.25, 0.26, 0.27
    match = _row(text, "the student matches", "student-ensemble-e-ft-faa vs ensemble-8")
    assert "0.101 vs 0.100" in match and "RDF equivalent within 15 % (TOST p = " in match
    assert "RDF higher (Holm-adjusted p = " in _row(text, "the student matches", "student-ensemble-ft-faa vs ensemble-8")
    assert "RDF lower" in _row(text, "per-bead energies help", "student-ensemble-e-ft-faa vs student-ensemble-ft-faa")
    inherit = _row(text, "a single-teacher student", "student-single-e-ft-faa-teacher00 vs teacher-00")
    assert "0.250 vs 0.250" in inherit and "RDF not resolved (detectable difference >= " in inherit
    assert "RDF lower" in _row(text, "ensemble labels beat", "vs student-single-e-ft-faa-teacher00")
    assert text.rstrip().splitlines()[-1].startswith("Of 16 decisions: ")  # 8 rows, RDF and CDF


def test_a_run_without_teachers_or_students_has_no_findings_section():
    text = findings_markdown(AnalysisResult({"model": _model([0.1, 0.2])}, {}), StudentsResult({}))
    assert text == ""


def test_a_model_without_scored_replicas_reads_n_a():
    dead = ModelAnalysis({"rdf": replica_stat([]).to_dict(), "cdf": replica_stat([]).to_dict()}, False, Path("/x"),
                         4, 4, (), (), 100, ())
    models = {"teacher-00": _model([0.2, 0.3]), "ensemble-8": dead}
    text = findings_markdown(AnalysisResult(models, {}), StudentsResult({}))
    row = _row(text, "the ensemble beats", "ensemble-8")
    assert "n/a vs 0.250" in row and "RDF n/a" in row
    assert np.isnan(replica_stat([]).mean)


def _ens_students(*variants: str) -> StudentsResult:
    return StudentsResult({v: _student(v, "ensemble") for v in variants}
                          | {"single-e-ft-faa-teacher00": _student("single-e-ft-faa", "member_00", 0)})


def test_the_student_to_ship_is_the_one_resolved_better():
    students = _ens_students("ensemble-e-ft-faa", "ensemble-ft-faa")
    models = {"student-ensemble-e-ft-faa": _model([0.20, 0.21, 0.19, 0.20]),
              "student-ensemble-ft-faa": _model([0.10, 0.11, 0.09, 0.10]),
              "student-single-e-ft-faa-teacher00": _model([0.01, 0.01])}  # better, but not ensemble-distilled
    variant, why = best_student(AnalysisResult(models, {}), students)
    assert variant == "ensemble-ft-faa" and "significantly lower than ensemble-e-ft-faa" in why


def test_the_student_to_ship_is_the_papers_recipe_when_replicas_cannot_choose():
    students = _ens_students("ensemble-e-ft-faa", "ensemble-ft-faa")
    # {F_T, F_AA} lower in RDF (resolved) but higher in CDF (resolved): neither beats the other
    models = {"student-ensemble-e-ft-faa": _model([0.20, 0.21, 0.19, 0.20], cdf=[0.10, 0.11, 0.09, 0.10]),
              "student-ensemble-ft-faa": _model([0.10, 0.11, 0.09, 0.10], cdf=[0.20, 0.21, 0.19, 0.20])}
    variant, why = best_student(AnalysisResult(models, {}), students)
    assert variant == "ensemble-e-ft-faa" and "do not resolve" in why and "paper's recipe" in why
    # without the paper's recipe among them: the lowest sum of mean TAEs
    students = _ens_students("ensemble-ft-faa", "ensemble-f-faa")
    models = {"student-ensemble-ft-faa": _model([0.10, 0.12], cdf=[0.20, 0.22]),
              "student-ensemble-f-faa": _model([0.11, 0.12], cdf=[0.22, 0.22])}
    assert best_student(AnalysisResult(models, {}), students)[0] == "ensemble-ft-faa"


def test_the_student_to_ship_never_has_more_failed_replicas_or_drifts():
    students = _ens_students("ensemble-e-ft-faa", "ensemble-ft-faa")
    models = {"student-ensemble-e-ft-faa": _model([0.10, 0.11, 0.09], failed=1),  # lower TAEs, 1 of 4 failed
              "student-ensemble-ft-faa": _model([0.20, 0.21, 0.19, 0.20])}
    variant, why = best_student(AnalysisResult(models, {}), students)
    assert variant == "ensemble-ft-faa" and why.startswith("ensemble-e-ft-faa left out")
    models = {"student-ensemble-e-ft-faa": _model([0.10, 0.11, 0.09, 0.10], stable=False),
              "student-ensemble-ft-faa": _model([0.20, 0.21, 0.19, 0.20])}
    assert best_student(AnalysisResult(models, {}), students)[0] == "ensemble-ft-faa"
    with pytest.raises(LookupError, match="no ensemble-distilled student"):
        best_student(AnalysisResult({}, {}), students)


def test_the_student_to_ship_passes_the_contact_gate_when_one_does():
    students = _ens_students("ensemble-e-ft-faa", "ensemble-ft-faa")

    def coord(model_per_a):
        return {"A-B": {"pair": "A-B", "contact_nm": 0.35, "model_per_a": model_per_a, "model_per_b": model_per_a,
                        "reference_per_a": 0.002, "reference_per_b": 0.002}}

    # lower TAEs, but 0.11 B per A below the AA's closest contact
    trapped = dataclasses.replace(_model([0.10, 0.11, 0.09, 0.10]), coordination=coord(0.11))
    clean = dataclasses.replace(_model([0.20, 0.21, 0.19, 0.20]), coordination=coord(0.002))
    models = {"student-ensemble-ft-faa": trapped, "student-ensemble-e-ft-faa": clean}
    variant, why = best_student(AnalysisResult(models, {}), students)
    assert variant == "ensemble-e-ft-faa" and "ensemble-ft-faa left out (failed the contact gate)" in why
    # when every candidate fails the gate, the gate does not choose (the ship script refuses them)
    models["student-ensemble-e-ft-faa"] = dataclasses.replace(clean, coordination=coord(0.2))
    assert best_student(AnalysisResult(models, {}), students)[0] == "ensemble-ft-faa"


def test_contacts_drift_and_reference_sections():
    from openmm_cgkd.workflow.report import comparison_markdown, contacts_markdown, drift_markdown, \
        reference_markdown
    from openmm_cgkd.workflow.results import MDResult

    coord = {"A-B": {"pair": "A-B", "contact_nm": 0.35, "model_per_a": 0.11, "model_per_b": 0.11,
                     "reference_per_a": 0.002, "reference_per_b": 0.002, "ratio": 55.0}}
    change = {"mean": 0.035, "se": 0.003, "n": 4, "values": [0.03, 0.035, 0.04, 0.035]}
    drift = {"merge:A": {"change": change, "slope": change},
             "energy": {"change": {"mean": -60.0, "se": 9.0, "n": 4, "values": []},
                        "slope": {"mean": -0.3, "se": 0.1, "n": 4, "values": []}}}
    ens = ModelAnalysis({"rdf": replica_stat([0.1, 0.1]).to_dict()}, True, Path("/x"), 4, 0, (), (), 100,
                        (136, 56, 21, 23), {}, coord, drift)
    check = {"verdict": "WARNING: the reference is one frozen packing (...)",
             "thresholds": {"still": 0.5, "displacement_ratio": 0.5}}
    analysis = AnalysisResult({"ensemble-8": ens}, {}, None, check)
    text = contacts_markdown(analysis)
    assert "| AA (contact nm) | 0.0020 (0.350) | - |" in text and "| ensemble-8 | 0.1100 | FAIL: A-B: 0.1100 B per A" in text
    assert "A-B 0.110 vs AA 0.002 per A (FAIL)" in comparison_markdown(analysis, MDResult({}, {}))
    d = drift_markdown(analysis, 1.0)
    assert "| ensemble-8 | +3.5 +- 0.3 % | -60.0 +- 9.0 | -0.3 |" in d and "136 frames (136 ps)" in d
    assert "one frozen packing" in reference_markdown(analysis)
    assert drift_markdown(AnalysisResult({}, {}), 1.0) == "" and reference_markdown(AnalysisResult({}, {})) == ""


def _peptide(js: list[float]) -> ModelAnalysis:
    """A molecule without a box: no RDF/ADF/CDF, only its replicas' phi/psi scores."""
    rama = {"replicas": [{"name": f"replica_{i:02d}", "js": v, "tae": 2 * v} for i, v in enumerate(js)]}
    return ModelAnalysis({}, True, Path("/x"), len(js), 0, (), (), 100, (), ramachandran=rama)


def test_a_peptide_is_judged_by_its_replicas_phi_psi_divergence():
    """analysis.ramachandran: the findings and the student choice test the per-replica phi/psi JS
    (the same tests as the TAEs: Welch / TOST, Holm), in a column of its own."""
    ens, good, bad = [0.050, 0.052, 0.049, 0.051], [0.051, 0.050, 0.052, 0.050], [0.20, 0.22, 0.19, 0.21]
    models = {"teacher-00": _peptide([0.30, 0.32]), "teacher-01": _peptide([0.28, 0.30]),
              "ensemble-8": _peptide(ens), "student-ensemble-e-ft-faa": _peptide(good),
              "student-ensemble-ft-faa": _peptide(bad)}
    students = _ens_students("ensemble-e-ft-faa", "ensemble-ft-faa")
    text = findings_markdown(AnalysisResult(models, {}), students)
    assert "| finding | compared | phi/psi JS | verdicts |" in text
    match = _row(text, "the student matches", "student-ensemble-e-ft-faa vs ensemble-8")
    assert f"{np.mean(good):.3f} vs {np.mean(ens):.3f}" in match and "phi/psi JS equivalent within 15 %" in match
    worse = _row(text, "the student matches", "student-ensemble-ft-faa vs ensemble-8")
    assert "phi/psi JS higher (Holm-adjusted p = " in worse
    d = lower(_peptide(good), _peptide(bad), "phi_psi_js")
    assert d.outcome == "lower" and d.test.p_value == pytest.approx(stats.ttest_ind(good, bad, equal_var=False).pvalue)
    variant, why = best_student(AnalysisResult(models, {}), students)
    assert variant == "ensemble-e-ft-faa" and "significantly lower than ensemble-ft-faa" in why
