"""phi/psi analysis: dihedrals against mdtraj, the FES of a known distribution, basin populations
and block errors against known values, core-based transitions, the JS/TAE score and its floor."""
from pathlib import Path

import numpy as np
import pytest

from openmm_cgkd.analysis import AnalysisError
from openmm_cgkd.analysis.ramachandran import (AngleBox, Basin, RamachandranSpec, assign_regions, basin_populations,
                                               basin_transitions, block_average, compute_dihedrals, fes_noise_floor,
                                               fes_score, free_energy_surface, jensen_shannon, phi_psi)
from openmm_cgkd.config import ConfigError

ROOT = Path(__file__).resolve().parents[3]
SPEC = ROOT / "systems" / "dipeptide" / "ramachandran.yaml"


def _basins():
    return RamachandranSpec.from_yaml(SPEC).basins


def test_dihedrals_match_mdtraj():
    import mdtraj as md

    rng = np.random.default_rng(1)
    xyz = rng.normal(0.0, 0.3, (50, 6, 3)).astype(np.float32)  # mdtraj computes in float32
    quads = np.array([[0, 1, 2, 4], [1, 2, 4, 5], [3, 2, 1, 0]])
    top = md.Topology()
    chain = top.add_chain()
    for i in range(6):
        top.add_atom(f"B{i}", md.element.carbon, top.add_residue("BEA", chain))
    ref = np.degrees(md.compute_dihedrals(md.Trajectory(xyz, top), quads, periodic=False))
    got = compute_dihedrals(xyz, quads)
    assert got.shape == (50, 3)
    diff = (got - ref + 180.0) % 360.0 - 180.0  # +-180 are one angle
    assert np.abs(diff).max() < 2e-3
    assert got.min() >= -180.0 and got.max() < 180.0


def test_dihedral_of_a_built_geometry():
    """A quadruple built with a chosen dihedral gives it back, with the IUPAC sign."""
    for target in (-120.0, -60.0, 0.0, 75.0, 150.0):
        t = np.radians(target)
        x = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [np.cos(t), 1.0, -np.sin(t)]]) * 0.15
        assert compute_dihedrals(x[None], [[0, 1, 2, 3]])[0, 0] == pytest.approx(target, abs=1e-9)


def test_phi_psi_use_the_spec_indices():
    spec = RamachandranSpec.from_yaml(SPEC)
    assert spec.phi == [0, 1, 2, 4] and spec.psi == [1, 2, 4, 5]
    xyz = np.random.default_rng(2).normal(0, 0.2, (7, 6, 3))
    phi, psi = phi_psi(xyz, spec)
    np.testing.assert_allclose(phi, compute_dihedrals(xyz, [[0, 1, 2, 4]])[:, 0])
    np.testing.assert_allclose(psi, compute_dihedrals(xyz, [[1, 2, 4, 5]])[:, 0])
    with pytest.raises(AnalysisError, match="outside"):
        compute_dihedrals(xyz[:, :4], [[0, 1, 2, 4]])


# --------------------------------------------------------------------------- FES and score

MIX = [(0.6, -80.0, 70.0, 4.0, 3.0), (0.3, -70.0, -40.0, 6.0, 6.0), (0.1, 60.0, 40.0, 8.0, 5.0)]  # w, mu, kappa


def _sample_mixture(n, rng, shift=0.0):
    comp = rng.choice(len(MIX), size=n, p=[m[0] for m in MIX])
    phi, psi = np.empty(n), np.empty(n)
    for k, (_, mphi, mpsi, kphi, kpsi) in enumerate(MIX):
        sel = comp == k
        phi[sel] = np.degrees(rng.vonmises(np.radians(mphi + shift), kphi, sel.sum()))
        psi[sel] = np.degrees(rng.vonmises(np.radians(mpsi), kpsi, sel.sum()))
    return phi, psi


def _mixture_bin_probabilities(edges):
    """Exact probability per bin: the density integrated on a fine grid inside each bin."""
    from scipy.special import i0

    sub = 20
    fine = np.linspace(-180, 180, (len(edges) - 1) * sub + 1)
    mid = np.radians(0.5 * (fine[1:] + fine[:-1]))
    dens = np.zeros((mid.size, mid.size))
    for w, mphi, mpsi, kphi, kpsi in MIX:
        a = np.exp(kphi * np.cos(mid - np.radians(mphi))) / (2 * np.pi * i0(kphi))
        b = np.exp(kpsi * np.cos(mid - np.radians(mpsi))) / (2 * np.pi * i0(kpsi))
        dens += w * np.outer(a, b)
    cell = (2 * np.pi / mid.size) ** 2
    n = len(edges) - 1
    return (dens * cell).reshape(n, sub, n, sub).sum(axis=(1, 3))


