"""A stacked ensemble bundle in OpenMM: energies and forces equal torch (CPU, Reference, both
backends); the uncertainty watch logs the ensemble force spread and warns above its threshold."""
import csv
import warnings

import numpy as np
import pytest
import torch

from openmm_cgkd.bundle import build_untrained_bundle, load_bundle, untrained_config
from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.model.uncertainty import bead_force_spread, force_std_threshold
from openmm_cgkd.serving.forcefield import CGKDForceField
from openmm_cgkd.serving.network_force import NETWORK_FORCE_NAME, make_network_force
from openmm_cgkd.platforms import default_platform_name
from openmm_cgkd.serving.uncertainty import UncertaintyError, UncertaintyReporter, UncertaintyWarning, fit_threshold
from openmm_cgkd.topology import bead_topology

N_BEADS = 100  # DES composition at the reline density: a 2.08 nm cube, wide enough for a 0.8 nm cutoff


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    cfg = untrained_config("hipnn-ts", cutoff_nm=0.8, embedding_dim=16, num_layers=2, num_rbf=12,
                           activation="softplus")
    ens = build_untrained_bundle(root / "ensemble", cfg, model_kind="ensemble", num_members=4, seed=1)
    student = build_untrained_bundle(root / "student", cfg, model_kind="student", seed=100)
    return load_bundle(ens), load_bundle(student)


@pytest.fixture(scope="module")
def frame():
    from openmm_cgkd.systems import get_system

    names, pos, box = get_system("des").lattice(N_BEADS, seed=2)
    return names, pos, box


def _topology(ff, names, box):
    return bead_topology(names, box, residue_names={b.name: b.residue_name for b in ff.bead_types})


def _network_state(system, positions, platform):
    import openmm
    from openmm import unit

    for i in reversed(range(system.getNumForces())):
        if system.getForce(i).getName() != NETWORK_FORCE_NAME:
            system.removeForce(i)
    props = {"Threads": "1"} if platform == "CPU" else {}
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform), props)
    ctx.setPositions(positions * unit.nanometer)
    st = ctx.getState(getEnergy=True, getForces=True)
    return (st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


@pytest.mark.parametrize("platform,backend", [
    ("CPU", "torchforce"), ("Reference", "torchforce"), ("Reference", "python"),
    pytest.param("CUDA", "torchforce", marks=[pytest.mark.gpu, pytest.mark.skipif(
        default_platform_name() != "CUDA", reason="no CUDA platform / GPU")])])
def test_openmm_serves_the_member_mean(bundles, frame, platform, backend):
    ens, _ = bundles
    ff = CGKDForceField(ens)
    names, pos, box = frame
    top = _topology(ff, names, box)
    types = torch.from_numpy(ff.bead_type_indices(top))
    e_k, _, f_k = ens.module.forward_members(types, torch.from_numpy(pos), torch.from_numpy(box))
    energy, forces = _network_state(ff.create_system(top, box, backend=backend), pos, platform)
    assert energy == pytest.approx(float(e_k.double().mean()), rel=1e-5, abs=1e-4)
    ref = f_k.double().mean(0).numpy()
    assert np.linalg.norm(forces - ref) / np.linalg.norm(ref) < 1e-5
    assert float(f_k.std(0).max()) > 1e-3  # the members differ: a mean, not one member
    # the bundle's own module is untouched (std on, checks on); the served copy computes the mean only
    assert ens.module.with_std and ens.module.check_errors


def test_served_copy_is_mean_only_and_caller_module_unchanged(bundles):
    ens, _ = bundles
    force = make_network_force(ens.module, [0, 1, 2, 2], periodic=True)
    assert force.getName() == NETWORK_FORCE_NAME
    assert ens.module.with_std is True and ens.module.check_errors is True


def _md(student_ff, names, pos, box, steps, reporter):
    from openmm import unit

    top = _topology(student_ff, names, box)
    sim = student_ff.create_simulation(top, pos, temperature=298.1, timestep_fs=1.0, platform="Reference", seed=3)
    sim.minimizeEnergy(maxIterations=50)
    sim.reporters.append(reporter)
    sim.step(steps)
    state = sim.context.getState(getPositions=True, enforcePeriodicBox=True)
    return top, state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)


