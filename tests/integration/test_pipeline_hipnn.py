"""The study's protocol with the study's architecture (hipnn-ts, systems/des/study.yaml): stacked
teachers, the ensemble served as one stacked force, hipnn-ts students from the ensemble and from
single teachers (trained together as one stacked run), MD of each and the time step check, on a tiny
synthetic system."""
import json

import yaml

from openmm_cgkd.workflow.config import load_pipeline_config
from openmm_cgkd.workflow.run import run_pipeline


def test_a_hipnn_ts_study_runs_every_stage(tmp_path):
    from openmm_cgkd.training.synthetic import make_synthetic_system

    # seed 1 of this small box blows up (RMS force 1e8): the pipeline refuses such data as implausible
    make_synthetic_system(n_beads=(8, 8), box_nm=2.0, n_frames=24, steps_per_frame=5, equilibration_steps=200,
                          seed=2).dataset.save(tmp_path / "cg.h5")
    cfg = {"out": "study", "dataset": "cg.h5",
           "model": {"architecture": "hipnn-ts", "embedding_dim": 8, "num_layers": 2, "num_rbf": 8, "cutoff_nm": 0.6},
           "split": {"train": 0.6, "val": 0.2, "test": 0.2, "gap_frames": 1},
           "trainer": {"max_epochs": 1, "batch_size": 4, "progress_bar": False, "num_threads": 1},
           "teachers": {"members": 3},
           "students": {"variants": ["ensemble-e-ft-faa", "ensemble-ft-faa", "single-e-ft-faa"],
                        "single_teacher_members": [0, 1]},
           "md": {"replicas": 1, "teacher_members": 1, "teacher_replicas": 1, "length_ps": 0.2, "timestep_fs": 2.0,
                  "report_interval_ps": 0.02, "discard_ps": 0.02, "platform": "CPU", "threads": 1,
                  "timestep_check": {"nvt_ps": 0.1, "nve_ps": 0.1, "stop_if_unsafe": False}},
           "analysis": {"n_blocks": 2}, "cluster": {"kind": "serial"}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    run_pipeline(load_pipeline_config(tmp_path / "p.yaml"), log=lambda s: None)
    out = tmp_path / "study"
    stacked = json.loads((out / "teachers" / "stacked" / "result.json").read_text())
    assert stacked["num_members"] == 3  # the teachers trained as one stacked run
    for student in ("ensemble-e-ft-faa", "ensemble-ft-faa", "single-e-ft-faa-teacher00", "single-e-ft-faa-teacher01"):
        manifest = yaml.safe_load((out / "students" / student / "bundle" / "manifest.yaml").read_text())
        assert manifest["architecture"]["architecture"] == "hipnn-ts"
        run = json.loads((out / "students" / student / "run" / "result.json").read_text())
        assert run["num_members"] == 4 and run["stacked_run"] == "../../stacked"
        assert (out / "students" / student / "run" / "logs" / "metrics.csv").is_file()
    stacked_students = json.loads((out / "students" / "stacked" / "result.json").read_text())
    assert stacked_students["num_members"] == 4  # the four students trained as one stacked run
    from openmm_cgkd.workflow.status import pipeline_status

    status = pipeline_status(load_pipeline_config(tmp_path / "p.yaml"))
    for student in ("ensemble-e-ft-faa", "single-e-ft-faa-teacher01"):
        assert f"| student {student} (stacked) | finished | 1 |" in status
    md = json.loads((out / "stages" / "md.json").read_text())
    assert list(md["outputs"]["models"]) == ["teacher-00", "ensemble-3", "student-ensemble-e-ft-faa",
                                             "student-ensemble-ft-faa", "student-single-e-ft-faa-teacher00",
                                             "student-single-e-ft-faa-teacher01"]
    assert "| ensemble-3 |" in (out / "report.md").read_text()
