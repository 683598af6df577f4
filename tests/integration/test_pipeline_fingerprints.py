"""The pipeline never serves a stale result: every stage is keyed on its settings and on the content
of its inputs, so a changed setting redoes exactly what depends on it.

One tiny synthetic pipeline is changed step by step; the tests run in file order, each one first
bringing the run to the state it starts from (a no-op when the previous test left it there).
"""
import json
import os

import pytest
import yaml

from openmm_cgkd.fingerprint import bundle_checksum
from openmm_cgkd.workflow.config import load_pipeline_config
from openmm_cgkd.workflow.run import run_pipeline

STAGES = ["teachers", "labels", "students", "md", "analysis", "report"]
STUDENT = "student-ensemble-e-ft-faa"
TEMPERATURE = {"md": {"temperature_K": 310.0}}
EMBEDDING = {"model": {"embedding_dim": 12}}
EPOCHS = {"trainer": {"max_epochs": 2}}
MEMBERS = {"teachers": {"members": 3}}


@pytest.fixture(scope="module")
def pipe(tmp_path_factory, tiny_dataset):
    root = tmp_path_factory.mktemp("fp")
    tiny_dataset(root / "cg.h5")
    cfg = {
        "out": "run", "dataset": "cg.h5", "dataset_stride": 2, "dataset_max_frames": 36,
        "model": {"architecture": "graph-network", "embedding_dim": 8, "num_layers": 1, "num_rbf": 8,
                  "cutoff_nm": 0.6},
        "split": {"train": 0.7, "val": 0.15, "test": 0.15},
        "trainer": {"max_epochs": 1, "batch_size": 4, "progress_bar": False, "num_threads": 1},
        "teachers": {"members": 2},
        "students": {"variants": ["ensemble-e-ft-faa"]},
        "md": {"replicas": 1, "steps": 20, "report_interval": 10, "teacher_members": 0, "include_ensemble": False,
               "platform": "CPU", "threads": 1, "timestep_fs": 4.0},
        "analysis": {"n_blocks": 2},
        "cluster": {"kind": "serial"},  # tiny tasks: no worker processes to start
    }
    (root / "pipe.yaml").write_text(yaml.safe_dump(cfg))
    return root


def _merge(*overrides):
    out = {}
    for o in overrides:
        for k, v in o.items():
            out[k] = {**out.get(k, {}), **v}
    return out


def _run(pipe, *overrides):
    """Run the pipeline with ``overrides``; the set of stages it skipped, and its log."""
    logs = []
    run_pipeline(load_pipeline_config(pipe / "pipe.yaml", overrides=_merge(*overrides)), log=logs.append)
    skipped = {line.split("]")[0].strip("[") for line in logs if line.endswith("skipped")}
    return skipped, logs


def _marker(pipe, stage):
    return json.loads((pipe / "run" / "stages" / f"{stage}.json").read_text())


def _manifest(bundle):
    return yaml.safe_load((bundle / "manifest.yaml").read_text())


def _replica(pipe):
    return pipe / "run" / "md" / STUDENT / "replica_00"


def test_unchanged_settings_skip_every_stage(pipe):
    _run(pipe)
    # the dataset touched (same content, new mtime) and hardware/logging settings changed: nothing to redo
    src = pipe / "cg.h5"
    os.utime(src, (src.stat().st_atime + 100, src.stat().st_mtime + 100))
    skipped, _ = _run(pipe, {"cluster": {"retries": 1}, "trainer": {"log_every_n_steps": 3}})
    assert skipped == set(STAGES)
    skipped, _ = _run(pipe)
    assert skipped == set(STAGES)


def test_md_temperature_redoes_md_and_after_not_training(pipe):
    _run(pipe)
    traj = (_replica(pipe) / "trajectory.dcd").read_bytes()
    analysis = _marker(pipe, "analysis").get("fingerprint")
    skipped, logs = _run(pipe, TEMPERATURE)
    assert skipped == {"teachers", "labels", "students"}
    rep = _replica(pipe)
    assert (rep / "trajectory.dcd").read_bytes() != traj  # a new run, not the old trajectory ...
    with open(rep / "log.csv") as fh:
        assert len(fh.readlines()) == 1 + 3  # ... and not appended to it: header + steps 0, 10, 20
    assert json.loads((rep / "fingerprint.json").read_text())["settings"]["temperature_K"] == pytest.approx(310.0)
    assert any("[md] changed" in line and "md.temperature_K: " in line and " -> 310.0" in line for line in logs)
    assert _marker(pipe, "analysis")["fingerprint"] != analysis
    skipped, _ = _run(pipe, TEMPERATURE)
    assert skipped == set(STAGES)


