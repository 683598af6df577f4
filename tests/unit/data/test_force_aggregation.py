"""Force aggregation (``force_atoms`` in a mapping spec): the forces of atoms left out of every bead
add to a bead's force, not to its position. Checked on an analytic case (an atom held to a bead's
atom by a stiff spring: its conditional mean force is zero, so the mean force is unchanged and the
spring's noise cancels) and on the dipeptide's atoms (constraints, errors, round trip)."""
from pathlib import Path

import numpy as np
import pytest

from openmm_cgkd.data.mapping import CGMap, MappingError, MappingSpec

ROOT = Path(__file__).resolve().parents[3]
KT = 2.494  # kJ/mol at 300 K
K_SPRING = 400_000.0  # kJ/mol/nm^2: a C=O-like bond
RESIDUES = [("MOL", [(0, "A"), (1, "O"), (2, "B")])]
MASSES = np.array([12.0, 16.0, 14.0])


def _spec(force_atoms):
    return MappingSpec.from_dict({"type_names": ["A", "B"], "allow_unmapped": True, "constraints": "none",
                                  "residues": {"MOL": [{"type": "A", "atoms": ["A"], "force_atoms": force_atoms},
                                                       {"type": "B", "atoms": ["B"]}]}})


def _frames(n, seed=0):
    """A at the origin region, B 0.5 nm away; O drawn from its exact Boltzmann distribution given A
    (zero-length spring: Gaussian of variance kT/k per component). A feels a soft pull towards B."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 0.05, (n, 3))
    b = a + np.array([0.5, 0.0, 0.0]) + rng.normal(0.0, 0.02, (n, 3))
    o = a + rng.normal(0.0, np.sqrt(KT / K_SPRING), (n, 3))
    f_ext = 30.0 * (b - a)  # kJ/mol/nm: a harmonic pull of A towards B (and its reaction on B)
    spring = K_SPRING * (o - a)  # on A; minus this on O
    forces = np.stack([f_ext + spring, -spring, -f_ext], axis=1)
    return np.stack([a, o, b], axis=1), forces, f_ext


def test_an_unmapped_atoms_force_cancels_its_bond_and_leaves_the_mean_force():
    pos, forces, f_ext = _frames(20_000)
    plain = CGMap.build(_spec([]), RESIDUES, MASSES)
    summed = CGMap.build(_spec(["O"]), RESIDUES, MASSES)
    p0, f0 = plain.map_frames(pos, forces, None)
    p1, f1 = summed.map_frames(pos, forces, None)
    # positions and masses do not change: the bead is still atom A alone
    np.testing.assert_array_equal(p0, p1)
    assert summed.bead_masses.tolist() == [12.0, 14.0]
    # with O's force the spring cancels inside the bead: the mapped force is A's external force
    np.testing.assert_allclose(f1[:, 0], f_ext, rtol=1e-9, atol=1e-6)
    # without it, the same mean (within 4 standard errors) under noise of sqrt(k kT) per component
    noise = f0[:, 0] - f_ext
    se = noise.std(axis=0) / np.sqrt(len(noise))
    assert np.all(np.abs(noise.mean(axis=0)) < 4 * se)
    assert noise.std() == pytest.approx(np.sqrt(K_SPRING * KT), rel=0.03)
    # bead B is untouched by A's force atoms
    np.testing.assert_array_equal(f0[:, 1], f1[:, 1])


def test_force_atoms_must_be_unmapped_once_and_keep_constrained_groups_whole():
    with pytest.raises(MappingError, match="in bead 1 and in force_atoms"):
        CGMap.build(_spec(["B"]), RESIDUES, MASSES)
    two = MappingSpec.from_dict({"type_names": ["A", "B"], "allow_unmapped": True, "constraints": "none",
                                 "residues": {"MOL": [{"type": "A", "atoms": ["A"], "force_atoms": ["O"]},
                                                      {"type": "B", "atoms": ["B"], "force_atoms": ["O"]}]}})
    with pytest.raises(MappingError, match="force_atoms of two beads"):
        CGMap.build(two, RESIDUES, MASSES)
    with pytest.raises(MappingError, match="unknown bead key"):
        MappingSpec.from_dict({"type_names": ["A"], "residues": {"MOL": [{"type": "A", "force_atom": ["O"]}]}})
    with pytest.raises(MappingError, match="not found in residue MOL"):
        CGMap.build(_spec(["X"]), RESIDUES, MASSES)
    # a methyl C whose constrained hydrogens are left to no bead: their constraint forces would be lost
    mol = [("MOL", [(0, "A"), (1, "C"), (2, "H1"), (3, "B")])]
    spec = MappingSpec.from_dict({"type_names": ["A", "B"], "allow_unmapped": True,
                                  "residues": {"MOL": [{"type": "A", "atoms": ["A"], "force_atoms": ["C"]},
                                                       {"type": "B", "atoms": ["B"]}]}})
    with pytest.raises(MappingError, match="joined by a constraint"):
        CGMap.build(spec, mol, np.array([12.0, 12.0, 1.0, 14.0]), bonds=[(0, 1), (1, 2), (0, 3)])
    whole = MappingSpec.from_dict({**spec.to_dict(), "residues": {
        "MOL": [{"type": "A", "atoms": ["A"], "force_atoms": ["C", "H1"]}, {"type": "B", "atoms": ["B"]}]}})
    assert CGMap.build(whole, mol, np.array([12.0, 12.0, 1.0, 14.0]), bonds=[(0, 1), (1, 2), (0, 3)]).n_beads == 2


def test_the_dipeptide_with_its_carbonyl_oxygens_and_cap_methyls_aggregated():
    """The dipeptide's slicing map with every left-out atom's force added to a bead: all 22 atoms'
    forces are then counted once, so the mapped forces of a frame sum to the total AA force."""
    import openmm.app as app

    spec = MappingSpec.from_dict({
        "type_names": ["C", "N", "CA", "CB"], "allow_unmapped": True, "constraints": "h-bonds",
        "residues": {
            "ACE": [{"type": "C", "atoms": ["C"], "force_atoms": ["O", "CH3", "H1", "H2", "H3"]}],
            "ALA": [{"type": "N", "atoms": ["N", "H"]}, {"type": "CA", "atoms": ["CA", "HA"]},
                    {"type": "CB", "atoms": ["CB", "HB1", "HB2", "HB3"]},
                    {"type": "C", "atoms": ["C"], "force_atoms": ["O"]}],
            "NME": [{"type": "N", "atoms": ["N", "H"], "force_atoms": ["C", "H1", "H2", "H3"]}]}})
    assert MappingSpec.from_dict(spec.to_dict()).residues == spec.residues
    top = app.PDBFile(str(ROOT / "systems" / "dipeptide" / "ala2.pdb")).topology  # atom names as the AA run has them
    masses = np.array([a.element.mass._value for a in top.atoms()])  # test data only: the package never uses elements
    cgmap = CGMap.from_topology(spec, top, masses)
    assert cgmap.n_beads == 6 and np.all(cgmap.atom_force_bead >= 0)
    rng = np.random.default_rng(1)
    pos, frc = rng.normal(size=(3, 22, 3)), rng.normal(size=(3, 22, 3))
    _, f = cgmap.map_frames(pos, frc, None)
    np.testing.assert_allclose(f.sum(axis=1), frc.sum(axis=1), atol=1e-12)
