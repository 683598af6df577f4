"""The report's check of the method's findings (openmm_cgkd.workflow.report.findings_markdown) on
hand-made TAEs whose answers are known: what it compares, and when replicas cannot tell."""
from pathlib import Path

import numpy as np
import pytest

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
    ([0.10, 0.11, 0.09, 0.10], [0.20, 0.21, 0.19, 0.20], "yes"),
    ([0.20, 0.21, 0.19, 0.20], [0.10, 0.11, 0.09, 0.10], "no"),
    ([0.10, 0.20, 0.05, 0.25], [0.16, 0.12, 0.22, 0.14], "not resolved"),  # spread swamps the difference
])
def test_a_difference_counts_only_beyond_two_standard_errors(a, b, expected):
    assert lower(_model(a), _model(b), "rdf") == expected


def test_two_standard_errors_is_the_line():
    a = [0.10, 0.12]  # mean 0.11, std 0.01414 -> s.e. 0.01 ...
    b = [0.12, 0.14]  # ... each: combined s.e. 0.01414, 2 s.e. 0.0283
    assert lower(_model(a), _model(b), "rdf") == "not resolved"  # 0.02 apart < 0.0283
    b = [0.14, 0.16]  # 0.04 apart > 0.0283
    assert lower(_model(a), _model(b), "rdf") == "yes"
    assert lower(_model(a), None, "rdf") == "n/a"


def test_one_replica_has_no_spread_and_resolves_nothing():
    # std of one replica is 0: without this rule any difference, however small, would count
    assert lower(_model([0.10]), _model([0.30, 0.31]), "rdf") == "not resolved (one replica)"
    assert lower(_model([0.10, 0.11]), _model([0.30]), "rdf") == "not resolved (one replica)"
    assert below_teachers(_model([0.10]), [_model([0.3, 0.3]), _model([0.4, 0.4])], "rdf") == \
        "not resolved (one replica)"
    assert below_teachers(_model([0.10, 0.11]), [_model([0.3, 0.3])], "rdf") == "not resolved (one teacher)"


def test_the_median_teacher_is_as_uncertain_as_the_teachers_spread():
    # teachers' means 0.20, 0.30, 0.40: median 0.30, s.e. 0.1 / sqrt(3) = 0.0577 -> 2 s.e. ~ 0.116
    teachers = [_model([0.20, 0.20]), _model([0.30, 0.30]), _model([0.40, 0.40])]
    assert below_teachers(_model([0.20, 0.20, 0.20, 0.20]), teachers, "rdf") == "not resolved"  # 0.10 below
    assert below_teachers(_model([0.15, 0.15, 0.15, 0.15]), teachers, "rdf") == "yes"  # 0.15 below
    assert below_teachers(_model([0.45, 0.45, 0.45, 0.45]), teachers, "rdf") == "no"
    assert below_teachers(_model([0.45, 0.45]), [], "rdf") == "n/a"


def test_the_findings_of_a_run_that_reproduces_the_paper():
    models = {
        "teacher-00": _model([0.20, 0.22], stable=False), "teacher-01": _model([0.30, 0.28]),
        "teacher-02": _model([0.25, 0.27]),
        "ensemble-8": _model([0.10, 0.11, 0.10, 0.09]),
        "student-ensemble-e-ft-faa": _model([0.105, 0.11, 0.10, 0.105]),
        "student-ensemble-ft-faa": _model([0.20, 0.21, 0.19, 0.20]),
        "student-single-e-ft-faa-teacher00": _model([0.21, 0.22, 0.20, 0.21]),
    }
    floor = NoiseFloor(200, 6, 1296, {"rdf": replica_stat([0.03] * 6), "cdf": replica_stat([0.07] * 6)})
    students = StudentsResult({"ensemble-e-ft-faa": _student("ensemble-e-ft-faa", "ensemble"),
                               "ensemble-ft-faa": _student("ensemble-ft-faa", "ensemble"),
                               "single-e-ft-faa-teacher00": _student("single-e-ft-faa", "member_00", 0)})
    text = findings_markdown(AnalysisResult(models, {}, floor), students)
    assert "Noise floor (blocks of 200 reference frames" in text and "RDF 0.030 +- 0.000" in text
    assert "1 of 3 teachers not stable" in _row(text, "single teachers", "3 teachers")
    ens = _row(text, "the ensemble beats", "ensemble-8 vs median teacher")
    assert "0.100 vs 0.260" in ens and "RDF yes" in ens  # median teacher: 0.21, 0.29, 0.26 -> 0.26
    match = _row(text, "the student matches", "student-ensemble-e-ft-faa vs ensemble-8")
    assert "RDF yes" in match and "0 of 4 failed, stable" in match  # 0.105 <= 1.15 x 0.10
    assert "RDF no" in _row(text, "the student matches", "student-ensemble-ft-faa vs ensemble-8")  # 0.20
    assert "RDF yes" in _row(text, "per-bead energies help", "student-ensemble-e-ft-faa vs student-ensemble-ft-faa")
    assert "RDF yes" in _row(text, "the student beats", "student-ensemble-e-ft-faa vs median")
    inherit = _row(text, "a single-teacher student", "student-single-e-ft-faa-teacher00 vs teacher-00")
    assert "0.210 vs 0.210" in inherit and "RDF not resolved" in inherit
    assert "RDF yes" in _row(text, "ensemble labels beat", "vs student-single-e-ft-faa-teacher00")


def test_a_run_without_teachers_or_students_has_no_findings_section():
    text = findings_markdown(AnalysisResult({"model": _model([0.1, 0.2])}, {}), StudentsResult({}))
    assert text == ""


def test_a_model_without_scored_replicas_reads_n_a():
    dead = ModelAnalysis({"rdf": replica_stat([]).to_dict(), "cdf": replica_stat([]).to_dict()}, False, Path("/x"),
                         4, 4, (), (), 100, ())
    models = {"teacher-00": _model([0.2, 0.3]), "ensemble-8": dead}
    text = findings_markdown(AnalysisResult(models, {}), StudentsResult({}))
    row = _row(text, "the ensemble beats", "ensemble-8")
    assert "n/a vs 0.250" in row and "RDF n/a" in row and "4 of 4 failed" in row
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
    assert variant == "ensemble-ft-faa" and "resolved lower than ensemble-e-ft-faa" in why


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
