"""Stacked HIP-NN-TS ensemble: each member equals a plain one-network model; forces, std, TorchScript,
the training forward against autograd, bundles."""
import io

import numpy as np
import pytest
import torch

from openmm_cgkd.model.potential import CGPotential, PotentialConfig
from openmm_cgkd.model.stacked import StackedEnsemblePotential, load_stacked, training_forward

K = 3
BOX_NM = 1.6


def config(**kw):
    base = dict(architecture="hipnn-ts", num_types=3, cutoff_nm=0.7, embedding_dim=16, num_layers=3, num_rbf=12,
                max_num_neighbors=64, activation="softplus", dtype="float64")
    base.update(kw)
    return PotentialConfig(**base)


def system(n=30, seed=5, box_nm=BOX_NM):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, 3, generator=g, dtype=torch.float64) * box_nm
    pos[0, 0], pos[1, 0] = 0.01, box_nm - 0.02  # a pair across the boundary
    return torch.randint(0, 3, (n,), generator=g), pos, torch.eye(3, dtype=torch.float64) * box_nm


def rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
def test_each_member_equals_its_extracted_single_model(dtype, tol):
    ens = StackedEnsemblePotential(config(dtype=dtype), K, seeds=[11, 12, 13])
    types, pos, box = system()
    e_k, b_k, f_k = ens.forward_members(types, pos, box)
    for k in range(K):
        single = ens.member(k)
        assert isinstance(single, CGPotential) and single.config.architecture == "hipnn-ts"
        e, b, f = single(types, pos, box)
        assert rel(e_k[k].double(), e) < tol and rel(b_k[k].double(), b) < tol and rel(f_k[k].double(), f) < tol
    # members differ (independent initialisations)
    assert rel(f_k[0], f_k[1]) > 0.1
    # member k is the one-network model seeded like it; stacking members back gives the same module
    torch.manual_seed(12)
    assert rel(CGPotential(config(dtype=dtype))(types, pos, box)[2], ens.member(1)(types, pos, box)[2]) < tol
    again = StackedEnsemblePotential.from_members(ens.members())
    torch.testing.assert_close(again.forward_members(types, pos, box)[2], f_k, rtol=0, atol=0)


