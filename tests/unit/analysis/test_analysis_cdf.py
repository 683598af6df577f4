"""CDF: spanning-tree merge distances equal brute-force single-linkage clustering under PBC."""
import itertools

import numpy as np
import pytest

from openmm_cgkd.analysis import compute_cdfs, frame_merge_distances, make_trajectory, mst_merge_distances


def _brute_force_merges(pos, box_len):
    """Single linkage by hand: union-find over all pairs sorted by minimum-image distance, the
    minimum image found by trying all 27 neighbouring images (independent of the package)."""
    box_len = np.asarray(box_len, dtype=float)
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3))) * box_len
    wrapped = pos % box_len
    n = len(pos)
    pairs = []
    for i in range(n):
        for j in range(i + 1, n):
            d = min(np.linalg.norm(wrapped[j] + s - wrapped[i]) for s in shifts)
            pairs.append((d, i, j))
    pairs.sort()
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    merges = []
    for d, i, j in pairs:
        ri, rj = root(i), root(j)
        if ri != rj:  # two clusters first meet at this cutoff
            parent[ri] = rj
            merges.append(d)
    return np.array(merges)


@pytest.mark.parametrize("seed,n", [(0, 2), (1, 7), (2, 25), (3, 40)])
def test_spanning_tree_equals_brute_force_single_linkage(seed, n):
    rng = np.random.default_rng(seed)
    box_len = (2.0, 2.5, 3.0)
    # Unwrapped coordinates (up to a box away) must not matter.
    pos = rng.random((n, 3)) * box_len + rng.integers(-1, 2, (n, 3)) * box_len
    ours = mst_merge_distances(pos, np.diag(box_len))
    assert len(ours) == n - 1
    np.testing.assert_allclose(ours, _brute_force_merges(pos, box_len), rtol=1e-12, atol=1e-12)


def test_clusters_near_only_through_the_boundary():
    # Two tight pairs on opposite faces of the box: 0.1 nm apart through the x boundary, about
    # 2.9 nm apart inside the box. Single linkage must join them at 0.1 nm, not later.
    L = 3.0
    pos = np.array([[0.05, 1.0, 1.0], [0.05, 1.2, 1.0],  # pair 1, 0.2 apart
                    [2.95, 1.0, 1.0], [2.95, 1.2, 1.0],  # pair 2, 0.1 from pair 1 through x = 0
                    [1.5, 2.9, 2.9], [1.5, 0.15, 2.9]])  # 0.25 apart through the y boundary
    ours = mst_merge_distances(pos, np.eye(3) * L)
    brute = _brute_force_merges(pos, (L, L, L))
    np.testing.assert_allclose(ours, brute, atol=1e-12)
    np.testing.assert_allclose(ours[:3], [0.1, 0.1, 0.2], atol=1e-12)
    assert ours[3] == pytest.approx(0.25)


def test_coincident_beads_merge_at_zero():
    pos = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [1.0, 0.5, 0.5]])
    np.testing.assert_allclose(mst_merge_distances(pos, np.eye(3) * 2.0), [0.0, 0.5], atol=1e-12)
    pos[1, 0] += 1e-9  # scipy's dense input would drop this edge as "zero"
    np.testing.assert_allclose(mst_merge_distances(pos, np.eye(3) * 2.0), [1e-9, 0.5], rtol=1e-6)


def test_cdf_per_species_is_a_normalised_density():
    rng = np.random.default_rng(5)
    xyz = rng.random((4, 60, 3)) * 3.0
    traj = make_trajectory(xyz, ["A"] * 20 + ["B"] * 40, np.eye(3) * 3.0)
    cdfs = compute_cdfs(traj, bin_width=0.01)
    assert set(cdfs) == {"A", "B"}
    for s, n in (("A", 20), ("B", 40)):
        assert cdfs[s].n_samples == 4 * (n - 1)
        assert cdfs[s].integral() == pytest.approx(1.0)
        assert cdfs[s].edges[-1] == pytest.approx(1.5)  # half the box
    merges = frame_merge_distances(traj)
    assert merges["B"].shape == (4, 39)
    # Denser species -> shorter merge distances.
    assert merges["B"].mean() < merges["A"].mean()
