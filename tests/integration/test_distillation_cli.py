"""`cgkd train-teachers`, `cgkd label`, `cgkd train-student` from YAML configs (tiny, CPU)."""
import json
from pathlib import Path

import numpy as np
import pytest

from openmm_cgkd.bundle import load_bundle
from openmm_cgkd.cli.main import main
from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.training.synthetic import make_synthetic_system

TRAINER = "trainer: {max_epochs: 2, batch_size: 8, lr: 0.003, num_threads: 1, progress_bar: false}\n"
MODEL = ("model: {architecture: graph-network, cutoff_nm: 0.8, embedding_dim: 8, num_layers: 1, num_rbf: 8, "
         "rbf_type: gauss}\n")


def test_cli_stages_write_loadable_bundles(tmp_path, capsys):
    synth = make_synthetic_system(n_beads=(10, 10), box_nm=1.65, n_frames=40, steps_per_frame=20,
                                  equilibration_steps=300, seed=2)
    synth.dataset.save(tmp_path / "data" / "cg.h5")
    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    (cfg_dir / "teachers.yaml").write_text("dataset: ../data/cg.h5\nout: ../runs/teachers\nmembers: 3\n"
                                           + MODEL + TRAINER)
    (cfg_dir / "student.yaml").write_text("dataset: ../data/labelled.h5\nout: ../runs/student\n"
                                          "variant: ensemble-e-ft-faa\n" + TRAINER)

    assert main(["train-teachers", str(cfg_dir / "teachers.yaml"), "--members", "2"]) == 0
    out = capsys.readouterr().out
    assert "ensemble bundle" in out and "RMSE" in out
    teachers = tmp_path / "runs" / "teachers"
    ens = load_bundle(teachers / "ensemble")
    assert ens.manifest.model_kind == "ensemble" and ens.manifest.num_members == 2
    assert (teachers / "metrics.json").is_file() and (teachers / "training_curves.png").is_file()
    metrics = json.loads((teachers / "metrics.json").read_text())
    assert set(metrics["ensemble"]["forces_vs_aa"]) == {"mae", "rmse", "r2", "cv", "n"}

    labelled = tmp_path / "data" / "labelled.h5"
    assert main(["label", "--dataset", str(tmp_path / "data" / "cg.h5"), "--teachers", str(teachers / "ensemble"),
                 "--out", str(labelled)]) == 0
    lab = CGDataset.load(labelled).labels
    assert lab.forces.shape == (40, 20, 3) and lab.provenance["source"] == "ensemble"
    assert CGDataset.load(tmp_path / "data" / "cg.h5").labels is None  # the original is untouched

    # single-teacher labels, and a single-teacher variant refuses ensemble labels (and vice versa)
    single = tmp_path / "data" / "member1.h5"
    assert main(["label", "--dataset", str(tmp_path / "data" / "cg.h5"), "--teachers", str(teachers / "ensemble"),
                 "--member", "1", "--out", str(single)]) == 0
    s_lab = CGDataset.load(single).labels
    assert s_lab.provenance["source"] == "member 1" and not np.any(s_lab.force_std)
    assert main(["train-student", str(cfg_dir / "student.yaml"), "--variant", "single-e-ft"]) == 2  # bad usage
    assert "label with --member K" in capsys.readouterr().err

    assert main(["train-student", str(cfg_dir / "student.yaml")]) == 0
    assert "student 'ensemble-e-ft-faa'" in capsys.readouterr().out
    st = load_bundle(tmp_path / "runs" / "student" / "bundle")
    assert st.manifest.model_kind == "student" and st.manifest.variant == "ensemble-e-ft-faa"
    # the teachers are named relative to the student bundle (portable provenance), with their checksums
    teacher_ref = st.manifest.training["teachers"]["teacher_bundle"]
    assert not Path(teacher_ref).is_absolute() and (st.path / teacher_ref).resolve() == (teachers / "ensemble").resolve()
    for png in ("parity_forces_vs_aa.png", "parity_bead_energies_vs_teacher.png", "training_curves.png"):
        assert (tmp_path / "runs" / "student" / png).is_file()

    # bad input is named
    (cfg_dir / "bad.yaml").write_text("dataset: ../data/cg.h5\nmembrs: 2\n")
    assert main(["train-teachers", str(cfg_dir / "bad.yaml")]) == 2
    assert "cgkd train-teachers: error: unknown key(s) ['membrs']" in capsys.readouterr().err
    assert main(["train-student", str(cfg_dir / "student.yaml"), "--dataset", str(tmp_path / "data" / "cg.h5")]) == 2
    assert "no distillation labels" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train-student", str(cfg_dir / "student.yaml"), "--variant", "nonsense"])
