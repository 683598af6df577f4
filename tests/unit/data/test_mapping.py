"""AA -> CG mapping: COM across the boundary, force sums, masses, spec errors."""
from pathlib import Path

import numpy as np
import pytest

from openmm_cgkd.data.external import AATrajectory
from openmm_cgkd.data.mapping import CGMap, MappingError, MappingSpec, make_whole, map_trajectory
from openmm_cgkd.data.opls import build_topology, create_system, load_forcefield

ROOT = Path(__file__).resolve().parents[3]
SPEC = ROOT / "systems" / "des" / "mapping.yaml"


@pytest.fixture(scope="module")
def ff():
    return load_forcefield(ROOT / "systems" / "des" / "opls-des.yaml")


@pytest.fixture(scope="module")
def spec():
    return MappingSpec.from_yaml(SPEC)


def _mdtop(ff, comp, box=None):
    import mdtraj as md

    return md.Topology.from_openmm(build_topology(ff, comp, box))


def _masses(ff, comp):
    return np.concatenate([np.tile(ff.molecules[k].masses, n) for k, n in comp.items()])


def _coords(ff, comp, centres):
    out, c = [], 0
    for k, n in comp.items():
        for _ in range(n):
            x = ff.molecules[k].coordinates
            out.append(x - x.mean(0) + centres[c])
            c += 1
    return np.vstack(out)


def _forces(system, x, groups=None):
    import openmm as mm
    from openmm import unit

    ctx = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(x * unit.nanometer)
    st = ctx.getState(getForces=True, groups=groups) if groups else ctx.getState(getForces=True)
    return st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)


def test_bead_masses_are_sums(ff, spec):
    comp = {"choline": 2, "cl": 2, "urea": 3}
    cgmap = CGMap.from_topology(spec, _mdtop(ff, comp), _masses(ff, comp))
    assert cgmap.n_beads == 7
    assert [spec.type_names[t] for t in cgmap.bead_types] == ["Cho", "Cho", "Cl", "Cl", "Urea", "Urea", "Urea"]
    np.testing.assert_allclose(cgmap.bead_masses[:2], 5 * 12.011 + 14 * 1.008 + 14.007 + 15.999)
    np.testing.assert_allclose(cgmap.bead_masses[2:4], 35.45)
    np.testing.assert_allclose(cgmap.bead_masses[4:], 12.011 + 15.999 + 2 * 14.007 + 4 * 1.008)
    assert cgmap.bead_masses.sum() == pytest.approx(_masses(ff, comp).sum())


def test_com_of_molecule_split_across_boundary(ff, spec):
    comp = {"choline": 1}
    L = 2.0
    box = np.eye(3) * L
    x = ff.molecules["choline"].coordinates
    m = ff.molecules["choline"].masses
    x = x - (x * m[:, None]).sum(0) / m.sum() + np.array([0.02, L - 0.01, 1.0])  # COM right at a corner
    com_true = np.array([0.02, L - 0.01, 1.0])
    wrapped = x - np.floor(x / L) * L  # atoms scattered over both sides of two faces
    assert np.ptp(wrapped[:, 1]) > L / 2  # really split
    aa = AATrajectory(_mdtop(ff, comp, box), m, wrapped[None], np.zeros_like(wrapped)[None], box[None], np.zeros(1))
    ds = map_trajectory(aa, spec)
    np.testing.assert_allclose(ds.positions[0, 0], com_true, atol=1e-5)
    # translating the whole molecule by a box vector changes nothing
    aa2 = AATrajectory(aa.topology, m, (wrapped + [0, L, -L])[None], aa.forces, aa.boxes, aa.times)
    np.testing.assert_allclose(map_trajectory(aa2, spec).positions, ds.positions, atol=1e-5)


def test_make_whole_triclinic():
    box = np.array([[2.0, 0, 0], [0.5, 2.0, 0], [0.3, 0.2, 2.0]])
    x = np.array([[0.05, 0.05, 0.05], [0.15, 0.05, 0.05]])
    shifted = x.copy()
    shifted[1] += box[1] - box[2]
    np.testing.assert_allclose(make_whole(shifted, np.array([0, 0]), box), x, atol=1e-12)


