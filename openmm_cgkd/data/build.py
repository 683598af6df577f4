"""Box building: pack a composition at a target density with packmol, then minimise."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from openmm_cgkd.data.opls import ForceField, build_topology, create_system
from openmm_cgkd.data.systemdef import SystemDefinition
from openmm_cgkd.errors import CGKDError, MissingFileError

__all__ = ["packmol_executable", "pack_box", "minimiser_platform", "minimise", "build_box", "write_pdb", "read_pdb_positions", "BuildError"]


class BuildError(CGKDError, RuntimeError):
    """Packing a box failed (packmol's message is included)."""


def packmol_executable() -> str:
    """Path of the packmol binary (shipped by the ``packmol`` Python package)."""
    cand = Path(sys.executable).parent / "packmol"
    if cand.is_file():
        return str(cand)
    found = shutil.which("packmol")
    if found:
        return found
    raise MissingFileError("packmol executable not found: install the `packmol` package (pip/uv) "
                            "or put packmol on PATH")


def _write_template_pdb(path: Path, mol, coords_nm: np.ndarray) -> None:
    lines = []
    for i, (name, el) in enumerate(zip(mol.atom_names, mol.elements)):
        x, y, z = coords_nm[i] * 10.0
        lines.append(f"HETATM{i + 1:5d} {name:<4s} {mol.residue_name[:4]:>4s}A   1    "
                     f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00          {el:>2s}")
    lines.append("END")
    path.write_text("\n".join(lines) + "\n")


def read_pdb_positions(path: str | Path) -> np.ndarray:
    """Coordinates (nm) of the ATOM/HETATM records of a PDB file, in file order."""
    out = []
    for line in Path(path).read_text().splitlines():
        if line.startswith(("ATOM", "HETATM")):
            out.append((float(line[30:38]), float(line[38:46]), float(line[46:54])))
    return np.asarray(out) / 10.0


def pack_box(ff: ForceField, composition: dict[str, int], box_nm: float, *, seed: int = 1,
             tolerance_A: float = 2.0, workdir: str | Path | None = None, timeout_s: float = 1800) -> np.ndarray:
    """Random non-overlapping packing with packmol; returns positions (n_atoms, 3) nm.

    Molecules are placed inside [tol/2, L - tol/2] so that periodic images do not overlap.
    Atom order = composition order, molecule by molecule, template atom order.
    """
    exe = packmol_executable()
    tmp_ctx = tempfile.TemporaryDirectory() if workdir is None else None
    wd = Path(tmp_ctx.name if tmp_ctx else workdir)
    wd.mkdir(parents=True, exist_ok=True)
    try:
        L = box_nm * 10.0
        lo, hi = tolerance_A / 2, L - tolerance_A / 2
        lines = [f"tolerance {tolerance_A}", "filetype pdb", "output packed.pdb", f"seed {int(seed)}",
                 "nloop 200", ""]
        for key, count in composition.items():
            if int(count) <= 0:
                continue
            mol = ff.molecules[key]
            c = mol.coordinates - mol.coordinates.mean(axis=0)
            _write_template_pdb(wd / f"{key}.pdb", mol, c)
            lines += [f"structure {key}.pdb", f"  number {int(count)}",
                      f"  inside box {lo:.3f} {lo:.3f} {lo:.3f} {hi:.3f} {hi:.3f} {hi:.3f}", "end structure", ""]
        (wd / "pack.inp").write_text("\n".join(lines))
        with open(wd / "pack.inp") as fin, open(wd / "packmol.log", "w") as flog:
            proc = subprocess.run([exe], stdin=fin, stdout=flog, stderr=subprocess.STDOUT, cwd=wd, timeout=timeout_s)
        out = wd / "packed.pdb"
        if not out.is_file():
            out = wd / "packed.pdb_FORCED"
        if proc.returncode not in (0, 173) or not out.is_file():
            tail = (wd / "packmol.log").read_text()[-2000:]
            raise BuildError(f"packmol failed (exit {proc.returncode}); log tail:\n{tail}")
        pos = read_pdb_positions(out)
        n = sum(ff.molecules[k].n_atoms * int(v) for k, v in composition.items())
        if pos.shape != (n, 3):
            raise BuildError(f"packmol wrote {pos.shape[0]} atoms, expected {n}")
        return pos
    finally:
        if tmp_ctx:
            tmp_ctx.cleanup()


def minimiser_platform(choice=None):
    """The platform and Context properties the box minimiser runs with: ``choice`` (a
    :class:`~openmm_cgkd.platforms.PlatformChoice`; None: the default platform) made reproducible.

    On CPU: ``DeterministicForces`` and one thread unless ``choice`` sets ``Threads``. L-BFGS
    amplifies the last bits of the forces: measured on a 40- and a 100-molecule reline box,
    OpenMM's CPU platform gave minimised structures up to 0.36 nm apart from the same start with
    its defaults, with one thread alone, and with ``DeterministicForces`` on 2 threads; with both
    (deterministic forces, one thread) four repeats were identical to the bit. GPU platforms that
    have ``DeterministicForces`` (CUDA, HIP) get it too. Returns ``(platform, properties)``.
    """
    from openmm_cgkd.platforms import select_platform

    choice = select_platform() if choice is None else choice
    props = dict(choice.properties)
    names = set(choice.platform.getPropertyNames())
    if "DeterministicForces" in names:
        props["DeterministicForces"] = "true"
    if choice.name == "CPU":
        props.setdefault("Threads", "1")
    return choice.platform, props


def minimise(system, positions_nm: np.ndarray, *, tolerance: float = 10.0, max_iterations: int = 0,
             platform=None) -> tuple[np.ndarray, float]:
    """Local energy minimisation (L-BFGS) on :func:`minimiser_platform` ``(platform)`` (a
    :class:`~openmm_cgkd.platforms.PlatformChoice` or None): the same start gives the same result
    on one machine. Returns (positions nm, potential energy kJ/mol); ``tolerance`` kJ/mol/nm."""
    import openmm as mm
    from openmm import unit

    plat, props = minimiser_platform(platform)
    integ = mm.VerletIntegrator(0.001)
    ctx = mm.Context(system, integ, plat, props)
    ctx.setPositions(positions_nm * unit.nanometer)
    ctx.applyConstraints(1e-6)
    mm.LocalEnergyMinimizer.minimize(ctx, tolerance, max_iterations)
    st = ctx.getState(getPositions=True, getEnergy=True)
    pos = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    e = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    del ctx, integ
    return np.asarray(pos), float(e)


def write_pdb(path: str | Path, topology, positions_nm: np.ndarray) -> Path:
    from openmm import unit
    from openmm.app import PDBFile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w") as fh:
        PDBFile.writeFile(topology, np.asarray(positions_nm) * unit.nanometer, fh, keepIds=False)
    tmp.replace(path)
    return path


def build_box(sysdef: SystemDefinition, out_pdb: str | Path, *, seed: int = 1, minimise_steps: int = 0,
              platform=None, log=print) -> dict:
    """Pack ``sysdef`` with packmol (``seed``), minimise (:func:`minimise` on ``platform``, a
    :class:`~openmm_cgkd.platforms.PlatformChoice` or None), write ``out_pdb`` (CRYST1 = box).
    The same ``seed`` gives the same structure on one machine (unless ``platform`` sets CPU
    ``Threads`` above 1). Returns a summary.

    A system given by its structure (the ``openmm`` and ``gromacs`` kinds of
    :mod:`~openmm_cgkd.data.systemdef`) is not packed: its structure is minimised and written."""
    import time

    if sysdef.kind != "opls":
        t0 = time.time()
        top, system = sysdef.create_openmm()
        pos_min, e_min = minimise(system, sysdef.start_positions(), max_iterations=minimise_steps, platform=platform)
        write_pdb(out_pdb, top, pos_min)
        info = {"n_atoms": int(pos_min.shape[0]), "n_molecules": sysdef.n_molecules, "box_nm": sysdef.box_nm or None,
                "minimised_energy_kJ_mol": e_min, "minimise_s": round(time.time() - t0, 2), "pdb": str(out_pdb)}
        log(f"minimised {sysdef.structure_path.name} ({info['n_atoms']} atoms, {info['n_molecules']} molecules, "
            f"{'box ' + format(sysdef.box_nm, '.3f') + ' nm' if sysdef.periodic else 'no periodic box'}) to "
            f"{e_min:.1f} kJ/mol in {info['minimise_s']} s -> {out_pdb}")
        return info
    ff = sysdef.forcefield
    t0 = time.time()
    pos = pack_box(ff, sysdef.composition, sysdef.box_nm, seed=seed)
    t1 = time.time()
    top = build_topology(ff, sysdef.composition, sysdef.box_vectors())
    system = create_system(ff, top, cutoff_nm=min(sysdef.cutoff_nm, 0.49 * sysdef.box_nm),
                           constraints=sysdef.constraints)
    pos_min, e_min = minimise(system, pos, max_iterations=minimise_steps, platform=platform)
    t2 = time.time()
    write_pdb(out_pdb, top, pos_min)
    info = {"n_atoms": int(pos.shape[0]), "n_molecules": sysdef.n_molecules, "box_nm": sysdef.box_nm,
            "density_g_cm3": sysdef.density_g_cm3, "minimised_energy_kJ_mol": e_min,
            "packmol_s": round(t1 - t0, 2), "minimise_s": round(t2 - t1, 2), "pdb": str(out_pdb)}
    log(f"packed {info['n_molecules']} molecules ({info['n_atoms']} atoms) in a {sysdef.box_nm:.4f} nm box "
        f"({sysdef.density_g_cm3:.4f} g/cm^3) in {info['packmol_s']} s; minimised to {e_min:.1f} kJ/mol "
        f"in {info['minimise_s']} s -> {out_pdb}")
    return info
