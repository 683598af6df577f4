"""Knowledge distillation on a synthetic CG system whose true mean force is known.

Beads of two types interact by a known Lennard-Jones pair potential (OpenMM samples them); the
labels are the true forces plus Gaussian noise 1.5x the size of the signal. The whole training
pipeline runs once (teachers -> labels -> student, graph-network, tiny sizes, CPU) and the
tests check the method's claims against the TRUE forces:

* each teacher's force error is far below the label noise (denoising);
* the ensemble mean is better than the average member;
* a student trained on {e_T, F_T, F_AA} from the ensemble comes within 10% of the ensemble's
  error, and its per-bead energies track the ensemble's;
* every bundle written loads, says what it is, and runs in OpenMM with the same numbers.
"""
import numpy as np
import pytest

from openmm_cgkd.bundle import load_bundle
from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.training.config import LabelsConfig, StudentConfig, TeachersConfig, TrainerConfig
from openmm_cgkd.training.labels import make_labels
from openmm_cgkd.training.metrics import predict_frames
from openmm_cgkd.training.students import train_student
from openmm_cgkd.training.synthetic import make_synthetic_system
from openmm_cgkd.training.teachers import train_teachers

MODEL = {"architecture": "graph-network", "cutoff_nm": 0.8, "embedding_dim": 16, "num_layers": 1, "num_rbf": 16,
         "neighbor_embedding": False, "rbf_type": "gauss"}
MEMBERS = 4
TEACHER_EPOCHS = 12
STUDENT_EPOCHS = 20


def _trainer(epochs: int) -> TrainerConfig:
    return TrainerConfig(max_epochs=epochs, batch_size=8, lr=3e-3, early_stopping_patience=50, progress_bar=False,
                         num_threads=1)


def _rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("distillation")
    synth = make_synthetic_system(n_beads=(32, 32), box_nm=1.9, n_frames=300, noise_ratio=1.5, seed=0)
    data = synth.dataset.save(root / "data.h5")
    truth = {"true": synth.true_forces}
    teachers = train_teachers(TeachersConfig(dataset=str(data), out=str(root / "teachers"), model=MODEL,
                                             members=MEMBERS, trainer=_trainer(TEACHER_EPOCHS)),
                              extra_force_refs=truth)
    labelled = make_labels(LabelsConfig(dataset=str(data), teachers=str(teachers.ensemble_bundle),
                                        out=str(root / "labelled.h5")), progress=False)
    student = train_student(StudentConfig(dataset=str(labelled), out=str(root / "student"),
                                          variant="ensemble-e-ft-faa", trainer=_trainer(STUDENT_EPOCHS)),
                            extra_force_refs=truth)
    test = teachers.blocks["test"]
    assert np.array_equal(test, student.blocks["test"])
    member_preds = [predict_frames(m, synth.dataset, test) for m in teachers.members]
    return {"synth": synth, "teachers": teachers, "student": student, "labelled": CGDataset.load(labelled),
            "test": test, "member_preds": member_preds,
            "student_pred": predict_frames(student.model, synth.dataset, test)}


def test_teachers_denoise_the_labels(run):
    synth, test = run["synth"], run["test"]
    noise = synth.noise_sigma
    label_error = _rmse(synth.dataset.forces[test], synth.true_forces[test])
    assert label_error == pytest.approx(noise, rel=0.05)
    for k, pred in enumerate(run["member_preds"]):
        err = _rmse(pred["forces"], synth.true_forces[test])
        print(f"teacher {k}: force RMSE vs truth {err:.2f} kJ/mol/nm; label noise {noise:.2f}")
        assert err < 0.25 * noise
        # the reported metrics are the same numbers
        assert run["teachers"].metrics["members"][k]["forces_vs_true"]["rmse"] == pytest.approx(err, rel=1e-5)


