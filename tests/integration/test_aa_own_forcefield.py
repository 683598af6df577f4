"""AA data from the user's own force field: ``cgkd aa-build`` + ``cgkd aa-run`` (a few ps, CPU) of
(a) the shipped dipeptide (OpenMM XML, implicit solvent, no box), (b) a TIP3P water box from
``amber14/tip3p.xml`` (PME) and (c) the same box from a self-contained GROMACS .top/.gro, checked
against independent calculations: a numpy mapping of the AA frames (centres of mass with the
force field's physical masses, summed forces), the beads' bonds, and the GROMACS system's energy
against the XML one's."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from openmm_cgkd.cli.main import main
from openmm_cgkd.data.aamd import Protocol, read_frames, read_mapped, run_aa
from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.data.mapping import MappingSpec
from openmm_cgkd.data.systemdef import SystemDefinition
from water_system import H_MASS, O_MASS, TEMPERATURE_K, write_inputs

ROOT = Path(__file__).resolve().parents[2]
DIPEPTIDE = ROOT / "systems" / "dipeptide"
# systems/dipeptide/mapping.yaml, by residue and atom name (independent of the mapping module)
DIPEPTIDE_BEADS = [("ACE", ["C"]), ("ALA", ["N", "H"]), ("ALA", ["CA", "HA"]), ("ALA", ["CB", "HB1", "HB2", "HB3"]),
                   ("ALA", ["C"]), ("NME", ["N", "H"])]
CPU = ["--platform", "CPU", "--threads", "2", "--no-progress"]
WATER_EDGE_NM, WATER_CUTOFF_NM = 1.6, 0.7


def _physical_masses(forcefield_files, pdb):
    """Masses (dalton) of the structure's atoms from OpenMM's own ForceField (no repartitioning)."""
    from openmm import app, unit

    f = app.PDBFile(str(pdb))
    system = app.ForceField(*forcefield_files).createSystem(f.topology)
    return np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])


def _run(args, capsys):
    rc = main(args)
    out = capsys.readouterr()
    assert rc == 0, out.err[-2000:]
    return out


# ---- (a) the dipeptide: XML, no box, on-the-fly mapping, HMR, kill and resume ------------------

@pytest.fixture(scope="module")
def dipeptide_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("ala2") / "built.pdb"
    assert main(["aa-build", "--system", str(DIPEPTIDE / "system.yaml"), "--out", str(out), *CPU[:4]]) == 0
    return out


def test_dipeptide_build_minimises_its_structure(dipeptide_build):
    from openmm import app

    built = app.PDBFile(str(dipeptide_build))
    start = app.PDBFile(str(DIPEPTIDE / "ala2.pdb"))
    assert [a.name for a in built.topology.atoms()] == [a.name for a in start.topology.atoms()]
    assert built.topology.getPeriodicBoxVectors() is None  # not periodic: no CRYST1
    s = SystemDefinition.from_yaml(DIPEPTIDE / "system.yaml")
    energies = []
    import openmm as mm
    from openmm import unit

    _, system = s.create_openmm()
    ctx = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    for f in (start, built):
        ctx.setPositions(f.getPositions())
        energies.append(ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert energies[1] < energies[0]


def _independent_dipeptide_map(run_dir: Path):
    """Beads of the AA frames by numpy: COM with OpenMM's physical masses, summed forces."""
    fr = read_frames(run_dir)
    from openmm import app

    top = app.PDBFile(str(DIPEPTIDE / "ala2.pdb")).topology
    m = _physical_masses(["amber14-all.xml", "implicit/gbn2.xml"], DIPEPTIDE / "ala2.pdb")
    index = {}
    for a in top.atoms():
        index.setdefault((a.residue.name, a.name), []).append(a.index)
    pos, frc, bead_mass = [], [], []
    for res, names in DIPEPTIDE_BEADS:
        idx = [index[(res, n)][0] for n in names]
        w = m[idx] / m[idx].sum()
        pos.append(np.einsum("a,fad->fd", w, fr["positions"][:, idx]))
        frc.append(fr["forces"][:, idx].sum(axis=1))
        bead_mass.append(m[idx].sum())
    return np.stack(pos, 1), np.stack(frc, 1), np.array(bead_mass), fr


