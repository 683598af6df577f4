"""examples/compare_speed.py runs as a script with tiny arguments: ratios printed, JSON written."""
import json



def test_compare_speed_prints_ratios_and_writes_json(tmp_path, run_example):
    out = tmp_path / "speed.json"
    text = run_example("compare_speed.py", "--beads", "100", "--members", "2", "--steps", "2", "--repeats", "2",
                       "--warmup", "2", "--threads", "1", "--out", str(out))
    assert "ensemble as one module" in text and "ensemble as 2 TorchForces" in text
    data = json.loads(out.read_text())
    assert sorted(r["model"] for r in data["results"]) == ["ensemble", "naive-ensemble", "student"]
    assert all(r["openmm"]["median_ms"] > 0 and r["torch"]["median_ms"] > 0 for r in data["results"])
    assert data["system"]["n_beads"] == 100 and data["untrained"] is True
