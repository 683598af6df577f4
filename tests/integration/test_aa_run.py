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
