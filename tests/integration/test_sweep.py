"""`cgkd pipeline --sweep`: one teacher and a short MD per grid point, one table of force errors and
structure TAEs (a tiny grid on a tiny synthetic system)."""
import json
from pathlib import Path

import pytest
import yaml

from openmm_cgkd.workflow.sweep import load_sweep_config, run_sweep, sweep_points
from openmm_cgkd.training.config import ConfigError

BASE = {
    "out": "study", "dataset": "cg.h5", "dataset_start_frame": 4, "dataset_stride": 2,
    "model": {"architecture": "graph-network", "embedding_dim": 8, "num_layers": 1, "num_rbf": 8, "cutoff_nm": 0.6},
    "split": {"train": 0.6, "val": 0.2, "test": 0.2, "gap_frames": 1},
    "trainer": {"max_epochs": 1, "batch_size": 4, "progress_bar": False, "num_threads": 1},
    "teachers": {"members": 8},
    "students": {"variants": ["ensemble-e-ft-faa"]},
    "md": {"replicas": 4, "length_ps": 1.0, "timestep_fs": 4.0, "report_interval_ps": 0.04, "discard_ps": 0.04,
           "platform": "CPU", "threads": 1},
    "analysis": {"n_blocks": 2},
    "cluster": {"kind": "serial"},  # tiny tasks: no worker processes to start
}
SWEEP = {"base": "study.yaml", "out": "study/sweep", "grid": {"cutoff_nm": [0.5, 0.6], "embedding_dim": [8]},
         "md": {"length_ps": 0.12, "replicas": 1}}


def test_sweep_points_are_the_cartesian_product():
    pts = sweep_points({"cutoff_nm": [0.7, 0.9], "architecture": ["graph-network", "tensornet"]})
    assert [p for _, p in pts] == [{"cutoff_nm": 0.7, "architecture": "graph-network"},
                                   {"cutoff_nm": 0.7, "architecture": "tensornet"},
                                   {"cutoff_nm": 0.9, "architecture": "graph-network"},
                                   {"cutoff_nm": 0.9, "architecture": "tensornet"}]
    assert pts[1][0] == "architecture-tensornet_cutoff_nm-0.7"  # keys sorted: the grid's order sets the run order only
    assert dict(sweep_points({"architecture": ["tensornet"], "cutoff_nm": [0.7]})) == {pts[1][0]: pts[1][1]}


def test_one_at_a_time_varies_each_key_alone_around_the_base_model():
    grid = {"architecture": ["graph-network", "tensornet"], "cutoff_nm": [0.7, 0.9, 1.1], "embedding_dim": [32, 64]}
    pts = sweep_points(grid, "one-at-a-time", {"architecture": "graph-network", "cutoff_nm": 0.9,
                                                "embedding_dim": 32, "num_layers": 2})
    assert [p for _, p in pts] == [
        {"architecture": "graph-network", "cutoff_nm": 0.9, "embedding_dim": 32},
        {"architecture": "tensornet", "cutoff_nm": 0.9, "embedding_dim": 32},
        {"architecture": "graph-network", "cutoff_nm": 0.7, "embedding_dim": 32},
        {"architecture": "graph-network", "cutoff_nm": 1.1, "embedding_dim": 32},
        {"architecture": "graph-network", "cutoff_nm": 0.9, "embedding_dim": 64}]
    # the same model has the same name as in the factorial design (its cached results are reused)
    factorial = dict(sweep_points(grid))
    assert all(factorial[name] == point for name, point in pts) and len(factorial) == 12
    # the center of the shipped sweep is fixed in sweep.yaml, not taken from the study's model block
    cfg = load_sweep_config(Path(__file__).resolve().parents[2] / "systems" / "des" / "sweep.yaml")
    assert cfg.center == {"architecture": "graph-network", "cutoff_nm": 0.9, "embedding_dim": 32}
    with pytest.raises(ConfigError, match="does not set embedding_dim"):
        sweep_points(grid, "one-at-a-time", {"architecture": "graph-network", "cutoff_nm": 0.9})


def test_a_tiny_sweep_tables_force_error_and_md_structure(tmp_path, tiny_dataset):
    tiny_dataset(tmp_path / "cg.h5", n_frames=30, seed=4)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(SWEEP))
    out = tmp_path / "study" / "sweep"
    logs, partial = [], []

    def log(line):  # when the second point starts, the table already holds the first
        logs.append(line)
        if line.startswith("[sweep] cutoff_nm-0.6"):
            partial.append((out / "sweep.md").read_text())

    rows = run_sweep(load_sweep_config(tmp_path / "sweep.yaml"), log=log)
    assert [r["model"]["cutoff_nm"] for r in rows] == [0.5, 0.6]
    assert "(1 of 2 points done so far)" in partial[0] and "| 0.5 | 8 | 1 |" in partial[0]
    assert "| 0.6 |" not in partial[0] and "so far" not in (out / "sweep.md").read_text()
    for r in rows:
        assert r["val_force_rmse"] > 0 and r["test_force_rmse"] > 0 and r["epochs"] == 1
        assert r["n_replicas"] == 1 and r["tae"]["rdf"]["n"] + r["n_failed"] == 1
        point = out / r["point"]
        # one teacher trained on the frames selected once for the whole sweep; MD of that teacher only
        manifest = yaml.safe_load((point / "teachers" / "ensemble" / "manifest.yaml").read_text())
        assert manifest["architecture"]["cutoff_nm"] == r["model"]["cutoff_nm"]
        md = json.loads((point / "stages" / "md.json").read_text())
        assert list(md["outputs"]["models"]) == ["teacher-00"] and md["key"]["md"]["n_steps"] == 30
        assert not (point / "data").exists()
    assert (out / "data" / "cg.h5").is_file()
    table = (out / "sweep.md").read_text()
    assert "| cutoff_nm | embedding_dim | epochs | val force RMSE |" in table and "| 0.6 | 8 | 1 |" in table
    assert json.loads((out / "sweep.json").read_text())["rows"][0]["point"] == "cutoff_nm-0.5_embedding_dim-8"

    # a rerun resumes every point from its stage markers: nothing is trained or simulated again
    logs.clear()
    run_sweep(load_sweep_config(tmp_path / "sweep.yaml"), log=logs.append)
    assert sum(line.endswith("skipped") for line in logs) == 2 * 6


