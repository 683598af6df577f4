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
