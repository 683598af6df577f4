"""The MD machinery shared by AA and CG runs (openmm_cgkd/md/restart.py)."""
import fcntl
import json

import numpy as np
import pytest

from openmm_cgkd.fileio import atomic_write, read_json, write_json
from openmm_cgkd.md.restart import (CheckpointError, RunLock, SimulationError, StaleRunError, load_checkpoint, ns_per_day,
                                   refuse_if_changed, save_restart)


def _context(seed=3):
    """Two LJ particles under a Langevin integrator on the Reference platform."""
    import openmm as mm

    system = mm.System()
    force = mm.CustomBondForce("4*((0.3/r)^12-(0.3/r)^6)")
    force.addBond(0, 1)
    for _ in range(2):
        system.addParticle(12.0)
    system.addForce(force)
    integ = mm.LangevinMiddleIntegrator(300, 1.0, 0.002)
    integ.setRandomNumberSeed(seed)
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(np.array([[0, 0, 0], [0.34, 0, 0]]))
    ctx.setVelocitiesToTemperature(300, seed)
    return ctx, integ


def test_atomic_json_round_trip_leaves_no_temporary(tmp_path):
    write_json(tmp_path / "a.json", {"step": 3, "x": [1.5]})
    assert (tmp_path / "a.json").read_text() == json.dumps({"step": 3, "x": [1.5]}, indent=1) + "\n"
    assert read_json(tmp_path / "a.json") == {"step": 3, "x": [1.5]}
    atomic_write(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin"]  # no .part left behind
    assert read_json(tmp_path / "missing.json") is None


def test_run_lock_excludes_another_flock_on_the_same_file(tmp_path):
    """The lock a shell takes with `flock <run>/.lock` (the AA run's git snapshots) is this one."""
    with RunLock(tmp_path):
        with open(tmp_path / ".lock") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)
    with open(tmp_path / ".lock") as other:  # released
        fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)


def test_restart_set_round_trip_and_truncated_checkpoint(tmp_path):
    ctx, integ = _context()
    integ.step(20)
    save_restart(ctx, tmp_path, {"step": ctx.getStepCount()})
    assert read_json(tmp_path / "progress.json") == {"step": 20}
    assert (tmp_path / "state.xml").is_file() and (tmp_path / ".lock").is_file()
    integ.step(15)
    expected = ctx.getState(getPositions=True).getPositions(asNumpy=True)._value

    ctx2, integ2 = _context(seed=99)
    load_checkpoint(ctx2, tmp_path / "checkpoint.chk")
    assert ctx2.getStepCount() == 20
    integ2.step(15)  # the checkpoint carries the thermostat's random state: the same trajectory
    np.testing.assert_allclose(ctx2.getState(getPositions=True).getPositions(asNumpy=True)._value, expected,
                               rtol=0, atol=1e-12)

    data = (tmp_path / "checkpoint.chk").read_bytes()
    (tmp_path / "cut.chk").write_bytes(data[: len(data) - 24])
    with pytest.raises(CheckpointError, match="truncated or damaged|does not load") as err:
        load_checkpoint(_context()[0], tmp_path / "cut.chk", "restore it from a copy")
    assert "restore it from a copy" in str(err.value) and isinstance(err.value, SimulationError)


def test_refuse_if_changed_names_what_changed():
    refuse_if_changed({"t": 300, "seed": 1}, {"t": 300.0, "seed": 1}, "x", "y")  # numbers compare by value
    with pytest.raises(StaleRunError, match=r"run moved \(t: 300\.0 -> 310\.0\); start afresh") as err:
        refuse_if_changed({"t": 300.0, "seed": 1}, {"t": 310.0, "seed": 1}, "run moved", "start afresh")
    assert err.value.changes == ["t: 300.0 -> 310.0"]
    with pytest.raises(ValueError, match="no fingerprint recorded"):
        refuse_if_changed(None, {"t": 1}, "old run", "start afresh", error=ValueError)


def test_ns_per_day():
    assert ns_per_day(2.0, 86.4) == pytest.approx(2.0)  # 2 ps in 1/1000 day = 2 ns/day
    assert np.isnan(ns_per_day(1.0, 0.0))
