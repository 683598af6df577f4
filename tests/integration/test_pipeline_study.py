"""The study protocol in the pipeline, on a tiny synthetic system: frame selection by time window,
single-teacher students for several members, per-model replica counts, a fixed discard given in
ps, the time-step check, unstable replicas counted (not fatal), the report, and resuming from the
committed files alone (systems/des/study/.gitignore) without retraining or rerunning anything.

The tests share one study run (module fixture) and run in file order.
"""
import gzip
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from openmm_cgkd.analysis.records import drift_from_record
from openmm_cgkd.workflow.cache import stage_outputs
from openmm_cgkd.workflow.config import load_pipeline_config
from openmm_cgkd.workflow.run import run_pipeline
from openmm_cgkd.workflow.report import best_student

ROOT = Path(__file__).resolve().parents[2]
STUDENTS = {"ensemble-e-ft-faa", "single-e-ft-faa-teacher00", "single-e-ft-faa-teacher01"}
MODELS = {"teacher-00", "ensemble-2"} | {f"student-{s}" for s in STUDENTS}

CONFIG = {
    "out": "study", "dataset": "cg.h5",
    "dataset_window_ps": [0.4, 3.0], "dataset_stride": 2,  # frames 0.08 ps apart: source frames 5, 7, ..., 37
    "model": {"architecture": "graph-network", "embedding_dim": 8, "num_layers": 1, "num_rbf": 8, "cutoff_nm": 0.6},
    "split": {"train": 0.6, "val": 0.2, "test": 0.2, "gap_frames": 1},
    "trainer": {"max_epochs": 1, "batch_size": 4, "progress_bar": False, "num_threads": 1},
    "teachers": {"members": 2},
    "students": {"variants": ["ensemble-e-ft-faa", "single-e-ft-faa"], "single_teacher_members": [0, 1]},
    "md": {"replicas": 2, "teacher_members": 1, "teacher_replicas": 1, "length_ps": 0.16, "timestep_fs": 4.0,
           "report_interval_ps": 0.04, "discard_ps": 0.04, "platform": "CPU", "threads": 1, "seed": 500,
           "timestep_check": {"nvt_ps": 0.2, "nve_ps": 0.2, "sample_every_steps": 5,
                              "stop_if_unsafe": False}},  # 1-epoch models: the verdict is not the point here
    "analysis": {"n_blocks": 2},
    "cluster": {"kind": "serial"},  # tiny tasks: no worker processes to start (the parallel test asks for them)
}


def _run(root: Path, out: str = "study", overrides=None, only=None):
    logs = []
    cfg = load_pipeline_config(root / "study.yaml", overrides={"out": out, **(overrides or {})})
    results = run_pipeline(cfg, only=only, log=logs.append)
    return results, logs


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_dataset):
    root = tmp_path_factory.mktemp("study")
    tiny_dataset(root / "cg.h5")
    (root / "study.yaml").write_text(yaml.safe_dump(CONFIG))
    results, logs = _run(root)
    return root, results, logs


def test_trains_on_the_time_window_only(study):
    from openmm_cgkd.data.dataset import CGDataset

    root, results, _ = study
    src = CGDataset.load(root / "cg.h5")
    sub = CGDataset.load(root / "study" / "data" / "cg.h5")
    assert sub.n_frames == 17
    np.testing.assert_array_equal(sub.positions, src.positions[5:38:2])
    assert "times 0.4-3 ps after the first frame" in sub.provenance["selection"]


def test_single_teacher_students_learn_from_their_own_member(study):
    root, results, _ = study
    assert set(results["students"].students) == STUDENTS
    assert set(results["labels"].datasets) == {"ensemble", "member_00", "member_01"}
    for k in (0, 1):
        manifest = yaml.safe_load((root / "study" / "students" / f"single-e-ft-faa-teacher{k:02d}" / "bundle" /
                                   "manifest.yaml").read_text())
        teachers = manifest["training"]["teachers"]
        assert teachers["member"] == k and teachers["source"] == f"member {k}"
        assert manifest["variant"] == "single-e-ft-faa"
    ens = yaml.safe_load((root / "study" / "students" / "ensemble-e-ft-faa" / "bundle" / "manifest.yaml").read_text())
    assert ens["training"]["teachers"]["source"] == "ensemble"