def test_intramolecular_forces_map_to_zero(ff, spec):
    """Forces of isolated molecules (bonds, angles, dihedrals, intramolecular 1-4 and beyond) sum to zero."""
    comp = {"choline": 2, "cl": 1, "urea": 2}
    rng = np.random.default_rng(3)
    centres = rng.uniform(0.5, 2.5, (5, 3))
    x = _coords(ff, comp, centres) + rng.normal(0, 0.01, (2 * 21 + 1 + 2 * 8, 3))  # distorted geometries
    forces = []
    start = 0
    for k, n in comp.items():
        for _ in range(n):
            nat = ff.molecules[k].n_atoms
            sysm = create_system(ff, build_topology(ff, {k: 1}), nonbonded="NoCutoff", constraints=None)
            forces.append(_forces(sysm, x[start:start + nat]))
            start += nat
    f = np.vstack(forces)
    assert np.abs(f).max() > 100  # there ARE large atomic forces
    box = np.eye(3) * 3.0
    aa = AATrajectory(_mdtop(ff, comp, box), _masses(ff, comp), x[None], f[None], box[None], np.zeros(1))
    ds = map_trajectory(aa, spec)
    np.testing.assert_allclose(ds.forces, 0.0, atol=1e-3)


def test_mapped_force_is_total_intermolecular_force(ff, spec):
    comp = {"choline": 1, "cl": 1, "urea": 2}
    centres = np.array([[1.0, 1.0, 1.0], [1.45, 1.1, 0.9], [0.6, 1.3, 1.2], [1.2, 0.5, 1.4]])
    x = _coords(ff, comp, centres)
    full = _forces(create_system(ff, build_topology(ff, comp), nonbonded="NoCutoff", constraints=None), x)
    intra, start = [], 0
    for k, n in comp.items():
        for _ in range(n):
            nat = ff.molecules[k].n_atoms
            sysm = create_system(ff, build_topology(ff, {k: 1}), nonbonded="NoCutoff", constraints=None)
            intra.append(_forces(sysm, x[start:start + nat]))
            start += nat
    inter = full - np.vstack(intra)
    box = np.eye(3) * 5.0
    aa = AATrajectory(_mdtop(ff, comp, box), _masses(ff, comp), x[None], full[None], box[None], np.zeros(1))
    ds = map_trajectory(aa, spec)
    bounds = np.cumsum([0, 21, 1, 8, 8])
    expect = np.array([inter[a:b].sum(0) for a, b in zip(bounds[:-1], bounds[1:])])
    assert np.abs(expect).max() > 10
    np.testing.assert_allclose(ds.forces[0], expect, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(ds.forces[0].sum(0), 0.0, atol=1e-2)  # Newton's third law


def test_spec_errors(ff):
    comp = {"choline": 1, "urea": 1}
    top, m = _mdtop(ff, comp), _masses(ff, comp)
    partial = MappingSpec.from_dict({"type_names": ["Cho", "Urea"], "residues": {
        "CHOL": [{"type": "Cho", "atoms": ["CS", "NA"]}], "UREA": [{"type": "Urea"}]}})
    with pytest.raises(MappingError, match="belong to no bead"):
        CGMap.from_topology(partial, top, m)
    missing = MappingSpec.from_dict({"type_names": ["Cho"], "residues": {"CHOL": [{"type": "Cho"}]}})
    with pytest.raises(MappingError, match="UREA"):
        CGMap.from_topology(missing, top, m)
    with pytest.raises(MappingError, match="not in type_names"):
        MappingSpec.from_dict({"type_names": ["A"], "residues": {"CHOL": [{"type": "B"}]}})
    two = MappingSpec.from_dict({"type_names": ["Head", "Tail", "Urea"], "residues": {
        "CHOL": [{"type": "Head", "atoms": list(range(1, 10))}, {"type": "Tail", "atoms": list(range(10, 22))}],
        "UREA": [{"type": "Urea", "atoms": "all"}]}})
    cgmap = CGMap.from_topology(two, top, m)
    assert cgmap.n_beads == 3 and cgmap.bead_masses.sum() == pytest.approx(m.sum())


@pytest.mark.parametrize("path", [SPEC, ROOT / "systems" / "dipeptide" / "mapping.yaml"])
def test_spec_to_dict_reads_back_the_same_spec(path):
    """A run.json keeps the spec as to_dict(); from_dict must give every setting back (a partial
    map's allow_unmapped, constraints, joined beads), else reading the run's mapped parts fails."""
    spec = MappingSpec.from_yaml(path)
    back = MappingSpec.from_dict(spec.to_dict(), "run.json")
    for k in ("type_names", "residues", "aliases", "allow_unmapped", "constraints", "bead_names"):
        assert getattr(back, k) == getattr(spec, k), k
    joined = MappingSpec.from_dict({"type_names": ["A"], "residues": {"X": [{"type": "A", "atoms": [1]}],
                                                                      "Y": [{"type": "A", "atoms": [1], "join": "previous"}]},
                                    "allow_unmapped": True, "constraints": "none"})
    again = MappingSpec.from_dict(joined.to_dict())
    assert again.residues["Y"][0].join == "previous" and again.allow_unmapped and again.constraints == "none"
