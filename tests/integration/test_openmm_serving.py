"""CGKDForceField in OpenMM: energies and forces equal the torch model + numpy wall; NVE conservation.

A small graph-network bundle (random weights, Gaussian RBFs so that the network's forces are
not negligible) and a realistic wall on 36 beads in a 1.12 nm periodic box, many of them
straddling the box faces.
"""
import numpy as np
import pytest
import torch

from openmm_cgkd.bundle import build_untrained_bundle, load_bundle, untrained_config
from openmm_cgkd.systems import get_system
from openmm_cgkd.model.wall import WallParameters
from openmm_cgkd.serving.forcefield import CGKDForceField
from openmm_cgkd.serving.network_force import NETWORK_FORCE_NAME
from openmm_cgkd.platforms import default_platform_name
from openmm_cgkd.serving.wall_force import WALL_FORCE_NAME
from openmm_cgkd.topology import bead_topology

DES_BEAD_TYPES = get_system("des").bead_types()

PLATFORMS = ["CPU", "Reference",
             pytest.param("CUDA", marks=[pytest.mark.gpu, pytest.mark.skipif(
                 default_platform_name() != "CUDA", reason="no CUDA platform / GPU")])]
NAMES = [b.name for b in DES_BEAD_TYPES]
BOX_NM = 1.12
N_SIDE = 3  # 3x3x3 lattice + 9 face beads = 36 beads


def _wall() -> WallParameters:
    t = np.array([[0.31, 0.30, 0.31], [0.30, 0.31, 0.29], [0.31, 0.29, 0.32]])
    s = np.array([[300.0, 500.0, 350.0], [500.0, 200.0, 450.0], [350.0, 450.0, 250.0]])
    return WallParameters.from_taper(NAMES, t, s, cutoff_nm=0.42)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def ff(tmp_path_factory):
    cfg = untrained_config(cutoff_nm=0.5, embedding_dim=16, num_layers=2, num_rbf=8, rbf_type="gauss",
                           max_num_neighbors=48)
    path = build_untrained_bundle(tmp_path_factory.mktemp("bundle") / "small", cfg, wall=_wall(), seed=3)
    return CGKDForceField(path)


def _configuration(seed=0):
    """Jittered lattice plus beads on a face: pair distances 0.29-0.35 nm, many across the boundary."""
    rng = np.random.default_rng(seed)
    g = (np.arange(N_SIDE) + 0.5) * BOX_NM / N_SIDE
    lattice = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    faces = np.array([[0.0, a, b] for a in g for b in g])  # the x = 0 face, between lattice rows
    faces[:, 1:] += BOX_NM / (2 * N_SIDE)
    pos = np.concatenate([lattice, faces]) + rng.uniform(-0.015, 0.015, (len(lattice) + len(faces), 3))
    types = rng.permutation(np.arange(len(pos)) % 3)
    return pos, types


def _pairs_min_image(pos, box_len):
    d = pos[:, None, :] - pos[None, :, :]
    if box_len is not None:  # None: no periodic boundaries
        d -= box_len * np.round(d / box_len)
    return d, np.linalg.norm(d, axis=-1)


def numpy_wall(wall: WallParameters, pos, types, box_len, h=1e-6):
    """Independent wall: pair sum of WallParameters.pair_energy; forces by central differences."""
    d, r = _pairs_min_image(pos, box_len)
    energy, forces = 0.0, np.zeros_like(pos)
    for i in range(len(pos)):
        for j in range(i + 1, len(pos)):
            e = wall.pair_energy(np.array([r[i, j], r[i, j] - h, r[i, j] + h]), types[i], types[j])
            energy += e[0]
            f = -(e[2] - e[1]) / (2 * h) * d[i, j] / r[i, j]
            forces[i] += f
            forces[j] -= f
    return energy, forces


def _context(ff, system, platform, integrator=None):
    import openmm

    for force in system.getForces():
        force.setForceGroup({NETWORK_FORCE_NAME: 1, WALL_FORCE_NAME: 2}.get(force.getName(), 0))
    integrator = integrator or openmm.VerletIntegrator(0.001)
    props = {"Threads": "1"} if platform == "CPU" else {}
    return openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform), props)


