"""A blow-up between report steps stops with one diagnosis (step, beads, closest pair, likely
cause), the files stay readable and run.json records the failure; an absurd start is warned."""
import json

import numpy as np
import pytest

from openmm_cgkd.md.blowup import BlowUpError, closest_pair
from openmm_cgkd.md.simulation import SimulationError, read_log


# ---- each cause gets a case that produces it; the diagnosis names it and no other (issue 24)
CAUSES = {"overlap": "overlapping beads", "far too large": "is far too large: in one step the lightest bead",
          "too large": "is too large", "pulled": "a pair pulled into its repulsive wall",
          "diverged": "the network's forces diverged"}


def _only(cause: str, expected: str) -> None:
    """``cause`` names the ``expected`` cause and none of the others."""
    assert CAUSES[expected] in cause, cause
    others = [k for k, text in CAUSES.items() if k != expected and text in cause
              and not (expected == "far too large" and k == "too large")]
    assert not others, (others, cause)


@pytest.fixture(scope="module")
def ff(tmp_path_factory):
    from openmm_cgkd.bundle import build_untrained_bundle, untrained_config
    from openmm_cgkd.serving.forcefield import CGKDForceField

    cfg = untrained_config(cutoff_nm=0.6, embedding_dim=8, num_layers=1, num_rbf=4, rbf_type="gauss",
                           max_num_neighbors=48)
    return CGKDForceField(build_untrained_bundle(tmp_path_factory.mktemp("b") / "tiny", cfg))


def _system(ff, timestep_fs=2.0, overlap=False, pair_nm=None):
    from openmm_cgkd.topology import bead_topology_from_counts

    L = 1.5
    g = (np.arange(3) + 0.5) * L / 3
    pos = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    pos += np.random.default_rng(0).uniform(-0.05, 0.05, pos.shape)
    if overlap:
        pos[1] = pos[0] + [0.02, 0.0, 0.0]  # two Cho beads 0.02 nm apart
    if pair_nm is not None:
        pos[1] = pos[0] + [0.0, 0.0, pair_nm]  # along z: towards where bead 1 sits in the grid
    top = bead_topology_from_counts({"Cho": 7, "Cl": 7, "Urea": 13}, np.eye(3) * L)
    return ff.create_simulation(top, pos, temperature=298.1, timestep_fs=timestep_fs, platform="CPU", threads=1,
                                seed=1)


def test_closest_pair_matches_brute_force():
    rng = np.random.default_rng(2)
    box = np.array([[1.9, 0, 0], [0.4, 2.0, 0], [0.2, -0.6, 2.1]])
    x = rng.uniform(0, 1, (30, 3)) @ box
    best = (np.inf, None)
    for i in range(30):
        for j in range(i + 1, 30):
            for a in (-1, 0, 1):
                for b in (-1, 0, 1):
                    for c in (-1, 0, 1):
                        d = np.linalg.norm(x[j] + np.array([a, b, c]) @ box - x[i])
                        best = min(best, (d, (i, j)))
    i, j, d = closest_pair(x, box, chunk=7)
    assert d == pytest.approx(best[0], rel=1e-9) and tuple(sorted((i, j))) == best[1]


def test_overlapping_beads_diagnosed_between_report_steps(ff, tmp_path, capsys):
    import mdtraj as md

    from openmm_cgkd.md.simulation import run_simulation

    out = tmp_path / "run"
    sim = _system(ff, overlap=True)
    with pytest.raises(BlowUpError) as info:
        run_simulation(sim, 200, out, report_interval=50, progress=False)
    assert isinstance(info.value, SimulationError)
    err = capsys.readouterr().err
    assert "warning: the potential energy at the start is" in err and "bead 0 (CHO) and bead 1 (CHO)" in err
    diag = info.value.diagnosis
    assert diag["failed_at_step"] is not None and 0 < diag["failed_at_step"] < 50  # not a report step
    assert sorted(diag["closest_pair"]["beads"]) == [0, 1]
    assert diag["closest_pair"]["distance_nm"] == pytest.approx(0.02, abs=0.01)
    assert "overlapping beads" in diag["likely_cause"] and "smaller time step will not help" in diag["likely_cause"]
    _only(diag["likely_cause"], "overlap")
    msg = str(info.value)
    assert f"blew up at step {diag['failed_at_step']}" in msg and "Closest pair: bead 0 (CHO) and bead 1" in msg
    # everything written so far is readable; run.json records the failure
    meta = json.loads((out / "run.json").read_text())
    assert meta["failed"] is True and meta["diagnosis"]["failed_at_step"] == diag["failed_at_step"]
    assert "overlapping beads" in meta["error"]
    assert read_log(out / "log.csv")["step"] == [0]
    assert md.load(str(out / "trajectory.dcd"), top=str(out / "last_sane.pdb")).n_frames == 1


def test_too_large_a_time_step_is_named(ff, tmp_path):
    from openmm_cgkd.md.simulation import run_simulation

    with pytest.raises(BlowUpError) as info:
        run_simulation(_system(ff, timestep_fs=60.0), 400, tmp_path / "run", report_interval=100, progress=False)
    cause = info.value.diagnosis["likely_cause"]
    assert "time step (60 fs) is too large" in cause and "smaller --timestep" in cause
    _only(cause, "too large")