def test_md_protocol_replicas_start_frames_seeds_and_discard(study):
    root, results, _ = study
    runs = results["md"].models
    assert set(runs) == MODELS
    assert len(runs["teacher-00"]) == 1 and all(len(runs[m]) == 2 for m in MODELS - {"teacher-00"})
    setup = json.loads((root / "study" / "teachers" / "setup.json").read_text())
    train = setup["blocks"]["train"]
    for name, reps in runs.items():
        starts = [r.start_frame for r in reps]
        assert len(set(starts)) == len(starts) and set(starts) <= set(train)
        assert [r.seed for r in reps] == [500 + r for r in range(len(reps))]
        assert not any(r.failed for r in reps)
    assert [r.start_frame for r in runs["ensemble-2"]] == [train[0], train[-1]]
    # 0.04 ps discard with frames every 10 steps of 4 fs: 1 frame, the same for every replica of every model
    for name, a in results["analysis"].models.items():
        assert a.discard_frames == 1 and a.n_failed == 0
        rec = json.loads(gzip.open(root / "study" / "md" / name / "replica_00" / "replica.json.gz").read())
        assert rec["analysis"]["start_frame"] == 1 and rec["analysis"]["n_frames_loaded"] == 5
        assert rec["model"] == name and rec["failure"] is None
        drift = drift_from_record(rec)  # version 2: the series from frame 0, discard included
        assert rec["version"] == 2 and len(drift.times_ps) == 5 and all(len(v) == 5 for v in drift.merge_nm.values())
        assert drift.energy_kj_mol is not None and drift.energy_kj_mol.shape == (5,)


def test_timestep_check_runs_on_the_first_student(study):
    root, results, _ = study
    checks = results["md"].timestep_check
    assert list(checks) == ["student-ensemble-e-ft-faa"]
    c = checks["student-ensemble-e-ft-faa"]
    assert c["timestep_fs"] == 4.0 and c["blew_up"] is None and np.isfinite(c["nve_drift_kT_per_ns_per_bead"])
    series = json.loads((root / "study" / "md" / "timestep_check" / "student-ensemble-e-ft-faa.json").read_text())
    t, e = np.array(series["series"]["nve"]["time_ps"]), np.array(series["series"]["nve"]["total_kj_mol"])
    slope = np.polyfit(t, e, 1)[0]  # the drift is the slope of the total energy, per ns and bead
    assert c["nve_drift_kj_mol_per_ns_per_bead"] == pytest.approx(slope * 1000 / 24, rel=1e-6)


