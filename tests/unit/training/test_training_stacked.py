"""Stacked training: each member learns as if trained alone (independent gradients, per-member Adam,
schedule and early stopping), resumes to the uninterrupted result, and the teacher stage uses it."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from openmm_cgkd.model.potential import PotentialConfig
from openmm_cgkd.model.stacked import StackedEnsemblePotential
from openmm_cgkd.training.config import ConfigError, LossWeights, SplitConfig, TeachersConfig, TrainerConfig
from openmm_cgkd.training.data import split_blocks
from openmm_cgkd.training.loss import distillation_loss
from openmm_cgkd.training.stacked import StackedAdam, _MemberSchedule, member_losses, train_stacked
from openmm_cgkd.training.synthetic import make_synthetic_system

MODEL = dict(architecture="hipnn-ts", num_types=2, cutoff_nm=0.8, embedding_dim=8, num_layers=1, num_rbf=8,
             max_num_neighbors=48, activation="softplus")
TRAINER = dict(max_epochs=3, batch_size=8, lr=3e-3, progress_bar=False, num_threads=1, seed=11)


@pytest.fixture(scope="module")
def synth():
    return make_synthetic_system(n_beads=(10, 10), box_nm=1.65, n_frames=30, steps_per_frame=20,
                                 equilibration_steps=300, seed=4)


def test_member_losses_equal_the_distillation_loss_of_each_member():
    g = torch.Generator().manual_seed(0)
    k, b, n = 3, 2, 5
    pred = {"forces": torch.randn(k, b, n, 3, generator=g), "bead_energies": torch.randn(k, b, n, generator=g)}
    pred["energy"] = pred["bead_energies"].sum(-1)
    batch = {"forces": torch.randn(b, n, 3, generator=g), "label_forces": torch.randn(b, n, 3, generator=g),
             "label_bead_energies": torch.randn(b, n, generator=g)}
    batch["label_energy"] = batch["label_bead_energies"].sum(-1) + 0.3
    weights = LossWeights(w_aa=0.5, w_ft=1.0, w_e=0.2, w_E=2.0)
    losses, terms = member_losses(pred, batch, weights)
    for m in range(k):
        ref, ref_terms = distillation_loss({key: v[m] for key, v in pred.items()}, batch, weights)
        assert losses[m].item() == pytest.approx(ref.item(), rel=1e-6)
        for name, v in ref_terms.items():
            assert terms[name][m].item() == pytest.approx(v.item(), rel=1e-6)


def test_stacked_adam_steps_each_member_like_its_own_adam():
    g = torch.Generator().manual_seed(1)
    k = 3
    stacked = [torch.randn(k, 4, 5, generator=g, dtype=torch.float64, requires_grad=True),
               torch.randn(k, 5, generator=g, dtype=torch.float64, requires_grad=True)]
    lrs = [1e-2, 3e-3, 0.0]  # the last member is frozen (stopped early)
    singles = [[p.detach()[m].clone().requires_grad_(True) for p in stacked] for m in range(k)]
    opts = [torch.optim.Adam(s, lr=max(lr, 1e-30), weight_decay=0.01) for s, lr in zip(singles, lrs)]
    adam = StackedAdam(stacked, torch.tensor(lrs, dtype=torch.float64), weight_decay=0.01)
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in stacked]
        for p, gr in zip(stacked, grads):
            p.grad = gr.clone()
        adam.step()
        for m in range(k):
            for p, gr in zip(singles[m], grads):
                p.grad = gr[m].clone()
            opts[m].step()
    for m in range(k):
        for p, s in zip(stacked, singles[m]):
            torch.testing.assert_close(p.detach()[m], s.detach(), rtol=1e-12, atol=1e-28 if lrs[m] == 0 else 1e-14)


def test_member_schedule_reduces_stops_and_remembers_best_per_member():
    cfg = TrainerConfig(lr=1e-3, lr_factor=0.5, lr_patience=1, early_stopping_patience=2)
    sched = _MemberSchedule(2, cfg)
    improved = [sched.update(e, v) for e, v in enumerate([[5.0, 5.0], [4.0, 6.0], [3.0, 6.0], [2.0, 6.0]])]
    assert improved == [[True, True], [True, False], [True, False], [True, False]]
    assert sched.stopped == [False, True] and sched.stopped_epoch[1] == 2  # 2 epochs without a better loss
    assert sched.best_epoch == [3, 0] and sched.best_val == [2.0, 5.0]
    lrs = sched.lrs()
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] == 0.0  # a stopped member is frozen
    sched2 = _MemberSchedule(2, cfg)
    sched2.load_state_dict(json.loads(json.dumps(sched.state_dict())))
    assert sched2.lrs() == lrs and sched2.stopped == sched.stopped


def test_members_train_as_if_alone(synth, tmp_path):
    """Member 1 of a K = 2 run equals a K = 1 run with member 1's seed: same batches, and nothing of
    member 0 reaches it (gradients, optimiser, schedule)."""
    ds = synth.dataset
    blocks = split_blocks(ds.n_frames, SplitConfig())
    cfg, tcfg = PotentialConfig(**MODEL), TrainerConfig(**TRAINER)
    two = train_stacked(ds, blocks, cfg, None, LossWeights(), tcfg, tmp_path / "two", seeds=[3, 4])
    one = train_stacked(ds, blocks, cfg, None, LossWeights(), tcfg, tmp_path / "one", seeds=[4])
    a, b = two.model.network.member(1).state_dict(), one.model.network.member(0).state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    # it learned: weights moved and the validation loss fell
    init = StackedEnsemblePotential(cfg, 1, [4]).net.int_w.detach()
    assert float((one.model.network.net.int_w.detach() - init).abs().max()) > 1e-3
    rows = list(np.genfromtxt(tmp_path / "one" / "logs" / "member_00.csv", delimiter=",", names=True))
    assert len(rows) == 3 and rows[-1]["val_loss"] < rows[0]["val_loss"]
    assert two.info["members"][1]["best_val_loss"] == pytest.approx(one.info["members"][0]["best_val_loss"], rel=1e-5)
    # a finished run with the same fingerprint is reloaded, not retrained
    again = train_stacked(ds, blocks, cfg, None, LossWeights(), tcfg, tmp_path / "one", seeds=[4])
    assert again.info == one.info
    with pytest.raises(ConfigError, match="distinct member seeds"):
        train_stacked(ds, blocks, cfg, None, LossWeights(), tcfg, tmp_path / "bad", seeds=[1, 1])


class _Killed(Exception):
    pass


def test_killed_run_resumes_to_the_uninterrupted_result(synth, tmp_path, monkeypatch):
    ds = synth.dataset
    blocks = split_blocks(ds.n_frames, SplitConfig())
    cfg, tcfg = PotentialConfig(**MODEL), TrainerConfig(**{**TRAINER, "lr_patience": 0})
    whole = train_stacked(ds, blocks, cfg, None, LossWeights(), tcfg, tmp_path / "whole", seeds=[5, 6])
    real_step = StackedAdam.step

    def step_then_die(self):
        if self.step_count == 4:  # epoch 1 (3 batches per epoch), after epoch 0's checkpoint
            raise _Killed()
        real_step(self)

    monkeypatch.setattr(StackedAdam, "step", step_then_die)
    with pytest.raises(_Killed):
        train_stacked(ds, blocks, cfg, None, LossWeights(), tcfg, tmp_path / "killed", seeds=[5, 6])
    assert not (tmp_path / "killed" / "result.json").exists()
    monkeypatch.setattr(StackedAdam, "step", real_step)
    resumed = train_stacked(ds, blocks, cfg, None, LossWeights(), tcfg, tmp_path / "killed", seeds=[5, 6])
    for name, v in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], v, rtol=0, atol=0)
    logs = (tmp_path / "killed" / "logs" / "member_01.csv").read_text().splitlines()
    assert logs == (tmp_path / "whole" / "logs" / "member_01.csv").read_text().splitlines()


def test_finished_run_reloads_from_best_weights_without_checkpoints(synth, tmp_path, monkeypatch):
    """A finished run keeps its per-member best weights in best_weights.pt (small: no optimiser state);
    with its checkpoints deleted (a fresh clone) a rerun reloads them instead of training; with
    neither there it trains again."""
    import shutil

    ds = synth.dataset
    blocks = split_blocks(ds.n_frames, SplitConfig())
    cfg, tcfg = PotentialConfig(**MODEL), TrainerConfig(**{**TRAINER, "max_epochs": 2})
    run = tmp_path / "run"
    first = train_stacked(ds, blocks, cfg, None, LossWeights(), tcfg, run, seeds=[7, 8])
    best = run / "best_weights.pt"
    assert best.is_file() and best.stat().st_size < 0.5 * (run / "checkpoints" / "last.ckpt").stat().st_size
    logs = (run / "logs" / "member_01.csv").read_text()
    shutil.rmtree(run / "checkpoints")

    def no_training(self):
        raise AssertionError("a finished run was trained again")

    real_step = StackedAdam.step
    monkeypatch.setattr(StackedAdam, "step", no_training)
    notes = []
    again = train_stacked(ds, blocks, cfg, None, LossWeights(), tcfg, run, seeds=[7, 8], log=notes.append)
    assert again.info == first.info and notes == []
    for name, v in first.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[name], v, rtol=0, atol=0)
    # the members' best weights, not the initial ones
    init = StackedEnsemblePotential(cfg, 2, [7, 8]).net.int_w.detach()
    assert float((again.model.network.net.int_w.detach() - init).abs().max()) > 1e-3
    assert (run / "logs" / "member_01.csv").read_text() == logs

    # neither checkpoints nor best weights: trained again (the same result: same seeds and batches)
    best.unlink()
    monkeypatch.setattr(StackedAdam, "step", real_step)
    redo = train_stacked(ds, blocks, cfg, None, LossWeights(), tcfg, run, seeds=[7, 8], log=notes.append)
    assert len(notes) == 1 and "training again" in notes[0]
    assert best.is_file() and (run / "logs" / "member_01.csv").read_text() == logs  # logged once, not twice
    for name, v in first.model.state_dict().items():
        torch.testing.assert_close(redo.model.state_dict()[name], v, rtol=1e-6, atol=1e-7)


def test_another_epoch_limit_goes_on_with_the_same_run(synth, tmp_path):
    """max_epochs is where the run stops, not what it is: raised, a finished run goes on from its
    checkpoint to the result of a run made with the higher limit; lowered below the epochs an
    unfinished run has trained, the run ends at its best weights so far (no epoch trained)."""
    ds = synth.dataset
    blocks = split_blocks(ds.n_frames, SplitConfig())
    cfg = PotentialConfig(**MODEL)

    def train(out, max_epochs, notes=None):
        return train_stacked(ds, blocks, cfg, None, LossWeights(), TrainerConfig(**{**TRAINER, "max_epochs": max_epochs}),
                             tmp_path / out, seeds=[5, 6], log=(notes.append if notes is not None else print))

    whole = train("whole", 3)
    notes = []
    train("run", 2)
    more = train("run", 3, notes)
    assert notes == [f"training run {tmp_path / 'run'}: max_epochs 2 -> 3: going on from epoch 2"]
    assert more.info["epochs"] == 3
    for name, v in whole.model.state_dict().items():
        torch.testing.assert_close(more.model.state_dict()[name], v, rtol=0, atol=0)
    assert (tmp_path / "run" / "logs" / "member_01.csv").read_text() == (
        tmp_path / "whole" / "logs" / "member_01.csv").read_text()

    # an unfinished run (killed after epoch 2's checkpoint: the result removed) with the limit lowered to 1
    (tmp_path / "whole" / "result.json").unlink()
    notes.clear()
    ended = train("whole", 1, notes)
    assert notes == [f"training run {tmp_path / 'whole'}: max_epochs 3 -> 1: the run goes on to the new limit"]
    assert ended.info["epochs"] == 3 and ended.info["members"] == whole.info["members"]
    for name, v in whole.model.state_dict().items():
        torch.testing.assert_close(ended.model.state_dict()[name], v, rtol=0, atol=0)


def test_teacher_stage_trains_stacked_members_and_writes_one_stacked_bundle(synth, tmp_path):
    from openmm_cgkd.bundle import load_bundle
    from openmm_cgkd.training.teachers import train_teachers

    data = synth.dataset.save(tmp_path / "d.h5")
    model = {k: v for k, v in MODEL.items() if k != "num_types"}
    cfg = TeachersConfig(dataset=str(data), out=str(tmp_path / "t"), model=model, members=3,
                         trainer=TrainerConfig(**{**TRAINER, "max_epochs": 2}))
    res = train_teachers(cfg)
    assert (tmp_path / "t" / "stacked" / "result.json").is_file()
    bundle = load_bundle(res.ensemble_bundle)
    m = bundle.manifest
    assert m.model_kind == "ensemble" and m.num_members == 3 and m.training["stacked"] is True
    unc = m.training["uncertainty"]
    assert unc["threshold_kj_mol_nm"] > unc["median_frame_max_kj_mol_nm"] > 0
    eager = bundle.eager_model()
    assert isinstance(eager, StackedEnsemblePotential)
    types = torch.from_numpy(synth.dataset.bead_types.astype(np.int64))
    pos, box = torch.from_numpy(synth.dataset.positions[0]), torch.from_numpy(synth.dataset.boxes[0])
    f_k = eager.forward_members(types, pos, box)[2]
    for k, path in enumerate(res.member_bundles):  # the member bundles are the ensemble's members
        member = load_bundle(path)
        assert member.manifest.model_kind == "teacher"
        torch.testing.assert_close(member.module(types, pos, box)[2].float(), f_k[k].float(), rtol=1e-5, atol=1e-4)
    assert len(res.metrics["members"]) == 3 and "uncertainty" in res.metrics["ensemble"]
    # trained on (a higher max_epochs): the member bundles of the first run are replaced, not kept
    # (the dipeptide's members kept an earlier run's weights and wall while the ensemble moved on)
    more = train_teachers(dataclasses.replace(cfg, trainer=TrainerConfig(**{**TRAINER, "max_epochs": 3})))
    f_more = load_bundle(more.ensemble_bundle).eager_model().forward_members(types, pos, box)[2]
    assert float((f_more - f_k).abs().max()) > 1e-3  # the third epoch moved the weights
    for k, path in enumerate(more.member_bundles):
        out = load_bundle(path).module(types, pos, box)[2].float()
        torch.testing.assert_close(out, f_more[k].float(), rtol=1e-5, atol=1e-4)
    # distillation labels from the stacked bundle: member means and their spread
    from openmm_cgkd.training.labels import predict_labels

    labels = predict_labels(bundle, synth.dataset, device="cpu")
    np.testing.assert_allclose(labels.force_std[0], f_k.double().std(0, unbiased=False).numpy(), rtol=1e-4, atol=1e-4)
    member = predict_labels(bundle, synth.dataset, member=2, device="cpu")
    np.testing.assert_allclose(member.forces[0] - labels.forces[0], (f_k[2] - f_k.mean(0)).double().numpy(),
                               rtol=1e-3, atol=1e-3)  # the wall cancels in the difference


def test_one_network_trains_as_the_lightning_trainer_does(synth, tmp_path):
    """train_single (what hipnn-ts students use: the stacked trainer with one member, forces by the
    chain rule written out) against train_potential (Lightning, autograd through the pairs): the same
    seed, batches, Adam and schedule give the same network after 3 epochs, to float32 round-off."""
    from openmm_cgkd.model.potential import CGPotential
    from openmm_cgkd.training.stacked import train_single
    from openmm_cgkd.training.trainer import train_potential

    ds = synth.dataset
    blocks = split_blocks(ds.n_frames, SplitConfig())
    cfg, tcfg = PotentialConfig(**MODEL), TrainerConfig(**TRAINER)
    fast = train_single(ds, blocks, cfg, None, LossWeights(), tcfg, tmp_path / "fast")
    slow = train_potential(ds, blocks, cfg, None, LossWeights(), tcfg, tmp_path / "slow")
    assert isinstance(fast.model.network, CGPotential)
    assert fast.info["epochs"] == slow.info["epochs"] == 3 and fast.info["metrics_csv"] == "logs/member_00.csv"
    assert fast.info["best_val_loss"] == pytest.approx(slow.info["best_val_loss"], rel=1e-4)
    a, b = fast.model.network.state_dict(), slow.model.network.state_dict()
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-4, msg=name)
    torch.manual_seed(tcfg.seed)
    init = CGPotential(cfg).state_dict()  # both started here: training moved the weights
    assert float((a["representation.net.int_w"] - init["representation.net.int_w"]).abs().max()) > 1e-3


def test_members_with_their_own_targets_train_as_if_alone(synth, tmp_path):
    """Several students in one run (per-member loss weights and labels, the same seed): member m
    equals a one-member run on member m's targets alone."""
    import dataclasses

    from openmm_cgkd.data.dataset import DistillationLabels

    ds = synth.dataset
    rng = np.random.default_rng(3)

    def labelled(scale):
        f = ds.forces * scale + rng.normal(0, 5.0, ds.forces.shape)
        e = rng.normal(0, 1.0, ds.forces.shape[:2])
        return dataclasses.replace(ds, labels=DistillationLabels(f, e, e.sum(1), np.zeros_like(f)))

    a, b = labelled(0.5), labelled(0.8)
    blocks = split_blocks(ds.n_frames, SplitConfig())
    cfg, tcfg = PotentialConfig(**MODEL), TrainerConfig(**TRAINER)
    w_a, w_b = LossWeights(w_aa=2.0, w_ft=1.0, w_e=5.0, w_E=5.0), LossWeights(w_aa=0.0, w_ft=1.0)
    both = train_stacked(ds, blocks, cfg, None, [w_a, w_b], tcfg, tmp_path / "both", seeds=[5, 5],
                         member_labels=[a, b])
    for m, (w, d) in enumerate(((w_a, a), (w_b, b))):
        alone = train_stacked(d, blocks, cfg, None, w, tcfg, tmp_path / f"alone{m}", seeds=[5])
        x, y = both.model.network.member(m).state_dict(), alone.model.network.member(0).state_dict()
        for name in x:
            torch.testing.assert_close(x[name], y[name], rtol=1e-5, atol=1e-6, msg=name)
        assert both.info["members"][m]["best_val_loss"] == pytest.approx(alone.info["members"][0]["best_val_loss"],
                                                                        rel=1e-5)
    # the two members learned different things
    x, y = both.model.network.member(0).state_dict(), both.model.network.member(1).state_dict()
    assert float((x["representation.net.int_w"] - y["representation.net.int_w"]).abs().max()) > 1e-4
    with pytest.raises(ConfigError, match="distinct member seeds"):  # same seed AND same targets
        train_stacked(ds, blocks, cfg, None, [w_b, w_b], tcfg, tmp_path / "bad", seeds=[5, 5], member_labels=[b, b])
