"""Training runs until early stopping, not for a fixed number of epochs, and a finished run is
reloaded from its small ``best_weights.pt`` when its checkpoints are gone (a fresh clone of a
repository that keeps only the small files of finished runs)."""
import json
import shutil

import pytest
import torch

from openmm_cgkd.training.config import LossWeights, SplitConfig, TrainerConfig
from openmm_cgkd.training.data import split_blocks
from openmm_cgkd.training.metrics import read_metrics_csv
from openmm_cgkd.training.model import number_density, potential_config_for
from openmm_cgkd.training.synthetic import make_synthetic_system
from openmm_cgkd.training.rundir import BEST_WEIGHTS
from openmm_cgkd.training.trainer import train_potential

MODEL = {"architecture": "graph-network", "cutoff_nm": 0.8, "embedding_dim": 8, "num_layers": 1, "num_rbf": 8,
         "rbf_type": "gauss"}


@pytest.fixture(scope="module")
def data():
    synth = make_synthetic_system(n_beads=(8, 8), box_nm=1.65, n_frames=30, steps_per_frame=20,
                                  equilibration_steps=200, seed=11)
    ds = synth.dataset
    blocks = split_blocks(ds.n_frames, SplitConfig(0.7, 0.15, 0.15, gap_frames=2))
    pcfg = potential_config_for(MODEL, ds.type_names, number_density(ds.positions, ds.boxes))
    return ds, blocks, pcfg


def test_a_large_max_epochs_is_ended_by_early_stopping(data, tmp_path):
    ds, blocks, pcfg = data
    # validation frames are separated from the training block by the gap
    assert blocks["val"][0] - blocks["train"][-1] - 1 == 2
    # a learning rate so small that the weights cannot change in float32: the validation loss never
    # improves after the first epoch, so early stopping (patience 2) must end a 1000-epoch run
    cfg = TrainerConfig(max_epochs=1000, batch_size=8, lr=1e-14, early_stopping_patience=2, lr_patience=100,
                        progress_bar=False, num_threads=1, seed=3)
    res = train_potential(ds, blocks, pcfg, None, LossWeights(), cfg, tmp_path / "run")
    assert res.info["stopped_early"] is True
    assert res.info["epochs"] == 3  # the best epoch (0), then `patience` epochs without improvement
    curves = read_metrics_csv(tmp_path / "run" / "logs" / "metrics.csv")  # the learning curve: one value per epoch
    assert sorted(curves["val_loss"]) == sorted(curves["train_loss"]) == [0, 1, 2]


def test_a_finished_run_reloads_from_best_weights_without_its_checkpoints(data, tmp_path):
    ds, blocks, pcfg = data
    cfg = TrainerConfig(max_epochs=2, batch_size=8, lr=3e-3, progress_bar=False, num_threads=1, seed=4)
    first = train_potential(ds, blocks, pcfg, None, LossWeights(), cfg, tmp_path / "run")
    assert (tmp_path / "run" / BEST_WEIGHTS).stat().st_size < (tmp_path / "run" / first.info["best_checkpoint"]).stat().st_size
    result_before = (tmp_path / "run" / "result.json").read_text()
    shutil.rmtree(tmp_path / "run" / "checkpoints")  # what a fresh clone lacks
    again = train_potential(ds, blocks, pcfg, None, LossWeights(), cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()  # not trained again
    assert (tmp_path / "run" / "result.json").read_text() == result_before
    a, b = first.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # neither checkpoint nor best_weights.pt: trained again from scratch (same seed: same weights)
    (tmp_path / "run" / BEST_WEIGHTS).unlink()
    logs = []
    third = train_potential(ds, blocks, pcfg, None, LossWeights(), cfg, tmp_path / "run", log=logs.append)
    assert any("training again" in line for line in logs)
    assert json.loads((tmp_path / "run" / "result.json").read_text())["epochs"] == first.info["epochs"]
    assert len(read_metrics_csv(tmp_path / "run" / "logs" / "metrics.csv")["val_loss"]) == 2  # not logged twice
    c = third.model.state_dict()
    assert all(torch.allclose(a[k], c[k]) for k in a)


# ------------------------------------------------------------------ minimum improvement (min_delta)
def _stacked_stop_epoch(losses, min_delta, patience=3):
    """The epoch at which the stacked trainer's schedule stops one member fed ``losses``."""
    from openmm_cgkd.training.stacked import _MemberSchedule

    cfg = TrainerConfig(early_stopping_patience=patience, early_stopping_min_delta=min_delta, lr_patience=100)
    sched = _MemberSchedule(1, cfg)
    for epoch, v in enumerate(losses):
        sched.update(epoch, [v])
        if sched.stopped[0]:
            return epoch, sched.best_epoch[0]
    return None, sched.best_epoch[0]


def _lightning_stop_epoch(losses, min_delta, patience=3):
    """The same rule as Lightning's EarlyStopping applies it (its own implementation, not ours)."""
    from lightning.pytorch.callbacks import EarlyStopping

    stopper = EarlyStopping(monitor="val_loss", mode="min", patience=patience, min_delta=min_delta)
    for epoch, v in enumerate(losses):
        stop, _ = stopper._evaluate_stopping_criteria(torch.tensor(v))
        if stop:
            return epoch
    return None


# a crawl at the lr floor: each epoch a little lower (0.01), never by more than 0.05
CRAWL = [10.0, 9.0, 8.5] + [8.5 - 0.01 * i for i in range(1, 30)]


@pytest.mark.parametrize("min_delta, stops_at", [(0.0, None), (0.05, 5)])  # 8.5 at epoch 2, then 3 epochs
def test_min_delta_ends_a_crawl_as_lightning_does(min_delta, stops_at):
    epoch, best = _stacked_stop_epoch(CRAWL, min_delta)
    assert epoch == stops_at == _lightning_stop_epoch(CRAWL, min_delta)
    # the weights kept are those of the lowest loss seen, gain large or small
    assert best == (len(CRAWL) - 1 if stops_at is None else stops_at)


def test_min_delta_is_checked_and_keys_the_run_only_when_set(data):
    from openmm_cgkd.training.config import ConfigError
    from openmm_cgkd.training.trainer import run_fingerprint

    with pytest.raises(ConfigError, match="min_delta"):
        TrainerConfig(early_stopping_min_delta=-1.0)
    ds, blocks, pcfg = data
    key = lambda cfg: run_fingerprint(ds, blocks, pcfg, None, LossWeights(), cfg)["trainer"]  # noqa: E731
    assert "early_stopping_min_delta" not in key(TrainerConfig())  # runs made before it keep their fingerprint
    assert key(TrainerConfig(early_stopping_min_delta=0.5))["early_stopping_min_delta"] == 0.5
