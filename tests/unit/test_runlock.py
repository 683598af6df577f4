"""The run lock (openmm_cgkd.runlock): one run per directory, a killed holder's lock taken over."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from openmm_cgkd.runlock import RunDirectoryBusy, hold_run_dir, lock_path

HOLD = ("import sys, time; from openmm_cgkd.runlock import hold_run_dir\n"
        "with hold_run_dir(sys.argv[1], 'test run'):\n"
        "    print('held', flush=True); time.sleep(60)\n")


def _holder(target):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_is_refused_naming_the_holder(tmp_path):
    proc = _holder(tmp_path / "run")
    try:
        with pytest.raises(RunDirectoryBusy) as err:
            with hold_run_dir(tmp_path / "run", "cgkd simulate"):
                pass
        msg = str(err.value)
        assert "\n" not in msg and f"pid {proc.pid}" in msg and "started" in msg and "-c" in msg
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holders_lock_is_taken_over(tmp_path, capsys):
    proc = _holder(tmp_path / "run")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads(lock_path(tmp_path / "run").read_text())["pid"] == proc.pid  # the record stays behind
    with hold_run_dir(tmp_path / "run", "cgkd simulate"):
        assert json.loads(lock_path(tmp_path / "run").read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert f"taking over the lock of pid {proc.pid}" in err and "that process is gone" in err
    assert lock_path(tmp_path / "run").read_text() == ""  # a clean finish leaves no holder


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    with hold_run_dir(tmp_path / "run"):
        with hold_run_dir(tmp_path / "run"):
            pass
        # still held after the inner block: another process is refused
        out = subprocess.run([sys.executable, "-c", HOLD, str(tmp_path / "run")], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode != 0 and "RunDirectoryBusy" in out.stderr
    proc = _holder(tmp_path / "run")  # released: another process gets it
    proc.kill()
    proc.wait()


def test_a_file_target_has_its_own_lock(tmp_path):
    target = tmp_path / "data.h5"
    with hold_run_dir(target, "cgkd label", is_file=True) as path:
        assert path == tmp_path / ".data.h5.cgkd-run.lock"
        with hold_run_dir(tmp_path / "other.h5", "cgkd label", is_file=True):
            pass


def test_a_run_refused_before_the_holder_recorded_itself_still_names_it(tmp_path):
    """CI race (stop 31): the loser read the lock file between the winner's flock and its record,
    and named nobody (``pid ?``). A holder that writes its record late is waited for."""
    late = ("import fcntl, json, os, sys, time\n"
            "fh = open(sys.argv[1], 'a+'); fcntl.flock(fh, fcntl.LOCK_EX)\n"
            "print('locked', flush=True); time.sleep(0.5)\n"
            "fh.write(json.dumps({'pid': os.getpid(), 'host': 'h', 'started': 's', 'command': 'late'})); fh.flush()\n"
            "time.sleep(60)\n")
    (tmp_path / "run").mkdir()
    proc = subprocess.Popen([sys.executable, "-c", late, str(lock_path(tmp_path / "run"))], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirectoryBusy) as err:
            with hold_run_dir(tmp_path / "run", "cgkd pipeline"):
                pass
        assert f"pid {proc.pid}" in str(err.value) and "late" in str(err.value), str(err.value)
    finally:
        proc.kill()
        proc.wait()
