"""ADF: hand-built geometries with known angles, cutoffs, periodic images, normalisation."""
import numpy as np
import pytest

from openmm_cgkd.analysis import AnalysisError, adf_key, compute_adfs, make_trajectory

L = 5.0


def _star():
    """Central bead CEN near the x = 0 face with neighbours NB at 0.3 nm along +x, at 70 degrees
    from +x in the xy plane, and along -x THROUGH the periodic boundary; a fourth NB at 0.7 nm
    along +z. Angles around CEN: 70, 110, 180 (cutoff < 0.7) plus three 90s (cutoff > 0.7)."""
    c = np.array([0.05, 2.5, 2.5])
    t = np.radians(70.0)
    nbs = [c + [0.3, 0, 0], c + 0.3 * np.array([np.cos(t), np.sin(t), 0]), c + [-0.3, 0, 0], c + [0, 0, 0.7]]
    pos = np.vstack([c] + nbs) % L  # the -x neighbour wraps to x = 4.75
    assert pos[3, 0] == pytest.approx(4.75)
    return make_trajectory(pos, ["CEN"] + ["NB"] * 4, np.eye(3) * L)


def _density_at(dist, angle):
    return dist.values[min(int(angle // dist.widths[0]), len(dist.values) - 1)]


def test_known_angles_land_in_their_bins():
    adfs = compute_adfs(_star(), cutoffs=(0.65, 0.75), bin_width=4.0)
    inner = adfs[adf_key("NB", "CEN", "NB", 0.65)]
    assert inner.n_samples == 3  # pairs of the three neighbours within 0.65 nm
    for angle in (70.0, 110.0, 180.0):
        assert _density_at(inner, angle) == pytest.approx(1 / 3 / 4.0)
    assert inner.integral() == pytest.approx(1.0)
    assert np.count_nonzero(inner.values) == 3

    outer = adfs[adf_key("NB", "CEN", "NB", 0.75)]
    assert outer.n_samples == 6  # the +z neighbour adds three right angles
    assert _density_at(outer, 90.0) == pytest.approx(3 / 6 / 4.0)
    for angle in (70.0, 110.0, 180.0):
        assert _density_at(outer, angle) == pytest.approx(1 / 6 / 4.0)
    assert outer.integral() == pytest.approx(1.0)
    assert outer.unit == "degree" and outer.edges[-1] == 180.0
    assert outer.meta["central"] == "CEN" and outer.meta["cutoff_nm"] == 0.75


def test_equilateral_triangles_give_sixty_degrees_and_mixed_types_sort():
    # Two far-apart equilateral triangles (side 0.4 nm) of types A, A, B.
    side = 0.4
    tri = np.array([[0, 0, 0], [side, 0, 0], [side / 2, side * np.sqrt(3) / 2, 0]])
    pos = np.vstack([tri + 1.0, tri + 3.2])
    traj = make_trajectory(pos, ["A", "A", "B"] * 2, np.eye(3) * L)
    adfs = compute_adfs(traj, cutoffs=0.5, bin_width=8.0)  # 60 degrees sits mid-bin [56, 64)
    # Around an A: neighbours A and B -> key "A-A-B"; around B: two As -> "A-B-A".
    assert adfs["A-A-B@0.50"].n_samples == 4 and adfs["A-B-A@0.50"].n_samples == 2
    for key in ("A-A-B@0.50", "A-B-A@0.50"):
        assert adfs[key].centers[np.argmax(adfs[key].values)] == pytest.approx(60.0)
        assert adfs[key].integral() == pytest.approx(1.0)
    # Triplets never seen are present as empty curves.
    assert adfs["B-A-B@0.50"].n_samples == 0 and not adfs["B-A-B@0.50"].values.any()
    assert len(adfs) == 2 * 3  # 2 central types x 3 unordered neighbour-type pairs


def test_frames_accumulate_and_random_liquid_is_normalised():
    rng = np.random.default_rng(0)
    xyz = rng.random((3, 120, 3)) * 3.0
    adfs = compute_adfs(make_trajectory(xyz, ["A"] * 60 + ["B"] * 60, np.eye(3) * 3.0), cutoffs=(0.6, 0.75))
    for d in adfs.values():
        assert d.n_samples > 0 and d.integral() == pytest.approx(1.0)
    # For uncorrelated points angles follow sin(theta)/2: little density near 0 and 180 degrees.
    d = adfs["A-A-A@0.75"]
    assert d.values[d.centers < 20].mean() < d.values[(d.centers > 80) & (d.centers < 100)].mean() / 3


def test_cutoff_must_be_below_half_the_box():
    traj = make_trajectory(np.random.default_rng(1).random((1, 10, 3)), ["A"] * 10, np.eye(3))
    with pytest.raises(AnalysisError, match="cutoff"):
        compute_adfs(traj, cutoffs=0.6)


def test_tree_and_brute_force_neighbour_searches_agree():
    # The same periodic lattice written with a sheared basis (b = a + b') is not orthorhombic, so
    # it takes the brute-force path; the cubic basis takes the k-d tree path.
    rng = np.random.default_rng(2)
    L4 = 4.0
    xyz = rng.random((2, 150, 3)) * L4
    names = ["A"] * 50 + ["B"] * 100
    cubic = compute_adfs(make_trajectory(xyz, names, np.eye(3) * L4), cutoffs=(0.6, 0.9))
    sheared_box = np.array([[L4, 0, 0], [L4, L4, 0], [0, 0, L4]])
    sheared = compute_adfs(make_trajectory(xyz, names, sheared_box), cutoffs=(0.6, 0.9))
    assert set(cubic) == set(sheared)
    for key in cubic:
        assert cubic[key].n_samples == sheared[key].n_samples > 0, key
        np.testing.assert_allclose(cubic[key].values, sheared[key].values, atol=1e-12, err_msg=key)
