"""A model's phi/psi over replicas (openmm_cgkd.analysis.phipsi): record round trip, and scores,
populations and transitions of synthetic dihedral series whose histograms are known exactly."""
import gzip
import json

import numpy as np
import pytest

from openmm_cgkd.analysis.distributions import AnalysisError
from openmm_cgkd.analysis.phipsi import (MeanSE, PhiPsiSeries, check_spec_beads, model_phi_psi, phi_psi_markdown,
                                         reference_block_ps, reference_phi_psi, trajectory_phi_psi)
from openmm_cgkd.analysis.ramachandran import RamachandranSpec
from openmm_cgkd.analysis.records import read_record, write_record

SPEC = RamachandranSpec.from_dict({
    "phi": [0, 1, 2, 3], "psi": [1, 2, 3, 4], "bin_deg": 90.0,
    "basins": [{"key": "a", "name": "A", "region": [{"phi": [-180, 0], "psi": [-180, 180]}]},
               {"key": "b", "name": "B", "region": [{"phi": [0, 180], "psi": [-180, 180]}]}]})

A = (-135.0, -135.0)  # the middle of a bin in basin a
B = (45.0, 135.0)  # the middle of a bin in basin b


def _series(states: str, interval_ps: float = 1.0) -> PhiPsiSeries:
    """One frame per letter: "a" at point A, "b" at point B."""
    pts = np.array([A if c == "a" else B for c in states])
    return PhiPsiSeries(pts[:, 0], pts[:, 1], 0.0, interval_ps)


def test_record_round_trip_keeps_bins_and_is_small(tmp_path):
    rng = np.random.default_rng(0)
    phi = rng.uniform(-180, 180, 5000)
    phi[:4] = [179.96, -180.0, -0.04, 89.99]  # next to bin edges: each stays in its bin
    psi = rng.uniform(-180, 180, 5000)
    s = PhiPsiSeries(phi, psi, 100.0, 1.0)
    back = PhiPsiSeries.from_record(json.loads(json.dumps(s.to_record())))
    assert np.max(np.abs((back.phi - phi + 180) % 360 - 180)) <= 0.05 + 1e-9
    edges = np.arange(-180, 181, 10.0)
    assert np.array_equal(np.digitize(back.phi, edges), np.digitize(phi, edges))
    assert back.start_ps == 100.0 and back.interval_ps == 1.0 and back.span_ps == 5000.0
    path = write_record(tmp_path / "r.json.gz", {"phi_psi": s.to_record()})
    assert path.stat().st_size < 30_000  # the brief: records stay around 100 kB at most
    assert read_record(path)["phi_psi"] == json.loads(gzip.open(path).read())["phi_psi"]


def test_scores_populations_and_transitions_of_known_histograms():
    # reference: half a, half b, 10 visits each (40 frames, transitions every 2 frames)
    ref_s = _series("aabb" * 10)
    ref = reference_phi_psi(ref_s.phi, ref_s.psi, ref_s.times_ps, SPEC, replica_ps=10.0)
    assert ref.populations["a"].fraction == pytest.approx(0.5)
    # replica 1: 3/4 a; replica 2: 1/4 a (each 8 frames)
    reps = {"r0": _series("aaabaaab"), "r1": _series("abbbbabb")}
    m = model_phi_psi("model", reps, ref, SPEC)
    # each replica: p = (3/4, 1/4) or (1/4, 3/4) against q = (1/2, 1/2): TAE = 1/2
    assert m.tae.mean == pytest.approx(0.5) and m.tae.se == pytest.approx(0.0) and m.tae.n == 2
    js = 0.5 * (0.75 * np.log(0.75 / 0.625) + 0.25 * np.log(0.25 / 0.375)) \
        + 0.5 * (0.5 * np.log(0.5 / 0.625) + 0.5 * np.log(0.5 / 0.375))
    assert m.js.mean == pytest.approx(js, rel=1e-12)
    # population of a: mean (3/4 + 1/4)/2 = 1/2, SE = std([.75, .25], ddof=1)/sqrt(2) = 0.25
    assert m.populations["a"].fraction == pytest.approx(0.5) and m.populations["a"].se == pytest.approx(0.25)
    d = m.differences["a"]
    assert d.difference == pytest.approx(0.0) and d.free_energy_difference_kT == pytest.approx(0.0)
    # transitions: r0 a->b->a->b (3 in 8 ps), r1 a->b->a->b (3 in 8 ps): 375 per ns
    assert [r.transitions for r in m.replicas] == [3, 3]
    assert m.transitions_per_ns.mean == pytest.approx(375.0)
    assert m.fes.n_samples == 16 and m.fes.counts.sum() == 16
    assert m.fes.counts[0, 0] == 8 and m.fes.counts[2, 3] == 8  # A -> bin (0, 0); B -> bin (2, 3)
    text = "\n".join(phi_psi_markdown({"model": m.to_dict()}, ref.to_dict(), [b.to_dict() for b in SPEC.basins]))
    assert "| AA reference |" in text and "| model | 2 | " in text and "0.500 +- 0.250 (+0.0, +0.00)" in text