def test_fes_recovers_a_von_mises_mixture():
    rng = np.random.default_rng(3)
    phi, psi = _sample_mixture(400_000, rng)
    fes = free_energy_surface(phi, psi, bin_deg=10.0)
    assert fes.counts.shape == (36, 36) and fes.n_samples == 400_000
    assert fes.probability.sum() == pytest.approx(1.0)
    exact = _mixture_bin_probabilities(fes.phi_edges)
    assert exact.sum() == pytest.approx(1.0, abs=1e-6)
    f_exact = -np.log(exact)
    f_exact -= f_exact.min()
    f = fes.free_energy_kT
    assert f.min() == 0.0
    well = f_exact < 4.0  # >= ~ 100 expected counts per bin
    assert well.sum() > 50
    # F within its counting error: sigma_F = 1 / sqrt(expected counts) (+ the noise of the shift)
    sigma = 1.0 / np.sqrt(exact[well] * fes.n_samples)
    z = (f[well] - f_exact[well]) / sigma
    assert np.abs(f[well] - f_exact[well]).max() < 0.35
    assert np.abs(z).max() < 5.0 and 0.6 < np.mean(z ** 2) < 1.6
    # empty bins are +inf, never NaN
    assert np.isinf(f).any() and not np.isnan(f).any()
    # a coarser grid is another parameter value
    assert free_energy_surface(phi, psi, bin_deg=15.0).counts.shape == (24, 24)
    with pytest.raises(AnalysisError, match="divide 360"):
        free_energy_surface(phi, psi, bin_deg=7.0)


def test_js_and_tae_zero_for_identical_and_above_floor_for_shifted():
    rng = np.random.default_rng(4)
    n = 40_000
    t = np.arange(n, dtype=float)  # ps
    phi, psi = _sample_mixture(n, rng)
    ref = free_energy_surface(phi, psi)
    same = fes_score(ref, ref)
    assert same.js == pytest.approx(0.0, abs=1e-12) and same.tae == 0.0
    floor = fes_noise_floor(phi, psi, t, block_ps=5000.0)
    assert len(floor.blocks) == 8  # 4 blocks of 5 ns per 20 ns half
    assert 0.0 < floor.halves.js < 0.02
    # an independent sample of the same distribution scores within the floor of blocks its size
    phi2, psi2 = _sample_mixture(5000, rng)
    indep = fes_score(free_energy_surface(phi2, psi2), ref)
    mean, std = floor.block_mean(), floor.block_std()
    assert indep.js < mean.js + 4 * std.js and indep.tae < mean.tae + 4 * std.tae
    # a 20-degree shift of phi is far above it
    phi3, psi3 = _sample_mixture(5000, rng, shift=20.0)
    shifted = fes_score(free_energy_surface(phi3, psi3), ref)
    assert shifted.js > mean.js + 10 * std.js and shifted.tae > mean.tae + 10 * std.tae
    # bounds: disjoint histograms give ln 2 and 2
    p, q = np.r_[1.0, 0.0], np.r_[0.0, 1.0]
    assert jensen_shannon(p, q) == pytest.approx(np.log(2.0))


# --------------------------------------------------------------------------- blocks, basins, transitions

def test_block_standard_error_of_an_ar1_series():
    """SE of the mean of x_t = a x_(t-1) + e_t: var(mean) ~ var(x) (1 + a) / ((1 - a) n)."""
    rng = np.random.default_rng(5)
    a, n = 0.9, 400_000
    e = rng.normal(0.0, 1.0, n)
    x = np.empty(n)
    x[0] = e[0] / np.sqrt(1 - a * a)
    for i in range(1, n):
        x[i] = a * x[i - 1] + e[i]
    times = 0.5 * np.arange(n)  # 0.5 ps frames: blocks in ps, not frames
    var_x = 1.0 / (1 - a * a)
    analytic = np.sqrt(var_x * (1 + a) / (1 - a) / n)
    avg = block_average(x, times, block_ps=1000.0)  # 2000 frames >> correlation time (~10 frames)
    assert avg.n_blocks == 200 and avg.block_ps == 1000.0
    assert avg.se == pytest.approx(analytic, rel=0.15)
    # too short blocks underestimate it (why the block length is a parameter to check)
    assert block_average(x, times, block_ps=0.5).se < 0.35 * analytic
    with pytest.raises(AnalysisError, match="at least 2"):
        block_average(x, times, block_ps=times[-1])