def _energy_forces(ctx, groups):
    from openmm import unit

    st = ctx.getState(getEnergy=True, getForces=True, groups=groups)
    return (st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


@pytest.mark.parametrize("platform", PLATFORMS)
def test_energy_and_forces_equal_torch_model(ff, platform):
    from openmm import unit

    pos, types = _configuration()
    box = np.eye(3) * BOX_NM
    top = bead_topology([NAMES[t] for t in types], box)
    system = ff.create_system(top)
    ctx = _context(ff, system, platform)
    # OpenMM gets positions shifted by whole box vectors (unwrapped, as in a long run)
    shift = BOX_NM * np.random.default_rng(1).integers(-4, 5, pos.shape)
    ctx.setPositions((pos + shift) * unit.nanometer)

    with torch.no_grad():
        e_net, _, f_net = ff.bundle.module(torch.as_tensor(types), torch.as_tensor(pos, dtype=torch.float64),
                                           torch.as_tensor(box))
    e_net, f_net = float(e_net), f_net.numpy()
    e_wall, f_wall = numpy_wall(ff.wall, pos, types, BOX_NM)
    _, r = _pairs_min_image(pos, BOX_NM)
    crossing = sum(1 for i in range(len(pos)) for j in range(i) if r[i, j] < ff.cutoff_nm
                   and np.linalg.norm(pos[i] - pos[j]) > ff.cutoff_nm)
    # not vacuous: both terms matter, and many interacting pairs cross the boundary
    assert crossing >= 20
    assert np.abs(f_net).max() > 1.0 and np.abs(f_wall).max() > 10.0 and abs(e_wall) > 1.0

    for groups, e_ref, f_ref in (({1}, e_net, f_net), ({2}, e_wall, f_wall),
                                 ({0, 1, 2}, e_net + e_wall, f_net + f_wall)):
        e, f = _energy_forces(ctx, groups)
        assert e == pytest.approx(e_ref, rel=1e-4, abs=1e-4), groups
        np.testing.assert_allclose(f, f_ref, rtol=1e-4, atol=1e-4 * np.abs(f_ref).max(), err_msg=str(groups))


def test_system_contents(ff):
    import openmm
    from openmm import unit

    pos, types = _configuration()
    top = bead_topology([NAMES[t] for t in types], np.eye(3) * BOX_NM)
    system = ff.create_system(top)
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])
    assert np.all(masses > 0)
    np.testing.assert_allclose(masses, [DES_BEAD_TYPES[t].mass_dalton for t in types])
    names = [f.getName() for f in system.getForces()]
    assert NETWORK_FORCE_NAME in names and WALL_FORCE_NAME in names
    assert any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces())
    assert system.usesPeriodicBoundaryConditions()
    assert not any(isinstance(f, openmm.CMMotionRemover)
                   for f in ff.create_system(top, remove_cm_motion=False).getForces())
    # an mdtraj topology with explicit box vectors works too
    import mdtraj as md

    system2 = ff.create_system(md.Topology.from_openmm(top), box_vectors=np.eye(3) * BOX_NM)
    assert system2.getNumParticles() == len(types)


def test_nve_conserves_energy(ff):
    """Velocity Verlet, 1 fs, 1000 steps (1 ps) at ~300 K with the wall active.

    Bound: the total energy's standard deviation and its drift (last - first 100 steps) each stay
    below 0.1% of the mean kinetic energy (measured on CPU: std 0.0017 kJ/mol, drift 0.0002 kJ/mol,
    mean kinetic energy 92 kJ/mol, i.e. 2e-5).
    """
    import openmm
    from openmm import unit

    pos, types = _configuration(seed=2)
    top = bead_topology([NAMES[t] for t in types], np.eye(3) * BOX_NM)
    system = ff.create_system(top)
    ctx = _context(ff, system, "CPU", openmm.VerletIntegrator(1.0 * unit.femtosecond))
    ctx.setPositions(pos * unit.nanometer)
    ctx.setVelocitiesToTemperature(300 * unit.kelvin, 7)
    integrator = ctx.getIntegrator()
    total, kinetic, wall_seen = [], [], 0.0
    for _ in range(100):
        integrator.step(10)
        st = ctx.getState(getEnergy=True)
        ke = st.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        total.append(st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) + ke)
        kinetic.append(ke)
        wall_seen = max(wall_seen, ctx.getState(getEnergy=True, groups={2}).getPotentialEnergy()
                        .value_in_unit(unit.kilojoule_per_mole))
    total, kinetic = np.array(total), np.array(kinetic)
    scale = kinetic.mean()
    assert wall_seen > 1.0  # the wall acted during the run
    assert np.all(np.isfinite(total))
    print(f"NVE: std {total.std():.4g}, drift {total[-10:].mean() - total[:10].mean():.4g}, mean KE {scale:.4g} kJ/mol")
    assert total.std() < 1e-3 * scale, (total.std(), scale)
    assert abs(total[-10:].mean() - total[:10].mean()) < 1e-3 * scale


