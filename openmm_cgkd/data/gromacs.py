"""GROMACS input from our OPLS-DES force field: topology (.top), coordinates (.gro), run settings (.mdp).

:func:`write_top` writes a self-contained topology of a composition (``[ defaults ]``, ``[ atomtypes ]``,
one ``[ moleculetype ]`` per molecule, ``[ system ]``, ``[ molecules ]``) with the same physics as
:func:`openmm_cgkd.data.opls.create_system`:

* ``[ defaults ]``: Lennard-Jones (nbfunc 1), geometric mixing of sigma and epsilon (comb-rule 3),
  ``gen-pairs yes`` with the force field's 1-4 scales as fudgeLJ / fudgeQQ;
* bonds (function 1, b0 nm, kb kJ/mol/nm^2), angles (function 1, theta0 degrees, k kJ/mol/rad^2),
  OPLS Fourier dihedrals (function 5, C1..C4 kJ/mol), ``nrexcl 3``;
* with ``constraints="HBonds"`` the bonds to hydrogen are written as ``[ constraints ]`` (function 1,
  length b0) instead of ``[ bonds ]``: run with ``constraints = none`` in the mdp (the topology already
  says which bonds are rigid);
* with ``pairs=True`` the 1-4 pairs (atoms three bonds apart, by bond graph) are listed in
  ``[ pairs ]`` (function 1, parameters generated from the atom types and fudgeLJ; charges scaled by
  fudgeQQ). GROMACS computes no 1-4 interaction for a pair that is not listed: ``nrexcl 3`` excludes
  it entirely. ``pairs=False`` writes that variant (what the public OPLS-DES GROMACS files do); it
  equals our OpenMM system with ``scale_14: 0`` in the system YAML.

Atom order = composition order, molecule by molecule, template atom order (as
:func:`~openmm_cgkd.data.opls.build_topology` and :func:`~openmm_cgkd.data.build.build_box`), so a
GROMACS trajectory of these files maps with ``systems/des/mapping.yaml``.
:func:`write_mdp` writes run settings that save positions and forces at the same interval
(``nstxout = nstfout``), what ``cgkd map`` needs. Units: nm, ps, kJ/mol, e, dalton, K.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from openmm_cgkd.data.opls import ForceField, nonbonded_pairs

__all__ = ["write_top", "write_gro", "write_mdp", "gromacs_executable", "ATOMIC_NUMBERS"]

ATOMIC_NUMBERS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9, "Na": 11, "P": 15, "S": 16, "Cl": 17, "K": 19, "Br": 35}


def gromacs_executable() -> str:
    """Path of ``gmx`` (or ``gmx_d`` / ``gmx_mpi``) on PATH; ``FileNotFoundError`` naming the fix otherwise."""
    for name in ("gmx", "gmx_d", "gmx_mpi"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError("GROMACS not found: no gmx, gmx_d or gmx_mpi on PATH (Debian/Ubuntu: "
                            "`apt-get install gromacs`)")


def _items(composition) -> list[tuple[str, int]]:
    return list(composition.items()) if isinstance(composition, dict) else [(k, int(v)) for k, v in composition]


def _atom_types(ff: ForceField, keys: list[str]) -> dict[tuple[str, str], str]:
    """GROMACS type name of (molecule key, force-field type): the force-field name, prefixed with the
    molecule key where two molecules give one name different parameters."""
    params: dict[str, set] = {}
    for key in keys:
        mol = ff.molecules[key]
        for t, s, e in zip(mol.atom_types, mol.sigmas, mol.epsilons):
            params.setdefault(t, set()).add((float(s), float(e)))
    names = {}
    for key in keys:
        for t in ff.molecules[key].atom_types:
            names[(key, t)] = t if len(params[t]) == 1 else f"{key}_{t}"
    return names


def write_top(path: str | Path, ff: ForceField, composition, *, pairs: bool = True,
              constraints: str | None = "HBonds", name: str = "OPLS-DES") -> Path:
    """Write a self-contained GROMACS topology of ``composition`` (force-field molecule keys -> counts,
    in atom order); see the module docstring. Returns the path."""
    if constraints not in (None, "HBonds"):
        raise ValueError(f"constraints must be 'HBonds' or None, got {constraints!r}")
    items = [(k, n) for k, n in _items(composition) if int(n) > 0]
    unknown = [k for k, _ in items if k not in ff.molecules]
    if unknown:
        raise ValueError(f"molecules {unknown} are not in the force field (known: {sorted(ff.molecules)})")
    keys = list(dict.fromkeys(k for k, _ in items))
    tnames = _atom_types(ff, keys)
    lines = [f"; {name}: written by openmm_cgkd.data.gromacs from {Path(ff.path).name or 'the force field'}",
             f"; {ff.source}" if ff.source else ";",
             "; 1-4 pairs " + ("listed (scaled by fudgeLJ / fudgeQQ)" if pairs
                               else "NOT listed: 1-4 interactions excluded"),
             "", "[ defaults ]", "; nbfunc  comb-rule  gen-pairs  fudgeLJ  fudgeQQ",
             f"  1        3          yes        {ff.fudge_lj:g}      {ff.fudge_qq:g}", "",
             "[ atomtypes ]", "; name  at.num  mass  charge  ptype  sigma(nm)  epsilon(kJ/mol)"]
    seen = set()
    for key in keys:
        mol = ff.molecules[key]
        for a, t in enumerate(mol.atom_types):
            tn = tnames[(key, t)]
            if tn in seen:
                continue
            seen.add(tn)
            lines.append(f"  {tn:<10s} {ATOMIC_NUMBERS.get(mol.elements[a], 0):3d} {mol.masses[a]:10.4f}  0.0000  A  "
                         f"{mol.sigmas[a]:.6g}  {mol.epsilons[a]:.6g}")
    for key in keys:
        mol = ff.molecules[key]
        hydrogens = {a for a in range(mol.n_atoms) if mol.elements[a] == "H"}
        lines += ["", "[ moleculetype ]", "; name  nrexcl", f"  {mol.residue_name}  3", "", "[ atoms ]",
                  "; nr  type  resnr  residue  atom  cgnr  charge  mass"]
        for a in range(mol.n_atoms):
            lines.append(f"  {a + 1:4d}  {tnames[(key, mol.atom_types[a])]:<10s} 1  {mol.residue_name:<5s} "
                         f"{mol.atom_names[a]:<5s} {a + 1:4d}  {mol.charges[a]:9.5f}  {mol.masses[a]:9.4f}")
        rigid = [(i, j, r0) for i, j, r0, _ in mol.bonds
                 if constraints == "HBonds" and (i in hydrogens or j in hydrogens)]
        flexible = [(i, j, r0, k) for i, j, r0, k in mol.bonds
                    if not (constraints == "HBonds" and (i in hydrogens or j in hydrogens))]
        if flexible:
            lines += ["", "[ bonds ]", "; i  j  func  b0(nm)  kb(kJ/mol/nm^2)"]
            lines += [f"  {i + 1:4d} {j + 1:4d}  1  {r0:.6g}  {k:.6g}" for i, j, r0, k in flexible]
        if rigid:
            lines += ["", "[ constraints ]", "; i  j  func  b0(nm)"]
            lines += [f"  {i + 1:4d} {j + 1:4d}  1  {r0:.6g}" for i, j, r0 in rigid]
        if pairs:
            p14 = nonbonded_pairs(mol)[1]
            if p14:
                lines += ["", "[ pairs ]", "; i  j  func"]
                lines += [f"  {i + 1:4d} {j + 1:4d}  1" for i, j in p14]
        if mol.angles:
            lines += ["", "[ angles ]", "; i  j  k  func  theta0(deg)  k(kJ/mol/rad^2)"]
            lines += [f"  {i + 1:4d} {j + 1:4d} {k + 1:4d}  1  {math.degrees(th):.6f}  {kk:.6g}"
                      for i, j, k, th, kk in mol.angles]
        if mol.dihedrals:
            lines += ["", "[ dihedrals ]", "; i  j  k  l  func  C1..C4 (kJ/mol), OPLS Fourier"]
            lines += [f"  {i + 1:4d} {j + 1:4d} {k + 1:4d} {l + 1:4d}  5  " + "  ".join(f"{c:.6g}" for c in v)
                      for i, j, k, l, v in mol.dihedrals]
    lines += ["", "[ system ]", f"  {name}", "", "[ molecules ]", "; name  count"]
    lines += [f"  {ff.molecules[k].residue_name:<8s} {int(n)}" for k, n in items]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_gro(path: str | Path, ff: ForceField, composition, positions_nm, box_nm, title: str = "openmm_cgkd") -> Path:
    """Write ``positions_nm`` (atoms in composition order, nm) and a box (a cubic edge, 3 edges, or 3x3
    rows = box vectors, lower-triangular; nm) as a .gro file (0.001 nm precision)."""
    pos = np.asarray(positions_nm, dtype=float)
    items = [(k, int(n)) for k, n in _items(composition) if int(n) > 0]
    n_atoms = sum(ff.molecules[k].n_atoms * n for k, n in items)
    if pos.shape != (n_atoms, 3):
        raise ValueError(f"positions have shape {pos.shape}; the composition has {n_atoms} atoms")
    box = np.asarray(box_nm, dtype=float)
    if box.ndim == 0 or box.shape == (3,):
        box = np.diag(np.broadcast_to(box, (3,)))
    if box.shape != (3, 3) or box[0, 1] or box[0, 2] or box[1, 2]:
        raise ValueError(f"box must be 3 edge lengths or 3x3 lower-triangular box vectors (nm), got {box.tolist()}")
    lines = [title, f"{n_atoms:5d}"]
    atom, res = 0, 0
    for key, count in items:
        mol = ff.molecules[key]
        for _ in range(count):
            res += 1
            for a in range(mol.n_atoms):
                x, y, z = pos[atom]
                atom += 1
                lines.append(f"{res % 100000:5d}{mol.residue_name[:5]:<5s}{mol.atom_names[a][:5]:>5s}"
                             f"{atom % 100000:5d}{x:8.3f}{y:8.3f}{z:8.3f}")
    v = [box[0, 0], box[1, 1], box[2, 2], box[0, 1], box[0, 2], box[1, 0], box[1, 2], box[2, 0], box[2, 1]]
    lines.append("".join(f"{x:10.5f}" for x in (v[:3] if not any(v[3:]) else v)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_mdp(path: str | Path, *, steps: int, output_interval: int, timestep_fs: float = 2.0,
              cutoff_nm: float = 1.0, temperature_k: float = 298.1, friction_per_ps: float = 1.0,
              seed: int = 1, ewald_rtol: float = 1e-5, fourier_spacing_nm: float = 0.12, pme_order: int = 4) -> Path:
    """Run settings matching our OpenMM AA runs, saving positions AND forces every ``output_interval``
    steps (``nstxout = nstfout``: ``cgkd map`` pairs them frame by frame).

    Langevin dynamics (``integrator = sd``, time constant 1/friction) at ``temperature_k``; PME and
    plain Lennard-Jones cut off at ``cutoff_nm`` (no modifier: our CustomNonbondedForce), long-range
    dispersion correction; rigid bonds as the topology's ``[ constraints ]`` (``constraints = none``).
    PME accuracy: ``ewald_rtol``, ``fourier_spacing_nm``, ``pme_order`` (GROMACS' defaults 1e-5, 0.12,
    4 give forces within about 2e-3 relative RMS of a converged PME; 1e-6, 0.05, 6 within 1e-5).
    """
    if steps < 1 or output_interval < 1:
        raise ValueError(f"steps and output_interval must be >= 1, got {steps}, {output_interval}")
    settings = {
        "integrator": "sd", "dt": f"{timestep_fs / 1000.0:g}", "nsteps": int(steps),
        "tc-grps": "System", "tau-t": f"{1.0 / friction_per_ps:g}", "ref-t": f"{temperature_k:g}",
        "gen-vel": "yes", "gen-temp": f"{temperature_k:g}", "gen-seed": int(seed), "ld-seed": int(seed),
        "nstxout": int(output_interval), "nstfout": int(output_interval), "nstvout": 0,
        "nstenergy": int(output_interval), "nstcalcenergy": int(output_interval), "nstlog": int(output_interval),
        "cutoff-scheme": "Verlet", "pbc": "xyz", "coulombtype": "PME", "rcoulomb": f"{cutoff_nm:g}",
        "vdwtype": "Cut-off", "vdw-modifier": "None", "rvdw": f"{cutoff_nm:g}", "DispCorr": "EnerPres",
        "ewald-rtol": f"{ewald_rtol:g}", "fourierspacing": f"{fourier_spacing_nm:g}", "pme-order": int(pme_order),
        "constraints": "none", "constraint-algorithm": "lincs", "lincs-order": 8, "lincs-iter": 2,
        "continuation": "no",
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("; written by openmm_cgkd.data.gromacs.write_mdp: positions and forces at the same "
                    "interval\n" + "".join(f"{k:<22s} = {v}\n" for k, v in settings.items()))
    return path
