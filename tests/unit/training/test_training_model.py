"""Batched training model, synthetic system, wall fit and metrics."""
import json

import numpy as np
import pytest
import torch

from openmm_cgkd.model.potential import suggest_max_num_neighbors
from openmm_cgkd.model.wall_torch import PotentialWithWall
from openmm_cgkd.training.config import WallFitConfig
from openmm_cgkd.training.metrics import (compare_predictions, parity_plot, predict_frames, regression_metrics,
                                          training_curve_plot)
from openmm_cgkd.training.model import TrainablePotential, number_density, potential_config_for
from openmm_cgkd.training.synthetic import make_synthetic_system
from openmm_cgkd.training.wall_fit import fit_wall, pair_rdfs

MODEL = {"architecture": "graph-network", "cutoff_nm": 0.8, "embedding_dim": 8, "num_layers": 1, "num_rbf": 8,
         "rbf_type": "gauss"}


@pytest.fixture(scope="module")
def synth():
    return make_synthetic_system(n_beads=(12, 12), box_nm=1.65, n_frames=30, steps_per_frame=20,
                                 equilibration_steps=500, seed=3)


def test_synthetic_truth_is_consistent(synth):
    ds = synth.dataset
    assert ds.n_frames == 30 and ds.n_beads == 24 and ds.type_names == ["A", "B"]
    # per-bead energies sum to OpenMM's energy; the labels are truth + noise of the stated size
    np.testing.assert_allclose(synth.true_bead_energies.sum(1), synth.true_energy, rtol=1e-4, atol=1e-3)
    noise = ds.forces - synth.true_forces
    assert np.std(noise) == pytest.approx(synth.noise_sigma, rel=0.05)
    assert synth.noise_sigma >= np.sqrt(np.mean(synth.true_forces**2))
    # true forces are minus the gradient of the known pair potential (finite differences on one bead)
    pot, x, types, box = synth.potential, ds.positions[0].astype(np.float64), ds.bead_types, 1.65

    def energy(xx):
        d = xx[:, None] - xx[None]
        d -= box * np.round(d / box)
        r = np.linalg.norm(d, axis=-1) + np.eye(len(xx)) * 10
        return 0.5 * pot.pair_energy(r, types[:, None], types[None]).sum()

    h = 1e-5
    for axis in range(3):
        xp, xm = x.copy(), x.copy()
        xp[0, axis] += h
        xm[0, axis] -= h
        fd = -(energy(xp) - energy(xm)) / (2 * h)
        assert fd == pytest.approx(synth.true_forces[0, 0, axis], rel=2e-3, abs=0.05)


