"""A small system that is not the DES, built with OpenMM in the tests: a united-atom hexane-like chain
(6 sites CH3-CH2-CH2-CH2-CH2-CH3, harmonic bonds and angles, a torsion, LJ between sites 4+ bonds
apart and between molecules), as a liquid in a periodic box or as one molecule in vacuum. The
mapping puts two sites in a bead: 3 beads (E-M-E) per molecule, bonded E-M and M-E, one angle.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

MASS = {"CH3": 15.035, "CH2": 14.027}  # dalton (the topology's, never the element's)
TEMPERATURE_K = 300.0
MAPPING = {
    "type_names": ["E", "M"],
    "residues": {"HEX": [{"type": "E", "atoms": ["C1", "C2"]}, {"type": "M", "atoms": ["C3", "C4"]},
                         {"type": "E", "atoms": ["C5", "C6"]}]},
}


def build(n_molecules: int = 27, box_nm: float | None = 3.0, seed: int = 0):
    """(openmm Topology, System, positions nm [N,3], masses [N]) of ``n_molecules`` chains on a cubic
    lattice in a box of edge ``box_nm`` (None: no box, one molecule in vacuum)."""
    import openmm
    from openmm import app, unit

    rng = np.random.default_rng(seed)
    top = app.Topology()
    chain = top.addChain()
    names = ["C1", "C2", "C3", "C4", "C5", "C6"]
    kinds = ["CH3", "CH2", "CH2", "CH2", "CH2", "CH3"]
    system = openmm.System()
    bonds = openmm.HarmonicBondForce()
    angles = openmm.HarmonicAngleForce()
    torsions = openmm.PeriodicTorsionForce()
    cutoff = 0.9 if box_nm is not None else 2.0
    nb = openmm.CustomNonbondedForce("4*eps*((sig/r)^12-(sig/r)^6); sig=0.5*(s1+s2); eps=sqrt(e1*e2)")
    nb.addPerParticleParameter("s")
    nb.addPerParticleParameter("e")
    lj = {"CH3": (0.375, 0.815), "CH2": (0.395, 0.382)}
    side = int(np.ceil(n_molecules ** (1 / 3)))
    spacing = (box_nm / side) if box_nm is not None else 1.0
    pos = []
    masses = []
    for m in range(n_molecules):
        res = top.addResidue("HEX", chain)
        atoms = [top.addAtom(n, app.element.carbon, res) for n in names]
        for a, b in zip(atoms[:-1], atoms[1:]):
            top.addBond(a, b)
        base = 6 * m
        for k in kinds:
            system.addParticle(MASS[k])
            masses.append(MASS[k])
            nb.addParticle(list(lj[k]))
        for i in range(5):
            bonds.addBond(base + i, base + i + 1, 0.154, 1.0e5)
        for i in range(4):
            angles.addAngle(base + i, base + i + 1, base + i + 2, np.radians(114.0), 520.0)
        for i in range(3):
            torsions.addTorsion(base + i, base + i + 1, base + i + 2, base + i + 3, 3, 0.0, 3.0)
            torsions.addTorsion(base + i, base + i + 1, base + i + 2, base + i + 3, 1, 0.0, 1.5)
        # a zig-zag chain along a random direction around its lattice site
        site = (np.array([m % side, (m // side) % side, m // side ** 2]) + 0.5) * spacing
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        perp = np.cross(d, rng.normal(size=3))
        perp /= np.linalg.norm(perp)
        for i in range(6):
            pos.append(site + (i - 2.5) * 0.128 * d + (0.04 if i % 2 else -0.04) * perp)
    for m in range(n_molecules):
        base = 6 * m
        for i in range(6):
            for j in range(i + 1, min(i + 4, 6)):
                nb.addExclusion(base + i, base + j)
    if box_nm is not None:
        nb.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
        system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in np.eye(3) * box_nm))
        top.setPeriodicBoxVectors(np.eye(3) * box_nm * unit.nanometer)
    else:
        nb.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffNonPeriodic)
    nb.setCutoffDistance(cutoff)
    for f in (bonds, angles, torsions, nb):
        system.addForce(f)
    return top, system, np.asarray(pos), np.asarray(masses)


def run_md(n_molecules: int = 27, box_nm: float | None = 3.0, frames: int = 150, stride: int = 50,
           equilibrate: int = 2000, seed: int = 1):
    """(topology, masses, positions [F,N,3] nm, forces [F,N,3] kJ/mol/nm, boxes [F,3,3] or None)
    of a Langevin run at 300 K with 2 fs steps (forces: every force of the System, no constraints)."""
    import openmm
    from openmm import unit

    top, system, pos, masses = build(n_molecules, box_nm, seed)
    integ = openmm.LangevinMiddleIntegrator(TEMPERATURE_K * unit.kelvin, 5.0 / unit.picosecond,
                                            2.0 * unit.femtosecond)
    integ.setRandomNumberSeed(seed)
    ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName("CPU"), {"Threads": "2"})
    ctx.setPositions(pos * unit.nanometer)
    openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, 500)
    ctx.setVelocitiesToTemperature(TEMPERATURE_K * unit.kelvin, seed)
    integ.step(equilibrate)
    xs, fs, bs = [], [], []
    for _ in range(frames):
        integ.step(stride)
        st = ctx.getState(getPositions=True, getForces=True)
        xs.append(st.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        fs.append(st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
        bs.append(st.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
    boxes = np.asarray(bs) if box_nm is not None else None
    return top, masses, np.asarray(xs), np.asarray(fs), boxes


def write_inputs(out: Path, n_molecules: int = 27, box_nm: float | None = 3.0, frames: int = 150,
                 stride: int = 50) -> dict[str, Path]:
    """The files a user brings to `cgkd map`: a PDB with CONECT records, a DCD, a force .npy, masses
    and the mapping YAML. Returns their paths."""
    import mdtraj as md
    import yaml
    from openmm import app, unit

    top, masses, xs, fs, boxes = run_md(n_molecules, box_nm, frames, stride)
    out.mkdir(parents=True, exist_ok=True)
    pdb = out / "aa.pdb"
    with open(pdb, "w") as fh:
        app.PDBFile.writeFile(top, xs[0] * unit.nanometer, fh)
    mdtop = md.Topology.from_openmm(top)
    traj = md.Trajectory(xs, mdtop, time=np.arange(len(xs)) * stride * 0.002)
    if boxes is not None:
        traj.unitcell_vectors = boxes
    dcd = out / "aa.dcd"
    traj.save_dcd(str(dcd))
    np.save(out / "forces.npy", fs)
    np.save(out / "masses.npy", masses)
    (out / "mapping.yaml").write_text(yaml.safe_dump(MAPPING))
    return {"pdb": pdb, "dcd": dcd, "forces": out / "forces.npy", "masses": out / "masses.npy",
            "mapping": out / "mapping.yaml", "positions": xs, "boxes": boxes}