def test_report_has_every_part_and_stage_times(study):
    root, results, _ = study
    out = root / "study"
    text = (out / "report.md").read_text()
    floor = results["analysis"].noise_floor
    for part in ("| model | replicas | RDF | ADF | CDF |", "0 of 2 replicas failed", "0 of 1 replicas failed",
                 "## Time step check", "| student-ensemble-e-ft-faa | 4 |", "## Training", "learning_curves.png",
                 "rdf_overlay.png", "cdf_overlay.png", "energy_equilibration.png", "## Wall time per stage",
                 "| teachers |", "| md |", "ns/day", "cdf_time",
                 "## The method's findings, checked", f"Noise floor (blocks of {floor.block_ps:g} ps, {floor.block_frames} reference frames",
                 "| the student matches the ensemble | student-ensemble-e-ft-faa vs ensemble-2 |",
                 "| the ensemble beats a single teacher | ensemble-2 vs the teachers' mean |",
                 "## Reference check (has the AA reference rearranged?)", "## Contacts below the AA's closest contact",
                 "Holm's correction",
                 "| a single-teacher student inherits its teacher | student-single-e-ft-faa-teacher00 vs teacher-00 |"):
        assert part in text, part
    assert "closest contact" in text
    for a in results["analysis"].models.values():  # every pair of the 2 bead types: 3 pairs
        assert set(a.contacts) == {"A-A", "A-B", "B-B"} and all(c["reference_contact_nm"] > 0 for c in a.contacts.values())
        assert set(a.coordination) == set(a.contacts) and all(c["model_per_a"] >= 0 for c in a.coordination.values())
    assert results["analysis"].reference_check["n_pairs"] > 0 and "verdict" in results["analysis"].reference_check
    for name, a in results["analysis"].models.items():  # drift from t = 0, from the version-2 records
        assert {"merge:A", "merge:B", "energy"} <= set(a.drift), name
        assert a.drift["energy"]["change"]["n"] == results["analysis"].models[name].n_replicas
    assert "## Drift from t = 0" in text and "Equilibration discard chosen from the reference model" in text
    # replicas scored on 4 frames 0.04 ps apart (0.16 ps); 17 reference frames 0.1625 ps apart (0.4-3 ps):
    # blocks of 0.16 ps are 1 reference frame, eight blocks in each half (sized in time, not in frames)
    assert floor.block_ps == pytest.approx(0.16) and floor.block_frames == 1 and floor.n_blocks == 16
    assert floor.summary["rdf"].mean > 0
    assert json.loads((out / "analysis" / "noise_floor.json").read_text())["floor"]["n_blocks"] == 16
    for png in ("learning_curves.png", "tae_comparison.png", "analysis/rdf_overlay.png", "analysis/cdf_overlay.png",
                "analysis/energy_equilibration.png", "analysis/student-ensemble-e-ft-faa/cdf_time.png"):
        assert (out / png).stat().st_size > 5000, png
    for stage in ("teachers", "students", "md", "analysis"):
        marker = json.loads((out / "stages" / f"{stage}.json").read_text())
        assert marker["seconds"] > 0 and marker["attempts"] == 1
        assert str(root) not in json.dumps(marker)  # portable: paths relative to the output directory
    teachers = results["teachers"]
    assert len(teachers.validation_forces) == 2 and teachers.validation_forces[0]["rmse"] > 0
    assert all(r.epochs == 1 for r in teachers.runs)


