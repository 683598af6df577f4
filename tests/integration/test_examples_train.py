"""examples/train_from_own_data.py runs as a script with tiny arguments: teachers, labels and a
student are trained on the synthetic stand-in and their bundles load in CGKDForceField."""
import json

import pytest



@pytest.mark.slow  # the whole training chain: ~1 min on an idle 2-core CPU, several minutes when loaded
def test_train_from_own_data_on_synthetic_stand_in(tmp_path, run_example):
    from openmm_cgkd.bundle import load_bundle

    out = tmp_path / "train"
    text = run_example("train_from_own_data.py", "--synthetic-frames", "30", "--members", "2", "--epochs", "1",
                       "--embedding-dim", "8", "--out", str(out), timeout=300)
    assert "SYNTHETIC stand-in" in text
    summary = json.loads((out / "summary.json").read_text())
    ens = load_bundle(summary["ensemble_bundle"])
    assert ens.manifest.model_kind == "ensemble" and ens.manifest.num_members == 2
    assert len(summary["member_bundles"]) == 2
    student = load_bundle(summary["student_bundle"])
    assert student.manifest.model_kind == "student" and student.manifest.variant == "ensemble-e-ft-faa"
    assert student.manifest.architecture["architecture"] == "graph-network"
