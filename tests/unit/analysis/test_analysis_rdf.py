"""RDF: agreement with freud (independent implementation), ideal gas, grids and chunking."""
import itertools

import numpy as np
import pytest

from openmm_cgkd.analysis import AnalysisError, compute_rdfs, make_trajectory, minimum_image, rdf_edges

freud = pytest.importorskip("freud")


def _freud_rdfs(xyz, n_a, box_len, edges):
    """g_AA and g_AB from freud, accumulated over frames (points shifted into freud's centred box)."""
    n_bins = len(edges) - 1
    # A-A excludes self pairs: the finite-size normalisation uses (N - 1)/V, as N(N-1)/2 pairs do.
    aa = freud.density.RDF(bins=n_bins, r_max=edges[-1], normalization_mode="finite_size")
    ab = freud.density.RDF(bins=n_bins, r_max=edges[-1], normalization_mode="exact")
    box = freud.box.Box(*box_len)
    for frame in xyz:
        pts = frame - np.asarray(box_len) / 2
        aa.compute((box, pts[:n_a]), reset=False)
        ab.compute((box, pts[n_a:]), query_points=pts[:n_a], reset=False)
    assert np.allclose(aa.bin_edges, edges)
    return aa.rdf, ab.rdf


def _check_against_freud(xyz, n_a, box_len, bin_width, r_max):
    names = ["A"] * n_a + ["B"] * (xyz.shape[1] - n_a)
    traj = make_trajectory(xyz, names, np.diag(box_len))
    edges = rdf_edges(traj, r_max=r_max, bin_width=bin_width)
    ours = compute_rdfs(traj, edges)
    g_aa, g_ab = _freud_rdfs(traj.xyz, n_a, box_len, edges)
    np.testing.assert_allclose(ours["A-A"].values, g_aa, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours["A-B"].values, g_ab, rtol=1e-4, atol=1e-4)
    assert set(ours) == {"A-A", "A-B", "B-B"}
    return ours


def test_rdf_matches_freud_on_random_configurations():
    rng = np.random.default_rng(1)
    box_len = (3.0, 3.4, 3.2)
    xyz = rng.random((4, 150, 3)) * box_len
    _check_against_freud(xyz, 60, box_len, bin_width=0.02, r_max=1.4)


def test_rdf_matches_freud_on_a_rock_salt_lattice():
    # Rock salt: a simple cubic grid of spacing 0.29 nm, types alternating by parity; tiny
    # displacements keep lattice distances off the bin edges.
    rng = np.random.default_rng(2)
    n, a = 8, 0.29
    sites = np.array(list(itertools.product(range(n), repeat=3)))
    order = np.argsort(sites.sum(axis=1) % 2, kind="stable")  # type A (even) first
    sites = sites[order]
    n_a = int(np.count_nonzero(sites.sum(axis=1) % 2 == 0))
    xyz = (sites * a + 0.05)[None] + rng.normal(0, 0.004, (3, len(sites), 3))
    box_len = (n * a,) * 3
    ours = _check_against_freud(xyz, n_a, box_len, bin_width=0.01, r_max=1.0)
    # Crystal sanity: the first peak of unlike pairs is at a, of like pairs at a * sqrt(2).
    first = {k: ours[k].centers[np.argmax(ours[k].values * (ours[k].centers < 0.45))] for k in ("A-A", "A-B")}
    assert first["A-B"] == pytest.approx(a, abs=0.02)
    assert first["A-A"] == pytest.approx(a * np.sqrt(2), abs=0.02)


def test_ideal_gas_gives_g_of_r_near_one():
    rng = np.random.default_rng(3)
    xyz = rng.random((20, 400, 3)) * 4.0
    traj = make_trajectory(xyz, ["A"] * 200 + ["B"] * 200, np.eye(3) * 4.0)
    edges = rdf_edges(traj, r_max=1.8, bin_width=0.1)
    for key, g in compute_rdfs(traj, edges).items():
        far = g.centers > 0.5  # small shells hold few pairs; look where statistics are good
        assert np.all(np.abs(g.values[far] - 1.0) < 0.08), key
        assert np.mean(g.values[far]) == pytest.approx(1.0, abs=0.02), key


def test_grid_is_capped_at_half_the_box_and_fixed():
    rng = np.random.default_rng(4)
    small = make_trajectory(rng.random((2, 20, 3)) * 2.0, ["A"] * 20, np.eye(3) * 2.0)
    big = make_trajectory(rng.random((2, 20, 3)) * 5.0, ["A"] * 20, np.eye(3) * 5.0)
    edges = rdf_edges(small, big, r_max=1.5, bin_width=0.005)
    assert edges[0] == 0 and edges[-1] == pytest.approx(1.0)
    assert np.allclose(np.diff(edges), 0.005)
    assert rdf_edges(big)[-1] == pytest.approx(1.5)
    assert np.array_equal(compute_rdfs(big, edges)["A-A"].edges, edges)
    with pytest.raises(AnalysisError, match="half the smallest box"):
        compute_rdfs(small, rdf_edges(big))


