"""Continuity: every shipped bundle in models/ still loads, validates its checksums, and gives
the outputs recorded when it was shipped (models/<name>/continuity.npz), both as a torch module
and served in OpenMM (Reference platform) through CGKDForceField."""
import pytest

from openmm_cgkd.bundle import load_bundle, models_dir

from shipped import assert_reproduces_reference, reference, reference_topology, shipped_with_reference

SHIPPED = ("des-student", "des-teachers")


def test_the_default_models_are_shipped():
    for name in SHIPPED:
        assert (models_dir() / name / "manifest.yaml").is_file(), f"models/{name} is missing"
        assert (models_dir() / name / "continuity.npz").is_file(), f"models/{name} has no continuity reference"
        assert (models_dir() / name / "MODEL_CARD.md").is_file(), f"models/{name} has no model card"


@pytest.mark.parametrize("name", shipped_with_reference())
def test_bundle_reproduces_its_shipped_outputs(name):
    bundle = load_bundle(name)  # verifies checksums and the manifest
    assert_reproduces_reference(bundle.module, reference(name))


@pytest.mark.parametrize("name", shipped_with_reference())
def test_bundle_served_in_openmm_matches_reference(name):
    import openmm
    from openmm import unit

    from openmm_cgkd.serving import CGKDForceField

    ref = reference(name)
    ff = CGKDForceField(name)
    system = ff.create_system(reference_topology(ff, ref))
    # keep the network force alone (a plugin force: listed as a generic Force) and compare its
    # energy with the recorded module energy; the others are the wall, the CM motion remover and,
    # for a bonded model, its bonded priors
    kinds = [f.__class__.__name__ for f in system.getForces()]
    priors = {"HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce"} if ff.bundle.priors else set()
    assert kinds.count("Force") == 1 and set(kinds) == {"CMMotionRemover", "CustomNonbondedForce", "Force", *priors}
    for i in reversed(range(system.getNumForces())):
        if kinds[i] != "Force":
            system.removeForce(i)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(ref["positions_nm"] * unit.nanometer)
    e = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert e == pytest.approx(float(ref["energy_kj_mol"]), rel=1e-4, abs=1e-2)