def test_a_stacked_architecture_point_trains_one_stacked_member(tmp_path, tiny_dataset):
    """hipnn-ts in the grid: its teacher trains through the stacked trainer with K = 1 (the same
    teacher stage as the study's stacked ensemble), and the point gets its row and its MD."""
    tiny_dataset(tmp_path / "cg.h5", n_frames=30, seed=4)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({**SWEEP, "grid": {"architecture": ["hipnn-ts"],
                                                                          "cutoff_nm": [0.6]}}))
    logs = []
    (row,) = run_sweep(load_sweep_config(tmp_path / "sweep.yaml"), log=logs.append)
    point = tmp_path / "study" / "sweep" / row["point"]
    assert row["point"] == "architecture-hipnn-ts_cutoff_nm-0.6"
    assert row["val_force_rmse"] > 0 and row["test_force_rmse"] > 0 and row["epochs"] == 1
    assert row["n_replicas"] == 1 and row["tae"]["rdf"]["n"] + row["n_failed"] == 1
    stacked = json.loads((point / "teachers" / "stacked" / "result.json").read_text())
    assert stacked["num_members"] == 1 and (point / "teachers" / "stacked" / "best_weights.pt").is_file()
    member = yaml.safe_load((point / "teachers" / "members" / "member_00" / "bundle" / "manifest.yaml").read_text())
    assert member["architecture"]["architecture"] == "hipnn-ts" and member["architecture"]["cutoff_nm"] == 0.6
    # the sensitivity range follows the point's cutoff (0.3 and 0.85 of it), not the 1 nm default
    assert member["architecture"]["sensitivity_max_nm"] == pytest.approx(0.85 * 0.6)
    md = json.loads((point / "stages" / "md.json").read_text())
    assert list(md["outputs"]["models"]) == ["teacher-00"]
    assert "| hipnn-ts | 0.6 | 1 |" in (tmp_path / "study" / "sweep" / "sweep.md").read_text()


def test_the_shipped_sweep_grid_is_valid_and_has_hipnn_ts():
    """Every point of systems/des/sweep.yaml makes a valid model for the DES (checked without its data)."""
    from pathlib import Path

    from openmm_cgkd.workflow.config import load_pipeline_config
    from openmm_cgkd.workflow.sweep import point_config
    from openmm_cgkd.training.model import potential_config_for

    cfg = load_sweep_config(Path(__file__).resolve().parents[2] / "systems" / "des" / "sweep.yaml")
    base = load_pipeline_config(cfg.base)
    archs = set()
    for name, point in sweep_points(cfg.grid, cfg.design, {**base.model, **cfg.center}):
        pc = point_config(base, Path(base.out) / name, base.dataset, point, cfg)
        model = potential_config_for(pc.model, ["Cho", "Cl", "Urea"], 1000 / 4.484 ** 3)
        assert (model.architecture, model.cutoff_nm) == (point["architecture"], point["cutoff_nm"])
        assert pc.teachers["members"] == 1
        archs.add(model.architecture)
    assert "hipnn-ts" in archs


def test_sweep_config_errors(tmp_path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"base": "b.yaml", "grid": {"cutoff_nm": 0.7}}))
    with pytest.raises(ConfigError, match="grid.cutoff_nm"):
        load_sweep_config(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"base": "b.yaml", "grid": {"cutoff_nm": [0.7]},
                                                     "design": "latin"}))
    with pytest.raises(ConfigError, match="design must be one of factorial, one-at-a-time"):
        load_sweep_config(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"base": "b.yaml"}))
    with pytest.raises(ConfigError, match="grid"):
        load_sweep_config(tmp_path / "s.yaml")


def test_an_invalid_grid_point_is_refused_before_anything_runs(tmp_path):
    from openmm_cgkd.training.synthetic import make_synthetic_system

    make_synthetic_system(n_beads=(6, 6), box_nm=1.9, n_frames=6, steps_per_frame=5,
                          equilibration_steps=20, seed=1).dataset.save(tmp_path / "cg.h5")
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({**BASE, "dataset_start_frame": None, "dataset_stride": 1}))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({**SWEEP, "grid": {"architecture": ["graph-network",
                                                                                            "no-such-net"]}}))
    with pytest.raises(ConfigError, match="architecture-no-such-net"):
        run_sweep(load_sweep_config(tmp_path / "sweep.yaml"), log=lambda s: None)
    assert not (tmp_path / "study" / "sweep" / "architecture-graph-network").exists()