def test_dipeptide_run_maps_on_the_fly_like_cgkd_map_and_numpy(dipeptide_build, tmp_path, capsys):
    run = tmp_path / "run"
    _run(["aa-run", "--system", str(DIPEPTIDE / "system.yaml"), "--run-dir", str(run), "--structure",
          str(dipeptide_build), "--equilibration-ps", "0.4", "--production-ps", "1.0", "--frame-interval-ps", "0.1",
          "--checkpoint-every", "3", "--timestep", "4", "--hydrogen-mass", "3", *CPU], capsys)
    meta = json.loads((run / "run.json").read_text())
    assert meta["system"]["kind"] == "openmm" and meta["system"]["box_nm"] is None
    assert not any(str(v).startswith("/") for v in meta["system"].values())
    fr = read_frames(run)
    assert len(fr["times"]) == 10 and np.all(fr["boxes"] == 0.0)  # non-periodic: zero boxes
    otf = CGDataset.load(run / "cg.h5")  # mapped during the run
    _run(["map", "--run-dir", str(run), "--mapping", str(DIPEPTIDE / "mapping.yaml"), "--out", str(tmp_path / "m.h5")],
         capsys)
    mapped = CGDataset.load(tmp_path / "m.h5")
    want_pos, want_frc, want_mass, _ = _independent_dipeptide_map(run)
    for ds in (otf, mapped):
        assert ds.n_frames == 10 and ds.n_beads == 6 and not ds.periodic
        assert np.all(ds.boxes == 0.0)
        assert ds.temperature_K == pytest.approx(300.0)
        assert [ds.type_names[t] for t in ds.bead_types] == ["C", "N", "CA", "CB", "C", "N"]
        assert sorted(map(sorted, ds.topology.bonds.tolist())) == [[0, 1], [1, 2], [2, 3], [2, 4], [4, 5]]
        np.testing.assert_allclose(ds.times, fr["times"], atol=1e-6)
        np.testing.assert_allclose(ds.positions, want_pos, atol=2e-5)
        np.testing.assert_allclose(ds.forces, want_frc, rtol=1e-4, atol=1e-2)
        # physical masses: the integrator's 3 Da hydrogens do not reach the beads
        np.testing.assert_allclose(ds.masses, want_mass, rtol=1e-6)
    assert want_mass[3] == pytest.approx(12.011 + 3 * 1.008, abs=0.01)  # CB + 3 H


def test_dipeptide_kill_and_resume_loses_and_repeats_no_frame(dipeptide_build, tmp_path):
    sysdef = SystemDefinition.from_yaml(DIPEPTIDE / "system.yaml")
    spec = MappingSpec.from_yaml(DIPEPTIDE / "mapping.yaml")
    proto = Protocol(temperature_K=300.0, timestep_fs=2.0, equilibration_ps=0.2, production_ps=1.0,
                     frame_interval_ps=0.1, checkpoint_every_frames=3, seed=7)
    quiet = dict(platform="CPU", threads=2, progress=False, log=lambda *a: None, mapping=spec)
    whole = run_aa(tmp_path / "whole", sysdef, proto, dipeptide_build, **quiet)
    assert whole["finished"]
    run = tmp_path / "killed"
    s1 = run_aa(run, sysdef, proto, dipeptide_build, stop_after_steps=60, **quiet)  # in equilibration
    assert not s1["finished"] and s1["frames"] == 0
    s2 = run_aa(run, sysdef, proto, None, stop_after_steps=300, **quiet)  # mid-production, mid part
    assert not s2["finished"] and 0 < s2["frames"] < 10
    assert read_mapped(run).n_frames == s2["frames"]
    s3 = run_aa(run, sysdef, proto, None, **quiet)
    assert s3["finished"]
    got, ref = read_mapped(run), read_mapped(tmp_path / "whole")
    assert got.n_frames == ref.n_frames == 10 and len(np.unique(got.times)) == 10
    np.testing.assert_allclose(got.times, ref.times)
    np.testing.assert_allclose(np.diff(got.times), 0.1, atol=1e-9)
    fr = read_frames(run)
    np.testing.assert_array_equal(fr["steps"], read_frames(tmp_path / "whole")["steps"])
    want_pos, want_frc, _, _ = _independent_dipeptide_map(run)
    np.testing.assert_allclose(got.positions, want_pos, atol=2e-5)
    np.testing.assert_allclose(got.forces, want_frc, rtol=1e-4, atol=1e-2)
    # a run.json from before it kept the whole spec (no allow_unmapped / constraints) still reads back
    meta = json.loads((run / "run.json").read_text())
    assert meta["mapping"]["allow_unmapped"] is True
    meta["mapping"] = {k: v for k, v in meta["mapping"].items() if k not in ("allow_unmapped", "constraints")}
    (run / "run.json").write_text(json.dumps(meta))
    old = read_mapped(run)
    np.testing.assert_array_equal(old.positions, got.positions)
    np.testing.assert_array_equal(old.masses, got.masses)


# ---- (b) and (c): a water box from amber14/tip3p.xml and from a GROMACS .top --------------------

@pytest.fixture(scope="module")
def water(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("water"), edge_nm=WATER_EDGE_NM, cutoff_nm=WATER_CUTOFF_NM)