def test_ensemble_mean_beats_the_average_teacher(run):
    synth, test = run["synth"], run["test"]
    member_errors = [_rmse(p["forces"], synth.true_forces[test]) for p in run["member_preds"]]
    ensemble = np.mean([p["forces"] for p in run["member_preds"]], axis=0)
    ens_error = _rmse(ensemble, synth.true_forces[test])
    print(f"members {np.round(member_errors, 2)}; ensemble {ens_error:.2f}")
    assert ens_error < np.mean(member_errors)
    assert run["teachers"].metrics["ensemble"]["forces_vs_true"]["rmse"] == pytest.approx(ens_error, rel=1e-5)
    # the labels are the ensemble bundle's mean (network + wall), with the member spread
    lab = run["labelled"].labels
    np.testing.assert_allclose(lab.forces[test], ensemble, rtol=1e-3, atol=2e-2 * np.abs(ensemble).mean())
    assert lab.provenance["source"] == "ensemble" and lab.provenance["num_members"] == MEMBERS
    assert float(np.mean(lab.force_std)) > 0


def test_student_matches_the_ensemble(run):
    synth, test = run["synth"], run["test"]
    ensemble = np.mean([p["forces"] for p in run["member_preds"]], axis=0)
    ens_error = _rmse(ensemble, synth.true_forces[test])
    student = run["student_pred"]
    st_error = _rmse(student["forces"], synth.true_forces[test])
    e_student = student["bead_energies"].ravel()
    e_teacher = run["labelled"].labels.bead_energies[test].ravel()
    corr = float(np.corrcoef(e_student, e_teacher)[0, 1])
    print(f"student force RMSE vs truth {st_error:.2f}, ensemble {ens_error:.2f} (ratio {st_error / ens_error:.3f}); "
          f"per-bead energy correlation with the ensemble {corr:.4f}")
    assert st_error <= 1.10 * ens_error
    assert corr > 0.95
    metrics = run["student"].metrics["student"]
    assert metrics["forces_vs_true"]["rmse"] == pytest.approx(st_error, rel=1e-5)
    assert metrics["bead_energies_vs_teacher"]["r2"] > 0.9


def test_bundles_record_what_they_are_and_serve_in_openmm(run):
    import openmm
    from openmm import unit

    from openmm_cgkd.serving.forcefield import CGKDForceField
    from openmm_cgkd.topology import bead_topology

    teachers, student = run["teachers"], run["student"]
    ens = load_bundle(teachers.ensemble_bundle)
    assert ens.manifest.model_kind == "ensemble" and ens.manifest.num_members == MEMBERS
    assert ens.manifest.training["seeds"] == list(range(MEMBERS))
    member = load_bundle(teachers.member_bundles[1])
    assert member.manifest.model_kind == "teacher" and member.manifest.training["seed"] == 1
    st = load_bundle(student.bundle)
    man = st.manifest
    assert man.model_kind == "student" and man.variant == "ensemble-e-ft-faa"
    assert man.training["loss_weights"] == {"w_aa": 2.0, "w_ft": 1.0, "w_e": 5.0, "w_E": 0.0}
    assert (student.bundle / man.training["teachers"]["teacher_bundle"]).resolve() == teachers.ensemble_bundle.resolve()
    assert man.training["teachers"]["source"] == "ensemble"
    assert man.wall.to_dict() == ens.manifest.wall.to_dict() and np.any(man.wall.prefactor_kj_mol > 0)
    assert man.type_names == ["A", "B"]

    # OpenMM (network + wall) reproduces the student's training-time model on a test frame
    ds, frame = run["synth"].dataset, int(run["test"][0])
    top = bead_topology([ds.type_names[t] for t in ds.bead_types], box_nm=ds.boxes[frame])
    system = CGKDForceField(student.bundle).create_system(top)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(ds.positions[frame].astype(np.float64) * unit.nanometer)
    state = ctx.getState(getEnergy=True, getForces=True)
    f_mm = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    e_mm = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    pred = predict_frames(student.model, ds, np.array([frame]))
    assert e_mm == pytest.approx(float(pred["energy"][0]), rel=1e-4, abs=1e-2)
    np.testing.assert_allclose(f_mm, pred["forces"][0], rtol=1e-3, atol=1e-2 * np.abs(pred["forces"]).mean())