@pytest.fixture
def ship(tmp_path, monkeypatch):
    """models/ship_from_pipeline.py as a module, shipping into tmp_path (not models/)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ship_from_pipeline", ROOT / "models" / "ship_from_pipeline.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    monkeypatch.setattr(ship, "HERE", tmp_path)
    return ship


def test_ship_from_pipeline_reads_the_typed_stage_results(study, ship, tmp_path):
    """models/ship_from_pipeline.py (into a scratch folder, not models/) from the stage markers."""
    root, results, _ = study
    written = ship.ship(root / "study", "best", "tiny", allow_failing_gate=True)  # the report's choice
    assert written == [tmp_path / "tiny-teachers", tmp_path / "tiny-student"]
    variant, why = best_student(results["analysis"], results["students"], results["md"])
    assert variant in ("ensemble-e-ft-faa", "ensemble-ft-faa")
    report = json.loads((root / "study" / "report.json").read_text())
    assert report["best_student"] == {"variant": variant, "why": why}
    assert f"## The student to ship\n\n**{variant}**: {why}" in (root / "study" / "report.md").read_text()
    card = (tmp_path / "tiny-student" / "MODEL_CARD.md").read_text()
    assert f"variant `{variant}`; shipped as the study's student: {why}" in card
    rdf = results["analysis"].models[f"student-{variant}"].summary["rdf"]
    assert f"| student-{variant} | 0 of 2 replicas failed | {rdf['mean']:.3f} +- {rdf['std']:.3f} |" in card
    assert "| ensemble-2 |" in card and "| teacher-00 |" in card and "AA noise floor (blocks of 0.16 ps, 1 reference frames" in card
    assert "ns/day in OpenMM MD (CPU platform, 24 beads, 4 fs step, 1 thread(s) per replica" in card
    assert "WITHOUT reaching early stopping" in card  # 1 epoch: the card says the model is not converged
    assert "## Contacts closer than the AA's closest contact" in card and "Contact gate (every pair at most 2 x" in card
    assert (tmp_path / "tiny-student" / "contacts.png").stat().st_size > 5000
    manifest = yaml.safe_load((tmp_path / "tiny-student" / "manifest.yaml").read_text())
    assert manifest["training"]["teachers"]["teacher_bundle"] == "../tiny-teachers"
    assert manifest["timestep_fs"] == 4.0  # the study's MD step: the default of MD with the shipped model
    assert (tmp_path / "tiny-teachers" / "continuity.npz").is_file()


def test_ship_from_pipeline_refuses_a_model_that_fails_the_contact_gate(study, ship, tmp_path, monkeypatch):
    from openmm_cgkd.analysis import contacts

    root, _, _ = study
    failing = contacts.ContactGate(False, ("A-B: 0.1100 B per A below 0.350 nm (AA 0.0020)",), 2.0, 0.001)
    monkeypatch.setattr(contacts, "contact_gate", lambda coordination, *a: failing)
    with pytest.raises(SystemExit, match="fails the contact gate .*A-B: 0.1100 B per A"):
        ship.ship(root / "study", "ensemble-e-ft-faa", "tiny")
    assert not (tmp_path / "tiny-teachers").exists()  # refused before anything is copied


def test_status_reads_where_the_run_stands(study, tmp_path, capsys):
    """`cgkd pipeline CONFIG --status`: stages, training runs and MD replicas from the files alone;
    its TAE means agree with the analysis stage's; a copy stopped part-way shows what is under way."""
    from openmm_cgkd.cli.main import main

    root, results, _ = study
    cfg = load_pipeline_config(root / "study.yaml")
    assert main(["pipeline", str(root / "study.yaml"), "--status"]) == 0
    text = capsys.readouterr().out
    for stage in ("teachers", "labels", "students", "md", "analysis", "report"):
        assert f"| {stage} | done (" in text
    assert "| aa | not needed (the dataset exists) |" in text
    for s in STUDENTS:
        assert f"| student {s} | finished |" in text
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ") and line.split("|")[1].strip() in MODELS}
    assert set(rows) == MODELS
    assert any(a.summary["rdf"]["n"] for a in results["analysis"].models.values())
    for name, a in results["analysis"].models.items():
        n_rep = len(results["md"].models[name])
        assert rows[name][0] == f"{n_rep} of {n_rep}" and rows[name][1] == str(a.n_failed)
        if a.summary["rdf"]["n"]:
            assert float(rows[name][3].split(" ")[0]) == pytest.approx(a.summary["rdf"]["mean"], abs=6e-4)
            assert float(rows[name][5].split(" ")[0]) == pytest.approx(a.summary["cdf"]["mean"], abs=6e-4)

    # stopped part-way: the md stage under way, one replica without its record, its log at step 20
    shutil.copytree(root / "study", tmp_path / "study")
    (tmp_path / "study" / "stages" / "md.json").unlink()
    (tmp_path / "study" / "stages" / "md.clock.json").write_text(json.dumps({"seconds": 7200, "attempts": 2}))
    rep = tmp_path / "study" / "md" / "ensemble-2" / "replica_01"
    (rep / "replica.json.gz").unlink()
    lines = (rep / "log.csv").read_text().splitlines()
    (rep / "log.csv").write_text("\n".join(lines[:3]) + "\n")  # the header and two rows: stopped early on
    step = int(lines[2].split(",")[0])
    from openmm_cgkd.workflow.status import pipeline_status

    cfg.out = str(tmp_path / "study")
    text = pipeline_status(cfg)
    assert "| md | stopped (rerun to resume) | 2.00 h | 2 |" in text  # a clock without a running attempt
    n_total = sum(len(reps) for reps in results["md"].models.values())
    assert f"## MD replicas ({n_total - 1} of {n_total} finished;" in text
    assert f"h of MD left ({cfg.md.n_steps * cfg.md.timestep_fs / 1000.0 * (1 - step / cfg.md.n_steps):g} ps to run" \
        in text  # the rest of the one replica under way
    assert [line.split("|")[1].strip() for line in text.splitlines() if line.split("|")[1:2]
            and line.split("|")[1].strip() in MODELS] == list(results["md"].models)  # report order
    row = next(line for line in text.splitlines() if line.startswith("| ensemble-2 |"))
    assert row.split("|")[2].strip() == "1 of 2" and row.split("|")[4].strip() == f"01 {100 * step / cfg.md.n_steps:.0f}%"


