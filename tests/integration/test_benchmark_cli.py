"""`cgkd benchmark` end to end on a tiny system on the CPU platform: table, goals, JSON entries."""
import json
import math

import pytest

pytest.importorskip("openmm")

from openmm_cgkd.cli.main import main  # noqa: E402

MODELS = ["teacher", "ensemble", "naive-ensemble", "student"]


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_benchmark_cli_tiny_cpu(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["benchmark", "--beads", "30", "--cutoff", "0.6", "--members", "2", "--embedding-dim", "16",
               "--layers", "1", "--num-rbf", "8", "--steps", "3", "--warmup", "3", "--repeats", "2",
               "--platform", "CPU", "--threads", "1", "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "UNTRAINED" in text and "ensemble (one module) ms/step <= 2 x student" in text
    assert "OpenMM overhead of the student" in text
    for m in MODELS:
        assert m in text

    data = json.loads(out.read_text())
    assert data["untrained"] is True and "UNTRAINED" in data["note"]
    assert data["system"]["n_beads"] == 30
    assert math.isclose(data["system"]["box_nm"][0][0], (30 / (1000 / 4.484 ** 3)) ** (1 / 3), rel_tol=1e-9)
    assert data["machine"]["openmm_platform"] == "CPU"
    assert data["settings"]["members"] == 2 and data["settings"]["steps"] == 3
    rows = {r["model"]: r for r in data["results"]}
    assert sorted(rows) == sorted(MODELS)
    for name, r in rows.items():
        assert r["architecture"] == "graph-network" and r["cuda_graphs"] is False and r["trained"] is False
        assert _positive(r["openmm"]["median_ms"]) and len(r["openmm"]["repeats_ms"]) == 2
        assert all(_positive(v) for v in r["openmm"]["repeats_ms"])
        assert _positive(r["torch"]["median_ms"]) and len(r["torch"]["repeats_ms"]) == 2
        assert _positive(r["ns_per_day"])
        # ns/day follows from ms/step and the 2 fs time step
        assert math.isclose(r["ns_per_day"], 2e-6 * 86400e3 / r["openmm"]["median_ms"], rel_tol=1e-9)
        assert math.isclose(r["openmm_overhead"], r["openmm"]["median_ms"] / r["torch"]["median_ms"] - 1,
                            rel_tol=1e-9)
    assert rows["ensemble"]["networks_evaluated"] == 2 and rows["ensemble"]["network_forces"] == 1
    assert rows["naive-ensemble"]["networks_evaluated"] == 2 and rows["naive-ensemble"]["network_forces"] == 2
    assert rows["student"]["networks_evaluated"] == 1 and rows["teacher"]["network_forces"] == 1
    goals = {g["goal"]: g for g in data["goals"]}
    g = goals["ensemble (one module) ms/step <= 2 x student"]
    assert g["limit"] == 2.0 and isinstance(g["met"], bool)
    assert math.isclose(g["value"], rows["ensemble"]["openmm"]["median_ms"] / rows["student"]["openmm"]["median_ms"])
    assert goals["OpenMM overhead of the ensemble <= 10 %"]["limit"] == 0.1


def test_benchmark_cli_reports_too_small_box(tmp_path, capsys):
    rc = main(["benchmark", "--beads", "30", "--members", "2", "--models", "student", "--embedding-dim", "8",
               "--layers", "1", "--num-rbf", "4", "--out", str(tmp_path / "x.json"), "--no-progress"])
    assert rc == 2  # bad input (a box the cutoff does not fit), as the README documents
    err = capsys.readouterr().err
    assert "cgkd benchmark: error:" in err and "use at least 89 beads" in err
    assert not (tmp_path / "x.json").exists()


TOY_SYSTEM = """\
name: toy
description: "two bead types, 1:1"
bead_types:
  - {name: A, residue_name: AAA, mass_dalton: 40.0}
  - {name: B, residue_name: BBB, mass_dalton: 20.0}
composition: {A: 1, B: 1}
molecules: 500
box_nm: 4.0
"""


def test_benchmark_takes_its_system_from_the_registry(tmp_path, capsys, monkeypatch):
    """A system that is not the DES (its own bead names, composition and density) benchmarks the
    same way: nothing of the DES is built into the benchmark."""
    (tmp_path / "systems" / "toy").mkdir(parents=True)
    (tmp_path / "systems" / "toy" / "cg_system.yaml").write_text(TOY_SYSTEM)
    monkeypatch.setenv("CGKD_SYSTEMS_DIR", str(tmp_path / "systems"))
    out = tmp_path / "bench.json"
    rc = main(["benchmark", "--system", "toy", "--beads", "41", "--cutoff", "0.6", "--members", "2",
               "--embedding-dim", "8", "--layers", "1", "--num-rbf", "4", "--steps", "2", "--warmup", "1",
               "--repeats", "1", "--models", "student", "--backend", "torchforce", "--skip-torch",
               "--platform", "CPU", "--threads", "1", "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0, text
    data = json.loads(out.read_text())
    system = data["system"]
    assert system["name"] == "toy" and system["n_beads"] == 41
    assert "41 beads of system toy (A 20, B 21)" in system["description"]
    assert math.isclose(system["box_nm"][0][0], (41 / (500 / 4.0 ** 3)) ** (1 / 3), rel_tol=1e-9)
    assert math.isclose(system["density_per_nm3"], 500 / 4.0 ** 3, rel_tol=1e-9)
    assert _positive(data["results"][0]["openmm"]["median_ms"])

    rc = main(["benchmark", "--system", "nope", "--out", str(tmp_path / "y.json"), "--no-progress"])
    assert rc == 2
    assert "no system 'nope'" in capsys.readouterr().err
