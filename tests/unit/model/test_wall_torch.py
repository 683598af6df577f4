"""Torch wall == WallParameters.pair_energy; forces; network + wall."""
import numpy as np
import pytest
import torch

from openmm_cgkd.model.potential import CGPotential, PotentialConfig
from openmm_cgkd.model.wall import WallParameters
from openmm_cgkd.model.wall_torch import PotentialWithWall, WallPotential

BOX = 1.2


def wall_params():
    names = ["Cho", "Cl", "Urea"]
    taper = np.array([[0.30, 0.28, 0.29], [0.28, 0.31, 0.27], [0.29, 0.27, 0.30]])
    force = np.array([[300.0, 500.0, 350.0], [500.0, 200.0, 450.0], [350.0, 450.0, 400.0]])
    return WallParameters.from_taper(names, taper, force)


def reference_energy(params, types, pos, box):
    """Brute-force minimum-image sum of WallParameters.pair_energy (numpy, float64)."""
    n = len(pos)
    total = 0.0
    per_bead = np.zeros(n)
    for i in range(n):
        for j in range(i + 1, n):
            d = pos[i] - pos[j]
            d -= np.round(d / box) * box
            r = np.linalg.norm(d)
            e = float(params.pair_energy(np.array([r]), types[i], types[j])[0])
            total += e
            per_bead[i] += e / 2
            per_bead[j] += e / 2
    return total, per_bead


def system(seed=0):
    """4x4x4 jittered lattice (spacing 0.3 nm) in a 1.2 nm box: neighbours sit inside the wall
    range (cutoff ~0.36 nm), across the periodic boundaries too, but not deep in the wall."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(4) * 0.3] * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = grid + 0.05 + rng.uniform(-0.04, 0.04, grid.shape)
    pos[:8] -= 0.07  # some beads outside the box: wrapping is the model's job
    types = rng.integers(0, 3, len(pos))
    return types, pos


def test_wall_matches_pair_energy_periodic():
    params = wall_params()
    types, pos = system()
    wall = WallPotential(params, dtype=torch.float64)
    e, b, f = wall(torch.as_tensor(types), torch.as_tensor(pos), torch.eye(3, dtype=torch.float64) * BOX)
    ref_e, ref_b = reference_energy(params, types, pos, BOX)
    assert ref_e > 0  # the test system does have wall pairs
    assert e.item() == pytest.approx(ref_e, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(b.numpy(), ref_b, rtol=1e-12, atol=1e-12)


def test_wall_forces_finite_difference_and_float32_model():
    params = wall_params()
    types, pos = system(1)
    box = torch.eye(3, dtype=torch.float64) * BOX
    t = torch.as_tensor(types)
    wall = WallPotential(params, dtype=torch.float64)
    _, _, f = wall(t, torch.as_tensor(pos), box)
    h = 1e-6
    for i in range(4):
        for d in range(3):
            p1, p2 = pos.copy(), pos.copy()
            p1[i, d] += h
            p2[i, d] -= h
            fd = -(reference_energy(params, types, p1, BOX)[0] - reference_energy(params, types, p2, BOX)[0]) / (2 * h)
            assert f[i, d].item() == pytest.approx(fd, rel=1e-5, abs=1e-5)
    wall32 = torch.jit.script(WallPotential(params))
    e32, _, f32 = wall32(t, torch.as_tensor(pos), box)
    assert e32.dtype == torch.float64
    np.testing.assert_allclose(f32.numpy(), f.numpy(), rtol=1e-4, atol=1e-3)


def test_zero_wall_is_zero():
    params = WallParameters.zero(["Cho", "Cl", "Urea"])
    types, pos = system()
    e, b, f = WallPotential(params)(torch.as_tensor(types), torch.as_tensor(pos), torch.eye(3) * BOX)
    assert e.item() == 0 and float(f.abs().max()) == 0


def test_potential_with_wall_is_the_sum():
    params = wall_params()
    types, pos = system()
    t, p, box = torch.as_tensor(types), torch.as_tensor(pos), torch.eye(3, dtype=torch.float64) * BOX
    torch.manual_seed(0)
    net = CGPotential(PotentialConfig(architecture="graph-network", cutoff_nm=0.5, embedding_dim=8,
                                      num_layers=1, num_rbf=4, max_num_neighbors=32, dtype="float64"))
    wall = WallPotential(params, dtype=torch.float64)
    both = torch.jit.script(PotentialWithWall(net, wall))
    e, b, f = both(t, p, box)
    e1, b1, f1 = net(t, p, box)
    e2, b2, f2 = wall(t, p, box)
    torch.testing.assert_close(e, e1 + e2)
    torch.testing.assert_close(b, b1 + b2)
    torch.testing.assert_close(f, f1 + f2)


def test_wall_is_finite_in_float32_for_large_taper_points():
    """A = s p e^{a t}/a exceeds float32's range for t > ~0.44 nm; the torch wall must not."""
    import numpy as np
    import torch

    from openmm_cgkd.model.wall import WallParameters
    from openmm_cgkd.model.wall_torch import WallPotential

    params = WallParameters.from_taper(["A"], np.array([[0.50]]), np.array([[400.0]]))
    assert params.prefactor_kj_mol[0, 0] > 3.4e38  # would be inf in float32
    wall = WallPotential(params, dtype=torch.float32)
    r = 0.49  # inside the taper: force between p*s and s
    pos = torch.tensor([[0.0, 0.0, 0.0], [r, 0.0, 0.0]])
    e, _, f = wall(torch.zeros(2, dtype=torch.long), pos, None)
    expected = params.pair_energy(np.array([r]), 0, 0)[0]
    assert torch.isfinite(e) and torch.isfinite(f).all()
    assert float(e) == pytest.approx(expected, rel=1e-4)
    assert float(f[1, 0]) > 0.05 * 400.0  # repulsive, at least p*s
