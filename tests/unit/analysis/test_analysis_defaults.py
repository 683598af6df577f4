"""Analysis defaults taken from the data (issue 22, point 4): ADF cutoffs from each system's g(r),
the temperature and energy drift in the stability verdict, noise-floor blocks sized in ps."""
import json

import numpy as np
import pytest

from openmm_cgkd.analysis import AnalysisError, AnalysisSettings, make_trajectory
from openmm_cgkd.analysis.adf import adf_cutoffs_from_rdfs
from openmm_cgkd.analysis.distributions import Distribution
from openmm_cgkd.analysis.noise import noise_floor
from openmm_cgkd.analysis.rdf import first_shell_cutoff
from openmm_cgkd.analysis.stability import thermal_check

KB = 0.00831446261815324  # kJ/mol/K


def _g(r_min_nm: float, peak_nm: float = 0.28, bin_nm: float = 0.005, r_max: float = 1.2) -> Distribution:
    """An analytic g(r): zero core, a first peak at ``peak_nm``, a minimum at ``r_min_nm``, a
    second, smaller peak, then 1."""
    edges = np.arange(0.0, r_max + 1e-9, bin_nm)
    r = 0.5 * (edges[1:] + edges[:-1])
    g = np.where(r < 0.22, 0.0, 1.0 + 1.8 * np.exp(-((r - peak_nm) / 0.03) ** 2)
                 - 0.6 * np.exp(-((r - r_min_nm) / 0.04) ** 2) + 0.2 * np.exp(-((r - 0.45) / 0.03) ** 2))
    return Distribution("rdf", "A-A", edges, g)


def test_the_first_shell_ends_at_the_first_minimum_after_the_first_peak():
    g = _g(0.34)
    expected = float(g.edges[:-1][np.argmin(np.where((g.edges[:-1] > 0.3) & (g.edges[:-1] < 0.42), g.values, 9))])
    assert first_shell_cutoff(g) == pytest.approx(expected, abs=0.011)
    flat = Distribution("rdf", "B-B", g.edges, np.ones(len(g.values)) * 0.9)  # no peak above 1
    assert first_shell_cutoff(flat) is None
    assert adf_cutoffs_from_rdfs({"A-A": _g(0.34), "A-B": _g(0.52, peak_nm=0.44), "B-B": flat}) == (
        round(first_shell_cutoff(_g(0.34)), 2), round(first_shell_cutoff(_g(0.52, peak_nm=0.44)), 2))
    with pytest.raises(AnalysisError, match="give the ADF cutoffs"):
        adf_cutoffs_from_rdfs({"B-B": flat})


