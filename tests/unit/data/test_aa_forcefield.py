"""OPLS-DES in OpenMM reproduces hand-computed energies (independent numpy implementation)."""
import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from openmm_cgkd.data.opls import build_topology, create_system, load_forcefield, nonbonded_pairs

ROOT = Path(__file__).resolve().parents[3]
FF_PATH = ROOT / "systems" / "des" / "opls-des.yaml"
COULOMB = 138.935458  # kJ/mol nm e^-2 (OpenMM's ONE_4PI_EPS0)


@pytest.fixture(scope="module")
def ff():
    return load_forcefield(FF_PATH)


def _energies(system, positions, groups):
    import openmm as mm
    from openmm import unit

    ctx = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions * unit.nanometer)
    out = {}
    for name, g in groups.items():
        st = ctx.getState(getEnergy=True, groups={g} if isinstance(g, int) else set(g))
        out[name] = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    return out


def _dihedral(p0, p1, p2, p3):
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1n = b1 / np.linalg.norm(b1)
    v = b0 - np.dot(b0, b1n) * b1n
    w = b2 - np.dot(b2, b1n) * b1n
    x = np.dot(v, w)
    y = np.dot(np.cross(b1n, v), w)
    return math.atan2(y, x)


def _angle(a, b, c):
    u, v = a - b, c - b
    return math.acos(np.clip(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v), -1, 1))


def _hand_bonded(mol, x):
    eb = sum(0.5 * k * (np.linalg.norm(x[i] - x[j]) - r0) ** 2 for i, j, r0, k in mol.bonds)
    ea = sum(0.5 * k * (_angle(x[i], x[j], x[l]) - th) ** 2 for i, j, l, th, k in mol.angles)
    ed = 0.0
    for i, j, k, l, (v1, v2, v3, v4) in mol.dihedrals:
        phi = _dihedral(x[i], x[j], x[k], x[l])
        ed += 0.5 * (v1 * (1 + math.cos(phi)) + v2 * (1 - math.cos(2 * phi)) + v3 * (1 + math.cos(3 * phi))
                     + v4 * (1 - math.cos(4 * phi)))
    return eb, ea, ed


def _graph_distance(mol):
    n = mol.n_atoms
    d = np.full((n, n), 99)
    np.fill_diagonal(d, 0)
    for i, j, *_ in mol.bonds:
        d[i, j] = d[j, i] = 1
    for k in range(n):  # Floyd-Warshall
        d = np.minimum(d, d[:, k:k + 1] + d[k:k + 1, :])
    return d


def _lj(si, ei, sj, ej, r):
    s, e = math.sqrt(si * sj), math.sqrt(ei * ej)  # geometric mixing of BOTH sigma and epsilon
    return 4 * e * ((s / r) ** 12 - (s / r) ** 6)


def _hand_nonbonded_intra(mol, x):
    d = _graph_distance(mol)
    ec = elj = 0.0
    for i, j in itertools.combinations(range(mol.n_atoms), 2):
        if d[i, j] < 3:
            continue
        f = 0.5 if d[i, j] == 3 else 1.0
        r = np.linalg.norm(x[i] - x[j])
        ec += f * COULOMB * mol.charges[i] * mol.charges[j] / r
        elj += f * _lj(mol.sigmas[i], mol.epsilons[i], mol.sigmas[j], mol.epsilons[j], r)
    return ec, elj


@pytest.mark.parametrize("key", ["choline", "urea", "cl"])
def test_single_molecule_terms(ff, key):
    mol = ff.molecules[key]
    top = build_topology(ff, {key: 1})
    system = create_system(ff, top, nonbonded="NoCutoff", constraints=None)
    x = mol.coordinates.copy()
    e = _energies(system, x, {"bond": 0, "angle": 1, "dihedral": 2, "nb": (3, 4)})
    eb, ea, ed = _hand_bonded(mol, x)
    ec, elj = _hand_nonbonded_intra(mol, x)
    assert e["bond"] == pytest.approx(eb, rel=1e-6, abs=1e-6)
    assert e["angle"] == pytest.approx(ea, rel=1e-6, abs=1e-6)
    assert e["dihedral"] == pytest.approx(ed, rel=1e-6, abs=1e-6)
    assert e["nb"] == pytest.approx(ec + elj, rel=1e-6, abs=1e-6)


