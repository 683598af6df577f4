"""Continuity without TorchScript: the eager network rebuilt from each shipped bundle (weights
from state_dict.pt, or read out of the TorchScript module for bundles shipped before that file
existed) reproduces the outputs recorded when the bundle was shipped, and the python serving
backend serves it in OpenMM with the recorded energy."""
import numpy as np
import pytest

from openmm_cgkd.bundle import load_bundle

from shipped import assert_reproduces_reference, reference, reference_topology, shipped_with_reference


@pytest.mark.parametrize("name", shipped_with_reference())
def test_eager_model_reproduces_shipped_outputs(name):
    import torch

    eager = load_bundle(name).eager_model()
    assert not isinstance(eager, torch.jit.ScriptModule)
    assert_reproduces_reference(eager, reference(name))


@pytest.mark.parametrize("name", shipped_with_reference())
def test_python_backend_serves_shipped_bundle(name):
    import openmm
    from openmm import unit

    from openmm_cgkd.serving import CGKDForceField
    from openmm_cgkd.serving.network_force import NETWORK_FORCE_NAME

    ref = reference(name)
    ff = CGKDForceField(name)
    system = ff.create_system(reference_topology(ff, ref), backend="python", device="cpu")
    for i in reversed(range(system.getNumForces())):
        if system.getForce(i).getName() != NETWORK_FORCE_NAME:
            system.removeForce(i)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(ref["positions_nm"] * unit.nanometer)
    st = ctx.getState(getEnergy=True, getForces=True)
    assert st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) == pytest.approx(
        float(ref["energy_kj_mol"]), rel=1e-4, abs=1e-2)
    forces = st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    np.testing.assert_allclose(forces, ref["forces_kj_mol_nm"], rtol=1e-3, atol=1e-2)