def test_wall_energy_of_a_pair_matches_the_wall_parameters(ff):
    from openmm_cgkd.md.blowup import pair_wall_energy

    sim = _system(ff)
    wall = ff.bundle.manifest.wall
    types = [0] * 7 + [1] * 7 + [2] * 13  # Cho, Cl, Urea as bead_topology_from_counts orders them
    for i, j in ((0, 1), (0, 8), (8, 20), (20, 21)):
        for r in (0.22, 0.26, 0.3, wall.cutoff_nm + 0.01):
            expected = float(wall.pair_energy(r, types[i], types[j]))
            assert pair_wall_energy(sim.system, i, j, r) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_a_pair_pulled_into_the_wall_is_not_blamed_on_the_time_step(ff, tmp_path):
    """A force that pulls two beads together harder than the wall pushes them apart (what a hole
    in a learned potential does) blows the run up at any step: the diagnosis says so."""
    import openmm

    from openmm_cgkd.md.simulation import run_simulation

    sim = _system(ff, pair_nm=0.42)  # outside the wall (it starts at ~0.3 nm)
    pull = openmm.CustomBondForce("-0.5 * exp(-100 * (r - 0.45))")  # kJ/mol; 50 kJ/mol/nm at 0.45 nm
    pull.setUsesPeriodicBoundaryConditions(True)
    pull.addBond(0, 1, [])
    sim.system.addForce(pull)
    sim.context.reinitialize(preserveState=True)
    with pytest.raises(BlowUpError) as info:
        run_simulation(sim, 400, tmp_path / "run", report_interval=100, progress=False)
    diag = info.value.diagnosis
    assert sorted(diag["closest_pair"]["beads"]) == [0, 1]
    assert diag["smaller_step_replay_passes"] is False and diag["closest_pair_wall_energy_kj_mol"] > 50
    cause = diag["likely_cause"]
    assert cause.startswith("a pair pulled into its repulsive wall") and "smaller time step will not help" in cause
    assert "overlapping" not in cause and "--timestep" not in cause
    _only(cause, "pulled")


def test_a_sane_start_runs_without_warning(ff, tmp_path, capsys):
    from openmm_cgkd.md.simulation import run_simulation

    res = run_simulation(_system(ff), 10, tmp_path / "run", report_interval=5, progress=False)
    assert res.steps_run == 10
    assert "warning" not in capsys.readouterr().err
    assert "failed" not in json.loads((tmp_path / "run" / "run.json").read_text())


def test_checkpoint_interval_must_be_positive(ff, tmp_path):
    from openmm_cgkd.md.simulation import run_simulation

    with pytest.raises(SimulationError, match="checkpoint interval must be >= 1"):
        run_simulation(_system(ff), 10, tmp_path / "run", checkpoint_interval=-5, progress=False)


def test_coincident_beads_are_overlapping_beads_not_a_time_step(ff, tmp_path, capsys):
    """Two beads 0.001 nm apart, all but at one position (the API refuses coincident beads at
    create_simulation, so they are set on the context; at exactly 0 nm the energy is already NaN
    at step 0): once diagnosed as 'try a smaller time step'."""
    from openmm import unit

    from openmm_cgkd.md.simulation import run_simulation

    sim = _system(ff)
    pos = sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    pos[1] = pos[0] + [0.001, 0.0, 0.0]
    sim.context.setPositions(pos * unit.nanometer)
    with pytest.raises(BlowUpError) as info:
        run_simulation(sim, 200, tmp_path / "run", report_interval=50, progress=False)
    diag = info.value.diagnosis
    assert sorted(diag["closest_pair"]["beads"]) == [0, 1] and diag["closest_pair"]["distance_nm"] < 0.05
    cause = diag["likely_cause"]
    _only(cause, "overlap")
    assert "smaller time step will not help" in cause and "--timestep" not in cause
    assert "--minimize" in cause  # not minimised: minimising is the advice


def test_a_150_fs_step_is_far_too_large_not_a_pulled_pair(ff, tmp_path):
    """A 150 fs step: once diagnosed as 'the network drives the pair together'."""
    from openmm_cgkd.md.simulation import run_simulation

    with pytest.raises(BlowUpError) as info:
        run_simulation(_system(ff, timestep_fs=150.0), 400, tmp_path / "run", report_interval=100, progress=False)
    diag = info.value.diagnosis
    cause = diag["likely_cause"]
    _only(cause, "far too large")
    assert "(150 fs)" in cause and "smaller --timestep" in cause
    assert diag["thermal_step_nm"] > 0.05 * diag["median_nearest_neighbor_nm"]


def test_no_advice_to_minimise_after_minimising(ff, tmp_path, capsys):
    """A start that was minimised (``minimized=True``, as `cgkd simulate --minimize` passes it) and
    still overlaps: neither the start warning nor the diagnosis advises --minimize."""
    from openmm_cgkd.md.simulation import run_simulation

    with pytest.raises(BlowUpError) as info:
        run_simulation(_system(ff, overlap=True), 200, tmp_path / "run", report_interval=50, progress=False,
                       minimized=True)
    err = capsys.readouterr().err
    assert "warning: the potential energy at the start is" in err  # the start is still absurd
    assert "the start was minimised" in err
    cause = info.value.diagnosis["likely_cause"]
    _only(cause, "overlap")
    assert "the start was minimised" in cause
    for text in (err, cause, str(info.value)):
        assert "--minimize" not in text and "minimizeEnergy" not in text and "minimise the start" not in text
