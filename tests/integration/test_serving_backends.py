"""The two network-force backends: openmm-torch TorchForce (TorchScript) and openmm.PythonForce
(eager model) give the same energies and forces, in OpenMM and against the torch model called
directly; the python backend serves bundles loaded without TorchScript, ensembles, particle
subsets, serialized Systems and short MD runs identical to TorchForce's."""
import numpy as np
import pytest
import torch

from openmm_cgkd.bundle import build_untrained_bundle, load_bundle, untrained_config
from openmm_cgkd.systems import get_system
from openmm_cgkd.model.wall import WallParameters
from openmm_cgkd.serving.forcefield import CGKDForceField, ServingError
from openmm_cgkd.serving.network_force import NETWORK_FORCE_NAME
from openmm_cgkd.serving.wall_force import WALL_FORCE_NAME
from openmm_cgkd.topology import bead_topology

DES_BEAD_TYPES = get_system("des").bead_types()

NAMES = [b.name for b in DES_BEAD_TYPES]
BOX_NM = 1.12


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _wall() -> WallParameters:
    t = np.array([[0.31, 0.30, 0.31], [0.30, 0.31, 0.29], [0.31, 0.29, 0.32]])
    return WallParameters.from_taper(NAMES, t, np.full((3, 3), 400.0), cutoff_nm=0.42)


def _config():
    return untrained_config(cutoff_nm=0.5, embedding_dim=16, num_layers=2, num_rbf=8, rbf_type="gauss",
                            max_num_neighbors=48)


@pytest.fixture(scope="module")
def ff(tmp_path_factory):
    return CGKDForceField(build_untrained_bundle(tmp_path_factory.mktemp("b") / "small", _config(), wall=_wall(),
                                                 seed=3))


def _configuration(seed=0):
    """36 beads: a jittered 3x3x3 lattice plus beads on the x = 0 face (pairs across the box)."""
    rng = np.random.default_rng(seed)
    g = (np.arange(3) + 0.5) * BOX_NM / 3
    lattice = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    faces = np.array([[0.0, a + BOX_NM / 6, b + BOX_NM / 6] for a in g for b in g])
    pos = np.concatenate([lattice, faces]) + rng.uniform(-0.015, 0.015, (36, 3))
    return pos, rng.permutation(np.arange(36) % 3)


