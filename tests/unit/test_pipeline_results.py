"""Typed stage results (openmm_cgkd.workflow.results) read the stage markers that the pipeline wrote
before it had them (tests/data/pipeline_markers_v1, see its README) and write them back byte for
byte, so existing study directories and committed results keep resuming."""
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from openmm_cgkd.workflow.cache import stage_outputs
from openmm_cgkd.workflow.results import (RESULT_TYPES, AAResult, AnalysisResult, LabelsResult, MDResult,
                                          ModelAnalysis, ReplicaRecord, ReportResult, StudentResult, StudentsResult,
                                          TeachersResult, TrainingRun)

DATA = Path(__file__).resolve().parents[1] / "data" / "pipeline_markers_v1"
MARKERS = sorted(DATA.glob("*/*.json"))


def _rewrite(marker: dict, outputs: dict) -> str:
    """The marker file as the pipeline writes it (json.dumps, indent 1, no final newline)."""
    return json.dumps({**marker, "outputs": outputs}, indent=1, default=str)


def test_the_fixture_holds_every_stage_of_a_run():
    assert {p.stem for p in MARKERS} == set(RESULT_TYPES) - {"aa"}  # the run had its dataset: no aa stage
    assert len(MARKERS) == 9


@pytest.mark.parametrize("path", MARKERS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_an_old_marker_loads_typed_and_round_trips_byte_identically(path, tmp_path):
    tmp_path = tmp_path.resolve()
    text = path.read_text()
    marker = json.loads(text)
    out = tmp_path / "study"
    result = RESULT_TYPES[path.stem].from_marker(marker["outputs"], out)
    assert dataclasses.is_dataclass(result)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(result, dataclasses.fields(result)[0].name, None)
    # every path is a Path under (or beside) the output directory given, none stays a $OUT string
    for f in result.files():
        assert isinstance(f, Path) and f.is_absolute() and str(f).startswith(str(tmp_path))
    assert "$OUT" not in repr(result)
    assert _rewrite(marker, result.to_marker(out)) == text


def test_typed_fields_of_the_old_markers(tmp_path):
    tmp_path = tmp_path.resolve()
    out = tmp_path / "study"
    load = lambda kind, stage: RESULT_TYPES[stage].from_marker(  # noqa: E731
        json.loads((DATA / kind / f"{stage}.json").read_text())["outputs"], out)

    teachers = load("stable", "teachers")
    assert isinstance(teachers, TeachersResult) and teachers.ensemble == out / "teachers" / "ensemble"
    assert teachers.members == (out / "teachers" / "members" / "member_00" / "bundle",
                                out / "teachers" / "members" / "member_01" / "bundle")
    assert all(isinstance(r, TrainingRun) and r.epochs == 1 for r in teachers.runs)
    assert teachers.runs[1].metrics_csv == out / "teachers" / "members" / "member_01" / "logs" / "metrics.csv"
    assert len(teachers.validation_forces) == 2 and teachers.validation_forces[0]["rmse"] > 0

    labels = load("stable", "labels")
    assert isinstance(labels, LabelsResult) and labels.datasets["member_01"] == out / "labels" / "member_01.h5"
    assert set(labels.digests) == {"ensemble", "member_00", "member_01"}

    students = load("stable", "students")
    assert isinstance(students, StudentsResult)
    single = students.students["single-e-ft-faa-teacher01"]
    assert isinstance(single, StudentResult) and single.member == 1 and single.labels == "member_01"
    assert students.bundles["ensemble-e-ft-faa"] == out / "students" / "ensemble-e-ft-faa" / "bundle"

    md = load("stable", "md")
    assert isinstance(md, MDResult) and list(md.models)[:2] == ["teacher-00", "ensemble-2"]
    rep = md.models["ensemble-2"][1]
    assert isinstance(rep, ReplicaRecord) and rep.replica == 1 and not rep.failed and rep.failure is None
    assert rep.record == out / "md" / "ensemble-2" / "replica_01" / "replica.json.gz" and rep.record.parent == rep.dir
    assert md.timestep_check["student-ensemble-e-ft-faa"]["safe"] in (True, False)

    failed = load("unstable", "md").models["ensemble-2"][0]
    assert failed.failed and isinstance(failed.failure["step"], int) and failed.failure["reason"]
    analysis = load("unstable", "analysis")
    assert isinstance(analysis, AnalysisResult) and isinstance(analysis.models["ensemble-2"], ModelAnalysis)
    a = analysis.models["ensemble-2"]
    assert a.n_failed == len(a.failures) == 2 and a.dir == out / "analysis" / "ensemble-2"
    assert analysis.figures["energy"] == out / "analysis" / "energy_equilibration.png"

    report = load("stable", "report")
    assert isinstance(report, ReportResult) and report.report_json == out / "report.json"


def test_stage_outputs_reads_a_moved_output_directory(tmp_path):
    tmp_path = tmp_path.resolve()
    out = tmp_path / "moved" / "study"
    shutil.copytree(DATA / "stable", out / "stages")
    md = stage_outputs(out, "md")
    assert isinstance(md, MDResult)
    assert md.models["teacher-00"][0].dir == out / "md" / "teacher-00" / "replica_00"
    assert stage_outputs(tmp_path, "md") is None  # not run there
    from openmm_cgkd.config import ConfigError

    with pytest.raises(ConfigError, match="unknown stage"):
        stage_outputs(out, "mdd")


def test_aa_result_and_paths_outside_the_output_directory(tmp_path):
    tmp_path = tmp_path.resolve()
    out = tmp_path / "run"
    aa = AAResult(tmp_path / "data" / "cg.h5", frames=12, beads=24)
    marker = aa.to_marker(out)
    assert marker == {"dataset": "$OUT/../data/cg.h5", "frames": 12, "beads": 24}
    assert AAResult.from_marker(marker, out) == aa
    assert AAResult.from_marker(marker, tmp_path / "elsewhere" / "run").dataset == tmp_path / "elsewhere" / "data" / \
        "cg.h5"


def test_md_model_names_are_made_and_read_in_one_place():
    from openmm_cgkd.workflow.results import ensemble_model, model_kind, student_model, teacher_model

    names = [teacher_model(3), ensemble_model(8), student_model("single-e-ft-faa-teacher03")]
    assert names == ["teacher-03", "ensemble-8", "student-single-e-ft-faa-teacher03"]
    assert [model_kind(n) for n in names] == ["teacher", "ensemble", "student"]
    assert [model_kind(n) for n in ("teacher", "students-x", "ensemble8", "model", "student-")] == [None] * 5
