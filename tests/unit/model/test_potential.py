"""CGPotential: forces, invariances, per-bead energies, TorchScript, torchmd-net equivalence, errors."""
import math

import numpy as np
import pytest
import torch

from openmm_cgkd.model.potential import (ARCHITECTURES, STACKED_ARCHITECTURES, CGPotential, PotentialConfig,
                                         check_box, load_model_config, model_config_names,
                                         suggest_max_num_neighbors)

TORCHMDNET_ARCHITECTURES = [a for a in ARCHITECTURES if a not in STACKED_ARCHITECTURES]

BOX_NM = 1.6
CUTOFF_NM = 0.7


def small_config(arch="graph-network", **kw):
    base = dict(architecture=arch, num_types=3, cutoff_nm=CUTOFF_NM, embedding_dim=16, num_layers=2,
                num_rbf=8, max_num_neighbors=48, num_heads=4, dtype="float64")
    base.update(kw)
    return PotentialConfig(**base)


def make_model(arch="graph-network", seed=0, **kw):
    torch.manual_seed(seed)
    return CGPotential(small_config(arch, **kw))


def periodic_system(n=24, seed=1, box_nm=BOX_NM):
    """Beads spread over the box, several of them within the cutoff of a face (cross-boundary pairs)."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, 3, generator=g, dtype=torch.float64) * box_nm
    pos[:4, 0] = torch.tensor([0.02, box_nm - 0.03, 0.05, box_nm - 0.01], dtype=torch.float64)
    types = torch.randint(0, 3, (n,), generator=g)
    box = torch.eye(3, dtype=torch.float64) * box_nm
    return types, pos, box


def cluster(n=12, seed=2):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, 3, generator=g, dtype=torch.float64) * 0.9
    return torch.randint(0, 3, (n,), generator=g), pos


def energy_only(model, types, pos, box):
    return model(types, pos, box)[0].item()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_forces_are_minus_finite_difference_gradient(arch):
    model = make_model(arch)
    types, pos, box = periodic_system()
    energy, _, forces = model(types, pos, box)
    h = 1e-5
    rng = np.random.default_rng(0)
    for i in rng.choice(len(pos), size=6, replace=False):
        for d in range(3):
            p1, p2 = pos.clone(), pos.clone()
            p1[i, d] += h
            p2[i, d] -= h
            fd = -(energy_only(model, types, p1, box) - energy_only(model, types, p2, box)) / (2 * h)
            assert forces[i, d].item() == pytest.approx(fd, rel=1e-5, abs=1e-7), (arch, i, d)


def test_per_bead_energies_sum_to_energy():
    model = make_model()
    types, pos, box = periodic_system()
    energy, bead_energies, forces = model(types, pos, box)
    assert bead_energies.shape == (len(pos),) and forces.shape == pos.shape and energy.shape == ()
    assert bead_energies.sum().item() == pytest.approx(energy.item(), rel=1e-12)


def test_invariant_to_translation_and_wrapping():
    model = make_model()
    types, pos, box = periodic_system()
    e0, b0, f0 = model(types, pos, box)
    shifted = pos + torch.tensor([0.37, -0.81, 1.23], dtype=torch.float64)
    e1, b1, f1 = model(types, shifted, box)
    wrapped = shifted - torch.floor(shifted / BOX_NM) * BOX_NM
    e2, b2, f2 = model(types, wrapped, box)
    # whole-box-vector jumps of single beads
    jumped = pos.clone()
    jumped[::3] += torch.tensor([BOX_NM, -2 * BOX_NM, BOX_NM], dtype=torch.float64)
    e3, b3, f3 = model(types, jumped, box)
    for e, b, f in ((e1, b1, f1), (e2, b2, f2), (e3, b3, f3)):
        assert e.item() == pytest.approx(e0.item(), rel=1e-10, abs=1e-10)
        torch.testing.assert_close(b, b0, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(f, f0, rtol=1e-9, atol=1e-9)


def test_triclinic_box_matches_explicit_images():
    """A reduced triclinic box: the energy equals that of a non-periodic model evaluated on the
    central beads plus all their images (per-bead energies of the central beads)."""
    model = make_model()
    g = torch.Generator().manual_seed(3)
    box = torch.tensor([[1.6, 0, 0], [0.5, 1.5, 0], [-0.4, 0.6, 1.5]], dtype=torch.float64)
    check_box(box, CUTOFF_NM)
    n = 10
    frac = torch.rand(n, 3, generator=g, dtype=torch.float64)
    pos = frac @ box
    types = torch.randint(0, 3, (n,), generator=g)
    _, bead_e, _ = model(types, pos, box)
    # replicate 3x3x3 images; with 1 message-passing layer receptive field = 2 cutoffs, so use
    # a 5x5x5 image block to be safe for 2 layers
    imgs = [pos + (torch.tensor([i, j, k], dtype=torch.float64) @ box)
            for i in range(-2, 3) for j in range(-2, 3) for k in range(-2, 3)]
    big = torch.cat(imgs)
    big_types = types.repeat(len(imgs))
    model.max_num_neighbors = model.neighbors.max_num_neighbors = 200
    _, big_e, _ = model(big_types, big, None)
    centre = len(imgs) // 2
    torch.testing.assert_close(big_e[centre * n:(centre + 1) * n], bead_e, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_invariant_to_rotation_of_cluster(arch):
    model = make_model(arch)
    types, pos = cluster()
    e0, _, f0 = model(types, pos, None)
    a, b = 0.7, -1.1
    rz = torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]], dtype=torch.float64)
    rx = torch.tensor([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]], dtype=torch.float64)
    rot = rz @ rx
    e1, _, f1 = model(types, pos @ rot.T + 5.0, None)
    assert e1.item() == pytest.approx(e0.item(), rel=1e-9, abs=1e-9)
    torch.testing.assert_close(f1, f0 @ rot.T, rtol=1e-7, atol=1e-8)
    # an all-zero box also means "no periodic boundaries"
    e2, _, f2 = model(types, pos, torch.zeros(3, 3, dtype=torch.float64))
    assert e2.item() == e0.item()


@pytest.mark.parametrize("arch", TORCHMDNET_ARCHITECTURES)
@pytest.mark.parametrize("periodic", [False, True])
def test_matches_unmodified_torchmdnet_representation(arch, periodic):
    """The edge pass-through gives exactly what torchmd-net computes with its own pair search."""
    import copy

    from torchmdnet.models.utils import OptimizedDistance

    model = make_model(arch)
    types, pos, box = periodic_system()
    if not periodic:
        types, pos = cluster()
        box = None
    _, bead_e, _ = model(types, pos, box)
    rep = copy.deepcopy(model.representation)
    rep.distance = OptimizedDistance(0.0, CUTOFF_NM, max_num_pairs=-48, return_vecs=arch != "graph-network",
                                     loop=arch != "graph-network", box=None, long_edge_index=True)
    batch = torch.zeros(len(pos), dtype=torch.long)
    x, v, z, p, b = rep(types, pos, batch, box)
    ref = model.head.pre_reduce(x, v, z, p, b).reshape(-1)
    torch.testing.assert_close(bead_e, ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_torchscript_matches_eager_and_casts_inputs(arch):
    torch.manual_seed(0)
    model = CGPotential(small_config(arch, dtype="float32"))
    types, pos, box = periodic_system()
    e, b, f = model(types, pos.float(), box.float())
    scripted = torch.jit.script(model)
    e2, b2, f2 = scripted(types, pos.float(), box.float())
    torch.testing.assert_close(e2, e)
    torch.testing.assert_close(f2, f)
    # float64 inputs (OpenMM CPU/Reference) are cast to the model dtype; outputs come back as float64
    e3, b3, f3 = scripted(types, pos, box)
    assert e3.dtype == b3.dtype == f3.dtype == torch.float64
    torch.testing.assert_close(f3.float(), f, rtol=1e-4, atol=1e-4)
    # works under no_grad (inference) too
    with torch.no_grad():
        e4, _, f4 = scripted(types, pos.float(), box.float())
    torch.testing.assert_close(f4, f)


def test_create_graph_switches_force_training_graph():
    model = make_model()
    types, pos, box = periodic_system()
    _, _, f = model(types, pos, box)
    assert not f.requires_grad  # inference: no graph kept
    model.create_graph = True
    _, _, f = model(types, pos, box)
    assert f.requires_grad
    (f ** 2).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_energy_affine_per_type():
    model = make_model()
    types, pos, box = periodic_system()
    _, b0, f0 = model(types, pos, box)
    model.set_energy_affine(scale=[2.0, 1.0, 3.0], offset=[1.0, -2.0, 0.5])
    _, b1, f1 = model(types, pos, box)
    scale = torch.tensor([2.0, 1.0, 3.0], dtype=torch.float64)[types]
    offset = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)[types]
    torch.testing.assert_close(b1, b0 * scale + offset)
    with pytest.raises(ValueError, match="one per bead type"):
        model.set_energy_affine(offset=[1.0, 2.0])


def test_neighbor_overflow_is_a_clear_error():
    model = make_model(max_num_neighbors=2)
    types, pos, box = periodic_system()
    with pytest.raises(RuntimeError, match="NeighborOverflowError.*max_num_neighbors"):
        model(types, pos, box)
    scripted = torch.jit.script(model)
    with pytest.raises(Exception, match="NeighborOverflowError.*max_num_neighbors"):
        scripted(types, pos, box)


def test_bad_bead_types_and_shapes():
    model = make_model()
    types, pos, box = periodic_system()
    bad = types.clone()
    bad[0] = 3
    with pytest.raises(ValueError, match=r"bead_types must lie in 0..2"):
        model(bad, pos, box)
    with pytest.raises(ValueError, match="positions must have shape"):
        model(types, pos[:, :2], box)
    with pytest.raises(ValueError, match="matching positions"):
        model(types[:-1], pos, box)


def test_bad_geometry_is_a_clear_error():
    model = torch.jit.script(make_model())
    types, pos, box = periodic_system()
    with pytest.raises(Exception, match="at least twice the cutoff"):
        model(types, pos, box * 0.8)
    skew = box.clone()
    skew[0, 1] = 0.1
    with pytest.raises(Exception, match="lower triangular"):
        model(types, pos, skew)
    bad = pos.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(Exception, match="NaN or inf"):
        model(types, bad, box)


def test_suggest_max_num_neighbors():
    # DES test system: 1000 beads in a 4.484 nm cube, 1.0 nm cutoff -> ~47 expected neighbours
    rho = 1000 / 4.484 ** 3
    n = suggest_max_num_neighbors(rho, 1.0)
    expected = rho * 4 / 3 * math.pi + 1
    assert n >= 1.5 * expected and n % 8 == 0 and n < 1.5 * expected + 8
    with pytest.raises(ValueError):
        suggest_max_num_neighbors(0.0, 1.0)


def test_check_box():
    check_box(torch.eye(3) * 2.0, 1.0)
    with pytest.raises(ValueError, match="twice the cutoff"):
        check_box(torch.eye(3) * 1.5, 1.0)
    with pytest.raises(ValueError, match="lower triangular"):
        check_box(torch.tensor([[2.0, 0.1, 0], [0, 2, 0], [0, 0, 2]]), 0.5)
    with pytest.raises(ValueError, match="reduced form"):
        check_box(torch.tensor([[2.0, 0, 0], [1.5, 2, 0], [0, 0, 2]]), 0.5)


def test_config_yaml_round_trip(tmp_path):
    cfg = small_config("tensornet")
    path = tmp_path / "cfg.yaml"
    cfg.to_yaml(path)
    assert PotentialConfig.from_yaml(path) == cfg
    assert PotentialConfig.from_yaml(cfg.to_yaml()) == cfg
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['bogus'\] in architecture"):  # a ConfigError
        PotentialConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="unknown architecture"):
        PotentialConfig(architecture="schnet")


def test_shipped_model_configs():
    assert set(model_config_names()) == set(ARCHITECTURES)
    for name in ARCHITECTURES:
        cfg = load_model_config(name)
        assert cfg.architecture == name and cfg.num_types == 3
        assert cfg.max_num_neighbors == suggest_max_num_neighbors(1000 / 4.484 ** 3, cfg.cutoff_nm)
    assert load_model_config("tensornet", embedding_dim=16).embedding_dim == 16
    with pytest.raises(FileNotFoundError, match="shipped configs"):
        load_model_config("schnet")


def test_tensornet_static_shapes_match_dynamic():
    """static_shapes (fixed-size padded pair list, for CUDA graphs) gives the same numbers."""
    dynamic = make_model("tensornet")
    static = CGPotential(small_config("tensornet", static_shapes=True))
    static.load_state_dict(dynamic.state_dict())
    types, pos, box = periodic_system()
    for a, b in zip(torch.jit.script(static)(types, pos, box), dynamic(types, pos, box)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    with pytest.raises(ValueError, match="tensornet and hipnn-ts architectures only"):
        small_config("graph-network", static_shapes=True)
