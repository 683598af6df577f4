"""Replicas analysed one by one and kept as compact records give the same report as all replicas
analysed at once; a failed replica is counted, not scored."""
import numpy as np
import pytest

from openmm_cgkd.analysis import make_trajectory
from openmm_cgkd.analysis.records import (failed_replica, read_record, replica_from_record, replica_to_record,
                                          report_from_replicas, write_record)
from openmm_cgkd.analysis.report import AnalysisSettings, analyze_model, summary_markdown

L = 2.2
TYPES = ["A"] * 14 + ["B"] * 10


def _liquid(seed: int, n_frames: int, spacing_noise: float):
    """A jittered lattice (beads not overlapping), different per seed: a liquid-like test structure."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)[:len(TYPES)] * (L / 3)
    xyz = grid[None] + rng.normal(0, spacing_noise, (n_frames, len(TYPES), 3))
    times = np.arange(n_frames) * 1.0
    return make_trajectory(xyz % L, TYPES, np.eye(3) * L, times)


@pytest.fixture(scope="module")
def setup():
    settings = AnalysisSettings(n_blocks=2, discard_frames=2, adf_cutoffs=(0.9,), rdf_bin_width=0.02,
                                cdf_bin_width=0.02, adf_bin_width=6.0)
    reference = _liquid(0, 24, 0.12)
    replicas = [_liquid(1, 12, 0.10), _liquid(2, 12, 0.15), _liquid(3, 12, 0.13)]
    energies = [np.random.default_rng(10 + i).normal(0, 1, 12) for i in range(3)]
    return settings, reference, replicas, energies


def test_records_rebuild_the_report_of_all_replicas_at_once(setup, tmp_path):
    settings, reference, replicas, energies = setup
    whole = analyze_model(replicas, reference, energies=energies, settings=settings, name="m")
    records = []
    for i, (traj, e) in enumerate(zip(replicas, energies)):
        one = analyze_model([traj], reference, energies=[e], settings=settings, name="m")
        path = write_record(tmp_path / f"r{i}.json.gz", replica_to_record(one.replicas[0]))
        assert path.read_bytes() == write_record(tmp_path / "again.json.gz", replica_to_record(one.replicas[0])).read_bytes()
        records.append(read_record(path))
    rebuilt = report_from_replicas("m", settings, "ref", one.reference, [replica_from_record(r) for r in records])
    for key, stat in whole.summary.items():
        assert rebuilt.summary[key].mean == pytest.approx(stat.mean, rel=1e-5)  # stored with 6 digits
        assert rebuilt.summary[key].std == pytest.approx(stat.std, rel=1e-4, abs=1e-6)
    for kind in ("rdf", "adf", "cdf"):
        for key, curve in whole.mean[kind].items():
            np.testing.assert_allclose(rebuilt.mean[kind][key].values, curve.values, rtol=1e-5, atol=1e-9)
            np.testing.assert_allclose(rebuilt.mean[kind][key].std, curve.std, rtol=1e-4, atol=1e-7)
    for a, b in zip(whole.replicas, rebuilt.replicas):
        assert (b.start_frame, b.stop_frame) == (a.start_frame, a.stop_frame) == (2, 12)
        assert b.equilibration.t0_index == a.equilibration.t0_index
        assert b.equilibrated_within_discard == a.equilibrated_within_discard
        assert {s: d.relative_change for s, d in b.stability.drift.items()} == pytest.approx(
            {s: d.relative_change for s, d in a.stability.drift.items()}, rel=1e-5)
        assert len(b.stability.blocks) == len(a.stability.blocks) == 2
        np.testing.assert_allclose(b.energy_series[1], a.energy_series[1], rtol=1e-5)
    assert rebuilt.stable == whole.stable


def test_a_failed_replica_is_counted_not_scored(setup, tmp_path):
    settings, reference, replicas, energies = setup
    one = analyze_model([replicas[0]], reference, energies=[energies[0]], settings=settings, name="m")
    good = replica_from_record(read_record(write_record(tmp_path / "g.json.gz", replica_to_record(one.replicas[0]))))
    bad = failed_replica("replica_01", "MD stopped at step 120: the time step (50 fs) is too large", 7, 2)
    bad = replica_from_record(read_record(write_record(tmp_path / "b.json.gz", replica_to_record(bad))))
    report = report_from_replicas("m", settings, "ref", one.reference, [good, bad])
    assert report.n_failed == 1 and not report.stable
    for key, stat in one.summary.items():  # the TAEs are those of the replica that ran
        assert report.summary[key].mean == pytest.approx(stat.mean) and report.summary[key].n == 1
    text = summary_markdown(report)
    assert "**1 of 2 replicas failed**" in text and "the time step (50 fs) is too large" in text

    all_failed = report_from_replicas("m", settings, "ref", {}, [bad])
    assert all_failed.n_failed == 1 and np.isnan(all_failed.summary["rdf"].mean)
    assert "**1 of 1 replicas failed**" in summary_markdown(all_failed)
    with pytest.raises(Exception, match="reason"):
        failed_replica("x", "")
