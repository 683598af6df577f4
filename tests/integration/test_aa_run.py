"""AA box building and resumable AA MD on a small packed reline box (CPU)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from openmm_cgkd.data.aamd import Protocol, read_frames, run_aa
from openmm_cgkd.data.systemdef import SystemDefinition

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """40 molecules (10 choline, 10 Cl, 20 urea) at the reline density, packed and minimised."""
    from openmm_cgkd.data.build import build_box

    sysdef = SystemDefinition.from_yaml(ROOT / "systems" / "des" / "system.yaml").resized(40)
    sysdef.cutoff_nm = 0.7
    pdb = tmp_path_factory.mktemp("box") / "built.pdb"
    info = build_box(sysdef, pdb, seed=3, log=lambda *a: None)
    return sysdef, pdb, info


def _protocol(**kw):
    base = dict(equilibration_ps=0.2, production_ps=1.0, frame_interval_ps=0.1, checkpoint_every_frames=3,
                equilibration_chunk_ps=0.1, seed=5)
    base.update(kw)
    return Protocol(**base)


def test_build_box_density_and_composition(small):
    sysdef, pdb, info = small
    assert sysdef.composition == {"choline": 10, "cl": 10, "urea": 20}
    assert sysdef.density_g_cm3 == pytest.approx(1.196, abs=0.002)
    assert info["n_atoms"] == 10 * 21 + 10 + 20 * 8
    assert np.isfinite(info["minimised_energy_kJ_mol"]) and info["minimised_energy_kJ_mol"] < 0


def test_short_run_is_finite_and_near_target_temperature(small, tmp_path):
    import openmm as mm
    from openmm import unit

    sysdef, pdb, _ = small
    proto = _protocol(equilibration_ps=2.0, production_ps=1.0, anneal_ps=0.4, anneal_temperature_K=400.0)
    summary = run_aa(tmp_path / "run", sysdef, proto, pdb, platform="CPU", threads=2, progress=False,
                     log=lambda *a: None)
    assert summary["finished"] and summary["frames"] == 10
    fr = read_frames(tmp_path / "run")
    for k in ("positions", "forces", "potential_energy"):
        assert np.all(np.isfinite(fr[k]))
    assert fr["forces"].shape == (10, 380, 3)
    st = mm.XmlSerializer.deserialize((tmp_path / "run" / "state.xml").read_text())
    v = st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    m = np.asarray(meta["masses"])
    n_constraints = 10 * 14 + 20 * 4
    dof = 3 * len(m) - n_constraints
    ke = 0.5 * np.sum(m[:, None] * v ** 2)  # kJ/mol
    temp = 2 * ke / (dof * 0.00831446261815324)
    assert abs(temp - 298.1) < 60, temp  # one snapshot of 380 atoms: +-5% noise
    assert (tmp_path / "run" / "production.h5").is_file()


def test_interrupted_and_resumed_run_matches_uninterrupted(small, tmp_path):
    sysdef, pdb, _ = small
    proto = _protocol()
    run_aa(tmp_path / "a", sysdef, proto, pdb, platform="CPU", threads=2, progress=False, log=lambda *a: None)
    ref = read_frames(tmp_path / "a")

    b = tmp_path / "b"
    s1 = run_aa(b, sysdef, proto, pdb, platform="CPU", threads=2, progress=False, stop_after_steps=50,
                log=lambda *a: None)
    assert not s1["finished"] and s1["frames"] == 0  # stopped in equilibration
    s2 = run_aa(b, sysdef, proto, None, platform="CPU", threads=2, progress=False, stop_after_steps=170,
                log=lambda *a: None)
    assert not s2["finished"] and 0 < s2["frames"] < 10  # stopped mid-production, mid part file
    # a kill between writing a part file and recording progress leaves an uncommitted part behind
    committed = s2["frames"]
    stray = b / "frames" / f"part_{committed:07d}.h5"
    import shutil

    shutil.copyfile(sorted((b / "frames").glob("part_*.h5"))[0], stray)
    s3 = run_aa(b, sysdef, proto, None, platform="CPU", threads=2, progress=False, log=lambda *a: None)
    assert s3["finished"]
    got = read_frames(b)
    assert len(got["times"]) == len(ref["times"]) == 10
    np.testing.assert_allclose(got["times"], ref["times"])
    np.testing.assert_array_equal(got["steps"], ref["steps"])
    assert len(np.unique(got["steps"])) == 10
    np.testing.assert_allclose(np.diff(got["times"]), 0.1, atol=1e-9)


def test_protocol_change_is_refused(small, tmp_path):
    from openmm_cgkd.data.aamd import RunError

    sysdef, pdb, _ = small
    run_aa(tmp_path / "c", sysdef, _protocol(), pdb, platform="CPU", threads=2, progress=False,
           stop_after_steps=10, log=lambda *a: None)
    with pytest.raises(RunError, match="different protocol"):
        run_aa(tmp_path / "c", sysdef, _protocol(frame_interval_ps=0.2), None, platform="CPU", threads=2,
               progress=False, log=lambda *a: None)


def test_kill_and_rerun_same_command(small, tmp_path):
    """SIGKILL the CLI during production, rerun the same command: same frames as planned, no duplicates."""
    sysdef, pdb, _ = small
    run_dir = tmp_path / "k"
    cmd = [sys.executable, "-m", "openmm_cgkd.cli.main", "aa-run", "--molecules", "40", "--cutoff", "0.7",
           "--run-dir", str(run_dir), "--structure", str(pdb), "--equilibration-ps", "0.2",
           "--production-ps", "3.0", "--frame-interval-ps", "0.1", "--checkpoint-every", "2", "--platform", "CPU",
           "--threads", "2", "--no-progress", "--system", str(ROOT / "systems" / "des" / "system.yaml")]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        p = run_dir / "progress.json"
        if p.is_file() and json.loads(p.read_text()).get("frames", 0) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    fr = read_frames(run_dir)
    assert len(fr["times"]) == 30
    np.testing.assert_allclose(fr["times"], 0.2 + 0.1 * np.arange(1, 31), atol=1e-9)


def test_cli_map_of_a_run_dir(small, tmp_path):
    from openmm_cgkd.cli.main import main
    from openmm_cgkd.data.dataset import CGDataset

    sysdef, pdb, _ = small
    run_aa(tmp_path / "m", sysdef, _protocol(production_ps=0.5), pdb, platform="CPU", threads=2, progress=False,
           log=lambda *a: None)
    out = tmp_path / "cg.h5"
    assert main(["map", "--run-dir", str(tmp_path / "m"), "--mapping", str(ROOT / "systems/des/mapping.yaml"),
                 "--out", str(out)]) == 0
    ds = CGDataset.load(out)
    assert ds.n_frames == 5 and ds.n_beads == 40
    assert ds.type_names == ["Cho", "Cl", "Urea"] and ds.type_counts() == {"Cho": 10, "Cl": 10, "Urea": 20}
    assert ds.positions.dtype == np.float32 and ds.potential_energy is not None
    assert ds.provenance["source"] == "cgkd aa-run"
    box = ds.boxes[0, 0, 0]
    assert np.all(ds.positions >= 0) and np.all(ds.positions < box)


def test_hydrogen_mass_repartitioning_keeps_total_mass(small):
    """HMR moves mass from each heavy atom to its hydrogens: every H weighs 3 Da, each molecule's
    mass is unchanged, and the forces (which do not depend on masses) are identical."""
    import openmm as mm
    from openmm import unit

    from openmm_cgkd.data.aamd import repartition_hydrogen_masses
    from openmm_cgkd.data.build import read_pdb_positions
    from openmm_cgkd.data.opls import build_topology, create_system

    sysdef, pdb, _ = small
    top = build_topology(sysdef.forcefield, sysdef.composition, sysdef.box_vectors())
    plain = create_system(sysdef.forcefield, top, cutoff_nm=0.7)
    hmr = create_system(sysdef.forcefield, top, cutoff_nm=0.7)
    repartition_hydrogen_masses(hmr, top, 3.0)
    m0 = np.array([plain.getParticleMass(i).value_in_unit(unit.dalton) for i in range(plain.getNumParticles())])
    m1 = np.array([hmr.getParticleMass(i).value_in_unit(unit.dalton) for i in range(hmr.getNumParticles())])
    is_h = np.array([a.element.symbol == "H" for a in top.atoms()])
    assert np.allclose(m1[is_h], 3.0) and np.allclose(m0[is_h], 1.008)
    res = np.array([a.residue.index for a in top.atoms()])
    assert np.allclose(np.bincount(res, m0), np.bincount(res, m1))
    assert m1[~is_h].min() > 5.0
    pos = read_pdb_positions(pdb) * unit.nanometer
    forces = []
    for system in (plain, hmr):
        ctx = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
        ctx.setPositions(pos)
        forces.append(ctx.getState(getForces=True).getForces(asNumpy=True)._value)
    assert np.array_equal(forces[0], forces[1])


def test_mapped_parts_survive_a_fresh_clone(small, tmp_path):
    """With on-the-fly mapping, the run keeps its mapped frames in cg/. A 'fresh clone' (AA frames
    deleted, restart state kept) resumes, and the mapped dataset equals an independent mapping of
    the AA frames of an uninterrupted run: no frame lost or duplicated; physical masses used."""
    from openmm_cgkd.data.aamd import read_mapped
    from openmm_cgkd.data.mapping import MappingSpec
    import shutil

    sysdef, pdb, _ = small
    spec = MappingSpec.from_yaml(ROOT / "systems" / "des" / "mapping.yaml")
    proto = _protocol(timestep_fs=4.0, hydrogen_mass_da=3.0)
    quiet = dict(platform="CPU", threads=2, progress=False, log=lambda *a: None, mapping=spec)
    run = tmp_path / "run"
    first = run_aa(run, sysdef, proto, pdb, stop_after_steps=proto.n_pre + 4 * proto.frame_steps, **quiet)
    assert 0 < first["frames"] < 10 and read_mapped(run).n_frames == first["frames"]
    kept = tmp_path / "aa_frames_of_the_first_machine"
    shutil.move(run / "frames", kept)  # AA frames are not kept in git
    out = run_aa(run, sysdef, proto, **quiet)
    assert out["finished"] and "production" not in out  # AA frames incomplete: no production.h5
    got = read_mapped(run)
    assert got.n_frames == 10 and len(np.unique(got.times)) == 10
    np.testing.assert_allclose(np.diff(got.times), proto.frame_interval_ps, atol=1e-9)
    # independent check: map all AA frames (both machines') with the mapping module
    for p in kept.glob("part_*.h5"):
        shutil.copy(p, run / "frames" / p.name)
    from openmm_cgkd.data import external
    from openmm_cgkd.data.mapping import map_trajectory

    want = map_trajectory(external.load_run(run), spec)
    assert want.n_frames == 10
    np.testing.assert_array_equal(got.times, want.times)
    np.testing.assert_allclose(got.positions, want.positions, atol=2e-5)
    np.testing.assert_allclose(got.forces, want.forces, rtol=1e-4, atol=1e-2)
    # bead masses are the physical molecular masses (choline 104.17, Cl 35.45, urea 60.06 Da)
    masses = {got.type_names[t]: m for t, m in zip(got.bead_types, got.masses)}
    assert masses["Cho"] == pytest.approx(104.17, abs=0.02) and masses["Urea"] == pytest.approx(60.06, abs=0.02)
    meta = json.loads((run / "run.json").read_text())
    assert not any(str(v).startswith("/") for v in meta["system"].values())
    # resumed with another spec (here: Cl's forces added to choline's bead), the run refuses
    from openmm_cgkd.data.aamd import RunError

    other = spec.to_dict()
    other["residues"]["CHOL"][0]["force_atoms"] = []
    other["aliases"] = {**other["aliases"], "CHX": "CHOL"}
    with pytest.raises(RunError, match="was mapped with another mapping spec .*aliases"):
        run_aa(run, sysdef, proto, **{**quiet, "mapping": MappingSpec.from_dict(other)})


@pytest.mark.parametrize("field,value", [("temperature_K", 0.0), ("friction_per_ps", 0.0), ("timestep_fs", -1.0),
                                         ("checkpoint_every_frames", -5), ("hydrogen_mass_da", 0.5)])
def test_protocol_rejects_bad_settings(field, value):
    from openmm_cgkd.data.aamd import ProtocolError

    with pytest.raises(ProtocolError):
        _protocol(**{field: value}).validate()