def test_interim_report_of_the_replicas_finished_so_far(study, tmp_path, capsys):
    """`cgkd pipeline CONFIG --interim` while the md stage is under way: the replicas finished (and
    current) so far, analysed and reported in <out>/interim/ as the analysis stage does; the models
    without one are named; nothing runs and nothing outside interim/ changes."""
    from openmm_cgkd.cli.main import main
    from openmm_cgkd.workflow.run import interim_report
    from openmm_cgkd.training.config import ConfigError

    root, results, _ = study
    assert interim_report(load_pipeline_config(root / "study.yaml"), log=lambda s: None) is None  # md done
    shutil.copytree(root / "study", tmp_path / "study")
    shutil.copy(root / "cg.h5", tmp_path / "cg.h5")
    shutil.copy(root / "study.yaml", tmp_path / "study.yaml")
    out = tmp_path / "study"
    for stage in ("md", "analysis", "report"):
        (out / "stages" / f"{stage}.json").unlink()
    (out / "md" / "ensemble-2" / "replica_01" / "replica.json.gz").unlink()  # under way
    for rec in (out / "md" / "student-single-e-ft-faa-teacher01").rglob("replica.json.gz"):
        rec.unlink()  # no replica of this model yet
    stale = out / "md" / "student-ensemble-e-ft-faa" / "replica_01" / "replica.json.gz"
    rec = json.loads(gzip.open(stale).read())
    rec["md"]["digest"] = "0" * 16  # made with other MD settings: not a finished replica of this run
    stale.write_bytes(gzip.compress(json.dumps(rec).encode()))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    assert main(["pipeline", str(tmp_path / "study.yaml"), "--interim"]) == 0
    assert "interim report: " in capsys.readouterr().out
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "interim" not in p.parts}
    assert after == before  # no marker, record, trajectory or model touched
    text = (out / "interim" / "report.md").read_text()
    total = sum(len(reps) for reps in results["md"].models.values())
    assert f"{total - 4} of {total} replicas have finished" in text
    assert "No replica yet: student-single-e-ft-faa-teacher01." in text
    full = results["analysis"].models["teacher-00"]  # its one replica is finished: as in the analysis stage
    assert f"| teacher-00 | {full.n_failed} of 1 replicas failed | {full.summary['rdf']['mean']:.3f}" in text
    for name in ("ensemble-2", "student-ensemble-e-ft-faa"):  # one of their two replicas counts
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        assert row.split("|")[2].strip().endswith(" of 1 replicas failed"), row
    assert "| student-single-e-ft-faa-teacher01 |" not in text
    for png in ("tae_comparison.png", "learning_curves.png", "analysis/energy_equilibration.png"):
        assert (out / "interim" / png).stat().st_size > 5000, png
    assert str(tmp_path) not in (out / "interim" / "report.json").read_text()

    (out / "stages" / "students.json").unlink()  # the students not done: nothing to report on
    with pytest.raises(ConfigError, match="needs the teachers, labels and students stages done"):
        interim_report(load_pipeline_config(tmp_path / "study.yaml"), log=lambda s: None)


