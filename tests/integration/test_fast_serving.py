"""The fast path in OpenMM: both serving backends give the forces of the autograd path
(``CGKD_FAST_SERVING=0``) on the shipped bundles, at the start and after MD steps (so the Verlet
list kept inside openmm-torch's frozen module, and inside the PythonForce's module, follows the
beads and the wrapping), and the torchforce module is the fast one."""
import numpy as np
import openmm
import pytest
import torch
from openmm import unit

from openmm_cgkd.bundle import models_dir
from openmm_cgkd.model.fast_hipnn import FastHipnn
from openmm_cgkd.serving.forcefield import CGKDForceField
from openmm_cgkd.serving.network_force import make_network_force, served_model
from openmm_cgkd.topology import bead_topology

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _frame(ff):
    ref = np.load(models_dir() / "des-student" / "continuity.npz")
    names = [ff.bundle.type_names[int(t)] for t in ref["bead_types"]]
    box = np.asarray(ref["box_nm"], dtype=float)
    return bead_topology(names, box), np.asarray(ref["positions_nm"], dtype=float), box


def _context(system):
    """(Context, integrator, system): the System must outlive its Context."""
    integ = openmm.LangevinMiddleIntegrator(298.1 * unit.kelvin, 1.0 / unit.picosecond, 2.0 * unit.femtosecond)
    integ.setRandomNumberSeed(7)
    return openmm.Context(system, integ, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"}), integ, system


def _forces(ctx):
    st = ctx.getState(getEnergy=True, getForces=True)
    return (st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            np.asarray(st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)))


@pytest.fixture(autouse=True)
def torch_one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", ["des-student", "des-teachers"])
@pytest.mark.parametrize("backend", ["torchforce", "python"])
def test_fast_equals_autograd_in_md(name, backend, monkeypatch):
    ff = CGKDForceField(models_dir() / name)
    top, pos, box = _frame(ff)
    fast_ctx, integ, _fast_sys = _context(ff.create_system(top, box, backend=backend))
    monkeypatch.setenv("CGKD_FAST_SERVING", "0")
    slow_ctx, _integ0, _slow_sys = _context(ff.create_system(top, box, backend=backend))
    monkeypatch.delenv("CGKD_FAST_SERVING")
    fast_ctx.setPositions(pos * unit.nanometer)
    fast_ctx.setVelocitiesToTemperature(298.1 * unit.kelvin, 3)
    for steps in (0, 15, 30):
        integ.step(steps)
        st = fast_ctx.getState(getPositions=True, enforcePeriodicBox=False)
        slow_ctx.setPositions(st.getPositions())
        e1, f1 = _forces(fast_ctx)
        e0, f0 = _forces(slow_ctx)
        assert e1 == pytest.approx(e0, rel=1e-5)
        assert np.abs(f1 - f0).max() <= 1e-5 * np.abs(f0).max()


def test_served_modules():
    ff = CGKDForceField(models_dir() / "des-teachers")
    fast = served_model(ff.bundle.module)
    assert isinstance(fast, FastHipnn) and fast.num_members == 8 and not fast.check_errors
    # the caller's module is left as it was
    assert ff.bundle.module.check_errors
    student = served_model(CGKDForceField(models_dir() / "des-student").bundle.module)
    assert isinstance(student, FastHipnn) and student.check_errors
    force = make_network_force(ff.bundle.module, [0] * 10)
    assert force.getName() == "cgkd_network"
