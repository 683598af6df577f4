"""A training run killed (SIGKILL) after an epoch resumes to the same result as an uninterrupted run,
also after its directory moved (a fresh clone elsewhere): its checkpoints hold no machine path."""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import torch

from openmm_cgkd.training.config import LossWeights, SplitConfig, TrainerConfig
from openmm_cgkd.training.data import split_blocks
from openmm_cgkd.training.metrics import read_metrics_csv
from openmm_cgkd.training.model import number_density, potential_config_for
from openmm_cgkd.training.synthetic import make_synthetic_system
from openmm_cgkd.training.trainer import train_potential

MODEL = {"architecture": "graph-network", "cutoff_nm": 0.8, "embedding_dim": 8, "num_layers": 1, "num_rbf": 8,
         "rbf_type": "gauss"}
TRAINER = dict(max_epochs=3, batch_size=4, lr=3e-3, lr_patience=0, early_stopping_patience=10, progress_bar=False,
               num_threads=1, seed=7)

# The killed run: the same training in a fresh process that SIGKILLs itself in the middle of epoch 1,
# so its newest checkpoint is the one written at the end of epoch 0.
KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    import lightning.pytorch as pl
    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.model.potential import PotentialConfig
    from openmm_cgkd.training.config import LossWeights, SplitConfig, TrainerConfig
    from openmm_cgkd.training.data import split_blocks
    from openmm_cgkd.training.trainer import train_potential
    import json

    class Kill(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    data, out, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    ds = CGDataset.load(data)
    blocks = split_blocks(ds.n_frames, SplitConfig())
    train_potential(ds, blocks, PotentialConfig.from_dict(spec["model"]), None, LossWeights(),
                    TrainerConfig(**spec["trainer"]), out, callbacks=[Kill()])
""")


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    import json

    synth = make_synthetic_system(n_beads=(10, 10), box_nm=1.65, n_frames=40, steps_per_frame=20,
                                  equilibration_steps=300, seed=5)
    ds = synth.dataset
    data = ds.save(tmp_path / "data.h5")
    blocks = split_blocks(ds.n_frames, SplitConfig())
    pcfg = potential_config_for(MODEL, ds.type_names, number_density(ds.positions, ds.boxes))
    weights, tcfg = LossWeights(), TrainerConfig(**TRAINER)

    whole = train_potential(ds, blocks, pcfg, None, weights, tcfg, tmp_path / "whole")

    killed = tmp_path / "killed"
    spec = json.dumps({"model": pcfg.to_dict(), "trainer": TRAINER})
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(data), str(killed), spec],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert (killed / "checkpoints" / "last.ckpt").is_file() and not (killed / "result.json").exists()
    assert not list((killed / "checkpoints").glob("*.part"))  # checkpoints are written atomically

    # no machine path in any checkpoint (Lightning's ModelCheckpoint records its directory): the
    # restart state can be committed, and resumes from wherever the run directory is now
    for ck in (killed / "checkpoints").glob("*.ckpt"):
        assert str(tmp_path).encode() not in ck.read_bytes(), ck.name
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    killed.rename(moved)
    killed = moved

    resumed = train_potential(ds, blocks, pcfg, None, weights, tcfg, killed)
    assert resumed.info["epochs"] == whole.info["epochs"] == 3
    assert resumed.info["best_val_loss"] == whole.info["best_val_loss"]
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    # the final optimiser and schedule states agree too
    last_a = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=False)
    last_b = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=False)
    state = next(v for k, v in last_b["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert state["best_model_path"].startswith("@checkpoint_dir/best-")  # stored relative to its directory
    assert last_a["cgkd_lr_scheduler"] == last_b["cgkd_lr_scheduler"]
    assert last_a["epoch"] == last_b["epoch"] and last_a["global_step"] == last_b["global_step"]
    for s_a, s_b in zip(last_a["optimizer_states"][0]["state"].values(), last_b["optimizer_states"][0]["state"].values()):
        torch.testing.assert_close(s_a["exp_avg_sq"], s_b["exp_avg_sq"], rtol=0, atol=0)
    # the CSV log keeps the epochs before the kill, and the resumed ones, as the uninterrupted log
    curves_a = read_metrics_csv(tmp_path / "whole" / "logs" / "metrics.csv")
    curves_b = read_metrics_csv(killed / "logs" / "metrics.csv")
    assert sorted(curves_b["val_loss"]) == [0, 1, 2] and curves_b["val_loss"] == curves_a["val_loss"]
    assert curves_b["train_loss"] == curves_a["train_loss"] and curves_b["lr"] == curves_a["lr"]
    # training again after the end only reloads the best weights
    again = train_potential(ds, blocks, pcfg, None, weights, tcfg, killed)
    assert all(np.array_equal(again.model.state_dict()[k].numpy(), b[k].numpy()) for k in b)