def test_embedding_dim_retrains_teachers_and_students(pipe):
    _run(pipe, TEMPERATURE)
    skipped, _ = _run(pipe, TEMPERATURE, EMBEDDING)
    assert not skipped
    out = pipe / "run"
    assert json.loads((out / "teachers" / "setup.json").read_text())["architecture"]["embedding_dim"] == 12
    for k in range(2):
        assert _manifest(out / "teachers" / "members" / f"member_{k:02d}" / "bundle")["architecture"][
            "embedding_dim"] == 12
    assert _manifest(out / "teachers" / "ensemble")["architecture"]["embedding_dim"] == 12
    assert _manifest(out / "students" / "ensemble-e-ft-faa" / "bundle")["architecture"]["embedding_dim"] == 12


def test_epochs_retrain_and_redo_everything_downstream(pipe):
    before_cfg = (TEMPERATURE, EMBEDDING)
    _run(pipe, *before_cfg)
    out = pipe / "run"
    ensemble = out / "teachers" / "ensemble"
    student = out / "students" / "ensemble-e-ft-faa"
    old = {"ensemble": bundle_checksum(ensemble), "student": bundle_checksum(student / "bundle"),
           "md": _marker(pipe, "md")["fingerprint"], "traj": (_replica(pipe) / "trajectory.dcd").read_bytes()}
    skipped, logs = _run(pipe, *before_cfg, EPOCHS)
    assert not skipped
    assert any("[teachers] changed" in line and "trainer.max_epochs: 1 -> 2" in line for line in logs)
    for k in range(2):  # retrained, and the member bundles re-saved with the new weights
        member = out / "teachers" / "members" / f"member_{k:02d}"
        assert json.loads((member / "result.json").read_text())["epochs"] == 2
        assert _manifest(member / "bundle")["training"]["result"]["epochs"] == 2
    new_ensemble = bundle_checksum(ensemble)
    assert new_ensemble != old["ensemble"]
    # the labels name the new teachers; the student learned from them for 2 epochs
    assert _marker(pipe, "labels")["key"]["teachers"] == new_ensemble
    training = _manifest(student / "bundle")["training"]
    assert training["teachers"]["teacher_bundle_checksum"] == new_ensemble
    assert training["result"]["epochs"] == 2 and training["trainer"]["max_epochs"] == 2
    assert json.loads((student / "run" / "result.json").read_text())["epochs"] == 2
    # MD ran the new student
    assert _marker(pipe, "md")["key"]["models"][STUDENT][0] == bundle_checksum(student / "bundle") != old["student"]
    assert _marker(pipe, "md")["fingerprint"] != old["md"]
    assert (_replica(pipe) / "trajectory.dcd").read_bytes() != old["traj"]


def test_three_members_keep_the_two_trained_ones(pipe):
    before_cfg = (TEMPERATURE, EMBEDDING, EPOCHS)
    _run(pipe, *before_cfg)
    members = pipe / "run" / "teachers" / "members"
    stamps = [(members / f"member_{k:02d}" / "result.json").stat().st_mtime_ns for k in range(2)]
    skipped, logs = _run(pipe, *before_cfg, MEMBERS)
    assert not skipped
    assert [(members / f"member_{k:02d}" / "result.json").stat().st_mtime_ns for k in range(2)] == stamps
    assert json.loads((members / "member_02" / "result.json").read_text())["seed"] == 2  # trainer.seed 0 + 2
    ensemble = _manifest(pipe / "run" / "teachers" / "ensemble")
    assert ensemble["num_members"] == 3 and ensemble["training"]["seeds"] == [0, 1, 2]
    student = _manifest(pipe / "run" / "students" / "ensemble-e-ft-faa" / "bundle")
    assert student["training"]["teachers"]["num_members"] == 3
    skipped, _ = _run(pipe, *before_cfg, MEMBERS)
    assert skipped == set(STAGES)