def _committed_copy(src: Path, dst: Path) -> list[str]:
    """Copy into ``dst`` the files of ``src`` that git would commit under the study's .gitignore."""
    shutil.copy(ROOT / "systems" / "des" / "study" / ".gitignore", src / ".gitignore")
    repo = src.parent
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    files = subprocess.run(["git", "-C", str(repo), "ls-files", "--others", "--exclude-standard", src.name],
                           check=True, capture_output=True, text=True).stdout.split()
    for f in files:
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / f, dst / f)
    shutil.rmtree(repo / ".git")
    return files


def test_a_fresh_clone_resumes_without_retraining_or_rerunning(study, tmp_path):
    root, results, _ = study
    files = _committed_copy(root / "study", tmp_path)
    assert not any(f.endswith((".dcd", ".ckpt", "checkpoint.chk")) or "/labels/" in f or "/data/" in f for f in files)
    assert any(f.endswith("best_weights.pt") for f in files) and any(f.endswith("replica.json.gz") for f in files)
    shutil.copy(root / "cg.h5", tmp_path / "cg.h5")
    shutil.copy(root / "study.yaml", tmp_path / "study.yaml")
    clone = tmp_path / "study"
    size = sum((clone / f.split("/", 1)[1]).stat().st_size for f in files)
    assert size < 8e6

    # a stop in the middle of the students and of the md stage: their markers are not there
    for stage in ("students", "md"):
        (clone / "stages" / f"{stage}.json").unlink()
    _, logs = _run(tmp_path)
    assert all(f"[students] {s}: done earlier" in logs for s in STUDENTS)
    assert not any("ns/day on" in line or "FAILED" in line for line in logs)  # no replica ran again
    assert not list(clone.rglob("*.dcd")) and not list(clone.rglob("*.ckpt"))  # nothing trained or simulated
    skipped = {line.split("]")[0].strip("[") for line in logs if line.endswith("skipped")}
    assert {"teachers", "labels", "analysis"} <= skipped  # records unchanged: analysis not redone
    assert stage_outputs(clone, "md").models["ensemble-2"][1].record == \
        clone / "md" / "ensemble-2" / "replica_01" / "replica.json.gz"

    # teachers interrupted after their members finished: the members are reloaded, not retrained
    (clone / "stages" / "teachers.json").unlink()
    before = (clone / "teachers" / "members" / "member_01" / "result.json").read_text()
    _run(tmp_path, only=["teachers"])
    assert (clone / "teachers" / "members" / "member_01" / "result.json").read_text() == before
    assert not list(clone.rglob("checkpoints"))


