"""``cgkd refine`` end to end on a tiny synthetic system with a deliberately trapped student.

The reference system: two bead types A, B with soft pair repulsions (known potential, OpenMM).
Teachers (2) are trained on its data and label it. The trapped student is trained (F_AA only) on
data of a system whose A-B repulsion is six times weaker: in its MD, A and B beads sit closer than
the reference's closest A-B contact, where the reference data have nothing. Refining it (its own
MD frames below the contact labelled by the ensemble, fine-tuned with the reference's data) must

* cut the A-B coordination below the contact of its MD (the final check round against round 1);
* leave the force error on the reference's test block no worse than before, within 10 %;
* write a bundle and a record per round, and not redo a finished round when run again.
"""
from pathlib import Path

import numpy as np
import pytest

from openmm_cgkd.bundle import load_bundle
from openmm_cgkd.training.config import (FineTuneConfig, LabelsConfig, LossWeights, RefineConfig, RefineMDConfig,
                                         StudentConfig, TeachersConfig, TrainerConfig, WallFitConfig)
from openmm_cgkd.training.labels import make_labels
from openmm_cgkd.training.students import train_student
from openmm_cgkd.training.synthetic import PairPotential, make_synthetic_system
from openmm_cgkd.training.teachers import train_teachers

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# hipnn-ts (the shipped DES models' architecture): the teachers train as one stacked run in this process
MODEL = {"architecture": "hipnn-ts", "embedding_dim": 16, "num_layers": 1, "num_rbf": 12, "cutoff_nm": 0.6}
TOLERANCE = 1.10  # the refined student's test force RMSE vs AA may be at most 10 % above the trapped one's


def _pot(eps_ab: float) -> PairPotential:
    return PairPotential(type_names=["A", "B"], sigma_nm=[[0.5, 0.55], [0.55, 0.6]],
                         epsilon_kj_mol=[[30.0, eps_ab], [eps_ab, 30.0]], masses_dalton=[40.0, 60.0],
                         cutoff_nm=0.6, switch_nm=0.6 - 1e-6, form="soft")


