"""`cgkd pipeline --status`: the estimate of the MD time left (openmm_cgkd.workflow.status.md_hours_left)."""
import pytest

from openmm_cgkd.workflow.status import md_hours_left


def test_hours_left_at_each_models_measured_speed():
    # a: 300 ps at 10 ns/day = 0.03 d; b: 600 ps at 20 ns/day = 0.03 d; 2 at once: 0.03 d = 0.72 h
    assert md_hours_left({"a": 300.0, "b": 600.0}, {"a": 10.0, "b": 20.0}, workers=2) == pytest.approx(0.72)


def test_a_model_not_measured_yet_takes_the_mean_speed():
    # c has no finished replica: 150 ps at the mean of 10 and 20 = 15 ns/day -> 0.01 d = 0.24 h
    assert md_hours_left({"c": 150.0}, {"a": 10.0, "b": 20.0}, workers=1) == pytest.approx(0.24)


def test_nothing_measured_gives_no_estimate():
    assert md_hours_left({"a": 300.0}, {}, workers=2) is None
    assert md_hours_left({}, {"a": 10.0}, workers=2) == 0.0


def test_a_stage_under_way_counts_its_attempt_so_far_and_a_dead_one_says_stopped(tmp_path):
    """The stage clock is written when an attempt starts (with its process), so `--status` shows
    the time of a long stage under way (a stacked training ticks nowhere), and a stale clock whose
    process is gone says so instead of counting on."""
    import json
    import os
    import subprocess
    import sys
    import time

    from openmm_cgkd.workflow.cache import StageCache
    from openmm_cgkd.workflow.status import _stage_lines

    stages = StageCache(tmp_path, log=lambda *a: None)
    with stages.timed("teachers", {"k": 1}):
        clock = json.loads((tmp_path / "stages" / "teachers.clock.json").read_text())
        assert clock["attempts"] == 1 and clock["running"]["pid"] == os.getpid()
        clock["running"]["since"] = time.time() - 5400  # as if begun 1.5 h ago, after 0.5 h before
        clock["running"]["seconds_before"] = 1800.0
        (tmp_path / "stages" / "teachers.clock.json").write_text(json.dumps(clock))
        row = _stage_lines(tmp_path, ["teachers"], True)[2]
        assert row.startswith(f"| teachers | under way (pid {os.getpid()}) | 2.00 h so far |"), row
    done = json.loads((tmp_path / "stages" / "teachers.clock.json").read_text())
    assert "running" not in done and done["attempts"] == 1
    assert _stage_lines(tmp_path, ["teachers"], True)[2].startswith("| teachers | stopped (rerun to resume) |")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid that has just ended
    done["running"] = {**clock["running"], "pid": int(gone)}
    (tmp_path / "stages" / "teachers.clock.json").write_text(json.dumps(done))
    assert "stopped (its process is gone; rerun to resume)" in _stage_lines(tmp_path, ["teachers"], True)[2]


def test_a_stage_run_again_is_not_shown_done(tmp_path):
    """A finished stage whose settings changed runs again: its old marker stays until the new
    attempt finishes, and `--status` shows the attempt under way, not the stale "done"."""
    import os

    from openmm_cgkd.workflow.cache import StageCache
    from openmm_cgkd.workflow.status import _stage_lines

    stages = StageCache(tmp_path, log=lambda *a: None)
    with stages.timed("teachers", {"k": 1}):
        pass
    (tmp_path / "stages" / "teachers.json").write_text('{"finished": "2026-12-08T01:02:59Z", "seconds": 60}')
    assert _stage_lines(tmp_path, ["teachers"], True)[2].startswith("| teachers | done (2026-12-08T01:02:59Z) |")
    with stages.timed("teachers", {"k": 2}):
        row = _stage_lines(tmp_path, ["teachers"], True)[2]
        assert row.startswith(f"| teachers | again (done 2026-12-08T01:02:59Z with other settings): under way "
                              f"(pid {os.getpid()})"), row
