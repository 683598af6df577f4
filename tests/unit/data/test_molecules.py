"""Molecules (issue 22): the CG topology, partial maps and their constraint check, non-periodic
mapping, the dataset format with bonds, and Boltzmann inversion against sampled distributions."""
import h5py
import numpy as np
import pytest

from openmm_cgkd.cgtopology import CGTopology, TopologyError
from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.data.mapping import CGMap, MappingError, MappingSpec
from openmm_cgkd.training.config import ConfigError
from openmm_cgkd.training.prior_fit import R_KJ_MOL_K, boltzmann_fourier, boltzmann_harmonic


def test_topology_angles_dihedrals_molecules_exclusions():
    # a 5-bead chain 0-1-2-3-4, a branch 2-5, and two lone beads 6, 7
    t = CGTopology(8, [(1, 0), (1, 2), (2, 3), (3, 4), (2, 5), (1, 0)])
    assert t.bonds.tolist() == [[0, 1], [1, 2], [2, 3], [2, 5], [3, 4]]  # sorted, deduplicated
    assert t.angles.tolist() == [[0, 1, 2], [1, 2, 3], [1, 2, 5], [2, 3, 4], [3, 2, 5]]
    assert t.dihedrals.tolist() == [[0, 1, 2, 3], [0, 1, 2, 5], [1, 2, 3, 4], [4, 3, 2, 5]]
    assert t.molecule.tolist() == [0, 0, 0, 0, 0, 0, 1, 2] and t.n_molecules == 3
    assert {tuple(p) for p in t.excluded_pairs(1)} == {(0, 1), (1, 2), (2, 3), (2, 5), (3, 4)}
    e2 = {tuple(p) for p in t.excluded_pairs(2)}
    assert e2 == {(0, 1), (1, 2), (2, 3), (2, 5), (3, 4), (0, 2), (1, 3), (1, 5), (2, 4), (3, 5)}
    e3 = {tuple(p) for p in t.excluded_pairs(3)}
    assert e3 - e2 == {(0, 3), (0, 5), (1, 4), (4, 5)}
    assert CGTopology.from_dict(t.to_dict()) == t
    with pytest.raises(TopologyError, match="itself"):
        CGTopology(3, [(1, 1)])
    with pytest.raises(TopologyError, match="0..2"):
        CGTopology(3, [(0, 3)])


def _chain_residues(n_res: int, names=("N", "H", "CA", "HA", "C", "O")):
    """A linear 'peptide' of n_res residues of 6 atoms; bonds N-H, N-CA, CA-HA, CA-C, C-O, C-N(next)."""
    residues, bonds = [], []
    for r in range(n_res):
        b = 6 * r
        residues.append(("RES", [(b + k, n) for k, n in enumerate(names)]))
        bonds += [(b, b + 1), (b, b + 2), (b + 2, b + 3), (b + 2, b + 4), (b + 4, b + 5)]
        if r:
            bonds.append((b - 2, b))  # C(prev)-N
    return residues, bonds


def test_partial_map_bonds_through_unmapped_atoms_and_constraints():
    residues, bonds = _chain_residues(4)
    masses = np.tile([14.0, 1.0, 12.0, 1.0, 12.0, 16.0], 4)
    # C-alpha beads (CA with its HA): bonded through the unmapped C, O, N, H
    ca = MappingSpec.from_dict({"type_names": ["CA"], "allow_unmapped": True,
                                "residues": {"RES": [{"type": "CA", "atoms": ["CA", "HA"]}]}})
    m = CGMap.build(ca, residues, masses, bonds)
    assert m.n_beads == 4 and m.topology.bonds.tolist() == [[0, 1], [1, 2], [2, 3]]
    assert np.allclose(m.bead_masses, 13.0) and np.count_nonzero(m.atom_bead < 0) == 16
    # without allow_unmapped: the old refusal, now naming the way out
    strict = MappingSpec.from_dict({"type_names": ["CA"], "residues": {"RES": [{"type": "CA", "atoms": ["CA", "HA"]}]}})
    with pytest.raises(MappingError, match="allow_unmapped"):
        CGMap.build(strict, residues, masses, bonds)
    # CA alone leaves its constrained hydrogen HA out: the H-bond constraint force would be lost
    bare = MappingSpec.from_dict({"type_names": ["CA"], "allow_unmapped": True,
                                  "residues": {"RES": [{"type": "CA", "atoms": ["CA"]}]}})
    with pytest.raises(MappingError, match="only one of them is in a bead"):
        CGMap.build(bare, residues, masses, bonds)
    # ... which is fine when the AA run had no constraints
    free = MappingSpec.from_dict({"type_names": ["CA"], "allow_unmapped": True, "constraints": "none",
                                  "residues": {"RES": [{"type": "CA", "atoms": ["CA"]}]}})
    assert CGMap.build(free, residues, masses, bonds).n_beads == 4
    # N and its H in two beads: the constraint is split between beads
    split = MappingSpec.from_dict({"type_names": ["A", "B"], "residues": {"RES": [
        {"type": "A", "atoms": ["N", "CA", "HA"]}, {"type": "B", "atoms": ["H", "C", "O"]}]}})
    with pytest.raises(MappingError, match="lie in two beads"):
        CGMap.build(split, residues, masses, bonds)
    # all bonds constrained: the C(prev)-N bond between beads of two residues is refused too
    whole = MappingSpec.from_dict({"type_names": ["R"], "constraints": "all-bonds", "residues": {"RES": [{"type": "R"}]}})
    with pytest.raises(MappingError, match="two beads"):
        CGMap.build(whole, residues, masses, bonds)
    with pytest.raises(MappingError, match="constraints must be one of"):
        MappingSpec.from_dict({"type_names": ["R"], "constraints": "hbonds", "residues": {"RES": [{"type": "R"}]}})


