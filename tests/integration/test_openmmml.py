"""openmm-ml backend: MLPotential('cgkd', bundle=...) gives the System of
CGKDForceField.create_system (masses from the bundle, same energies and forces), honours
forceGroup and the atoms subset, and refuses bad arguments clearly."""
import numpy as np
import pytest

from openmm_cgkd.bundle import build_untrained_bundle, untrained_config
from openmm_cgkd.systems import get_system
from openmm_cgkd.model.wall import WallParameters
from openmm_cgkd.serving.forcefield import CGKDForceField, ServingError
from openmm_cgkd.serving.openmmml import CGKDPotentialImpl
from openmm_cgkd.topology import bead_topology

DES_BEAD_TYPES = get_system("des").bead_types()

openmmml = pytest.importorskip("openmmml", reason="openmm-ml (dev dependency group) is not installed")

NAMES = [b.name for b in DES_BEAD_TYPES]
BOX_NM = 1.12


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    cfg = untrained_config(cutoff_nm=0.5, embedding_dim=16, num_layers=2, num_rbf=8, rbf_type="gauss",
                           max_num_neighbors=48)
    wall = WallParameters.from_taper(NAMES, np.full((3, 3), 0.31), np.full((3, 3), 400.0), cutoff_nm=0.42)
    return build_untrained_bundle(tmp_path_factory.mktemp("b") / "small", cfg, wall=wall, seed=5)


def _configuration(n_side=3, seed=0):
    rng = np.random.default_rng(seed)
    g = (np.arange(n_side) + 0.5) * BOX_NM / n_side
    pos = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    pos = pos + rng.uniform(-0.03, 0.03, pos.shape)
    return pos, rng.permutation(np.arange(len(pos)) % 3)


def _evaluate(system, pos, groups=None):
    import openmm
    from openmm import unit

    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(pos * unit.nanometer)
    st = ctx.getState(getEnergy=True, getForces=True, **({} if groups is None else {"groups": groups}))
    return (st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def _masses(system):
    from openmm import unit

    return np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])


def test_entry_point_is_registered():
    from openmmml.mlpotential import MLPotential

    assert "cgkd" in MLPotential._implFactories


@pytest.mark.parametrize("backend", ["torchforce", "python"])
def test_mlpotential_create_system_equals_cgkd(bundle_path, backend):
    from openmmml import MLPotential

    pos, types = _configuration()
    top = bead_topology([NAMES[t] for t in types], np.eye(3) * BOX_NM)
    assert all(atom.element is None for atom in top.atoms())  # openmm-ml would give these mass 0
    system = MLPotential("cgkd", bundle=str(bundle_path), backend=backend).createSystem(top)
    reference = CGKDForceField(bundle_path).create_system(top)
    np.testing.assert_allclose(_masses(system), [DES_BEAD_TYPES[t].mass_dalton for t in types])
    np.testing.assert_allclose(_masses(system), _masses(reference))
    e, f = _evaluate(system, pos)
    e_ref, f_ref = _evaluate(reference, pos)
    assert np.abs(f_ref).max() > 1.0  # not vacuous
    assert e == pytest.approx(e_ref, rel=1e-5, abs=1e-4)
    np.testing.assert_allclose(f, f_ref, rtol=1e-5, atol=1e-5 * np.abs(f_ref).max())
    assert system.usesPeriodicBoundaryConditions()


def test_force_group(bundle_path):
    import openmm

    pos, types = _configuration()
    top = bead_topology([NAMES[t] for t in types], np.eye(3) * BOX_NM)
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*top.getPeriodicBoxVectors())
    for _ in types:
        system.addParticle(0.0)
    CGKDPotentialImpl("cgkd", str(bundle_path)).addForces(top, system, None, 7)
    assert {f.getForceGroup() for f in system.getForces()} == {7}
    e7, f7 = _evaluate(system, pos, groups={7})
    e_all, f_all = _evaluate(system, pos)
    e0, _ = _evaluate(system, pos, groups={0})
    assert e7 == pytest.approx(e_all) and e0 == 0.0 and abs(e7) > 1.0
    np.testing.assert_allclose(f7, f_all)
    with pytest.raises(ServingError, match="force_group must lie in 0..31"):
        CGKDPotentialImpl("cgkd", str(bundle_path)).addForces(top, system, None, 40)