def test_parallel_replicas_match_the_serial_ones_and_a_stop_ends_the_workers(study, tmp_path):
    """md.workers: 2 runs two replicas at once on a local cluster of 2 workers: a stop (Ctrl-C) ends the workers
    and keeps the finished records; the resumed stage gives the serial run's trajectories."""
    import multiprocessing

    from openmm_cgkd.md.simulation import read_log

    root, _, _ = study
    shutil.copytree(root / "study", tmp_path / "study")
    shutil.copy(root / "cg.h5", tmp_path / "cg.h5")
    shutil.copy(root / "study.yaml", tmp_path / "study.yaml")
    shutil.rmtree(tmp_path / "study" / "md")
    for stage in ("md", "analysis", "report"):
        (tmp_path / "study" / "stages" / f"{stage}.json").unlink()
    parallel = {"md": {**CONFIG["md"], "workers": 2}, "cluster": {"kind": "local"}}

    class Stop(KeyboardInterrupt):
        pass

    def stop_at_first_replica(line):
        if "ns/day on" in line:
            raise Stop

    with pytest.raises(Stop):
        run_pipeline(load_pipeline_config(tmp_path / "study.yaml", overrides=parallel), log=stop_at_first_replica)
    assert not multiprocessing.active_children()  # the workers were ended with the stage
    kept = {p.parent for p in (tmp_path / "study" / "md").rglob("replica.json.gz")}
    total = sum(len(reps) for reps in stage_outputs(root / "study", "md").models.values())
    assert 1 <= len(kept) < total

    results, logs = _run(tmp_path, overrides=parallel)
    assert f"[md] {total - len(kept)} replicas to run ({len(kept)} done earlier), 2 at a time" in logs
    assert len([x for x in logs if "ns/day on" in x]) == total - len(kept)
    assert sum(len(reps) for reps in results["md"].models.values()) == total
    for name, reps in stage_outputs(root / "study", "md").models.items():
        for rep in reps:
            mine = tmp_path / "study" / "md" / name / rep.dir.name
            serial, par = read_log(rep.dir / "log.csv"), read_log(mine / "log.csv")
            assert par["step"] == serial["step"]
            np.testing.assert_allclose(par["potential_kj_mol"], serial["potential_kj_mol"], rtol=1e-6, atol=1e-6)
            a = json.loads(gzip.open(rep.record).read())["analysis"]
            b = json.loads(gzip.open(mine / "replica.json.gz").read())["analysis"]
            assert a["failed"] == b["failed"] and a["n_frames_used"] == b["n_frames_used"]
            for kind, taes in a["tae"].items():
                assert b["tae"][kind] == pytest.approx(taes, rel=1e-5, abs=1e-9), (name, rep.dir.name, kind)


def test_unstable_replicas_are_counted_not_fatal(study, tmp_path):
    root, _, _ = study
    shutil.copytree(root / "study", tmp_path / "study")  # markers hold relative paths: the copy resumes
    shutil.copy(root / "cg.h5", tmp_path / "cg.h5")
    shutil.copy(root / "study.yaml", tmp_path / "study.yaml")
    # a 400 fs step: beads of 40 Da jump ~0.1 nm per step and crash into each other's walls
    huge = {"md": {**CONFIG["md"], "timestep_fs": 400.0, "length_ps": 16.0, "report_interval_ps": 4.0,
                   "discard_ps": 4.0, "timestep_check": {"nvt_ps": 4.0, "nve_ps": 8.0, "sample_every_steps": 2,
                                                         "stop_if_unsafe": False}}}
    # by default a step the check finds NOT safe stops the md stage before any replica runs
    strict = {"md": {**huge["md"], "timestep_check": {**huge["md"]["timestep_check"], "stop_if_unsafe": True}}}
    from openmm_cgkd.training.config import ConfigError

    with pytest.raises(ConfigError, match="400 fs is NOT safe for student-ensemble-e-ft-faa"):
        run_pipeline(load_pipeline_config(tmp_path / "study.yaml", overrides=strict), log=lambda s: None)
    assert all(json.loads(gzip.open(p).read())["timestep_fs"] != 400.0  # no replica ran at the unsafe step
               for p in (tmp_path / "study" / "md").rglob("replica.json.gz"))
    # the session ends (Ctrl-C) as the second model's first replica comes back (one worker: in
    # order, serially): the time and the record of the first one (teacher-00, one replica) are kept
    class Stop(KeyboardInterrupt):
        pass

    def stop_after_first_replica(line):
        if line.startswith("[md] ensemble-2 replica 0"):
            raise Stop

    cfg = load_pipeline_config(tmp_path / "study.yaml", overrides=huge)
    with pytest.raises(Stop):
        run_pipeline(cfg, log=stop_after_first_replica)
    clock = json.loads((tmp_path / "study" / "stages" / "md.clock.json").read_text())
    assert clock["attempts"] == 2 and clock["seconds"] > 0  # the stopped strict attempt counts too
    results, logs = _run(tmp_path, overrides=huge)
    skipped = {line.split("]")[0].strip("[") for line in logs if line.endswith("skipped")}
    assert skipped == {"teachers", "labels", "students"}
    assert not any(line.startswith("[md] teacher-00 replica 0") for line in logs)  # its record was kept
    marker = json.loads((tmp_path / "study" / "stages" / "md.json").read_text())
    assert marker["attempts"] == 3 and marker["seconds"] >= clock["seconds"]
    assert not (tmp_path / "study" / "stages" / "md.clock.json").exists()
    analysis = results["analysis"].models
    n_failed = sum(a.n_failed for a in analysis.values())
    assert n_failed >= 1
    text = (tmp_path / "study" / "report.md").read_text()
    for name, a in analysis.items():
        assert f"| {name} | {a.n_failed} of {a.n_replicas} replicas failed |" in text
        for f in a.failures:  # model, replica, step, reason
            assert f"| {name} | {f['replica']} | {f['step']} | {f['reason']} |" in text
            assert isinstance(f["step"], int) and f["reason"]
        if a.n_failed == a.n_replicas:
            assert a.summary["rdf"]["n"] == 0
    rec = next(json.loads(gzip.open(p).read()) for p in (tmp_path / "study" / "md").rglob("replica.json.gz")
               if json.loads(gzip.open(p).read())["failure"])
    assert rec["failure"]["message"] and rec["analysis"]["failed"]
    check = results["md"].timestep_check["student-ensemble-e-ft-faa"]
    assert not check["safe"]


