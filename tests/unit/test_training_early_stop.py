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
from openmm_cgkd.training.trainer import BEST_WEIGHTS, train_potential

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