@pytest.mark.parametrize("backend", ["torchforce", "python"])
def test_atoms_subset_acts_as_the_subset_alone(bundle_path, backend):
    """The model on atoms S of a larger System = create_system of S alone (forces on the others 0)."""
    import openmm

    pos, types = _configuration()
    top = bead_topology([NAMES[t] for t in types], np.eye(3) * BOX_NM)
    subset = np.random.default_rng(3).permutation(len(types))[:15]
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*top.getPeriodicBoxVectors())
    for _ in types:
        system.addParticle(1.0)
    CGKDPotentialImpl("cgkd", str(bundle_path), backend=backend).addForces(top, system, subset.tolist(), 0)
    masses = _masses(system)
    np.testing.assert_allclose(masses[subset], [DES_BEAD_TYPES[t].mass_dalton for t in types[subset]])
    rest = np.setdiff1d(np.arange(len(types)), subset)
    np.testing.assert_allclose(masses[rest], 1.0)  # particles outside the subset keep their mass
    e, f = _evaluate(system, pos)
    sub_top = bead_topology([NAMES[t] for t in types[subset]], np.eye(3) * BOX_NM)
    e_ref, f_ref = _evaluate(CGKDForceField(bundle_path).create_system(sub_top), pos[subset])
    assert abs(e_ref) > 1.0
    assert e == pytest.approx(e_ref, rel=1e-5, abs=1e-4)
    np.testing.assert_allclose(f[subset], f_ref, rtol=1e-5, atol=1e-5 * np.abs(f_ref).max())
    np.testing.assert_array_equal(f[rest], 0.0)


def test_bad_arguments_are_refused(bundle_path):
    import openmm
    from openmmml import MLPotential

    with pytest.raises(ServingError, match="needs bundle="):
        MLPotential("cgkd")
    with pytest.raises(ServingError, match="unknown backend"):
        MLPotential("cgkd", bundle=str(bundle_path), backend="jax")
    pos, types = _configuration()
    top = bead_topology([NAMES[t] for t in types], np.eye(3) * BOX_NM)
    with pytest.raises(TypeError, match="charge"):
        MLPotential("cgkd", bundle=str(bundle_path)).createSystem(top, charge=0)
    impl = CGKDPotentialImpl("cgkd", str(bundle_path))
    small = openmm.System()
    small.addParticle(1.0)
    with pytest.raises(ServingError, match="1 particles but the topology 27 atoms"):
        impl.addForces(top, small, None, 0)
    system = openmm.System()
    for _ in types:
        system.addParticle(0.0)
    with pytest.raises(ServingError, match="atom index 99 is outside"):
        impl.addForces(top, system, [0, 99], 0)
    no_box = bead_topology([NAMES[t] for t in types])
    with pytest.raises(ServingError, match="no periodic box"):
        MLPotential("cgkd", bundle=str(bundle_path)).createSystem(no_box)


def test_create_mixed_system_is_refused_in_one_line(bundle_path):
    """openmm-ml's embeddings read elements (beads have none): createMixedSystem fails with one
    ServingError line, not an AttributeError inside openmm-ml, for every embedding."""
    import openmm
    from openmmml import MLPotential

    pos, types = _configuration()
    top = bead_topology([NAMES[t] for t in types], np.eye(3) * BOX_NM)
    system = openmm.System()
    for _ in types:
        system.addParticle(40.0)
    potential = MLPotential("cgkd", bundle=str(bundle_path))
    for embedding in ("mechanical",):
        with pytest.raises(ServingError) as err:
            potential.createMixedSystem(top, system, range(5), embedding=embedding)
        assert "createMixedSystem is not supported for CG bead models" in str(err.value)
        assert "\n" not in str(err.value)
