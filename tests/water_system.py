"""A small TIP3P water box written two ways by the tests, for the AA system definition kinds:
OpenMM force field XML (``amber14/tip3p.xml``, a PDB with CRYST1) and a self-contained GROMACS
topology (its own ``[defaults]``, ``[atomtypes]``, ``[moleculetype] SOL`` with ``[settles]`` and
``[exclusions]``, as GROMACS' own tip3p.itp has them; no ``#include``) with a .gro. The .top
carries the parameters of amber14/tip3p.xml typed out, so both give one System."""
from __future__ import annotations

from pathlib import Path

import numpy as np

# amber14/tip3p.xml (OpenMM 8): O sigma/epsilon/charge, H charge (H has no LJ), masses, geometry
O_SIGMA, O_EPSILON, O_CHARGE, H_CHARGE = 0.31507524065751241, 0.635968, -0.834, 0.417
O_MASS, H_MASS = 15.99943, 1.007947
R_OH, R_HH = 0.09572, 0.15139  # nm (104.52 deg)
TEMPERATURE_K = 300.0
MAPPING = {"type_names": ["W"], "residues": {"HOH": [{"type": "W", "atoms": "all"}]}}

TOP = f"""; TIP3P water, self-contained (no #include)
[ defaults ]
; nbfunc comb-rule gen-pairs fudgeLJ fudgeQQ
1 2 yes 0.5 0.8333

[ atomtypes ]
; name at.num mass charge ptype sigma epsilon
OW_tip3p 8 {O_MASS} 0.000 A {O_SIGMA} {O_EPSILON}
HW_tip3p 1 {H_MASS} 0.000 A 0.0 0.0

[ moleculetype ]
; molname nrexcl
SOL 2

[ atoms ]
; id at-type res-nr res-name at-name cg-nr charge mass
1 OW_tip3p 1 SOL OW 1 {O_CHARGE} {O_MASS}
2 HW_tip3p 1 SOL HW1 1 {H_CHARGE} {H_MASS}
3 HW_tip3p 1 SOL HW2 1 {H_CHARGE} {H_MASS}

[ settles ]
; OW funct doh dhh
1 1 {R_OH} {R_HH}

[ exclusions ]
1 2 3
2 1 3
3 1 2

[ system ]
water box

[ molecules ]
SOL {{n}}
"""


def water_box(edge_nm: float = 1.9):
    """(topology, positions nm) of a cubic TIP3P box of edge ``edge_nm`` filled by OpenMM's Modeller."""
    import openmm as mm
    from openmm import app, unit

    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(app.ForceField("amber14/tip3p.xml"), model="tip3p",
                        boxSize=mm.Vec3(edge_nm, edge_nm, edge_nm) * unit.nanometer)
    return modeller.topology, np.asarray(modeller.getPositions().value_in_unit(unit.nanometer))


def write_gro(path: Path, positions: np.ndarray, edge_nm: float) -> Path:
    """A .gro of the waters (residue SOL, atoms OW HW1 HW2)."""
    lines = ["water box", f"{len(positions):5d}"]
    for i, xyz in enumerate(positions):
        name = ("OW", "HW1", "HW2")[i % 3]
        lines.append(f"{i // 3 + 1:5d}{'SOL':<5s}{name:>5s}{(i + 1) % 100000:5d}"
                     + "".join(f"{x:8.3f}" for x in xyz))
    lines.append(f"{edge_nm:10.5f}{edge_nm:10.5f}{edge_nm:10.5f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_inputs(folder: Path, edge_nm: float = 1.9, cutoff_nm: float = 0.8) -> dict:
    """Write water.pdb + xml.yaml (the openmm kind) and water.top + water.gro + gmx.yaml (the
    gromacs kind), same positions (the .gro's 3 decimals also in the PDB) and a mapping.yaml
    (one bead per water, named under HOH). Returns their paths."""
    import yaml
    from openmm import app

    folder.mkdir(parents=True, exist_ok=True)
    top, pos = water_box(edge_nm)
    pos = np.round(pos, 3)  # the .gro's precision, so that both kinds start from one structure
    with open(folder / "water.pdb", "w") as fh:
        app.PDBFile.writeFile(top, pos * 10.0, fh)  # angstrom
    write_gro(folder / "water.gro", pos, edge_nm)
    (folder / "water.top").write_text(TOP.format(n=top.getNumResidues()))
    common = {"temperature_K": TEMPERATURE_K, "timestep_fs": 2.0, "friction_per_ps": 1.0, "cutoff_nm": cutoff_nm,
              "constraints": "HBonds", "nonbonded": "PME", "mapping": "mapping.yaml"}
    (folder / "xml.yaml").write_text(yaml.safe_dump({"name": "water-xml", "forcefield": ["amber14/tip3p.xml"],
                                                     "structure": "water.pdb", **common}))
    (folder / "gmx.yaml").write_text(yaml.safe_dump({"name": "water-gmx", "forcefield": "water.top",
                                                     "structure": "water.gro", **common}))
    (folder / "mapping.yaml").write_text(yaml.safe_dump(MAPPING))
    return {k: folder / v for k, v in [("pdb", "water.pdb"), ("gro", "water.gro"), ("top", "water.top"),
                                        ("xml", "xml.yaml"), ("gmx", "gmx.yaml"), ("mapping", "mapping.yaml")]} \
        | {"n_waters": top.getNumResidues()}