def test_one_four_pairs_are_scaled_by_half(ff):
    """Urea O-H 1-4 pairs: OpenMM's 1-4 exception energy equals 0.5 x full Coulomb + 0.5 x full LJ."""
    mol = ff.molecules["urea"]
    excl, p14 = nonbonded_pairs(mol)
    assert (0, 1) in excl and (1, 2) in excl  # C-O (1-2), O-N (1-3)
    assert (1, 4) in p14 and (1, 6) in p14  # O..H (1-4)
    system = create_system(ff, build_topology(ff, {"choline": 1}), nonbonded="NoCutoff", constraints=None)
    cho = ff.molecules["choline"]
    # choline N(4)-O(8): 1-4 pair (N-C1-C5-O8); both carry LJ and charge
    nb = [f for f in system.getForces() if f.__class__.__name__ == "NonbondedForce"][0]
    found = False
    for k in range(nb.getNumExceptions()):
        i, j, qq, sig, eps = nb.getExceptionParameters(k)
        if {i, j} == {3, 7}:
            found = True
            assert qq._value == pytest.approx(0.5 * cho.charges[3] * cho.charges[7])
            assert sig._value == pytest.approx(math.sqrt(cho.sigmas[3] * cho.sigmas[7]))
            assert eps._value == pytest.approx(0.5 * math.sqrt(cho.epsilons[3] * cho.epsilons[7]))
    assert found


def test_two_molecules_lj_geometric_and_coulomb(ff):
    """Choline + urea far apart in vacuum: the intermolecular energy is full Coulomb + geometric LJ."""
    top = build_topology(ff, {"choline": 1, "urea": 1})
    system = create_system(ff, top, nonbonded="NoCutoff", constraints=None)
    cho, ure = ff.molecules["choline"], ff.molecules["urea"]
    xc = cho.coordinates - cho.coordinates.mean(0)
    xu = ure.coordinates - ure.coordinates.mean(0) + np.array([0.55, 0.1, -0.05])
    x = np.vstack([xc, xu])
    e_pair = _energies(system, x, {"nb": (3, 4)})["nb"]
    ec1, el1 = _hand_nonbonded_intra(cho, xc)
    ec2, el2 = _hand_nonbonded_intra(ure, xu)
    inter_c = inter_lj = 0.0
    for i in range(cho.n_atoms):
        for j in range(ure.n_atoms):
            r = np.linalg.norm(xc[i] - xu[j])
            inter_c += COULOMB * cho.charges[i] * ure.charges[j] / r
            inter_lj += _lj(cho.sigmas[i], cho.epsilons[i], ure.sigmas[j], ure.epsilons[j], r)
    assert abs(inter_lj) > 0.1 and abs(inter_c) > 0.1
    assert e_pair == pytest.approx(ec1 + el1 + ec2 + el2 + inter_c + inter_lj, rel=1e-6)


def test_lj_mixing_is_geometric_not_arithmetic(ff):
    """Cl-O(urea) at 0.33 nm: the geometric and arithmetic sigma differ; OpenMM must use geometric."""
    top = build_topology(ff, {"cl": 1, "urea": 1})
    system = create_system(ff, top, nonbonded="NoCutoff", constraints=None)
    for q in [f for f in system.getForces() if f.__class__.__name__ == "NonbondedForce"]:
        for i in range(q.getNumParticles()):
            q.setParticleParameters(i, 0.0, 1.0, 0.0)  # switch off Coulomb
    ure, cl = ff.molecules["urea"], ff.molecules["cl"]
    xu = ure.coordinates - ure.coordinates[1]  # O at the origin
    x = np.vstack([[[0.33, 0.0, 0.0]], xu + np.array([0.0, 0.0, 0.0])])
    # put the urea far from Cl except the O: evaluate Cl-O only by differencing
    e = _energies(system, x, {"lj": 4})["lj"]
    hand = sum(_lj(cl.sigmas[0], cl.epsilons[0], ure.sigmas[j], ure.epsilons[j], np.linalg.norm(x[0] - xu[j]))
               for j in range(ure.n_atoms))
    hand += _hand_nonbonded_intra(ure, xu)[1] - sum(
        0.5 * _lj(ure.sigmas[i], ure.epsilons[i], ure.sigmas[j], ure.epsilons[j], np.linalg.norm(xu[i] - xu[j]))
        for i, j in nonbonded_pairs(ure)[1])  # 1-4 LJ lives in the NonbondedForce (group 3)
    assert e == pytest.approx(hand, rel=1e-6)
    arith = 0.5 * (cl.sigmas[0] + ure.sigmas[1])
    assert abs(arith - math.sqrt(cl.sigmas[0] * ure.sigmas[1])) > 1e-3


def test_pme_system_builds_with_constraints(ff):
    top = build_topology(ff, {"choline": 2, "cl": 2, "urea": 4}, box_nm=2.2)
    system = create_system(ff, top, cutoff_nm=1.0)
    n_h_bonds = 2 * 14 + 4 * 4  # choline: 14 H; urea: 4 H
    assert system.getNumConstraints() == n_h_bonds
    with pytest.raises(ValueError, match="half the box"):
        create_system(ff, top, cutoff_nm=1.2)
