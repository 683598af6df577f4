"""A training run is keyed on its fingerprint: other settings or other data retrain it from scratch,
the same settings (hardware and logging aside) reload it, another epoch limit goes on with the same
run, and it never returns another run's weights."""
import csv
import json

import numpy as np
import pytest

from openmm_cgkd.training.config import LossWeights, SplitConfig, TrainerConfig
from openmm_cgkd.training.data import split_blocks
from openmm_cgkd.training.model import number_density, potential_config_for
from openmm_cgkd.training.synthetic import make_synthetic_system
from openmm_cgkd.training.trainer import train_potential

MODEL = {"architecture": "graph-network", "cutoff_nm": 0.8, "embedding_dim": 8, "num_layers": 1, "num_rbf": 8,
         "rbf_type": "gauss"}
TRAINER = dict(batch_size=4, lr=3e-3, progress_bar=False, num_threads=1, seed=7)


@pytest.fixture(scope="module")
def data():
    synth = make_synthetic_system(n_beads=(8, 8), box_nm=1.65, n_frames=24, steps_per_frame=10,
                                  equilibration_steps=200, seed=5)
    ds = synth.dataset
    blocks = split_blocks(ds.n_frames, SplitConfig())
    pcfg = potential_config_for(MODEL, ds.type_names, number_density(ds.positions, ds.boxes))
    return ds, blocks, pcfg


def _weights(result):
    return {k: v.numpy().copy() for k, v in result.model.state_dict().items()}


def _same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def _val_rows(out):
    with open(out / "logs" / "metrics.csv", newline="") as fh:
        return sum(1 for row in csv.DictReader(fh) if row.get("val_loss"))


def test_changed_settings_retrain_same_settings_reload(data, tmp_path):
    ds, blocks, pcfg = data
    out, logs = tmp_path / "run", []

    def train(dataset=ds, **over):
        return train_potential(dataset, blocks, pcfg, None, LossWeights(), TrainerConfig(**{**TRAINER, **over}), out,
                               log=logs.append)

    one = train(max_epochs=1)
    assert one.info["epochs"] == 1 and _val_rows(out) == 1
    # another learning rate: trained again (never the old weights), the old log and checkpoints gone
    other = train(max_epochs=1, lr=1e-3)
    assert other.info["epochs"] == 1 and _val_rows(out) == 1
    assert any("trainer.lr: 0.003 -> 0.001" in line and "from scratch" in line for line in logs)
    assert len(list((out / "checkpoints").glob("best-*.ckpt"))) == 1
    assert not _same(_weights(one), _weights(other))
    # back to lr 3e-3 (trained again), then max_epochs 1 -> 2: the same run goes on from epoch 1
    train(max_epochs=1)
    logs.clear()
    two = train(max_epochs=2)
    assert two.info["epochs"] == 2 and _val_rows(out) == 2
    assert logs == [f"training run {out}: max_epochs 1 -> 2: going on from epoch 1"]
    # independent reference: a 2-epoch run in a new directory has exactly these weights
    fresh = train_potential(ds, blocks, pcfg, None, LossWeights(), TrainerConfig(**TRAINER, max_epochs=2),
                            tmp_path / "fresh")
    assert _same(_weights(two), _weights(fresh)) and not _same(_weights(one), _weights(two))
    # a lower limit than the finished run trained: kept as it is (not trained again)
    logs.clear()
    lower = train(max_epochs=1)
    assert lower.info["epochs"] == 2 and _same(_weights(lower), _weights(two))
    assert logs == [f"training run {out}: max_epochs 2 -> 1: finished after 2 epochs; kept"]
    assert train(max_epochs=1).info == lower.info and len(logs) == 1  # and now keyed on the new limit
    two = train(max_epochs=2)  # the limit raised again: goes on from the same checkpoint (the same run)
    assert _same(_weights(two), _weights(fresh))

    # same settings, other hardware/logging settings: reloaded, not trained again
    logs.clear()
    stamp = (out / "result.json").stat().st_mtime_ns
    again = train(max_epochs=2, num_threads=2, log_every_n_steps=3, accelerator="cpu")
    assert not logs and (out / "result.json").stat().st_mtime_ns == stamp
    assert _same(_weights(again), _weights(two)) and again.info == two.info

    # the same settings on data of other content: trained again
    noisier = ds.select_frames(slice(None))
    noisier.forces = noisier.forces + np.float32(1.0)
    train(dataset=noisier, max_epochs=2)
    assert any("dataset:" in line for line in logs)
    assert json.loads((out / "result.json").read_text())["fingerprint"] != two.info["fingerprint"]


def test_a_run_without_fingerprint_is_not_trusted(data, tmp_path):
    """A run directory of unknown settings (e.g. from an older version) is trained again."""
    ds, blocks, pcfg = data
    out = tmp_path / "run"
    first = train_potential(ds, blocks, pcfg, None, LossWeights(), TrainerConfig(**TRAINER, max_epochs=1), out)
    (out / "fingerprint.json").unlink()
    info = json.loads((out / "result.json").read_text())
    info.pop("fingerprint")
    (out / "result.json").write_text(json.dumps(info))
    logs = []
    second = train_potential(ds, blocks, pcfg, None, LossWeights(), TrainerConfig(**TRAINER, max_epochs=2), out,
                             log=logs.append)
    assert second.info["epochs"] == 2 and any("no fingerprint recorded" in line for line in logs)
    assert not _same(_weights(first), _weights(second))