def test_identical_replica_scores_zero_and_one_replica_uses_blocks():
    ref_s = _series("ab" * 20)
    ref = reference_phi_psi(ref_s.phi, ref_s.psi, ref_s.times_ps, SPEC, replica_ps=8.0)
    m = model_phi_psi("same", {"r0": _series("ab" * 4)}, ref, SPEC)
    assert m.js.mean == pytest.approx(0.0, abs=1e-12) and m.tae.mean == pytest.approx(0.0, abs=1e-12)
    assert m.js.se is None and MeanSE.of([1.0]).text() == "1.000"
    assert m.populations["a"].se == pytest.approx(0.0) and m.populations["a"].n_blocks == 4


def test_reference_block_length_and_errors():
    assert reference_block_ps(100_000.0, 5000.0) == 5000.0
    assert reference_block_ps(10_000.0, 5000.0) == 2500.0
    with pytest.raises(AnalysisError, match="at least 4"):
        reference_phi_psi([0.0], [0.0], [0.0], SPEC, 1.0)
    with pytest.raises(AnalysisError, match="no replica"):
        model_phi_psi("m", {}, None, SPEC)
    with pytest.raises(AnalysisError, match=r"beads \[4\].*4 beads"):
        check_spec_beads(SPEC, 4, "the dataset")
    with pytest.raises(AnalysisError, match="one length"):
        PhiPsiSeries(np.zeros(3), np.zeros(2), 0.0, 1.0)


def test_trajectory_angles_match_an_analytic_dihedral():
    import mdtraj as md

    from openmm_cgkd.analysis.ramachandran import compute_dihedrals

    top = md.Topology()
    ch = top.add_chain()
    for i in range(5):
        top.add_atom(f"B{i}", md.element.carbon, top.add_residue("B", ch))
    # beads 0-1-2-3: the planes (x, z) and (z, 60 degrees from x): dihedral +60 (IUPAC)
    x = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0],
                  [np.cos(np.pi / 3), np.sin(np.pi / 3), 1.0], [0.3, -0.8, 1.7]]) * 0.15
    traj = md.Trajectory(x[None], top)
    got = trajectory_phi_psi(traj, SPEC, 2.0, start_ps=10.0)
    assert got.phi[0] == pytest.approx(60.0, abs=1e-4)
    assert got.psi[0] == pytest.approx(compute_dihedrals(x[None], [[1, 2, 3, 4]])[0, 0], abs=1e-4)
    assert got.interval_ps == 2.0 and got.times_ps.tolist() == [10.0]
    with pytest.raises(AnalysisError, match="beads"):
        trajectory_phi_psi(md.Trajectory(x[None, :4], top.subset([0, 1, 2, 3])), SPEC, 1.0)