def test_check_timestep_energy_error_grows_as_dt_squared(study):
    """Velocity Verlet: the total energy fluctuates about its drift line by O(dt^2); from the same
    start (same velocities), halving the step divides that RMS by ~4. A step far too long blows up."""
    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.md.timestep_check import check_timestep
    from openmm_cgkd.topology import bead_topology

    root = study[0]
    ds = CGDataset.load(root / "study" / "data" / "cg.h5")
    top = bead_topology([ds.type_names[t] for t in ds.bead_types], ds.boxes[0])
    bundle = root / "study" / "students" / "ensemble-e-ft-faa" / "bundle"
    kw = dict(nvt_ps=0.0, nve_ps=0.3, platform="CPU", threads=1, seed=5)
    fine = check_timestep(bundle, top, ds.positions[0], ds.boxes[0], timestep_fs=1.0, sample_every_steps=8, **kw)
    coarse = check_timestep(bundle, top, ds.positions[0], ds.boxes[0], timestep_fs=2.0, sample_every_steps=4, **kw)
    assert fine.blew_up is None and coarse.blew_up is None
    assert 3.0 < coarse.nve_rms_kj_mol_per_bead / fine.nve_rms_kj_mol_per_bead < 5.5
    assert abs(fine.nve_drift_kT_per_ns_per_bead) < abs(coarse.nve_drift_kT_per_ns_per_bead) or \
        abs(fine.nve_drift_kT_per_ns_per_bead) < 0.01
    assert fine.safe and "no NVT run" in fine.summary()

    nvt = check_timestep(bundle, top, ds.positions[0], ds.boxes[0], timestep_fs=2.0, nvt_ps=1.0, nve_ps=0.1,
                         sample_every_steps=5, platform="CPU", threads=1, seed=6)
    assert abs(nvt.nvt_mean_temperature_K - 298.1) < 0.15 * 298.1  # 24 beads: the temperature fluctuates a lot
    assert nvt.temperature_ok == (abs(nvt.nvt_mean_temperature_K - 298.1) <= 0.02 * 298.1 + 2 * nvt.nvt_temperature_sem_K)

    wild = check_timestep(bundle, top, ds.positions[0], ds.boxes[0], timestep_fs=400.0, nvt_ps=4.0, nve_ps=4.0,
                          sample_every_steps=2, platform="CPU", threads=1, seed=5)
    assert not wild.safe and (wild.blew_up or abs(wild.nve_drift_kT_per_ns_per_bead) > 0.05)