def test_bead_spanning_residues_and_multi_bead_residue_without_bonds():
    residues, bonds = _chain_residues(2)
    masses = np.tile([14.0, 1.0, 12.0, 1.0, 12.0, 16.0], 2)
    # the first residue's C, O join the bead of the next residue's N, H, CA, HA
    spec = MappingSpec.from_dict({"type_names": ["A", "B"], "residues": {"RES": [
        {"type": "B", "atoms": ["N", "H", "CA", "HA"], "join": "previous"}, {"type": "A", "atoms": ["C", "O"]}]}})
    with pytest.raises(MappingError, match="needs a bead before it"):
        CGMap.build(spec, residues, masses, bonds)
    # a cap residue (one bead) whose bead the next residue's N, H, CA, HA join
    spec2 = MappingSpec.from_dict({"type_names": ["A"], "residues": {
        "CAP": [{"type": "A"}],
        "RES": [{"type": "A", "atoms": ["N", "H", "CA", "HA"], "join": "previous"}, {"type": "A", "atoms": ["C", "O"]}]}})
    res2 = [("CAP", [(0, "X1"), (1, "X2")])] + [(n, [(a + 2, nm) for a, nm in atoms]) for n, atoms in residues[:1]]
    bonds2 = [(0, 1), (1, 2)] + [(a + 2, b + 2) for a, b in bonds if a < 6 and b < 6]
    m = CGMap.build(spec2, res2, np.r_[[10.0, 10.0], masses[:6]], bonds2)
    assert m.n_beads == 2 and m.atom_bead.tolist() == [0, 0, 0, 0, 0, 0, 1, 1]
    assert m.topology.bonds.tolist() == [[0, 1]]
    # several beads in a residue but a topology without any bond: say how to give bonds
    two = MappingSpec.from_dict({"type_names": ["A", "B"], "residues": {"RES": [
        {"type": "A", "atoms": ["N", "H", "CA", "HA"]}, {"type": "B", "atoms": ["C", "O"]}]}})
    with pytest.raises(MappingError, match="no bonds"):
        CGMap.build(two, residues, masses, [])


def test_nonperiodic_mapping_and_whole_molecules_across_the_box():
    # two beads of 2 atoms, a 4-atom chain straddling the box edge
    residues = [("MOL", [(0, "A1"), (1, "A2"), (2, "B1"), (3, "B2")])]
    bonds = [(0, 1), (1, 2), (2, 3)]
    spec = MappingSpec.from_dict({"type_names": ["A", "B"], "residues": {"MOL": [
        {"type": "A", "atoms": ["A1", "A2"]}, {"type": "B", "atoms": ["B1", "B2"]}]}})
    m = CGMap.build(spec, residues, np.array([1.0, 3.0, 2.0, 2.0]), bonds)
    x = np.array([[0.10, 0.0, 0.0], [0.25, 0.0, 0.0], [0.40, 0.0, 0.0], [0.55, 0.0, 0.0]])
    f = np.arange(12.0).reshape(4, 3)
    pos, frc = m.map_frames(x[None], f[None], None)
    assert np.allclose(pos[0], [[(0.10 + 3 * 0.25) / 4, 0, 0], [0.475, 0, 0]])
    assert np.allclose(frc[0], [f[0] + f[1], f[2] + f[3]])
    # periodic: atom 3 wrapped to the other side of a 0.6 nm box; the molecule is made whole along its bonds
    box = np.eye(3) * 0.6
    y = np.array([[0.35, 0.1, 0.1], [0.45, 0.1, 0.1], [0.55, 0.1, 0.1], [0.05, 0.1, 0.1]])
    pos_p, _ = m.map_frames(y[None], f[None], box[None])
    assert pos_p[0, 0, 0] == pytest.approx((0.35 + 3 * 0.45) / 4)
    assert min(pos_p[0, 1, 0], 0.6 - pos_p[0, 1, 0]) == pytest.approx(0.0, abs=1e-9)  # (0.55 + 0.65) / 2, wrapped


def _dataset(n_frames=3, boxes=None, topology=None):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 2.0, (n_frames, 4, 3))
    b = np.tile(np.eye(3) * 2.0, (n_frames, 1, 1)) if boxes is None else boxes
    return CGDataset(x, rng.normal(size=(n_frames, 4, 3)), b, np.arange(n_frames, dtype=float), [0, 1, 1, 0],
                     ["A", "B"], [10.0, 20.0, 20.0, 10.0], topology=topology)


