"""Teacher members trained at once on a local cluster of 2 workers (parallel: 2) equal members trained
one after another on one worker (parallel: none)."""
import json

import numpy as np

from openmm_cgkd.training.config import TeachersConfig, TrainerConfig
from openmm_cgkd.training.synthetic import make_synthetic_system
from openmm_cgkd.training.teachers import member_dir, train_teachers

MODEL = {"architecture": "graph-network", "cutoff_nm": 0.8, "embedding_dim": 8, "num_layers": 1, "num_rbf": 8}


def test_parallel_members_equal_sequential_members(tmp_path):
    synth = make_synthetic_system(n_beads=(10, 10), box_nm=1.65, n_frames=30, steps_per_frame=20,
                                  equilibration_steps=300, seed=4)
    data = synth.dataset.save(tmp_path / "d.h5")
    trainer = TrainerConfig(max_epochs=1, batch_size=8, progress_bar=False, num_threads=1, seed=11)
    runs = {}
    for name, parallel in (("sequential", "none"), ("parallel", 2)):
        runs[name] = train_teachers(TeachersConfig(dataset=str(data), out=str(tmp_path / name), model=MODEL,
                                                   members=2, parallel=parallel, trainer=trainer))
    for k in range(2):
        a = runs["sequential"].members[k].state_dict()
        b = runs["parallel"].members[k].state_dict()
        assert all(np.array_equal(a[n].numpy(), b[n].numpy()) for n in a)
        assert json.loads((member_dir(tmp_path / "parallel", k) / "result.json").read_text())["seed"] == 11 + k
    # members differ only in their seed: different weights, same wall and architecture
    m0, m1 = (runs["parallel"].members[k].state_dict() for k in range(2))
    assert not np.array_equal(m0["network.head.output_network.layers.0.weight"].numpy(),
                              m1["network.head.output_network.layers.0.weight"].numpy())
    setup = json.loads((tmp_path / "parallel" / "setup.json").read_text())
    assert setup["seeds"] == [11, 12] and setup["wall"]["type_names"] == ["A", "B"]
