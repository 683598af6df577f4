"""The OpenMM wall (CustomNonbondedForce) against WallParameters.pair_energy, on every platform."""
import numpy as np
import pytest

from openmm_cgkd.model.wall import WallParameters
from openmm_cgkd.platforms import default_platform_name
from openmm_cgkd.serving.wall_force import make_wall_force

PLATFORMS = ["CPU", "Reference",
             pytest.param("CUDA", marks=[pytest.mark.gpu, pytest.mark.skipif(
                 default_platform_name() != "CUDA", reason="no CUDA platform / GPU")])]


def _wall() -> WallParameters:
    # Realistic sizes: a = ln(20)/0.015 = 200/nm, so A = s p e^{a t}/a reaches ~1e30 for t = 0.4 nm.
    t = np.array([[0.30, 0.34, 0.40], [0.34, 0.28, 0.36], [0.40, 0.36, 0.38]])
    s = np.array([[300.0, 200.0, 150.0], [200.0, 400.0, 250.0], [150.0, 250.0, 100.0]])
    w = WallParameters.from_taper(["A", "B", "C"], t, s, cutoff_nm=0.48)
    w.prefactor_kj_mol[0, 2] = w.prefactor_kj_mol[2, 0] = 0.0  # one pair without a wall
    return w


def _configuration(rng, n=40, box=1.1, min_dist=0.27):
    """Beads with pair distances in the wall's range, many of them across the box faces."""
    pos = []
    while len(pos) < n:
        # half of the beads within 0.15 nm of a face, so that many pairs cross the boundary
        p = rng.uniform(0, box, 3)
        if len(pos) % 2 == 0:
            p[rng.integers(3)] = rng.choice([rng.uniform(0, 0.15), rng.uniform(box - 0.15, box)])
        d = np.asarray(pos) - p if pos else np.zeros((0, 3))
        d -= box * np.round(d / box)
        if np.all(np.linalg.norm(d, axis=1) > min_dist):
            pos.append(p)
    pos = np.asarray(pos)
    types = rng.integers(0, 3, n)
    return pos, types, np.eye(3) * box


def reference_energy_forces(wall: WallParameters, pos, types, box_len, h=1e-6):
    """Minimum-image pair sum of pair_energy; forces by central differences of pair_energy."""
    n = len(pos)
    energy = 0.0
    forces = np.zeros_like(pos)
    n_close = 0
    for i in range(n):
        for j in range(i + 1, n):
            d = pos[i] - pos[j]
            d -= box_len * np.round(d / box_len)
            r = np.linalg.norm(d)
            e = wall.pair_energy(np.array([r, r - h, r + h]), types[i], types[j])
            energy += e[0]
            dedr = (e[2] - e[1]) / (2 * h)
            forces[i] -= dedr * d / r
            forces[j] += dedr * d / r
            n_close += r < wall.cutoff_nm
    return energy, forces, n_close


def _openmm_energy_forces(force, pos, box, platform):
    import openmm
    from openmm import unit

    system = openmm.System()
    for _ in pos:
        system.addParticle(50.0)
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    system.addForce(force)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    ctx.setPositions(pos * unit.nanometer)
    st = ctx.getState(getEnergy=True, getForces=True)
    return (st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


@pytest.mark.parametrize("platform", PLATFORMS)
def test_wall_force_matches_pair_energy(platform):
    rng = np.random.default_rng(1)
    wall = _wall()
    pos, types, box = _configuration(rng)
    e_ref, f_ref, n_close = reference_energy_forces(wall, pos, types, box[0, 0])
    assert n_close > 20 and abs(e_ref) > 1.0  # the test is not vacuous
    e, f = _openmm_energy_forces(make_wall_force(wall, types), pos, box, platform)
    assert e == pytest.approx(e_ref, rel=1e-4)
    np.testing.assert_allclose(f, f_ref, rtol=1e-4, atol=1e-4 * np.abs(f_ref).max())
    # beads wrapped by whole box vectors: same energy
    shifted = pos + box[0, 0] * rng.integers(-3, 4, pos.shape)
    e2, _ = _openmm_energy_forces(make_wall_force(wall, types), shifted, box, platform)
    assert e2 == pytest.approx(e_ref, rel=1e-4)


def test_wall_force_settings_and_validation():
    import openmm

    wall = _wall()
    f = make_wall_force(wall, [0, 1, 2, 2])
    assert f.getNumParticles() == 4
    assert f.getNonbondedMethod() == openmm.CustomNonbondedForce.CutoffPeriodic
    assert f.getCutoffDistance().value_in_unit(openmm.unit.nanometer) == pytest.approx(wall.cutoff_nm)
    assert not f.getUseSwitchingFunction() and not f.getUseLongRangeCorrection()
    assert make_wall_force(wall, [0], periodic=False).getNonbondedMethod() == \
        openmm.CustomNonbondedForce.CutoffNonPeriodic
    with pytest.raises(ValueError, match="type indices"):
        make_wall_force(wall, [0, 3])


def test_zero_wall_gives_zero():
    wall = WallParameters.zero(["A", "B"], cutoff_nm=0.4)
    pos = np.array([[0.1, 0.1, 0.1], [0.3, 0.1, 0.1], [1.05, 0.1, 0.1]])
    e, f = _openmm_energy_forces(make_wall_force(wall, [0, 1, 1]), pos, np.eye(3) * 1.1, "Reference")
    assert e == 0.0 and np.all(f == 0.0)