def test_chunked_frames_equal_one_pass_with_varying_volume():
    import mdtraj as md

    rng = np.random.default_rng(5)
    boxes = np.stack([np.eye(3) * L for L in (3.0, 3.1, 3.2, 3.3, 3.4)])
    xyz = rng.random((5, 50, 3)) * 3.0
    traj = make_trajectory(xyz, ["A"] * 25 + ["B"] * 25, boxes)
    edges = rdf_edges(traj, r_max=1.4, bin_width=0.05)
    chunked = compute_rdfs(traj, edges, max_distances=300)["A-B"].values  # one frame per chunk
    pairs = traj.topology.select_pairs(np.arange(25), np.arange(25, 50))
    _, whole = md.compute_rdf(traj, pairs, r_range=(0, edges[-1]), n_bins=len(edges) - 1)
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)


def test_minimum_image_in_a_triclinic_box_is_the_shortest_image():
    rng = np.random.default_rng(6)
    box = np.array([[3.0, 0.0, 0.0], [1.0, 2.8, 0.0], [-0.7, 0.9, 2.6]])
    d = rng.uniform(-6, 6, (200, 3))
    ours = minimum_image(d, box)
    shifts = np.array(list(itertools.product(range(-3, 4), repeat=3))) @ box
    brute = np.min(np.linalg.norm(d[:, None, :] + shifts[None], axis=2), axis=1)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), brute, rtol=1e-12)
    # The result is an image of the input: it differs by a lattice vector.
    frac = (ours - d) @ np.linalg.inv(box)
    np.testing.assert_allclose(frac, np.round(frac), atol=1e-9)


# ---------------------------------------------------------------- contacts closer than the reference's
def _curve(key, edges, values):
    from openmm_cgkd.analysis import Distribution

    return Distribution("rdf", key, edges, values)


def test_close_contacts_finds_a_pairing_the_reference_does_not_have():
    from openmm_cgkd.analysis.rdf import close_contacts

    edges = np.linspace(0.0, 1.0, 101)  # 0.01 nm bins, centres 0.005, 0.015, ...
    r = 0.5 * (edges[1:] + edges[:-1])
    ref = np.where(r < 0.45, 0.0, 1.0)
    model = ref.copy()
    model[np.argmin(abs(r - 0.405))] = 5.7  # the Cl-Cl peak at 0.40 nm
    other = np.where(r < 0.30, 0.0, 1.0)  # a pair that comes closer than the AA one: all inside is counted
    out = close_contacts({"CL-CL": _curve("CL-CL", edges, model), "CHO-CL": _curve("CHO-CL", edges, ref)},
                         {"CL-CL": _curve("CL-CL", edges, ref), "CHO-CL": _curve("CHO-CL", edges, ref),
                          "URE-URE": _curve("URE-URE", edges, other)})
    assert set(out) == {"CL-CL", "CHO-CL"}  # URE-URE has no model curve
    assert out["CL-CL"].reference_contact_nm == pytest.approx(0.455)
    assert out["CL-CL"].peak_g == pytest.approx(5.7) and out["CL-CL"].peak_r_nm == pytest.approx(0.405)
    assert out["CHO-CL"].peak_g == 0.0 and out["CHO-CL"].peak_r_nm is None


def test_close_contacts_from_trajectories_with_a_pinned_pair():
    from openmm_cgkd.analysis import compute_rdfs, make_trajectory, rdf_edges
    from openmm_cgkd.analysis.rdf import close_contacts

    rng = np.random.default_rng(3)
    n, box = 27, 3.0
    # reference: beads on a jittered cubic lattice, 1 nm apart (no pair closer than ~0.8 nm)
    grid = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n] * 1.0 + 0.5
    ref_xyz = grid[None] + rng.normal(0, 0.03, (20, n, 3))
    model_xyz = ref_xyz.copy()
    model_xyz[:, 1] = model_xyz[:, 0] + [0.3, 0.0, 0.0]  # beads 0 and 1 pinned 0.3 nm apart
    names = ["A"] * n
    ref = make_trajectory(ref_xyz, names, np.eye(3) * box)
    cg = make_trajectory(model_xyz, names, np.eye(3) * box)
    edges = rdf_edges(ref, cg)
    out = close_contacts(compute_rdfs(cg, edges), compute_rdfs(ref, edges))["A-A"]
    assert 0.6 < out.reference_contact_nm < 1.0
    assert out.peak_r_nm == pytest.approx(0.3, abs=0.005) and out.peak_g > 1.0


def test_close_contacts_refuses_curves_on_different_grids():
    from openmm_cgkd.analysis import AnalysisError
    from openmm_cgkd.analysis.rdf import close_contacts

    a = _curve("A-A", np.linspace(0, 1, 11), np.ones(10))
    b = _curve("A-A", np.linspace(0, 1, 21), np.ones(20))
    with pytest.raises(AnalysisError, match="different grids"):
        close_contacts({"A-A": a}, {"A-A": b})
