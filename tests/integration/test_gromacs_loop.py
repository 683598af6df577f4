"""GROMACS in the loop: a small OPLS-DES box built by our builder, its GROMACS topology written by
openmm_cgkd.data.gromacs, a short `gmx mdrun` writing positions and forces, the TRR mapped by
`cgkd map`. Checks, each against an independent calculation:

(a) GROMACS forces on the TRR frames = our OpenMM system's forces on the same positions (the
    topology with its 1-4 pairs; the variant without pairs, rerun by GROMACS, = our system with
    scale_14 0), and the two variants really differ;
(b) the mapped dataset = centres of mass and summed forces computed here from the TRR with a
    different unwrapping (along the bond graph) and the force field's own masses.

Skipped, saying so, where GROMACS (`gmx`) is not installed (`apt-get install gromacs`).
"""
import dataclasses
import os
import subprocess
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from openmm_cgkd.data.gromacs import gromacs_executable, write_gro, write_mdp, write_top
from openmm_cgkd.data.opls import build_topology, create_system
from openmm_cgkd.data.systemdef import SystemDefinition

ROOT = Path(__file__).resolve().parents[2]
N_MOLECULES = 60  # 15 choline, 15 chloride, 30 urea: 570 atoms in a 1.755 nm box
CUTOFF_NM = 0.8
PME = dict(ewald_rtol=1e-6, fourier_spacing_nm=0.05, pme_order=6)  # PME converged on the GROMACS side

try:
    GMX, REASON = gromacs_executable(), ""
except FileNotFoundError as exc:
    GMX, REASON = None, str(exc)
pytestmark = pytest.mark.skipif(GMX is None, reason=f"GROMACS is not installed: {REASON}")


def _gmx(workdir, *args):
    # one OpenMP thread whatever the process environment says (another test may have set
    # OMP_NUM_THREADS, which mdrun then finds inconsistent with -nt 1)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([GMX, "-quiet", *args], cwd=workdir, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"gmx {args[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


