"""The pipeline end to end on a tiny synthetic system, its stage cache, and its config checks."""
import json

import numpy as np
import pytest
import yaml

from openmm_cgkd.workflow.config import load_pipeline_config
from openmm_cgkd.workflow.run import run_pipeline
from openmm_cgkd.workflow.stages.md import start_frames
from openmm_cgkd.training.config import ConfigError


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory, tiny_dataset):
    root = tmp_path_factory.mktemp("pipe")
    tiny_dataset(root / "cg.h5")
    cfg = {
        "out": "run", "dataset": "cg.h5", "dataset_stride": 2, "dataset_max_frames": 36,
        "model": {"architecture": "graph-network", "embedding_dim": 8, "num_layers": 1, "num_rbf": 8,
                  "cutoff_nm": 0.6},
        "split": {"train": 0.7, "val": 0.15, "test": 0.15},
        "trainer": {"max_epochs": 1, "batch_size": 4, "progress_bar": False, "num_threads": 1},
        "teachers": {"members": 2},
        "students": {"variants": ["ensemble-e-ft-faa"]},
        "md": {"replicas": 2, "steps": 40, "report_interval": 10, "teacher_members": 1, "platform": "CPU",
               "threads": 1, "timestep_fs": 4.0},
        "analysis": {"n_blocks": 2},
    }
    path = root / "pipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_pipeline_runs_then_skips_cached_stages(tiny_config):
    logs = []
    cfg = load_pipeline_config(tiny_config)
    results = run_pipeline(cfg, log=logs.append)
    out = tiny_config.parent / "run"
    # every model got its replicas analysed against the AA reference
    assert set(results["analysis"].models) == {"teacher-00", "ensemble-2", "student-ensemble-e-ft-faa"}
    for name, a in results["analysis"].models.items():
        for kind in ("rdf", "cdf"):
            assert np.isfinite(a.summary[kind]["mean"]) and a.summary[kind]["mean"] >= 0
    report = (out / "report.md").read_text()
    assert "student-ensemble-e-ft-faa" in report and "ns/day" in report
    assert (out / "tae_comparison.png").stat().st_size > 1000
    assert len(results["md"].models["teacher-00"]) == 2
    from openmm_cgkd.data.dataset import CGDataset
    sub = CGDataset.load(out / "data" / "cg.h5")  # frames 0, 2, ..., 34 of the source
    src = CGDataset.load(tiny_config.parent / "cg.h5")
    assert sub.n_frames == 18 and np.array_equal(sub.positions[1], src.positions[2])

    # a rerun skips every stage, and returns the same results read back from the markers
    logs.clear()
    again = run_pipeline(load_pipeline_config(tiny_config), log=logs.append)
    assert sum("skipped" in line for line in logs) == 6 + 0  # teachers .. report (no aa stage: dataset exists)
    assert set(again) == set(results)
    for name, result in again.items():  # as the markers store them (numpy scalars become str as there)
        assert type(result) is type(results[name])
        assert json.dumps(result.to_marker(out), default=str) == json.dumps(results[name].to_marker(out), default=str)
    # a changed MD setting reruns MD and what follows, not training
    logs.clear()
    run_pipeline(load_pipeline_config(tiny_config, overrides={"md": {"steps": 60}}), log=logs.append)
    skipped = {line.split("]")[0].strip("[") for line in logs if "skipped" in line}
    assert skipped == {"teachers", "labels", "students"}
    marker = json.loads((out / "stages" / "md.json").read_text())
    assert marker["outputs"]["models"]["teacher-00"][0]["start_frame"] == 0


def test_config_errors_name_the_problem(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"dataset": "x.h5", "md": {"replicas": 0}}))
    with pytest.raises(ConfigError, match="replicas"):
        load_pipeline_config(p)
    p.write_text(yaml.safe_dump({"dataset": "x.h5", "mdd": {}}))
    with pytest.raises(ConfigError, match="unknown key"):
        load_pipeline_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_pipeline_config(tmp_path / "missing.yaml")


def test_start_frames_come_from_the_training_block():
    from openmm_cgkd.training.config import SplitConfig
    from openmm_cgkd.training.data import split_blocks

    train = split_blocks(100, SplitConfig(0.8, 0.1, 0.1, gap_frames=3))["train"]
    frames = start_frames(train, 4)
    assert frames[0] == 0 and frames[-1] == train[-1] and len(set(frames)) == 4
    assert set(frames) <= set(train.tolist())
    with pytest.raises(ConfigError, match="start frames"):
        start_frames(train[:3], 4)
