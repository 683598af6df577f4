"""Equilibration detection (pymbar, Chodera 2016) and energy logs."""
import numpy as np
import pytest

from openmm_cgkd.analysis import (AnalysisError, EquilibrationResult, detect_equilibration, frames_to_discard,
                                  read_energy_log)


def _relaxing_series(seed, n=1500, tau=60.0, amplitude=40.0):
    """Exponential relaxation (time constant ``tau`` samples) on correlated AR(1) noise of std ~1.7."""
    rng = np.random.default_rng(seed)
    noise = np.zeros(n)
    for i in range(1, n):
        noise[i] = 0.8 * noise[i - 1] + rng.normal()
    return amplitude * np.exp(-np.arange(n) / tau) + noise


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_finds_the_end_of_a_relaxing_series(seed):
    e = _relaxing_series(seed)
    res = detect_equilibration(e, times=np.arange(len(e)) * 0.5)
    # The relaxation falls to the noise level (40 exp(-t/60) = 1.7) near sample 190.
    assert 120 <= res.t0_index <= 600
    assert abs(e[res.t0_index:].mean()) < 0.5  # what is kept is stationary around 0
    assert e[:res.t0_index].mean() > 3.0  # what is discarded is the relaxation
    assert res.t0_time == pytest.approx(0.5 * res.t0_index)
    assert res.statistical_inefficiency > 1 and 0 < res.n_effective < len(e)
    assert res.fraction == pytest.approx(res.t0_index / len(e))


def test_stationary_series_keeps_nearly_everything():
    e = _relaxing_series(3, amplitude=0.0)
    assert detect_equilibration(e).fraction < 0.1
    assert detect_equilibration(np.full(10, 5.0)).t0_index == 0
    with pytest.raises(AnalysisError, match="NaN"):
        detect_equilibration(np.array([1.0, np.nan, 2.0, 3.0]))


def test_frames_to_discard_maps_by_fraction_of_the_run():
    res = EquilibrationResult(t0_index=250, n_samples=1000, statistical_inefficiency=2.0, n_effective=100.0)
    assert frames_to_discard(res, 100) == 25
    assert frames_to_discard(res, 10) == 3  # rounds up: never keep a frame from before t0
    assert frames_to_discard(EquilibrationResult(0, 10, 1.0, 10.0), 50) == 0


def test_reads_openmm_state_data_reporter_csv(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text('#"Step","Time (ps)","Potential Energy (kJ/mole)","Temperature (K)","Speed (ns/day)"\n'
                   "100,0.2,-1500.5,290.1,0\n200,0.4,-1510.25,297.0,12.5\n300,0.6,-1512.0,298.3,12.6\n")
    times, energies = read_energy_log(log)
    np.testing.assert_allclose(times, [0.2, 0.4, 0.6])
    np.testing.assert_allclose(energies, [-1500.5, -1510.25, -1512.0])
    plain = tmp_path / "plain.csv"
    plain.write_text("step,potential_energy_kj_mol\n0,1.0\n1,2.0\n")
    times, energies = read_energy_log(plain)
    assert times is None and energies.tolist() == [1.0, 2.0]
    bad = tmp_path / "bad.csv"
    bad.write_text("step,kinetic\n0,1\n")
    with pytest.raises(AnalysisError, match="potential"):
        read_energy_log(bad)
    with pytest.raises(AnalysisError, match="not found"):
        read_energy_log(tmp_path / "missing.csv")