def _trainer(epochs: int) -> TrainerConfig:
    return TrainerConfig(max_epochs=epochs, batch_size=4, lr=3e-3, early_stopping_patience=50, progress_bar=False,
                         num_threads=1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("refine")
    kw = dict(n_beads=(14, 14), box_nm=1.45, n_frames=100, noise_ratio=0.5, steps_per_frame=20,
              equilibration_steps=500)
    ref = make_synthetic_system(potential=_pot(60.0), seed=2, **kw).dataset.save(root / "ref.h5")
    weak = make_synthetic_system(potential=_pot(10.0), seed=3, **kw).dataset.save(root / "weak.h5")
    teachers = train_teachers(TeachersConfig(dataset=str(ref), out=str(root / "teachers"), model=MODEL, members=2,
                                             wall=WallFitConfig(enabled=False),
                                             trainer=_trainer(15)))
    ens = str(teachers.ensemble_bundle)
    ref_l = make_labels(LabelsConfig(dataset=str(ref), teachers=ens, out=str(root / "ref_l.h5")), progress=False)
    weak_l = make_labels(LabelsConfig(dataset=str(weak), teachers=ens, out=str(root / "weak_l.h5")), progress=False)
    trapped = train_student(StudentConfig(dataset=str(weak_l), out=str(root / "trapped"), variant=None,
                                          weights=LossWeights(w_aa=1.0), trainer=_trainer(15)))
    return {"root": root, "ensemble": ens, "dataset": str(ref_l), "student": str(trapped.bundle)}


def _cfg(setup, **over) -> RefineConfig:
    kw = dict(student=setup["student"], ensemble=setup["ensemble"], dataset=setup["dataset"],
              out=str(setup["root"] / "refine"), rounds=2, max_new_frames=40, weights=LossWeights(w_aa=1.0, w_ft=1.0),
              md=RefineMDConfig(replicas=2, steps=600, interval_steps=30, timestep_fs=4.0, platform="CPU", threads=1,
                                temperature_K=300.0),
              fine_tune=FineTuneConfig(epochs=6, lr=1e-3, batch_size=4), device="cpu")
    return RefineConfig(**{**kw, **over})


def test_refine_removes_the_trap_and_keeps_the_test_error(setup, capsys):
    from openmm_cgkd.workflow.refine import refine_student

    res = refine_student(_cfg(setup), progress=False)
    recs = res.rounds
    first, last = recs[0], recs[-1]
    print("\n" + "\n".join(f"round {r['round']}: A-B below contact {r['coordination_below_contact']['A-B']['per_a']:.4f}"
                           f", frames found {r['frames_found']}" for r in recs))
    assert not first["check"] and first["frames_found"] > 0
    trapped = first["coordination_below_contact"]["A-B"]["per_a"]
    assert trapped > 0.05, f"the planted trap is not there (A-B below contact {trapped})"
    assert last["check"] or last["converged"]
    assert last["coordination_below_contact"]["A-B"]["per_a"] < 0.3 * trapped
    # the reference's own test frames: nearly nothing below the training frames' closest contact
    assert first["reference_coordination_below_contact"]["A-B"]["per_a"] < 0.02
    for r in recs:
        if r.get("bundle"):
            before, after = r["test_before"]["forces_vs_aa"]["rmse"], r["test_after"]["forces_vs_aa"]["rmse"]
            assert after <= TOLERANCE * before, f"round {r['round']}: test RMSE {before:.3f} -> {after:.3f}"
            assert r["fine_tune"]["new_frames"] >= r["frames_found"]
            where = Path(res.out) / f"round_{r['round']:02d}" / "bundle"
            b = load_bundle(where)
            refine = b.manifest.training["refine"]
            assert refine["round"] == r["round"] and len(refine["frames_files"]) == r["round"]
            assert (where / refine["dataset"]).resolve() == Path(setup["dataset"]).resolve()  # relative: portable
    assert res.final_bundle.name == "bundle"


def test_refine_resumes_without_redoing_rounds(setup, monkeypatch):
    import openmm_cgkd.workflow.refine as wr

    first = wr.refine_student(_cfg(setup), progress=False)  # done by the test above (or now)

    def no_md(*args, **kwargs):
        raise AssertionError("a finished round was run again")

    monkeypatch.setattr(wr, "_student_md", no_md)
    again = wr.refine_student(_cfg(setup), progress=False)
    assert [r["round"] for r in again.rounds] == [r["round"] for r in first.rounds]
    assert again.final_bundle == first.final_bundle
    monkeypatch.undo()
    if not first.rounds[-1].get("converged"):  # one more round asked for: the old check round becomes round 3
        more = wr.refine_student(_cfg(setup, rounds=3), progress=False)
        assert [r["round"] for r in more.rounds[:3]] == [1, 2, 3]
        assert not more.rounds[2]["check"] and more.rounds[2]["bundle"] == "bundle"
        assert more.rounds[-1]["check"] or more.rounds[-1]["converged"]
    with pytest.raises(wr.ConfigError, match="other settings"):
        wr.refine_student(_cfg(setup, max_new_frames=7), progress=False)


def test_cli_errors_are_one_line(setup, capsys):
    from openmm_cgkd.cli.main import main

    assert main(["refine", "--student", setup["student"], "--out", str(setup["root"] / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cgkd refine: error:") and "ensemble" in err[0]
    # a student whose loss uses no ensemble label and no --weights: refused before any MD
    assert main(["refine", "--student", setup["student"], "--ensemble", setup["ensemble"], "--dataset",
                 setup["dataset"], "--out", str(setup["root"] / "y"), "--steps", "60", "--interval", "30",
                 "--replicas", "1", "--platform", "CPU", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no ensemble label" in err[0]