def test_dataset_round_trip_with_bonds_and_old_files(tmp_path):
    ds = _dataset(topology=CGTopology(4, [(0, 1), (1, 2), (2, 3)]))
    ds.save(tmp_path / "m.h5")
    back = CGDataset.load(tmp_path / "m.h5")
    assert back.topology == ds.topology and back.topology.n_molecules == 1
    assert back.select_frames(slice(0, 2)).topology == ds.topology
    # a format-1 file (before bonds): loads as one-bead molecules
    with h5py.File(tmp_path / "m.h5", "a") as h5:
        del h5["topology"]
        h5.attrs["format_version"] = 1
    old = CGDataset.load(tmp_path / "m.h5")
    assert old.topology.n_bonds == 0 and old.topology.n_molecules == 4
    # no periodic box: all-zero boxes
    nonper = _dataset(boxes=np.zeros((3, 3, 3)))
    assert not nonper.periodic
    nonper.save(tmp_path / "np.h5")
    assert not CGDataset.load(tmp_path / "np.h5").periodic


def test_boltzmann_inversion_recovers_known_parameters():
    rng = np.random.default_rng(3)
    kt = R_KJ_MOL_K * 300.0
    # bond: p(r) ~ r^2 exp(-k/2 (r - r0)^2 / kT), sampled by rejection from a wide Gaussian
    r0, k = 0.25, 5000.0
    r = rng.normal(r0, 3 * np.sqrt(kt / k), 400_000)
    r = r[(r > 0) & (rng.uniform(size=r.size) < np.exp(-0.5 * k * (r - r0) ** 2 / kt) * r ** 2 / r.max() ** 2
                              / np.exp(-0.5 * ((r - r0) / (3 * np.sqrt(kt / k))) ** 2))]
    c, kk, how = boltzmann_harmonic(r, kt, "r2")
    assert how == "boltzmann-inversion" and c == pytest.approx(r0, abs=2e-3) and kk == pytest.approx(k, rel=0.05)
    # a moment fit without the Jacobian would put the centre off by ~2 kT / (k r0) ~ 4e-4 nm: small here, but the
    # angle near pi shows the Jacobian: p(theta) ~ sin(theta) exp(-k/2 (theta - theta0)^2 / kT)
    th0, ka = np.radians(150.0), 20.0
    th = rng.uniform(0, np.pi, 2_000_000)
    th = th[rng.uniform(size=th.size) < np.sin(th) * np.exp(-0.5 * ka * (th - th0) ** 2 / kt)]
    c, kk, how = boltzmann_harmonic(th, kt, "sin")
    assert how == "boltzmann-inversion"
    assert np.degrees(c) == pytest.approx(150.0, abs=1.5) and kk == pytest.approx(ka, rel=0.1)
    assert abs(np.degrees(th.mean()) - 150.0) > 3 * abs(np.degrees(c) - 150.0)  # the mean is biased by sin
    # dihedral: U = 2 (1 + cos(phi - 0.5)) + 1 (1 + cos(3 phi))
    phi = rng.uniform(-np.pi, np.pi, 2_000_000)
    u = 2.0 * (1 + np.cos(phi - 0.5)) + 1.0 * (1 + np.cos(3 * phi))
    phi = phi[rng.uniform(size=phi.size) < np.exp(-(u - u.min()) / kt)]
    terms = boltzmann_fourier(phi, kt, 3)
    assert terms[0][1] == pytest.approx(2.0, rel=0.05) and terms[0][2] == pytest.approx(0.5, abs=0.05)
    assert terms[1][1] < 0.1
    assert terms[2][1] == pytest.approx(1.0, rel=0.05) and abs(np.cos(terms[2][2]) - 1) < 0.01
    with pytest.raises(ConfigError, match="does not fluctuate"):
        boltzmann_harmonic(np.full(10, 0.2), kt, "r2")


def test_fallback_for_a_bimodal_angle_keeps_the_mean_angle():
    """Gauche/trans-like angles (two peaks): the parabola opens downwards and the fit falls back to the
    moments of p/sin; a harmonic prior sampled with the sin Jacobian then keeps the data's mean angle,
    where the plain moments of p would lower it."""
    rng = np.random.default_rng(7)
    kt = R_KJ_MOL_K * 300.0
    th = np.concatenate([rng.normal(np.radians(118), np.radians(9), 40_000),
                         rng.normal(np.radians(160), np.radians(10), 60_000)])
    th = th[(th > 0) & (th < np.pi)]
    c, k, how = boltzmann_harmonic(th, kt, "sin")
    assert how == "moments"
    grid = np.linspace(1e-4, np.pi - 1e-4, 20_000)

    def sampled_mean(centre, kk):
        p = np.sin(grid) * np.exp(-0.5 * kk * (grid - centre) ** 2 / kt)
        return np.degrees(np.sum(p * grid) / np.sum(p))

    data = np.degrees(th.mean())
    naive = sampled_mean(th.mean(), kt / th.var())
    assert abs(sampled_mean(c, k) - data) < 3.0 < abs(naive - data)