def test_watch_logs_the_spread_and_warns_above_the_threshold(bundles, frame, tmp_path):
    ens, student = bundles
    names, pos, box = frame
    log = tmp_path / "watch.csv"
    watch = UncertaintyReporter(ens, 5, threshold=1e-6, file=log)  # any spread exceeds it
    with pytest.warns(UncertaintyWarning, match="exceeds the watch threshold"):
        top, final = _md(CGKDForceField(student), names, pos, box, 10, watch)
    watch.close()
    assert [r["step"] for r in watch.records] == [5, 10]
    assert all(r["over_threshold"] for r in watch.records)
    # the last record is the ensemble's spread on the final frame, computed independently
    types = torch.from_numpy(CGKDForceField(ens).bead_type_indices(top))
    f_k = ens.module.forward_members(types, torch.from_numpy(final), torch.from_numpy(box))[2].double().numpy()
    spread = np.sqrt(((f_k - f_k.mean(0)) ** 2).mean(0).sum(-1))
    assert watch.records[-1]["max_spread_kj_mol_nm"] == pytest.approx(spread.max(), rel=1e-4)
    assert watch.records[-1]["mean_spread_kj_mol_nm"] == pytest.approx(spread.mean(), rel=1e-4)
    rows = list(csv.DictReader(open(log)))
    assert [int(r["step"]) for r in rows] == [5, 10] and rows[0]["over_threshold"] == "1"
    assert watch.summary()["first_step_over"] == 5

    quiet = UncertaintyReporter(ens, 5, threshold=1e9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncertaintyWarning)
        _md(CGKDForceField(student), names, pos, box, 5, quiet)
    assert len(quiet.records) == 1 and not quiet.records[0]["over_threshold"]


def test_watch_threshold_from_data_and_clear_errors(bundles, frame):
    ens, student = bundles
    with pytest.raises(UncertaintyError, match="carries no watch threshold"):
        UncertaintyReporter(ens, 10)  # an untrained bundle has none in its manifest
    with pytest.raises(UncertaintyError, match="needs an ensemble bundle"):
        UncertaintyReporter(student, 10, threshold=1.0)
    with pytest.raises(UncertaintyError, match="interval must be >= 1"):
        UncertaintyReporter(ens, 0, threshold=1.0)
    names, pos, box = frame
    ff = CGKDForceField(ens)
    types = ff.bead_type_indices(_topology(ff, names, box))
    rng = np.random.default_rng(0)
    frames = np.stack([pos + rng.normal(0, 0.01, pos.shape) for _ in range(5)])
    masses = ff.masses(types)
    ds = CGDataset(positions=frames, forces=np.zeros_like(frames), boxes=np.repeat(box[None], 5, 0),
                   times=np.arange(5.0), bead_types=types, type_names=ff.type_names, masses=masses)
    fitted = fit_threshold(ens, ds, quantile=0.5)
    f_k = np.stack([ens.module.forward_members(torch.from_numpy(types), torch.from_numpy(f.astype(np.float64)),
                                               torch.from_numpy(box))[2].double().numpy() for f in ds.positions], 1)
    assert fitted["threshold_kj_mol_nm"] == pytest.approx(force_std_threshold(f_k, 0.5)["threshold_kj_mol_nm"],
                                                          rel=1e-6)
    frame_max = bead_force_spread(f_k.std(0)).max(1)
    assert fitted["threshold_kj_mol_nm"] == pytest.approx(float(np.median(frame_max)), rel=1e-6)


def test_simulate_cli_with_the_watch(bundles, frame, tmp_path, capsys):
    from openmm_cgkd.cli.main import main
    from openmm_cgkd.topology import write_bead_pdb

    ens, student = bundles
    names, pos, box = frame
    structure = write_bead_pdb(tmp_path / "start.pdb", _topology(CGKDForceField(student), names, box), pos)
    out = tmp_path / "md"
    with pytest.warns(UncertaintyWarning):
        rc = main(["simulate", "--bundle", str(student.path), "--structure", str(structure), "--out", str(out),
                   "--steps", "10", "--timestep", "1", "--report-interval", "5", "--platform", "CPU", "--threads",
                   "1", "--seed", "1", "--minimize", "--no-progress", "--temperature", "298.1", "--watch", str(ens.path), "--watch-interval",
                   "5", "--watch-threshold", "1e-6"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "uncertainty watch: 2 frames" in text and "2 over the threshold 1e-06" in text
    rows = list(csv.DictReader(open(out / "uncertainty.csv")))
    assert [int(r["step"]) for r in rows] == [5, 10] and all(float(r["max_spread_kj_mol_nm"]) > 0 for r in rows)