def test_analysis_settings_take_the_reference_first_shell():
    """A lattice-like liquid: beads on a jittered cubic lattice of 0.5 nm; the first shell (6
    neighbours at 0.5 nm) ends before the second (0.71 nm), so the cutoff lies between them, not
    at any DES shell."""
    rng = np.random.default_rng(0)
    grid = (np.stack(np.meshgrid(*[np.arange(6)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) * 0.5
    xyz = grid[None] + rng.normal(0, 0.03, (20, len(grid), 3))
    traj = make_trajectory(xyz, ["A"] * len(grid), np.eye(3) * 3.0)
    s = AnalysisSettings().with_adf_cutoffs(traj)
    assert len(s.adf_cutoffs) == 1 and 0.52 < s.adf_cutoffs[0] < 0.70
    assert AnalysisSettings(adf_cutoffs=(0.6,)).with_adf_cutoffs(traj).adf_cutoffs == (0.6,)


def _log(path, temps, total, dt_ps=0.1, thermostat=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["step,time_ps,potential_kj_mol,kinetic_kj_mol,total_kj_mol,temperature_k,speed_ns_day"]
    for i, (t, e) in enumerate(zip(temps, total)):
        rows.append(f"{i * 50},{i * dt_ps:.3f},{e - 1.0:.4f},1.0,{e:.4f},{t:.3f},nan")
    path.write_text("\n".join(rows) + "\n")
    if thermostat is not None:
        (path.parent / "fingerprint.json").write_text(json.dumps({"settings": {"temperature_K": thermostat}}))
    return path


def test_a_run_that_heats_under_its_thermostat_is_not_stable(tmp_path):
    n_beads, rng = 200, np.random.default_rng(1)
    n = 200
    # stationary: 300 K +- 2 %, total energy fluctuating around a constant
    steady = _log(tmp_path / "a" / "log.csv", 300 + rng.normal(0, 6, n), 1000 + rng.normal(0, 20, n), thermostat=300.0)
    ok = thermal_check(steady, n_beads)
    assert ok.target_temperature_K == 300.0 and ok.temperature_ok and ok.drift_ok and ok.ok
    # heating from 300 to 365 K: the kinetic energy alone grows by 1.5 N k dT
    temps = np.linspace(300, 365, n) + rng.normal(0, 6, n)
    total = 1000 + 1.5 * n_beads * KB * (temps - 300) * 2 + rng.normal(0, 20, n)
    hot = thermal_check(_log(tmp_path / "b" / "log.csv", temps, total, thermostat=300.0), n_beads)
    assert not hot.temperature_ok and not hot.drift_ok and not hot.ok
    assert hot.energy_drift_kT_per_bead == pytest.approx(
        (total[-1] - total[0]) / (n_beads * KB * 300), rel=0.2)  # the fitted change, checked against the ends
    # without a known thermostat the temperature is not judged, the drift still is
    blind = thermal_check(_log(tmp_path / "c" / "log.csv", temps, total), n_beads)
    assert blind.temperature_ok is None and not blind.ok
    assert thermal_check(_log(tmp_path / "c" / "log.csv", temps, total), n_beads, target_K=330.0).target_temperature_K == 330.0


def test_the_verdict_of_analyze_includes_the_temperature(tmp_path):
    """A structurally fine trajectory (the reference's own frames) whose log heats is NOT stable."""
    from openmm_cgkd.analysis.report import analyze_model

    rng = np.random.default_rng(2)
    xyz = rng.random((30, 40, 3)) * 3.0
    ref = make_trajectory(xyz, ["A"] * 40, np.eye(3) * 3.0, times=np.arange(30) * 0.5)
    traj = make_trajectory(xyz[::-1], ["A"] * 40, np.eye(3) * 3.0, times=np.arange(30) * 0.5)
    temps = np.linspace(300, 365, 30)
    log = _log(tmp_path / "md" / "log.csv", temps, 500 + 1.5 * 40 * KB * (temps - 300) * 2, thermostat=300.0)
    s = AnalysisSettings(adf_cutoffs=(0.9,), n_blocks=2)
    hot = analyze_model([traj], ref, energies=[log], settings=s)
    assert not hot.stable and hot.replicas[0].stability.thermal.mean_temperature_K > 330
    assert analyze_model([traj], ref, settings=s).stable  # the same frames without the log


def test_noise_floor_blocks_in_ps():
    """Blocks sized in time: the reference's frames every 0.5 ps, blocks of 5 ps = 10 frames."""
    rng = np.random.default_rng(3)
    ref = make_trajectory(rng.random((60, 40, 3)) * 3.0, ["A"] * 40, np.eye(3) * 3.0, times=np.arange(60) * 0.5)
    s = AnalysisSettings(adf_cutoffs=(0.9,))
    floor = noise_floor(ref, settings=s, block_ps=5.0)
    assert floor.block_frames == 10 and floor.block_ps == 5.0 and floor.n_blocks == 6
    assert floor.summary["rdf"].mean == pytest.approx(noise_floor(ref, 10, s).summary["rdf"].mean)
    with pytest.raises(AnalysisError, match="in frames or in ps"):
        noise_floor(ref, 10, s, block_ps=5.0)
