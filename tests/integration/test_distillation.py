"""Knowledge distillation checked against a KNOWN truth (docs/METHOD.md section 7).

A synthetic CG system whose potential of mean force is known exactly
(:data:`openmm_cgkd.training.synthetic.SOFT_PAIR_POTENTIAL`: three bead types with soft pair
repulsions of different ranges and strengths, sampled by OpenMM Langevin dynamics with that
potential; trained without the repulsive wall, which a potential without a hard core does not
need). Its force labels are the true forces plus
Gaussian noise four times the RMS true force, the size of the mapping noise of real CG data, so
the conditional mean of the labels is the true force. The package's own stages run on it:
``train_teachers`` (K members differing only in their seed) -> ``make_labels`` (ensemble mean)
-> ``train_student`` (variant {e_T, F_T, F_AA}), graph-network, CPU.

Asserted against the truth, none of it guaranteed by construction:

* the ensemble's force error is below the BEST member's (averaging alone only guarantees
  that it is below the MEAN member error, by convexity);
* the student, trained on the ensemble's labels, is closer to the truth than the median teacher;
* the student's per-bead energies follow the true per-bead energies (half of each pair energy
  per bead), per bead type after removing that type's mean (forces cannot fix a per-type
  constant), with a correlation far above that of an untrained network;

plus: the labels are noisy as intended, the teachers denoise them, the metrics the stages report
are these numbers, and every bundle written loads and serves in OpenMM with the same outputs.

``ci``: 60 beads, 300 frames, 4 teachers x 12 epochs, a student of 12 epochs (about a minute on
two idle cores). ``large`` (``slow``): 120 beads, 600 frames, 8 teachers, 20 epochs each.
"""
from pathlib import Path

import numpy as np
import pytest

from openmm_cgkd.bundle import load_bundle
from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.training.config import LabelsConfig, StudentConfig, TeachersConfig, TrainerConfig, WallFitConfig
from openmm_cgkd.training.labels import make_labels
from openmm_cgkd.training.metrics import predict_frames
from openmm_cgkd.training.students import train_student
from openmm_cgkd.training.synthetic import SOFT_PAIR_POTENTIAL, make_synthetic_system
from openmm_cgkd.training.teachers import train_teachers

NOISE_RATIO = 4.0  # label noise / RMS true force, per component (mapping noise is of this size)
MODEL = {"architecture": "graph-network", "cutoff_nm": 0.6, "embedding_dim": 16, "num_layers": 1, "num_rbf": 16,
         "neighbor_embedding": False, "rbf_type": "gauss"}
SIZES = {
    "ci": dict(n_beads=(20, 20, 20), box_nm=1.7, n_frames=300, members=4, teacher_epochs=12, student_epochs=12,
               seed=1),
    "large": dict(n_beads=(40, 40, 40), box_nm=2.14, n_frames=600, members=8, teacher_epochs=20, student_epochs=20,
                  seed=5),
}


def _trainer(epochs: int) -> TrainerConfig:
    return TrainerConfig(max_epochs=epochs, batch_size=4, lr=3e-3, early_stopping_patience=50, progress_bar=False,
                         num_threads=1)


def _rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def _centred_correlations(pred: np.ndarray, truth: np.ndarray, types: np.ndarray) -> list[float]:
    """Pearson r of per-bead energies (frames, beads) with the truth, per bead type, each side
    centred on that type's mean over all its beads and frames."""
    out = []
    for t in np.unique(types):
        x = np.asarray(pred, np.float64)[:, types == t]
        y = np.asarray(truth, np.float64)[:, types == t]
        x, y = x - x.mean(), y - y.mean()
        out.append(float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum())))
    return out


@pytest.fixture(scope="module", params=["ci", pytest.param("large", marks=pytest.mark.slow)])
def run(request, tmp_path_factory):
    size = SIZES[request.param]
    root = tmp_path_factory.mktemp(f"distillation-{request.param}")
    synth = make_synthetic_system(n_beads=size["n_beads"], box_nm=size["box_nm"], n_frames=size["n_frames"],
                                  noise_ratio=NOISE_RATIO, potential=SOFT_PAIR_POTENTIAL, seed=size["seed"])
    data = synth.dataset.save(root / "data.h5")
    truth = {"true": synth.true_forces}
    teachers = train_teachers(TeachersConfig(dataset=str(data), out=str(root / "teachers"), model=MODEL,
                                             members=size["members"], wall=WallFitConfig(enabled=False),
                                             parallel=1,  # in this process: no worker to start
                                             trainer=_trainer(size["teacher_epochs"])),
                              extra_force_refs=truth)
    labelled = make_labels(LabelsConfig(dataset=str(data), teachers=str(teachers.ensemble_bundle),
                                        out=str(root / "labelled.h5")), progress=False)
    student = train_student(StudentConfig(dataset=str(labelled), out=str(root / "student"),
                                          variant="ensemble-e-ft-faa", trainer=_trainer(size["student_epochs"])),
                            extra_force_refs=truth)
    test = teachers.blocks["test"]
    assert np.array_equal(test, student.blocks["test"])
    member_preds = [predict_frames(m, synth.dataset, test) for m in teachers.members]
    true_f = synth.true_forces[test]
    member_errors = [_rmse(p["forces"], true_f) for p in member_preds]
    ensemble = np.mean([p["forces"] for p in member_preds], axis=0)
    student_pred = predict_frames(student.model, synth.dataset, test)
    res = {"size": request.param, "synth": synth, "teachers": teachers, "student": student, "test": test,
           "labelled": CGDataset.load(labelled), "member_preds": member_preds, "member_errors": member_errors,
           "ensemble_forces": ensemble, "ensemble_error": _rmse(ensemble, true_f), "student_pred": student_pred,
           "student_error": _rmse(student_pred["forces"], true_f)}
    print(f"\n[{request.param}] force RMSE vs truth (kJ/mol/nm): members {np.round(member_errors, 2).tolist()}, "
          f"ensemble {res['ensemble_error']:.2f}, student {res['student_error']:.2f}; label noise "
          f"{synth.noise_sigma:.1f}, signal {synth.info['signal_rms_kj_mol_nm']:.1f}")
    return res