def test_means_std_and_the_one_backward_mean_path():
    ens = StackedEnsemblePotential(config(), K, seeds=[1, 2, 3])
    types, pos, box = system()
    energy, bead_e, forces, force_std = ens(types, pos, box)
    singles = [ens.member(k)(types, pos, box) for k in range(K)]
    f_k = torch.stack([s[2] for s in singles])
    torch.testing.assert_close(energy, torch.stack([s[0] for s in singles]).mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bead_e, torch.stack([s[1] for s in singles]).mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(forces, f_k.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(force_std.numpy(), f_k.numpy().std(axis=0), rtol=1e-8, atol=1e-12)  # population std
    ens.set_with_std(False)  # what MD runs: shared geometry, one backward pass of the mean energy
    e2, b2, f2, s2 = ens(types, pos, box)
    torch.testing.assert_close(f2, forces, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(e2, energy, rtol=1e-12, atol=1e-12)
    assert s2.shape == (0, 3)  # not computed, never a wrong number


def test_forces_are_minus_finite_difference_gradient():
    ens = StackedEnsemblePotential(config(), 2, seeds=[4, 5])
    types, pos, box = system(n=20)
    energies, _, forces = ens.forward_members(types, pos, box)
    _, _, mean_forces, _ = ens(types, pos, box)
    h = 1e-5
    for i in (0, 1, 7):
        for d in range(3):
            p1, p2 = pos.clone(), pos.clone()
            p1[i, d] += h
            p2[i, d] -= h
            fd = -(ens.forward_members(types, p1, box)[0] - ens.forward_members(types, p2, box)[0]) / (2 * h)
            np.testing.assert_allclose(forces[:, i, d].numpy(), fd.numpy(), rtol=1e-6, atol=1e-7)
            assert mean_forces[i, d].item() == pytest.approx(fd.mean().item(), rel=1e-6, abs=1e-7)


def test_energy_is_invariant_under_rotation_translation_and_images():
    ens = StackedEnsemblePotential(config(), 2, seeds=[4, 5])
    types, pos = system()[0][:12], torch.rand(12, 3, generator=torch.Generator().manual_seed(3),
                                               dtype=torch.float64) * 0.9
    e0 = ens.forward_members(types, pos, None)[0]
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    e1 = ens.forward_members(types, pos @ q.T + 0.3, None)[0]
    torch.testing.assert_close(e1, e0, rtol=1e-10, atol=1e-10)
    types, pos, box = system()
    shifted = pos + box[0] * torch.tensor([1.0] + [0.0] * 29, dtype=torch.float64).unsqueeze(1)  # bead 0 one box away
    torch.testing.assert_close(ens.forward_members(types, shifted, box)[0], ens.forward_members(types, pos, box)[0],
                               rtol=1e-10, atol=1e-10)


def test_torchscript_round_trip_and_serving_copy():
    ens = StackedEnsemblePotential(config(dtype="float32"), K, seeds=[7, 8, 9])
    types, pos, box = system()
    ref = ens(types, pos, box)  # float64 in -> float64 out
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(ens), buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    with torch.no_grad():  # forces need autograd inside; the executor profiles these first calls under no_grad
        for _ in range(3):
            torch.testing.assert_close(loaded.forward_members(types, pos, box)[2],
                                       ens.forward_members(types, pos, box)[2], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(loaded(types, pos, box)[3], ref[3], rtol=1e-5, atol=1e-5)
    out = loaded(types, pos, box)
    assert out[2].dtype == torch.float64 and out[3].shape == pos.shape
    for a, b in zip(out, ref):  # float32 inside: agreement to float32 round-off
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loaded.forward_members(types, pos, box)[2], ens.forward_members(types, pos, box)[2],
                               rtol=1e-5, atol=1e-5)
    frozen = torch.jit.freeze(loaded.eval())  # what openmm-torch runs (freezing drops detach)
    torch.testing.assert_close(frozen(types, pos, box)[2], ref[2], rtol=1e-5, atol=1e-5)
    loaded.serve_mean_only()  # exported: also on a loaded module
    e, _, f, s = loaded(types, pos, box)
    torch.testing.assert_close(f, ref[2], rtol=1e-5, atol=1e-5)
    assert s.numel() == 0 and loaded.check_errors is False
    # the eager module rebuilt from the scripted one
    eager = load_stacked(loaded, ens.config)
    torch.testing.assert_close(eager.forward_members(types, pos, box)[2], ens.forward_members(types, pos, box)[2],
                               rtol=1e-5, atol=1e-5)


def test_training_forward_matches_autograd_values_and_weight_gradients():
    """The written-out member forces of training equal autograd through forward_members, and so do the
    gradients of a force loss by every weight (the double backward training needs)."""
    ens = StackedEnsemblePotential(config(), K, seeds=[1, 2, 3])
    types, pos, box = system()
    pos2 = torch.stack([pos, pos.flip(0) * 0.97])
    boxes = torch.stack([box, box * 0.97])
    out = training_forward(ens, types, pos2, boxes, slot_width=5)  # narrow slots: rows spill over several lines
    ens.create_graph = True
    ref = [ens.forward_members(types, pos2[b], boxes[b]) for b in range(2)]
    f_ref = torch.stack([r[2] for r in ref], 1)
    torch.testing.assert_close(out["forces"].detach(), f_ref.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out["bead_energies"].detach(), torch.stack([r[1] for r in ref], 1).detach(),
                               rtol=1e-12, atol=1e-12)
    target = torch.randn(f_ref.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    params = [p for p in ens.parameters()]
    g1 = torch.autograd.grad(((out["forces"] - target) ** 2).sum(), params, allow_unused=True)
    g2 = torch.autograd.grad(((f_ref - target) ** 2).sum(), params, allow_unused=True)
    checked = 0
    for a, b in zip(g1, g2):
        if b is None:  # energy offsets: no force depends on them
            assert a is None or float(a.abs().max()) == 0.0
            continue
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
        checked += 1
    assert checked >= 12


def test_input_errors_and_member_checks():
    ens = StackedEnsemblePotential(config(), 2)
    types, pos, box = system()
    with pytest.raises(ValueError, match="bead_types must lie in"):
        ens(torch.full_like(types, 5), pos, box)
    with pytest.raises(ValueError, match=r"box must have shape \[3, 3\]"):
        ens(types, pos, box[:2])
    with pytest.raises(RuntimeError, match="NeighborOverflowError"):
        StackedEnsemblePotential(config(max_num_neighbors=2), 2)(types, pos, box)
    with pytest.raises(ValueError, match="only hipnn-ts members can be stacked"):
        StackedEnsemblePotential(PotentialConfig(architecture="graph-network"), 2)
    with pytest.raises(ValueError, match="one seed per member"):
        StackedEnsemblePotential(config(), 2, seeds=[1])
    with pytest.raises(ValueError, match="different architecture config"):
        StackedEnsemblePotential.from_members([ens.member(0), CGPotential(config(num_rbf=8))])
    with pytest.raises(ValueError, match="sensitivity_min_nm < sensitivity_max_nm"):
        config(sensitivity_min_nm=0.5, sensitivity_max_nm=0.4)


def test_bundle_round_trip_keeps_the_stacked_module(tmp_path):
    from openmm_cgkd.bundle import build_untrained_bundle, load_bundle

    cfg = config(dtype="float32", cutoff_nm=0.7)
    path = build_untrained_bundle(tmp_path / "ens", cfg, model_kind="ensemble", num_members=3, seed=5)
    bundle = load_bundle(path)
    assert bundle.manifest.num_members == 3 and bundle.manifest.model_kind == "ensemble"
    assert bundle.manifest.architecture["architecture"] == "hipnn-ts"
    eager = bundle.eager_model()
    assert isinstance(eager, StackedEnsemblePotential)
    types, pos, box = system()
    for a, b in zip(bundle.module(types, pos, box), eager(types, pos, box)):
        torch.testing.assert_close(a, b)
    torch.manual_seed(6)  # member k of an untrained ensemble = the one-network model seeded seed + k
    reference = CGPotential(cfg)
    torch.testing.assert_close(eager.member(1)(types, pos, box)[2], reference(types, pos, box)[2])


def test_static_shapes_padded_pair_list_gives_the_same_numbers():
    """static_shapes (fixed-size pair list with padding slots, for CUDA graphs) changes nothing."""
    dynamic = StackedEnsemblePotential(config(), 2, seeds=[1, 2])
    static = StackedEnsemblePotential(config(static_shapes=True), 2, seeds=[1, 2])
    types, pos, box = system()
    for a, b in zip(torch.jit.script(static)(types, pos, box), dynamic(types, pos, box)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    static.serve_mean_only()
    torch.testing.assert_close(static(types, pos, box)[2], dynamic(types, pos, box)[2], rtol=1e-10, atol=1e-10)
