"""systems/des/study_goals.py: the issue's absolute goals read from a report.json."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("study_goals", ROOT / "systems" / "des" / "study_goals.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _model(rdf, cdf, n_failed=0, stable=True, clcl_g=0.0, n=2):
    stat = lambda v: {"mean": v, "std": 0.01, "n": n} if v is not None else {"mean": None, "std": None, "n": 0}  # noqa: E731
    return {"summary": {"rdf": stat(rdf), "adf": stat(rdf), "cdf": stat(cdf)}, "stable": stable, "n_replicas": 2,
            "n_failed": n_failed,
            "contacts": {"CL-CL": {"pair": "CL-CL", "reference_contact_nm": 0.42, "peak_g": clcl_g,
                                   "peak_r_nm": 0.40 if clcl_g else None}}}


def test_goals_per_ensemble_student():
    report = {"analysis": {"models": {
        "teacher-00": _model(0.14, 0.32, clcl_g=5.7),
        "ensemble-8": _model(0.098, 0.29),
        "student-ensemble-e-ft-faa": _model(0.099, 0.147, clcl_g=0.2),
        "student-ensemble-ft-faa": _model(0.12, 0.26, n_failed=1, clcl_g=1.3),
        "student-single-e-ft-faa-teacher00": _model(0.2, 0.5),
    }, "noise_floor": {"block_frames": 201, "n_blocks": 6, "summary": {"rdf": {"mean": 0.037}, "cdf": {"mean": 0.084}}}}}
    text = _script().goals(report)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in text.splitlines()
            if line.startswith("| ")}
    assert "student-single-e-ft-faa-teacher00" not in rows["goal"]  # only ensemble-distilled students are judged
    assert rows["goal"] == ["student-ensemble-e-ft-faa", "student-ensemble-ft-faa"]
    assert rows["stable in every replica"] == ["yes", "NO"]
    assert rows["RDF TAE <= 0.1"] == ["yes (0.099)", "NO (0.120)"]
    assert rows["CDF TAE <= 0.25"] == ["yes (0.147)", "NO (0.260)"]
    assert rows["no Cl-Cl pairing (g < 1 below the AA contact)"] == ["yes (peak g 0.2)", "NO (peak g 1.3)"]
    assert rows["teacher-00"][5] == "g 5.7 at 0.400 (AA from 0.420)" and rows["ensemble-8"][5] == "none"
    assert "Noise floor (blocks of 201 reference frames" in text and "RDF 0.037, CDF 0.084" in text


def test_no_student_yet_and_unscored_models():
    report = {"analysis": {"models": {"teacher-00": _model(None, None, n_failed=2, stable=False, n=0)}}}
    text = _script().goals(report)
    assert "| teacher-00 | 0 of 2 ran to the end | n/a | n/a | n/a | NO |" in text
    assert "No ensemble-distilled student has a finished replica yet." in text