def test_labels_are_noisy_and_teachers_denoise_them(run):
    synth, test = run["synth"], run["test"]
    signal = synth.info["signal_rms_kj_mol_nm"]
    assert synth.noise_sigma == pytest.approx(NOISE_RATIO * signal)
    assert _rmse(synth.dataset.forces[test], synth.true_forces[test]) == pytest.approx(synth.noise_sigma, rel=0.05)
    for k, err in enumerate(run["member_errors"]):
        assert err < 0.5 * signal, f"teacher {k} learned little: error {err:.2f} vs signal {signal:.2f}"
        # the reported metrics are the same numbers
        assert run["teachers"].metrics["members"][k]["forces_vs_true"]["rmse"] == pytest.approx(err, rel=1e-5)


def test_ensemble_beats_its_best_member(run):
    errors, ens_error = run["member_errors"], run["ensemble_error"]
    print(f"ensemble / best member = {ens_error / min(errors):.3f}")
    assert ens_error < min(errors)
    assert run["teachers"].metrics["ensemble"]["forces_vs_true"]["rmse"] == pytest.approx(ens_error, rel=1e-5)
    # the labels are the ensemble bundle's mean (network + wall), with the member spread
    lab, test, ensemble = run["labelled"].labels, run["test"], run["ensemble_forces"]
    np.testing.assert_allclose(lab.forces[test], ensemble, rtol=1e-3, atol=2e-2 * np.abs(ensemble).mean())
    assert lab.provenance["source"] == "ensemble" and lab.provenance["num_members"] == len(errors)
    assert float(np.mean(lab.force_std)) > 0


def test_student_beats_the_median_teacher(run):
    st_error, median = run["student_error"], float(np.median(run["member_errors"]))
    print(f"student / median teacher = {st_error / median:.3f}; student / ensemble = "
          f"{st_error / run['ensemble_error']:.3f}")
    assert st_error < median
    metrics = run["student"].metrics["student"]
    assert metrics["forces_vs_true"]["rmse"] == pytest.approx(st_error, rel=1e-5)


def test_student_bead_energies_follow_the_true_partition(run):
    import torch

    from openmm_cgkd.training.model import TrainablePotential, number_density

    synth, test = run["synth"], run["test"]
    types = synth.dataset.bead_types
    truth = synth.true_bead_energies[test]
    r_student = _centred_correlations(run["student_pred"]["bead_energies"], truth, types)
    # control: the same architecture, untrained, on the same frames
    torch.manual_seed(0)
    untrained = TrainablePotential(run["student"].model.network.config, None,
                                   number_density(synth.dataset.positions, synth.dataset.boxes))
    r_untrained = _centred_correlations(predict_frames(untrained, synth.dataset, test)["bead_energies"], truth, types)
    print(f"per-bead energy vs truth, per type: student {np.round(r_student, 3).tolist()}, untrained "
          f"{np.round(r_untrained, 3).tolist()}")
    assert min(r_student) > 0.6
    assert min(r_student) > max(abs(r) for r in r_untrained) + 0.3


@pytest.mark.parametrize("run", ["ci"], indirect=True)  # once, on the CI-sized run
def test_bundles_record_what_they_are_and_serve_in_openmm(run):
    import openmm
    from openmm import unit

    from openmm_cgkd.serving.forcefield import CGKDForceField
    from openmm_cgkd.topology import bead_topology

    teachers, student = run["teachers"], run["student"]
    members = len(run["member_errors"])
    ens = load_bundle(teachers.ensemble_bundle)
    assert ens.manifest.model_kind == "ensemble" and ens.manifest.num_members == members
    assert ens.manifest.training["seeds"] == list(range(members))
    member = load_bundle(teachers.member_bundles[1])
    assert member.manifest.model_kind == "teacher" and member.manifest.training["seed"] == 1
    st = load_bundle(student.bundle)
    man = st.manifest
    assert man.model_kind == "student" and man.variant == "ensemble-e-ft-faa"
    assert man.training["loss_weights"] == {"w_aa": 2.0, "w_ft": 1.0, "w_e": 5.0, "w_E": 0.0}
    teacher_ref = man.training["teachers"]["teacher_bundle"]
    assert not Path(teacher_ref).is_absolute()
    assert (student.bundle / teacher_ref).resolve() == teachers.ensemble_bundle.resolve()
    assert man.training["teachers"]["source"] == "ensemble"
    assert man.wall.to_dict() == ens.manifest.wall.to_dict()  # the teachers' (here: none)
    assert man.type_names == list(run["synth"].dataset.type_names)

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
