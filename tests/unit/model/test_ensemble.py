"""EnsemblePotential: outputs equal the mean of separately evaluated members; std is right."""
import pytest
import torch

from openmm_cgkd.model.ensemble import EnsemblePotential
from openmm_cgkd.model.potential import CGPotential, PotentialConfig

K = 4


def config(**kw):
    base = dict(architecture="graph-network", num_types=3, cutoff_nm=0.7, embedding_dim=16, num_layers=2,
                num_rbf=8, max_num_neighbors=48, dtype="float64")
    base.update(kw)
    return PotentialConfig(**base)


def members(k=K, **kw):
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(CGPotential(config(**kw)))
    return out


def system(n=30, box_nm=1.6):
    g = torch.Generator().manual_seed(5)
    pos = torch.rand(n, 3, generator=g, dtype=torch.float64) * box_nm
    pos[0, 0], pos[1, 0] = 0.01, box_nm - 0.02  # a pair across the boundary
    return torch.randint(0, 3, (n,), generator=g), pos, torch.eye(3, dtype=torch.float64) * box_nm


@pytest.mark.parametrize("arch", ["graph-network", "tensornet"])
def test_ensemble_is_mean_of_members_and_std_is_population_std(arch):
    ms = members(architecture=arch)
    ens = EnsemblePotential(ms)
    types, pos, box = system()
    energy, bead_e, forces, force_std = ens(types, pos, box)
    outs = [m(types, pos, box) for m in ms]
    e_k = torch.stack([o[0] for o in outs])
    b_k = torch.stack([o[1] for o in outs])
    f_k = torch.stack([o[2] for o in outs])
    torch.testing.assert_close(energy, e_k.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bead_e, b_k.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(forces, f_k.mean(0), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(force_std, f_k.std(0, unbiased=False), rtol=1e-8, atol=1e-12)
    assert float(force_std.min()) > 0  # members really differ
    e_m, b_m, f_m = ens.forward_members(types, pos, box)
    torch.testing.assert_close(f_m, f_k, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(e_m, e_k, rtol=1e-12, atol=1e-12)


def test_scripted_ensemble_and_single_member():
    ms = members(k=3, dtype="float32")
    ens = torch.jit.script(EnsemblePotential(ms))
    types, pos, box = system()
    energy, bead_e, forces, force_std = ens(types, pos, box)  # float64 in -> float64 out
    assert forces.dtype == torch.float64 and force_std.shape == pos.shape and energy.shape == ()
    f_k = torch.stack([m(types, pos.float(), box.float())[2] for m in ms])
    torch.testing.assert_close(forces.float(), f_k.mean(0), rtol=1e-5, atol=1e-5)
    ens.set_check_errors(False)
    assert ens.members._modules["2"].check_errors is False  # (indexing a scripted ModuleList from python gives the eager module)
    one = EnsemblePotential(ms[:1])
    _, _, f1, s1 = one(types, pos, box)
    assert float(s1.abs().max()) == 0.0
    torch.testing.assert_close(f1.float(), f_k[0], rtol=1e-6, atol=1e-6)


def test_members_must_agree():
    a = members(k=1)[0]
    b = CGPotential(config(cutoff_nm=0.8))
    with pytest.raises(ValueError, match="disagree on cutoff_nm"):
        EnsemblePotential([a, b])
    c = CGPotential(config(architecture="tensornet"))
    with pytest.raises(ValueError, match="disagree on architecture"):
        EnsemblePotential([a, c])
    with pytest.raises(ValueError, match="at least one member"):
        EnsemblePotential([])


def test_ensemble_neighbor_overflow_error():
    ens = EnsemblePotential(members(k=2, max_num_neighbors=2))
    types, pos, box = system()
    with pytest.raises(RuntimeError, match="NeighborOverflowError"):
        ens(types, pos, box)


def test_ensemble_checks_inputs_like_a_single_potential():
    ens = EnsemblePotential(members(2))
    types, pos, box = system()
    for bad_box in (box[:2], box.reshape(-1)):
        with pytest.raises(ValueError, match=r"box must have shape \[3, 3\]"):
            ens(types, pos, bad_box)
    with pytest.raises(ValueError, match="bead_types must lie in"):
        ens(torch.full_like(types, 7), pos, box)
