"""The AA protocol's hot hold: held at the anneal temperature, then the linear cool-down."""
import json

import pytest

from openmm_cgkd.data.aamd import Protocol, ProtocolError


def test_hot_hold_then_linear_cool_down():
    p = Protocol(timestep_fs=4.0, anneal_temperature_K=500.0, temperature_K=300.0, hot_ps=1.0, anneal_ps=1.0)
    assert p.n_hot == 250 and p.n_anneal == 500
    assert p.temperature_at(0) == 500.0 and p.temperature_at(249) == 500.0
    assert p.temperature_at(250) == pytest.approx(500.0)
    assert p.temperature_at(375) == pytest.approx(400.0)
    assert p.temperature_at(500) == 300.0
    assert p.n_pre == 500 + p.steps(p.equilibration_ps)


def test_negative_hot_hold_refused():
    with pytest.raises(ProtocolError, match="hot"):
        Protocol(hot_ps=-1.0).validate()


def test_run_started_before_hot_hold_still_resumes(tmp_path):
    from dataclasses import asdict

    from openmm_cgkd.data.aamd import check_resume

    proto = Protocol()
    meta = {"protocol": {k: v for k, v in asdict(proto).items() if k != "hot_ps"},
            "system": {"composition": {"A": 1}, "box_nm": 2.0}}
    (tmp_path / "run.json").write_text(json.dumps(meta))

    class Sys:
        composition = {"A": 1}
        box_nm = 2.0
        periodic = True

    assert check_resume(tmp_path, Sys(), proto)["protocol"] == meta["protocol"]