def _read_trr(path):
    from mdtraj.formats import TRRTrajectoryFile

    with TRRTrajectoryFile(str(path)) as fh:
        xyz, time, step, box, _, _, forces = fh._read(1000, None, get_velocities=False, get_forces=True)
    return xyz.astype(np.float64), forces.astype(np.float64), box.astype(np.float64), time, step


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Build, write GROMACS files, run 20 steps (frames every 10) and rerun them without 1-4 pairs."""
    from openmm_cgkd.data.build import build_box, read_pdb_positions

    work = tmp_path_factory.mktemp("gromacs")
    sysdef = SystemDefinition.from_yaml(ROOT / "systems" / "des" / "system.yaml").resized(n_molecules=N_MOLECULES)
    sysdef = dataclasses.replace(sysdef, cutoff_nm=CUTOFF_NM)
    build_box(sysdef, work / "built.pdb", minimise_steps=100, log=lambda s: None)
    ff = sysdef.forcefield
    write_top(work / "pairs.top", ff, sysdef.composition, pairs=True)
    write_top(work / "nopairs.top", ff, sysdef.composition, pairs=False)
    write_gro(work / "start.gro", ff, sysdef.composition, read_pdb_positions(work / "built.pdb"), sysdef.box_nm)
    write_mdp(work / "md.mdp", steps=20, output_interval=10, timestep_fs=1.0, cutoff_nm=CUTOFF_NM, **PME)
    _gmx(work, "grompp", "-f", "md.mdp", "-c", "start.gro", "-p", "pairs.top", "-o", "md.tpr", "-po", "out.mdp")
    _gmx(work, "mdrun", "-s", "md.tpr", "-deffnm", "md", "-nt", "1", "-pin", "off")
    _gmx(work, "grompp", "-f", "md.mdp", "-c", "start.gro", "-p", "nopairs.top", "-o", "nopairs.tpr",
         "-po", "out2.mdp")
    _gmx(work, "mdrun", "-s", "nopairs.tpr", "-rerun", "md.trr", "-deffnm", "rerun", "-nt", "1", "-pin", "off")
    return {"dir": work, "sysdef": sysdef, "ff": ff}


def _molecules(ff, composition):
    """(first atom index, molecule) of every molecule, in atom order."""
    out, start = [], 0
    for key, count in composition.items():
        for _ in range(count):
            out.append((start, ff.molecules[key]))
            start += ff.molecules[key].n_atoms
    return out


def _whole_along_bonds(x, box, molecules):
    """Molecules made whole by walking the bond graph: each atom at the minimum image of its bond
    partner already placed (independent of the mapping code, which goes from the first atom)."""
    x = x.copy()
    inv = np.linalg.inv(box)
    for start, mol in molecules:
        adj = {a: [] for a in range(mol.n_atoms)}
        for i, j, *_ in mol.bonds:
            adj[i].append(j)
            adj[j].append(i)
        seen, queue = {0}, deque([0])
        while queue:
            i = queue.popleft()
            for j in adj[i]:
                if j not in seen:
                    d = x[start + j] - x[start + i]
                    d -= np.round(d @ inv) @ box
                    x[start + j] = x[start + i] + d
                    seen.add(j)
                    queue.append(j)
        assert len(seen) == mol.n_atoms
    return x


def _openmm_forces(ff, composition, pos, box):
    import openmm
    from openmm import unit

    top = build_topology(ff, composition, box)
    system = create_system(ff, top, cutoff_nm=CUTOFF_NM, constraints="HBonds", ewald_tolerance=1e-6)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    ctx.setPositions(pos * unit.nanometer)
    return ctx.getState(getForces=True).getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)


def _relative_rms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2)))


def test_gromacs_forces_equal_openmm_forces(run):
    """Measured: 0.4-2.5e-5 relative RMS with and without pairs (float32 TRR; PME converged on both
    sides); the two variants differ by 0.2-0.4."""
    ff, sysdef = run["ff"], run["sysdef"]
    no14 = dataclasses.replace(ff, fudge_lj=0.0, fudge_qq=0.0)  # = scale_14: 0 in a system YAML
    xyz, forces, boxes, _, steps = _read_trr(run["dir"] / "md.trr")
    _, forces_nopairs, _, _, steps_rerun = _read_trr(run["dir"] / "rerun.trr")
    assert list(steps) == [0, 10, 20] and list(steps_rerun) == [0, 10, 20]
    molecules = _molecules(ff, sysdef.composition)
    for k in range(len(xyz)):
        # OpenMM's bonded forces and NonbondedForce exceptions do not apply periodic boundaries by
        # default: give it whole molecules (the TRR has molecules broken across the box)
        whole = _whole_along_bonds(xyz[k], boxes[k], molecules)
        ref = _openmm_forces(ff, sysdef.composition, whole, boxes[k])
        ref_no14 = _openmm_forces(no14, sysdef.composition, whole, boxes[k])
        print(f"frame {k}: relative RMS force difference GROMACS - OpenMM {_relative_rms(forces[k], ref):.2e} "
              f"(pairs), {_relative_rms(forces_nopairs[k], ref_no14):.2e} (no pairs vs scale_14 0), "
              f"{_relative_rms(forces[k], ref_no14):.2f} (pairs vs scale_14 0)")
        assert _relative_rms(forces[k], ref) < 1e-4, k
        assert _relative_rms(forces_nopairs[k], ref_no14) < 1e-4, k
        assert _relative_rms(forces[k], ref_no14) > 0.05, k  # the 1-4 pairs matter


def test_cgkd_map_of_the_trr_equals_independent_com_and_force_sums(run, tmp_path):
    from openmm_cgkd.cli.main import main
    from openmm_cgkd.data.dataset import CGDataset

    ff, sysdef, work = run["ff"], run["sysdef"], run["dir"]
    out = tmp_path / "cg.h5"
    rc = main(["map", "--trajectory", str(work / "md.trr"), "--topology", str(work / "pairs.top"),
               "--mapping", str(ROOT / "systems" / "des" / "mapping.yaml"), "--out", str(out),
               "--mdp", str(work / "md.mdp")])
    assert rc == 0
    ds = CGDataset.load(out)
    assert ds.temperature_K == 298.1  # the .mdp's ref-t (write_mdp's default)
    xyz, forces, boxes, times, _ = _read_trr(work / "md.trr")
    molecules = _molecules(ff, sysdef.composition)
    starts = [s for s, _ in molecules]
    assert ds.positions.shape == (3, N_MOLECULES, 3)
    assert [ds.type_names[t] for t in ds.bead_types] == ["Cho"] * 15 + ["Cl"] * 15 + ["Urea"] * 30
    np.testing.assert_allclose(ds.times, times, atol=1e-6)
    np.testing.assert_allclose(ds.boxes, boxes, atol=1e-6)
    masses = np.concatenate([mol.masses for _, mol in molecules])
    np.testing.assert_allclose(ds.masses, np.add.reduceat(masses, starts), rtol=1e-6)

    broken = 0
    for k in range(len(xyz)):
        whole = _whole_along_bonds(xyz[k], boxes[k], molecules)
        broken += sum(np.abs(whole[s:s + m.n_atoms] - xyz[k][s:s + m.n_atoms]).max() > 1e-6 for s, m in molecules)
        com = np.add.reduceat(whole * masses[:, None], starts) / np.add.reduceat(masses, starts)[:, None]
        d = ds.positions[k] - com
        d -= np.round(d @ np.linalg.inv(boxes[k])) @ boxes[k]  # the dataset wraps COMs into the box
        assert np.abs(d).max() < 1e-4, k
        np.testing.assert_allclose(ds.forces[k], np.add.reduceat(forces[k], starts), rtol=1e-5, atol=1e-3)
        assert np.abs(ds.forces[k]).max() > 10.0
    assert broken > 0  # GROMACS wrote molecules broken across the box: the mapping made them whole