def _evaluate(system, pos, platform, groups=None):
    import openmm
    from openmm import unit

    props = {"Threads": "1"} if platform == "CPU" else {}
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform), props)
    ctx.setPositions(pos * unit.nanometer)
    st = ctx.getState(getEnergy=True, getForces=True, **({} if groups is None else {"groups": groups}))
    return (st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def _network_only(system):
    for i in reversed(range(system.getNumForces())):
        if system.getForce(i).getName() != NETWORK_FORCE_NAME:
            system.removeForce(i)
    return system


def _assert_same(a, b, rtol=1e-5):
    (ea, fa), (eb, fb) = a, b
    assert ea == pytest.approx(eb, rel=rtol, abs=1e-4)
    np.testing.assert_allclose(fa, fb, rtol=rtol, atol=rtol * np.abs(fb).max())


@pytest.mark.parametrize("platform", ["CPU", "Reference"])
def test_python_backend_equals_torchforce_and_the_torch_model(ff, platform):
    pos, types = _configuration()
    box = np.eye(3) * BOX_NM
    top = bead_topology([NAMES[t] for t in types], box)
    shift = BOX_NM * np.random.default_rng(1).integers(-3, 4, pos.shape)  # unwrapped positions
    tf = _evaluate(ff.create_system(top), pos + shift, platform)
    py_system = ff.create_system(top, backend="python", device="cpu")
    assert {f.getName() for f in py_system.getForces()} >= {NETWORK_FORCE_NAME, WALL_FORCE_NAME}
    assert any(f.__class__.__name__ == "PythonForce" for f in py_system.getForces())
    py = _evaluate(py_system, pos + shift, platform)
    assert np.abs(tf[1]).max() > 10.0  # not vacuous
    _assert_same(py, tf)
    # the network part alone equals the eager torch model called directly (no OpenMM)
    with torch.no_grad():
        e_ref, _, f_ref = ff.bundle.eager_model()(torch.as_tensor(types), torch.as_tensor(pos), torch.as_tensor(box))
    net = _evaluate(_network_only(ff.create_system(top, backend="python", device="cpu")), pos + shift, platform)
    _assert_same(net, (float(e_ref), f_ref.numpy()), rtol=1e-4)
    assert np.abs(f_ref.numpy()).max() > 1.0


def test_python_backend_md_follows_torchforce(ff):
    """Five velocity-Verlet steps from the same state end at the same positions with both backends."""
    import openmm
    from openmm import unit

    pos, types = _configuration(seed=4)
    top = bead_topology([NAMES[t] for t in types], np.eye(3) * BOX_NM)
    final = []
    for backend in ("torchforce", "python"):
        system = ff.create_system(top, backend=backend, remove_cm_motion=False)
        ctx = openmm.Context(system, openmm.VerletIntegrator(1.0 * unit.femtosecond),
                             openmm.Platform.getPlatformByName("Reference"))
        ctx.setPositions(pos * unit.nanometer)
        ctx.setVelocitiesToTemperature(300 * unit.kelvin, 3)
        ctx.getIntegrator().step(5)
        final.append(ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    moved = np.abs(final[0] - pos).max()
    assert moved > 1e-4
    np.testing.assert_allclose(final[1], final[0], atol=1e-6 * max(1.0, moved) + 1e-7)


def test_ensemble_bundle_with_python_backend(tmp_path):
    ens = CGKDForceField(build_untrained_bundle(tmp_path / "ens", _config(), wall=_wall(), num_members=2))
    pos, types = _configuration(seed=1)
    top = bead_topology([NAMES[t] for t in types], np.eye(3) * BOX_NM)
    _assert_same(_evaluate(ens.create_system(top, backend="python"), pos, "Reference"),
                 _evaluate(ens.create_system(top), pos, "Reference"))


def test_bundle_without_torchscript_serves_python_backend(ff):
    """load_bundle(torchscript=False): the eager weights alone serve the model (TorchScript-free)."""
    bundle = load_bundle(ff.path, torchscript=False)
    assert bundle.module is None and bundle.state_dict is not None
    no_ts = CGKDForceField(bundle)
    pos, types = _configuration(seed=2)
    top = bead_topology([NAMES[t] for t in types], np.eye(3) * BOX_NM)
    _assert_same(_evaluate(no_ts.create_system(top, backend="python"), pos, "Reference"),
                 _evaluate(ff.create_system(top), pos, "Reference"))
    with pytest.raises(ServingError, match="without its TorchScript module"):
        no_ts.create_system(top)


def test_python_backend_system_survives_xml_serialization(ff):
    import openmm

    pos, types = _configuration(seed=3)
    top = bead_topology([NAMES[t] for t in types], np.eye(3) * BOX_NM)
    system = ff.create_system(top, backend="python")
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    _assert_same(_evaluate(copy, pos, "Reference"), _evaluate(system, pos, "Reference"), rtol=1e-12)


def test_backend_options_are_checked(ff):
    pos, types = _configuration()
    top = bead_topology([NAMES[t] for t in types], np.eye(3) * BOX_NM)
    with pytest.raises(ServingError, match="unknown network-force backend 'jax'"):
        ff.create_system(top, backend="jax")
    with pytest.raises(ServingError, match="options of the python backend"):
        ff.create_system(top, compile=True)
    with pytest.raises(ServingError, match="use_cuda_graphs is an openmm-torch"):
        ff.create_system(top, backend="python", use_cuda_graphs=True)


@pytest.mark.slow
def test_compiled_python_backend_equals_torchforce(ff):
    """torch.compile of the eager model (minutes on a CPU: inductor compiles C++ kernels)."""
    pos, types = _configuration()
    top = bead_topology([NAMES[t] for t in types], np.eye(3) * BOX_NM)
    _assert_same(_evaluate(ff.create_system(top, backend="python", device="cpu", compile=True), pos, "CPU"),
                 _evaluate(ff.create_system(top), pos, "CPU"))