def _energy_and_forces(sysdef, positions):
    import openmm as mm
    from openmm import unit

    _, system = sysdef.create_openmm()
    ctx = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions * unit.nanometer)
    st = ctx.getState(getEnergy=True, getForces=True)
    return (st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def _independent_water_map(run_dir: Path, edge: float):
    """One bead per water: molecule made whole around its O (minimum image, cubic box), COM with
    the TIP3P masses, wrapped into [0, edge); forces summed."""
    fr = read_frames(run_dir)
    x = fr["positions"].reshape(len(fr["times"]), -1, 3, 3)  # frames, waters, (O, H1, H2), xyz
    d = x - x[:, :, :1]
    x = x[:, :, :1] + d - edge * np.round(d / edge)
    m = np.array([O_MASS, H_MASS, H_MASS])
    com = np.einsum("a,fwad->fwd", m / m.sum(), x)
    return com - edge * np.floor(com / edge), fr["forces"].reshape(x.shape).sum(axis=2), fr


def _same_periodic(a, b, edge, atol):
    d = a - b
    np.testing.assert_allclose(d - edge * np.round(d / edge), 0.0, atol=atol)


@pytest.mark.parametrize("kind", ["xml", "gmx"])
def test_water_box_run_maps_to_one_bead_per_water(water, kind, tmp_path, capsys):
    run = tmp_path / kind
    _run(["aa-run", "--system", str(water[kind]), "--run-dir", str(run), "--equilibration-ps", "0.2",
          "--production-ps", "0.6", "--frame-interval-ps", "0.1", *CPU], capsys)
    assert (run / "built.pdb").is_file()  # the structure minimised by the run itself
    n = water["n_waters"]
    ds = read_mapped(run)
    assert ds.n_frames == 6 and ds.n_beads == n and ds.periodic and ds.type_names == ["W"]
    assert ds.temperature_K == pytest.approx(TEMPERATURE_K)
    np.testing.assert_allclose(ds.boxes, np.broadcast_to(np.eye(3) * WATER_EDGE_NM, ds.boxes.shape), atol=1e-6)
    want_pos, want_frc, fr = _independent_water_map(run, WATER_EDGE_NM)
    _same_periodic(ds.positions, want_pos, WATER_EDGE_NM, 2e-5)
    np.testing.assert_allclose(ds.forces, want_frc, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(ds.masses, O_MASS + 2 * H_MASS, rtol=1e-6)
    # the water molecules' temperature over the run: rigid TIP3P, 6 degrees of freedom per molecule
    meta = json.loads((run / "run.json").read_text())
    assert meta["system"]["kind"] == {"xml": "openmm", "gmx": "gromacs"}[kind]
    assert meta["residues"][0][0] == "HOH" and meta["system"]["composition"] == {"HOH": n}


def test_gromacs_water_has_the_energy_of_the_xml_water(water):
    """Two readers of two file formats give one System: OpenMM's ForceField from amber14/tip3p.xml
    and its GromacsTopFile from our .top (the XML's parameters typed out; water has no 1-4 pairs, so
    the .top's fudge factors do not enter). Both use PME at the same cutoff and Ewald tolerance,
    so only floating-point summation differs: 1e-6 relative on the energy is ~1000x that."""
    xml = SystemDefinition.from_yaml(water["xml"])
    gmx = SystemDefinition.from_yaml(water["gmx"])
    start = xml.start_positions()
    np.testing.assert_allclose(gmx.start_positions(), start, atol=1e-6)
    rng = np.random.default_rng(1)
    for pos in (start, start + rng.normal(0.0, 0.002, start.shape)):
        e_xml, f_xml = _energy_and_forces(xml, pos)
        e_gmx, f_gmx = _energy_and_forces(gmx, pos)
        assert abs(e_xml) > 100.0  # a real, nonzero energy is compared
        assert e_gmx == pytest.approx(e_xml, rel=1e-6, abs=1e-3)
        np.testing.assert_allclose(f_gmx, f_xml, rtol=1e-6, atol=1e-3)


def test_sol_residues_map_by_the_hoh_name_and_the_sol_name(water, tmp_path, capsys):
    """A GROMACS run's waters map with a spec naming HOH (O H1 H2) and with one naming SOL
    (OW HW1 HW2): the water aliases make them one mapping."""
    run = tmp_path / "gmx"
    _run(["aa-run", "--system", str(water["gmx"]), "--run-dir", str(run), "--no-mapping", "--equilibration-ps", "0.1",
          "--production-ps", "0.3", "--frame-interval-ps", "0.1", *CPU], capsys)
    sol = tmp_path / "sol.yaml"
    sol.write_text("type_names: [W]\nresidues:\n  SOL:\n    - {type: W, atoms: [OW, HW1, HW2]}\n")
    out = {}
    for name, spec in (("hoh", water["mapping"]), ("sol", sol)):
        out[name] = tmp_path / f"{name}.h5"
        _run(["map", "--run-dir", str(run), "--mapping", str(spec), "--out", str(out[name])], capsys)
    a, b = CGDataset.load(out["hoh"]), CGDataset.load(out["sol"])
    assert a.n_beads == b.n_beads == water["n_waters"] and a.n_frames == b.n_frames == 3
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.forces, b.forces)
    assert not (run / "cg").exists() or not any((run / "cg").iterdir())


def test_a_gromacs_system_with_includes_from_the_gromacs_installation(tmp_path, capsys):
    """A .top that #includes GROMACS' own amber99sb-ildn.ff and its tip3p.itp, read from the
    installation's share/gromacs/top (found from `gmx` on PATH, gromacs_include_dir not set)."""
    from openmm_cgkd.data.systemdef import _default_gromacs_include_dir

    include = _default_gromacs_include_dir()
    if include is None or not (include / "amber99sb-ildn.ff" / "tip3p.itp").is_file():
        pytest.skip("no GROMACS installation with amber99sb-ildn.ff here")
    w = write_inputs(tmp_path / "w", edge_nm=WATER_EDGE_NM, cutoff_nm=WATER_CUTOFF_NM)
    (tmp_path / "w" / "water.top").write_text(
        '#include "amber99sb-ildn.ff/forcefield.itp"\n#include "amber99sb-ildn.ff/tip3p.itp"\n\n'
        f"[ system ]\nwater\n\n[ molecules ]\nSOL {w['n_waters']}\n")
    s = SystemDefinition.from_yaml(w["gmx"])
    assert s.kind == "gromacs" and s.gromacs_include_dir == include and s.n_molecules == w["n_waters"]
    e_gmx, _ = _energy_and_forces(s, s.start_positions())
    e_xml, _ = _energy_and_forces(SystemDefinition.from_yaml(w["xml"]), s.start_positions())
    # GROMACS' TIP3P (sigma 0.315061 nm, epsilon 0.636386 kJ/mol) vs amber14's (0.315075, 0.635968):
    # the O-O LJ differs by < 0.1 % and is a part of the total (same charges and geometry): 1e-3
    # (found: 8e-5); a missing exclusion or charge would be off by far more
    assert abs(e_xml) > 100.0 and e_gmx == pytest.approx(e_xml, rel=1e-3)


GMX_MDP = """integrator = md
nsteps = 0
continuation = yes            ; the .gro as it is: no constraining of the start
cutoff-scheme = Verlet
verlet-buffer-tolerance = -1
rlist = {cutoff}
coulombtype = PME
rcoulomb = {cutoff}
coulomb-modifier = None       ; OpenMM shifts neither Coulomb nor LJ at the cutoff
vdwtype = cut-off
rvdw = {cutoff}
vdw-modifier = None
DispCorr = EnerPres           ; OpenMM's long-range dispersion correction
ewald-rtol = 1e-6
fourierspacing = 0.08
pme-order = 6
nstcalcenergy = 1
nstenergy = 1
"""


def test_gromacs_itself_gives_the_energy_of_our_gromacs_system(water, tmp_path):
    """`gmx grompp` + `gmx mdrun` (0 steps) + `gmx energy` on our .top/.gro: GROMACS' potential
    energy equals the OpenMM System the gromacs kind builds from the same files. GROMACS runs
    in single precision and both PMEs have their own grids: 1e-4 relative (found: 1e-6)."""
    import subprocess

    gmx = shutil.which("gmx") or shutil.which("gmx_mpi")
    if gmx is None:
        pytest.skip("GROMACS (gmx) is not installed here")
    for f in ("top", "gro"):
        shutil.copy(water[f], tmp_path / water[f].name)
    (tmp_path / "e.mdp").write_text(GMX_MDP.format(cutoff=WATER_CUTOFF_NM))

    def run(*args, stdin=None):
        proc = subprocess.run([gmx, *args], cwd=tmp_path, input=stdin, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-2000:]

    run("grompp", "-f", "e.mdp", "-c", "water.gro", "-p", "water.top", "-o", "e.tpr", "-maxwarn", "5")
    run("mdrun", "-s", "e.tpr", "-deffnm", "e", "-nt", "1")
    run("energy", "-f", "e.edr", "-o", "e.xvg", "-xvg", "none", stdin="Potential\n")
    e_gmx = float((tmp_path / "e.xvg").read_text().split()[1])
    s = SystemDefinition.from_yaml(water["gmx"])
    e_openmm, _ = _energy_and_forces(s, s.start_positions())
    print(f"GROMACS {e_gmx:.3f} kJ/mol, OpenMM {e_openmm:.3f} kJ/mol")
    assert abs(e_openmm) > 100.0 and e_gmx == pytest.approx(e_openmm, rel=1e-4)
