"""OPLS-DES (choline chloride : urea) as an OpenMM System, built from the plain-number YAML.

The force field file (``systems/des/opls-des.yaml``, a verbatim copy of the reference) is the
OpenMM input: :func:`load_forcefield` reads it into :class:`MoleculeType` residue templates and
:func:`create_system` builds an ``openmm.System`` for any composition, with

* harmonic bonds ``E = k/2 (r - r0)^2`` and angles ``E = k/2 (theta - theta0)^2`` (GROMACS units),
* OPLS Fourier dihedrals ``E = 1/2 [V1(1+cos phi) + V2(1-cos 2phi) + V3(1+cos 3phi) + V4(1-cos 4phi)]``
  as ``PeriodicTorsionForce`` terms (k = V/2; phase pi for the even terms),
* Coulomb in a ``NonbondedForce`` (PME, or no cutoff for tests) whose LJ epsilon is zero, and
  Lennard-Jones with GEOMETRIC mixing of sigma and epsilon in a ``CustomNonbondedForce``
  (the usual OPLS trick; written as a_i a_j / r^12 - b_i b_j / r^6, which is the same thing),
  plain cutoff at the PME cutoff plus the analytic long-range dispersion correction,
* 1-2 and 1-3 pairs (by bond graph) excluded; 1-4 pairs as NonbondedForce exceptions with
  charge product and epsilon scaled by 0.5 (sigma geometric), excluded from the custom force.

Units: nm, kJ/mol, e, dalton; angles in the YAML are degrees.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["MoleculeType", "ForceField", "load_forcefield", "build_topology", "create_system",
           "element_for_mass", "nonbonded_pairs"]

_ELEMENT_MASSES = {"H": 1.008, "C": 12.011, "N": 14.007, "O": 15.999, "Cl": 35.45, "S": 32.06,
                   "P": 30.974, "F": 18.998, "Na": 22.99, "K": 39.098, "Br": 79.904}


def element_for_mass(mass: float) -> str:
    """Element symbol whose standard mass is closest to ``mass`` (dalton)."""
    return min(_ELEMENT_MASSES, key=lambda s: abs(_ELEMENT_MASSES[s] - mass))


@dataclass
class MoleculeType:
    """One residue template: atoms, parameters, bonded terms and a starting geometry."""

    key: str
    residue_name: str
    atom_names: list[str]  # unique within the residue
    atom_types: list[str]
    charges: np.ndarray  # e
    masses: np.ndarray  # dalton
    sigmas: np.ndarray  # nm
    epsilons: np.ndarray  # kJ/mol
    bonds: list[tuple[int, int, float, float]]  # (i, j, r0 nm, k kJ/mol/nm^2), 0-based
    angles: list[tuple[int, int, int, float, float]]  # (i, j, k, theta0 rad, k kJ/mol/rad^2)
    dihedrals: list[tuple[int, int, int, int, tuple[float, float, float, float]]]  # V1..V4 kJ/mol
    coordinates: np.ndarray  # (n, 3) nm
    elements: list[str] = field(default_factory=list)

    @property
    def n_atoms(self) -> int:
        return len(self.atom_names)

    @property
    def mass(self) -> float:
        return float(self.masses.sum())


@dataclass
class ForceField:
    molecules: dict[str, MoleculeType]
    fudge_lj: float = 0.5
    fudge_qq: float = 0.5
    source: str = ""
    path: str = ""

    def by_residue(self, residue_name: str) -> MoleculeType:
        for m in self.molecules.values():
            if m.residue_name == residue_name:
                return m
        raise KeyError(f"no molecule with residue name {residue_name!r} in the force field "
                       f"(known: {[m.residue_name for m in self.molecules.values()]})")


def _unique_names(names: list[str]) -> list[str]:
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if counts[n] == 1:
            out.append(n)
        else:
            seen[n] = seen.get(n, 0) + 1
            out.append(f"{n}{seen[n]}")
    return out


def load_forcefield(path: str | Path) -> ForceField:
    """Read an OPLS-DES-style YAML (format of ``systems/des/opls-des.yaml``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        from openmm_cgkd.errors import MissingFileError

        raise MissingFileError(f"force-field file not found: {path}")
    doc = yaml.safe_load(path.read_text())
    nb = doc.get("nonbonded", {})
    mols: dict[str, MoleculeType] = {}
    for key, m in doc["molecules"].items():
        types = m["atom_types"]
        atoms = sorted(m["atoms"], key=lambda a: a["index"])
        if [a["index"] for a in atoms] != list(range(1, len(atoms) + 1)):
            raise ValueError(f"{path}: atoms of {key} must be numbered 1..n")
        tnames = [a["type"] for a in atoms]
        masses = np.array([float(a.get("mass", types[a["type"]]["mass"])) for a in atoms])
        mol = MoleculeType(
            key=key, residue_name=m["residue_name"],
            atom_names=_unique_names([a["name"] for a in atoms]), atom_types=tnames,
            charges=np.array([float(a["charge"]) for a in atoms]), masses=masses,
            sigmas=np.array([float(types[t]["sigma"]) for t in tnames]),
            epsilons=np.array([float(types[t]["epsilon"]) for t in tnames]),
            bonds=[(b["atoms"][0] - 1, b["atoms"][1] - 1, float(b["r0"]), float(b["k"])) for b in m.get("bonds", [])],
            angles=[(a["atoms"][0] - 1, a["atoms"][1] - 1, a["atoms"][2] - 1, math.radians(float(a["theta0"])),
                     float(a["k"])) for a in m.get("angles", [])],
            dihedrals=[(*[i - 1 for i in d["atoms"]], tuple(float(v) for v in (list(d["V"]) + [0, 0, 0, 0])[:4]))
                       for d in m.get("dihedrals", [])],
            coordinates=np.array(m["template_coordinates_nm"], dtype=float),
            elements=[element_for_mass(x) for x in masses],
        )
        if mol.coordinates.shape != (mol.n_atoms, 3):
            raise ValueError(f"{path}: template_coordinates_nm of {key} must have {mol.n_atoms} rows")
        mols[key] = mol
    return ForceField(mols, float(nb.get("fudge_lj_14", 0.5)), float(nb.get("fudge_qq_14", 0.5)),
                      str(doc.get("source", "")), str(path))


def nonbonded_pairs(mol: MoleculeType) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(excluded 1-2/1-3 pairs, scaled 1-4 pairs) by shortest bond-graph distance, 0-based."""
    n = mol.n_atoms
    adj: list[list[int]] = [[] for _ in range(n)]
    for i, j, *_ in mol.bonds:
        adj[i].append(j)
        adj[j].append(i)
    excl, pairs14 = [], []
    for s in range(n):
        dist = {s: 0}
        q = deque([s])
        while q:
            u = q.popleft()
            if dist[u] >= 3:
                continue
            for v in adj[u]:
                if v not in dist:
                    dist[v] = dist[u] + 1
                    q.append(v)
        for t, d in dist.items():
            if t > s:
                (excl if d <= 2 else pairs14).append((s, t))
    return excl, pairs14


def build_topology(ff: ForceField, composition: dict[str, int] | list[tuple[str, int]], box_nm=None):
    """An OpenMM Topology with ``composition`` molecules (keys of ``ff.molecules``), in order."""
    from openmm import Vec3, unit
    from openmm.app import Element, Topology

    items = list(composition.items()) if isinstance(composition, dict) else list(composition)
    top = Topology()
    chain = top.addChain()
    for key, count in items:
        mol = ff.molecules[key]
        for _ in range(int(count)):
            res = top.addResidue(mol.residue_name, chain)
            atoms = [top.addAtom(name, Element.getBySymbol(el), res)
                     for name, el in zip(mol.atom_names, mol.elements)]
            for i, j, *_ in mol.bonds:
                top.addBond(atoms[i], atoms[j])
    if box_nm is not None:
        box = np.asarray(box_nm, dtype=float)
        if box.ndim == 0 or box.shape == (3,):
            box = np.diag(np.broadcast_to(box, (3,)))
        top.setPeriodicBoxVectors([Vec3(*row) for row in box] * unit.nanometer)
    return top


def create_system(ff: ForceField, topology, *, nonbonded: str = "PME", cutoff_nm: float = 1.2,
                  constraints: str | None = "HBonds", dispersion_correction: bool = True,
                  ewald_tolerance: float = 5e-4):
    """Build the OpenMM System of ``topology`` (residues must be force-field molecules).

    ``nonbonded``: "PME" (periodic; the topology must carry a box) or "NoCutoff".
    ``constraints``: "HBonds" (bonds to hydrogen fixed at r0) or None.
    Force groups: 0 bonds, 1 angles, 2 dihedrals, 3 Coulomb (+1-4), 4 LJ.
    """
    import openmm as mm
    from openmm import unit

    if constraints not in (None, "HBonds"):
        raise ValueError(f"constraints must be 'HBonds' or None, got {constraints!r}")
    system = mm.System()
    if nonbonded == "PME":
        vecs = topology.getPeriodicBoxVectors()
        if vecs is None:
            raise ValueError("PME needs a periodic topology (box vectors)")
        system.setDefaultPeriodicBoxVectors(*vecs)
        half = 0.5 * min(np.linalg.norm(np.asarray(v.value_in_unit(unit.nanometer))) for v in vecs)
        if cutoff_nm >= half:
            raise ValueError(f"cutoff {cutoff_nm} nm must be below half the box ({half:.3f} nm)")
    elif nonbonded != "NoCutoff":
        raise ValueError(f"nonbonded must be 'PME' or 'NoCutoff', got {nonbonded!r}")

    bond_f = mm.HarmonicBondForce()
    angle_f = mm.HarmonicAngleForce()
    tors_f = mm.PeriodicTorsionForce()
    coul = mm.NonbondedForce()
    # Geometric mixing of sigma AND epsilon factorises: 4 eps_ij sig_ij^12 = a_i a_j and
    # 4 eps_ij sig_ij^6 = b_i b_j with a = 2 sqrt(eps) sig^6, b = 2 sqrt(eps) sig^3 (cheaper per pair).
    lj = mm.CustomNonbondedForce("(a1*a2*ir6 - b1*b2)*ir6; ir6 = 1/r^6")
    lj.addPerParticleParameter("a")
    lj.addPerParticleParameter("b")
    if nonbonded == "PME":
        coul.setNonbondedMethod(mm.NonbondedForce.PME)
        coul.setCutoffDistance(cutoff_nm)
        coul.setEwaldErrorTolerance(ewald_tolerance)
        coul.setUseDispersionCorrection(False)
        lj.setNonbondedMethod(mm.CustomNonbondedForce.CutoffPeriodic)
        lj.setCutoffDistance(cutoff_nm)
        lj.setUseLongRangeCorrection(dispersion_correction)
    else:
        coul.setNonbondedMethod(mm.NonbondedForce.NoCutoff)
        lj.setNonbondedMethod(mm.CustomNonbondedForce.NoCutoff)
    for f, g in ((bond_f, 0), (angle_f, 1), (tors_f, 2), (coul, 3), (lj, 4)):
        f.setForceGroup(g)

    residues = list(topology.residues())
    n_expected = 0
    cache: dict[str, tuple] = {}
    for res in residues:
        mol = ff.by_residue(res.name)
        atoms = list(res.atoms())
        if len(atoms) != mol.n_atoms:
            raise ValueError(f"residue {res.name} {res.index} has {len(atoms)} atoms; template has {mol.n_atoms}")
        if mol.key not in cache:
            cache[mol.key] = nonbonded_pairs(mol)
        excl, p14 = cache[mol.key]
        base = system.getNumParticles()
        if atoms[0].index != base:
            raise ValueError("topology atoms must be numbered consecutively, residue by residue")
        for a in range(mol.n_atoms):
            system.addParticle(float(mol.masses[a]))
            coul.addParticle(float(mol.charges[a]), 1.0, 0.0)
            se = 2.0 * math.sqrt(mol.epsilons[a])
            lj.addParticle([float(se * mol.sigmas[a] ** 6), float(se * mol.sigmas[a] ** 3)])
        hydrogens = {a for a in range(mol.n_atoms) if mol.elements[a] == "H"}
        for i, j, r0, k in mol.bonds:
            if constraints == "HBonds" and (i in hydrogens or j in hydrogens):
                system.addConstraint(base + i, base + j, r0)
            else:
                bond_f.addBond(base + i, base + j, r0, k)
        for i, j, k, th, kk in mol.angles:
            angle_f.addAngle(base + i, base + j, base + k, th, kk)
        for i, j, k, l, v in mol.dihedrals:
            for n, (vn, phase) in enumerate(zip(v, (0.0, math.pi, 0.0, math.pi)), start=1):
                if vn != 0.0:
                    tors_f.addTorsion(base + i, base + j, base + k, base + l, n, phase, 0.5 * vn)
        for i, j in excl:
            coul.addException(base + i, base + j, 0.0, 1.0, 0.0)
            lj.addExclusion(base + i, base + j)
        for i, j in p14:
            qq = ff.fudge_qq * mol.charges[i] * mol.charges[j]
            sig = math.sqrt(mol.sigmas[i] * mol.sigmas[j])
            eps = ff.fudge_lj * math.sqrt(mol.epsilons[i] * mol.epsilons[j])
            coul.addException(base + i, base + j, float(qq), float(sig) if sig > 0 else 1.0, float(eps))
            lj.addExclusion(base + i, base + j)
        n_expected += mol.n_atoms
    for f in (bond_f, angle_f, tors_f, coul, lj):
        system.addForce(f)
    return system
