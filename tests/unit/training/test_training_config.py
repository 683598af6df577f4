"""Training configs, block split, loss, variants and the epoch sampler."""
import numpy as np
import pytest
import torch

from openmm_cgkd.config import load_config
from openmm_cgkd.training.config import ConfigError, LossWeights, SplitConfig, StudentConfig, TeachersConfig
from openmm_cgkd.training.data import EpochSampler, split_blocks
from openmm_cgkd.training.loss import distillation_loss, err
from openmm_cgkd.training.students import VARIANTS, resolve_variant


def test_yaml_config_paths_types_and_unknown_keys(tmp_path):
    (tmp_path / "t.yaml").write_text(
        "dataset: data/cg.h5\nout: runs/t\nmembers: 3\nmodel: {architecture: graph-network, cutoff_nm: 0.8}\n"
        "trainer: {max_epochs: 5, lr: 0.002, devices: auto}\nsplit: {train: 0.7, val: 0.2, test: 0.1, gap_frames: 2}\n")
    cfg = load_config(TeachersConfig, tmp_path / "t.yaml", {"trainer": {"max_epochs": 7}})
    assert cfg.dataset == str((tmp_path / "data/cg.h5").resolve())
    assert cfg.trainer.max_epochs == 7 and cfg.trainer.lr == 0.002 and cfg.trainer.devices == "auto"
    assert cfg.split.gap_frames == 2 and cfg.member_seeds() == [0, 1, 2]
    (tmp_path / "bad.yaml").write_text("dataset: x\ntrainer: {max_epoch: 5}\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['max_epoch'\] in trainer"):
        load_config(TeachersConfig, tmp_path / "bad.yaml")
    (tmp_path / "bad2.yaml").write_text("members: many\n")
    with pytest.raises(ConfigError, match="members must be an integer"):
        load_config(TeachersConfig, tmp_path / "bad2.yaml")
    (tmp_path / "s.yaml").write_text("dataset: d.h5\nvariant: null\nweights: {w_aa: 1, w_e: 3}\n")
    s = load_config(StudentConfig, tmp_path / "s.yaml")
    assert s.variant is None and s.weights == LossWeights(w_aa=1.0, w_e=3.0)
    with pytest.raises(ConfigError, match="sum to 1"):
        SplitConfig(0.5, 0.1, 0.1)
    with pytest.raises(ConfigError, match="not found"):
        load_config(TeachersConfig, tmp_path / "missing.yaml")


def test_split_is_contiguous_blocks_with_gaps():
    b = split_blocks(100, SplitConfig(0.8, 0.1, 0.1, gap_frames=0))
    assert [len(b[k]) for k in ("train", "val", "test")] == [80, 10, 10]
    assert np.array_equal(np.concatenate([b["train"], b["val"], b["test"]]), np.arange(100))
    g = split_blocks(100, SplitConfig(0.8, 0.1, 0.1, gap_frames=5))
    assert g["train"][-1] + 6 == g["val"][0] and g["val"][-1] + 6 == g["test"][0] and g["test"][-1] <= 99
    for k in g:
        assert np.all(np.diff(g[k]) == 1)
    with pytest.raises(ConfigError, match="val block gets no frame"):
        split_blocks(4, SplitConfig(0.9, 0.05, 0.05))


def test_err_and_weighted_loss():
    a, b = torch.tensor([1.0, -1.0, 3.0, 0.0]), torch.zeros(4)
    assert float(err(a, b)) == pytest.approx(np.sqrt(11 / 4) + 5 / 4)
    n = 5
    pred = {"forces": torch.ones(2, n, 3), "bead_energies": torch.full((2, n), 2.0), "energy": torch.full((2,), 10.0)}
    batch = {"forces": torch.zeros(2, n, 3), "label_forces": torch.ones(2, n, 3),
             "label_bead_energies": torch.zeros(2, n), "label_energy": torch.zeros(2)}
    w = LossWeights(w_aa=2.0, w_ft=1.0, w_e=5.0, w_E=5.0)
    loss, terms = distillation_loss(pred, batch, w)
    # Err(F, F_AA) = 1 + 1, Err(F, F_T) = 0, Err(e, e_T) = 2 + 2, Err(E/N, E_T/N) = 2 + 2
    assert float(terms["err_f_aa"]) == pytest.approx(2.0) and float(terms["err_f_t"]) == pytest.approx(0.0)
    assert float(terms["err_E_t"]) == pytest.approx(4.0)
    assert float(loss) == pytest.approx(2 * 2 + 0 + 5 * 4 + 5 * 4)
    with pytest.raises(KeyError, match="label_bead_energies"):
        distillation_loss(pred, {"forces": batch["forces"]}, LossWeights(w_aa=1.0, w_e=1.0))
    with pytest.raises(ConfigError):
        LossWeights(0, 0, 0, 0)


def test_paper_variants():
    assert len(VARIANTS) == 9
    assert sum(v.source == "single" for v in VARIANTS.values()) == 3
    best = VARIANTS["ensemble-e-ft-faa"]
    assert best.weights == LossWeights(w_aa=2.0, w_ft=1.0, w_e=5.0, w_E=0.0)
    assert VARIANTS["ensemble-esys-e-ft-faa"].weights == LossWeights(w_aa=2.0, w_ft=1.0, w_e=5.0, w_E=5.0)
    assert VARIANTS["ensemble-e-faa"].weights == LossWeights(w_aa=1.0, w_e=5.0)
    assert VARIANTS["single-e-ft"].weights == LossWeights(w_aa=0.0, w_ft=1.0, w_e=5.0)
    for v in VARIANTS.values():  # with one force target its weight is 1; with both, 1 and 2
        forces = [w for w in (v.weights.w_aa, v.weights.w_ft) if w]
        assert forces == ([2.0, 1.0] if len(forces) == 2 else [1.0])
    assert resolve_variant(None, LossWeights(w_aa=1.0, w_e=2.0))[0] == "custom"
    name, source, w = resolve_variant("ensemble-e-ft", LossWeights(w_ft=1.0, w_e=2.0, w_aa=0.0))
    assert name == "custom (from ensemble-e-ft)" and source == "ensemble" and w.w_e == 2.0
    with pytest.raises(ConfigError, match="unknown student variant"):
        resolve_variant("ensemble-everything", None)


def test_epoch_sampler_depends_only_on_seed_and_epoch():
    s = EpochSampler(50, seed=3)
    s.set_epoch(4)
    first = list(s)
    s.set_epoch(5)
    assert list(s) != first
    t = EpochSampler(50, seed=3)
    t.set_epoch(4)
    assert list(t) == first and sorted(first) == list(range(50))


def test_prior_temperature_is_temperature_K_and_the_old_key_still_reads():
    from openmm_cgkd.training.config import PriorFitConfig, TeachersConfig

    assert PriorFitConfig.from_dict({"temperature_K": 310.0}).temperature_K == 310.0
    old = TeachersConfig.from_dict({"dataset": "d.h5", "priors": {"temperature_k": 305.0}})  # configs saved before
    assert old.priors.temperature_K == 305.0 and "temperature_k" not in old.priors.to_dict()
    with pytest.raises(ConfigError, match="old name of priors.temperature_K"):
        TeachersConfig.from_dict({"priors": {"temperature_k": 305.0, "temperature_K": 305.0}})
    with pytest.raises(ConfigError, match="unknown key"):
        PriorFitConfig.from_dict({"temperature": 305.0})