def test_bundle_object_and_name(ff, tmp_path, monkeypatch):
    """CGKDForceField takes a loaded Bundle, a path, or a shipped name under $CGKD_MODELS_DIR."""
    bundle = load_bundle(ff.path)
    assert CGKDForceField(bundle).type_names == NAMES
    monkeypatch.setenv("CGKD_MODELS_DIR", str(ff.path.parent))
    assert CGKDForceField(ff.path.name).path == ff.path
    assert "UNTRAINED" in ff.describe()


@pytest.mark.parametrize("platform", ["CPU", "Reference"])
def test_ensemble_bundle_serves_member_mean(tmp_path, platform):
    """An ensemble bundle's TorchForce gives the member-mean energy and forces, call after call
    (openmm-torch freezes the module; the members' backward passes must survive that)."""
    from openmm import unit

    cfg = untrained_config(cutoff_nm=0.5, embedding_dim=8, num_layers=1, num_rbf=8, rbf_type="gauss",
                           max_num_neighbors=48)
    ens = CGKDForceField(build_untrained_bundle(tmp_path / "ens", cfg, wall=_wall(), num_members=3))
    pos, types = _configuration()
    box = np.eye(3) * BOX_NM
    ctx = _context(ens, ens.create_system(bead_topology([NAMES[t] for t in types], box)), platform)
    with torch.no_grad():
        e_ref, _, f_ref, f_std = ens.bundle.module(torch.as_tensor(types), torch.as_tensor(pos), torch.as_tensor(box))
    assert float(f_std.abs().max()) > 0  # the members differ
    for k in range(3):  # the first calls run unoptimised graphs; later ones the optimised, frozen graph
        ctx.setPositions((pos + k * BOX_NM) * unit.nanometer)
        e, f = _energy_forces(ctx, {1})
        assert e == pytest.approx(float(e_ref), rel=1e-4, abs=1e-4)
        np.testing.assert_allclose(f, f_ref.numpy(), rtol=1e-4, atol=1e-4 * float(f_ref.abs().max()))


def test_non_periodic_model(tmp_path):
    """A bundle saved with periodic=False serves a cluster without a box (network and wall)."""
    from openmm import unit

    from openmm_cgkd.bundle import save_bundle
    from openmm_cgkd.model.potential import CGPotential
    from openmm_cgkd.serving.forcefield import ServingError

    torch.manual_seed(0)
    net = CGPotential(untrained_config(cutoff_nm=0.5, embedding_dim=8, num_layers=1, num_rbf=8, rbf_type="gauss",
                                       max_num_neighbors=48))
    ff = CGKDForceField(save_bundle(tmp_path / "cluster", net, bead_types=DES_BEAD_TYPES, wall=_wall(),
                                    model_kind="teacher", periodic=False))
    pos, types = _configuration()
    top = bead_topology([NAMES[t] for t in types], np.eye(3) * BOX_NM)  # the topology's box is ignored
    system = ff.create_system(top)
    assert not system.usesPeriodicBoundaryConditions()
    ctx = _context(ff, system, "Reference")
    ctx.setPositions(pos * unit.nanometer)
    with torch.no_grad():
        e_net, _, f_net = ff.bundle.module(torch.as_tensor(types), torch.as_tensor(pos), None)
    e_wall, f_wall = numpy_wall(ff.wall, pos, types, None)
    assert abs(e_wall) > 1.0
    for groups, e_ref, f_ref in (({1}, float(e_net), f_net.numpy()), ({2}, e_wall, f_wall)):
        e, f = _energy_forces(ctx, groups)
        assert e == pytest.approx(e_ref, rel=1e-4, abs=1e-4), groups
        np.testing.assert_allclose(f, f_ref, rtol=1e-4, atol=1e-4 * np.abs(f_ref).max(), err_msg=str(groups))
    with pytest.raises(ServingError, match="non-periodic"):
        ff.create_system(top, box_vectors=np.eye(3) * BOX_NM)