def test_basin_populations_of_known_fractions():
    """A two-state-plus-alpha_L chain whose stationary fractions are known."""
    rng = np.random.default_rng(6)
    basins = _basins()
    centres = {"beta": (-80.0, 150.0), "alpha_R": (-70.0, -40.0), "alpha_L": (60.0, 40.0)}
    frac = {"beta": 0.55, "alpha_R": 0.35, "alpha_L": 0.10}
    n, dwell = 200_000, 20  # frames; segments of 20 frames in one basin
    keys = rng.choice(list(frac), size=n // dwell, p=list(frac.values()))
    state = np.repeat(keys, dwell)
    phi = np.array([centres[k][0] for k in state]) + rng.normal(0, 8, n)
    psi = np.array([centres[k][1] for k in state]) + rng.normal(0, 8, n)
    times = np.arange(n) * 1.0
    pops = basin_populations(phi, psi, times, basins, block_ps=2000.0)
    assert list(pops) == ["beta", "alpha_R", "alpha_L"]
    for k, p in pops.items():
        # the sample fraction of segments is exact; the SE is that of a binomial over segments
        assert p.fraction == pytest.approx(np.mean(state == k), abs=1e-3)
        assert p.fraction == pytest.approx(frac[k], abs=4 * p.se + 1e-3)
        se_expected = np.sqrt(frac[k] * (1 - frac[k]) / (n / dwell))
        assert p.se == pytest.approx(se_expected, rel=0.3)
        assert p.free_energy_kT == pytest.approx(-np.log(p.fraction))
    assert sum(p.fraction for p in pops.values()) == pytest.approx(1.0, abs=1e-3)


def test_transitions_count_core_to_core_only():
    basins = _basins()
    # alpha_R core -> border (psi 30: alpha_R region, no core) -> beta region but no core (psi 55)
    # -> back to alpha_R core: no transition; then beta core: one; then alpha_L core and back: two more
    path = [(-70, -40), (-70, 30), (-70, 55), (-70, 30), (-70, -40), (-70, 30), (-80, 80), (-80, 150),
            (-60, 40), (-80, 150), (60, 40), (150, 0), (-80, 150)]
    phi, psi = np.array(path, float).T
    times = np.arange(len(path)) * 2.0
    tr = basin_transitions(phi, psi, times, basins)
    assert tr.total == 3
    assert tr.counts[tr.keys.index("alpha_R"), tr.keys.index("beta")] == 1
    assert tr.between("beta", "alpha_L") == 2
    assert [e[0] for e in tr.events] == [12.0, 20.0, 24.0]
    assert tr.unassigned_ps == 0.0
    # the regions, not the cores, would count the border recrossings
    regions = assign_regions(phi, psi, basins)
    assert np.count_nonzero(np.diff(regions[:6])) == 2


def test_spec_errors():
    with pytest.raises(ConfigError, match="box phi"):
        AngleBox(phi=[10.0, 10.0], psi=[0.0, 10.0])
    with pytest.raises(ConfigError, match="4 distinct"):
        RamachandranSpec(phi=[0, 1, 2], psi=[1, 2, 4, 5], basins=_basins())
    with pytest.raises(ConfigError, match="divide 360"):
        RamachandranSpec(phi=[0, 1, 2, 4], psi=[1, 2, 4, 5], basins=_basins(), bin_deg=7.0)
    box = AngleBox(phi=[-180.0, 0.0], psi=[-180.0, 180.0])
    twice = [Basin("a", "a", [box]), Basin("b", "b", [box])]
    with pytest.raises(AnalysisError, match="overlap"):
        assign_regions(np.array([-50.0]), np.array([0.0]), twice)
    # wrapping boxes: psi [50, -120] holds 170 and -150, not 0
    wrap = AngleBox(phi=[-180.0, 0.0], psi=[50.0, -120.0])
    inside = wrap.contains(np.array([-60.0, -60.0, -60.0]), np.array([170.0, -150.0, 0.0]))
    assert inside.tolist() == [True, True, False]


# --------------------------------------------------------------------------- plots

def test_fes_panels_and_timeline_plots(tmp_path):
    from matplotlib.image import imread

    from openmm_cgkd.analysis.plots import _box_segments, plot_dihedral_timeline, plot_fes_panels

    # a box wrapping through psi = 180 is drawn as two rectangles
    assert _box_segments(AngleBox(phi=[-180.0, -45.0], psi=[60.0, -160.0])) == [(-180.0, -45.0, 60.0, 180.0),
                                                                                  (-180.0, -45.0, -180.0, -160.0)]
    rng = np.random.default_rng(7)
    phi, psi = _sample_mixture(3000, rng)
    fes = free_energy_surface(phi, psi)
    one = plot_fes_panels({"AA": fes}, tmp_path / "one.png", basins=_basins())
    three = plot_fes_panels({"AA": fes, "teacher": fes, "student": fes}, tmp_path / "three.png", basins=_basins(),
                            scores={"student": "JS 0.000  TAE 0.000"})
    h1, w1 = imread(one).shape[:2]
    h3, w3 = imread(three).shape[:2]
    assert h1 == h3 and w3 > 2 * w1  # panels side by side, one colour bar
    line = plot_dihedral_timeline(np.arange(3000.0), phi, psi, tmp_path / "t.png", basins=_basins())
    assert imread(line).shape[0] > imread(plot_dihedral_timeline(np.arange(3000.0), phi, psi,
                                                                  tmp_path / "t2.png")).shape[0]


def test_analyze_phi_psi_gathers_the_parts(tmp_path):
    from openmm_cgkd.analysis.ramachandran import analyze_phi_psi
    from openmm_cgkd.fileio import read_json, write_json

    spec = RamachandranSpec.from_yaml(SPEC)
    rng = np.random.default_rng(8)
    n = 20_000
    phi, psi = _sample_mixture(n, rng)
    t = 1000.0 + 0.5 * np.arange(n)  # 10 ns at 0.5 ps, starting at 1 ns
    res = analyze_phi_psi(phi, psi, t, spec, block_ps=500.0, replica_ps=2000.0)
    assert res.frames == n and res.span_ps == pytest.approx(10_000.0) and res.frame_interval_ps == 0.5
    assert np.array_equal(res.fes.counts, free_energy_surface(phi, psi, spec.bin_deg).counts)
    assert res.populations == basin_populations(phi, psi, t, spec.basins, 500.0)
    assert list(res.se_by_block_ps["beta"]) == [100.0, 500.0, 1000.0, 2000.0]  # blocks that fit 4 times
    assert res.transitions.total == basin_transitions(phi, psi, t, spec.basins).total > 100
    assert len(res.noise_floor.blocks) == 4 and res.noise_floor.block_ps == 2000.0
    # dwell: time committed to a core over the exits from it
    assert all(v is not None and v > 0 for v in res.dwell_ps.values())
    d = read_json(write_json(tmp_path / "r.json", res.to_dict()))
    assert d["span_ns"] == pytest.approx(10.0) and d["transitions"]["total"] == res.transitions.total
    assert abs(sum(p["fraction"] for p in d["populations"].values()) + d["outside_basins_fraction"] - 1) < 1e-9


def test_transition_times_by_pair():
    phi, psi = np.array([(-70, -40), (-80, 150), (-70, -40), (-80, 150)], float).T
    d = basin_transitions(phi, psi, np.array([0.0, 1.0, 2.0, 3.0]), _basins()).to_dict()
    assert d["times_ps"] == {"alpha_R->beta": [1.0, 3.0], "beta->alpha_R": [2.0]} and d["total"] == 3


def test_compare_populations():
    from openmm_cgkd.analysis.ramachandran import BasinPopulation, compare_populations

    ref = {"a": BasinPopulation("a", "A", 0.6, 0.03, 10, 1000.0), "b": BasinPopulation("b", "B", 0.0, 0.0, 10, 1000.0)}
    mod = {"a": BasinPopulation("a", "A", 0.5, 0.04, 10, 1000.0), "b": BasinPopulation("b", "B", 0.0, 0.0, 10, 1000.0)}
    d = compare_populations(mod, ref)
    assert d["a"].difference == pytest.approx(-0.1) and d["a"].z == pytest.approx(-2.0)
    assert d["a"].free_energy_difference_kT == pytest.approx(np.log(0.6 / 0.5))
    assert d["b"].z is None and d["b"].free_energy_difference_kT is None
    with pytest.raises(AnalysisError, match="different basins"):
        compare_populations({"a": mod["a"]}, ref)