def test_batched_model_equals_single_frame_forward(synth):
    ds = synth.dataset
    wall, _ = fit_wall(ds)
    rho = number_density(ds.positions, ds.boxes)
    for arch in ("graph-network", "tensornet"):
        cfg = potential_config_for({**MODEL, "architecture": arch}, ds.type_names, rho)
        torch.manual_seed(0)
        model = TrainablePotential(cfg, wall, rho)
        types = torch.from_numpy(ds.bead_types.astype(np.int64))
        pos, box = torch.from_numpy(ds.positions[:3]), torch.from_numpy(ds.boxes[:3])
        out = model(types, pos, box)
        single = PotentialWithWall(model.network, model.wall)
        for k in range(3):
            e, b, f = single(types, pos[k], box[k])
            assert float(out["energy"][k].detach()) == pytest.approx(float(e.detach()), rel=1e-5, abs=1e-4)
            torch.testing.assert_close(out["bead_energies"][k], b.detach(), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(out["forces"][k], f.detach(), rtol=1e-4, atol=1e-4)
    # create_graph: the force loss reaches every network parameter but the head's final bias (a
    # constant energy offset, which no force depends on)
    out = model(types, pos, box, create_graph=True)
    (out["forces"] ** 2).mean().backward()
    missing = [n for n, p in model.network.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == ["head.output_network.layers.2.bias"]


def test_potential_config_sizing_and_rbf_warning(synth):
    ds = synth.dataset
    cfg = potential_config_for(MODEL, ds.type_names, 8.0)
    assert cfg.num_types == 2 and cfg.max_num_neighbors >= 8.0 * 4 / 3 * np.pi * 0.8**3
    with pytest.raises(ValueError, match="num_types = 3"):
        potential_config_for({**MODEL, "num_types": 3}, ds.type_names, 8.0)
    with pytest.warns(UserWarning, match="expnorm"):
        potential_config_for({**MODEL, "rbf_type": "expnorm"}, ds.type_names, 8.0)
    # a shipped architecture config as the base; the neighbour budget is resized for this data
    based = potential_config_for({"base": "tensornet", "rbf_type": "gauss", "cutoff_nm": 0.8}, ds.type_names, 8.0)
    assert based.architecture == "tensornet" and based.num_types == 2 and based.cutoff_nm == 0.8
    assert based.max_num_neighbors == suggest_max_num_neighbors(8.0, 0.8, safety=2.0)


def test_wall_fit_follows_the_rdf_and_force_rule(synth):
    ds = synth.dataset
    cfg = WallFitConfig()
    wall, report = fit_wall(ds, config=cfg)
    r, rdfs = pair_rdfs(ds, bin_nm=cfg.bin_nm)
    s = report["mean_force_per_type_kj_mol_nm"]
    for (i, j), g in rdfs.items():
        t = report["taper_nm"][i][j]
        first = r[np.flatnonzero(g > cfg.rdf_threshold)[0]]
        assert t == pytest.approx(first)
        assert np.all(g[r < t] <= cfg.rdf_threshold)
        # pair force p*s at the taper (s = mean of the two types' mean |F|)
        scale = 0.5 * (s[ds.type_names[i]] + s[ds.type_names[j]])
        h = 1e-7
        e = wall.pair_energy(np.array([t - h, t + h]), i, j)
        assert -(e[1] - e[0]) / (2 * h) == pytest.approx(cfg.fraction * scale, rel=1e-4)
    mags = np.linalg.norm(ds.forces, axis=-1)
    assert s["A"] == pytest.approx(float(mags[:, ds.bead_types == 0].mean()), rel=1e-5)
    assert report["fallback_pairs"] == []
    # a type with one bead has no same-type pairs: that pair falls back to the smallest taper
    one = ds.select_frames(slice(None))
    one.bead_types = np.where(np.arange(ds.n_beads) == 0, 0, 1).astype(np.int32)
    one.masses = np.where(one.bead_types == 0, 40.0, 60.0)
    wall1, rep1 = fit_wall(one)
    assert rep1["fallback_pairs"] == ["A-A"] and wall1.prefactor_kj_mol[0, 0] > 0


def test_metrics_values_and_plots(synth, tmp_path):
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert m["mae"] == pytest.approx(2 / 3) and m["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert m["r2"] == pytest.approx(1 - 4 / (((np.array([1, 2, 5]) - 8 / 3) ** 2).sum()))
    assert m["cv"] == pytest.approx(np.sqrt(4 / 3) / (8 / 3))
    ds = synth.dataset
    rho = number_density(ds.positions, ds.boxes)
    torch.manual_seed(0)
    model = TrainablePotential(potential_config_for(MODEL, ds.type_names, rho), None, rho)
    idx = np.arange(20, 30)
    pred = predict_frames(model, ds, idx, batch_size=4)
    assert pred["forces"].shape == (10, 24, 3) and pred["energy"].shape == (10,)
    res = compare_predictions(pred, ds, idx, {"true": synth.true_forces})
    assert set(res) == {"forces_vs_aa", "forces_vs_true"}
    json.dumps(res)
    png = parity_plot(pred["forces"], ds.forces[idx], tmp_path / "p.png", "test", "kJ/mol/nm")
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,step,train_loss,val_loss\n0,3,,5.0\n0,3,6.0,\n1,7,,4.0\n1,7,4.5,\n")
    curve = training_curve_plot({"run": csv}, tmp_path / "c.png")
    assert png.stat().st_size > 1000 and curve.stat().st_size > 1000
