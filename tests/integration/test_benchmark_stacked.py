"""`cgkd benchmark --architecture hipnn-ts --training` on a tiny CPU system: the stacked ensemble's
rows and goal, and the training-throughput section (no timing is asserted, only what was measured)."""
import json
import math

from openmm_cgkd.cli.main import main


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_stacked_md_rows_and_training_section(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["benchmark", "--beads", "30", "--cutoff", "0.6", "--architecture", "hipnn-ts", "--members", "3",
               "--embedding-dim", "8", "--layers", "1", "--num-rbf", "6", "--steps", "2", "--warmup", "1",
               "--repeats", "1", "--platform", "CPU", "--threads", "1", "--backend", "torchforce", "--skip-torch",
               "--models", "ensemble", "naive-ensemble", "--training",
               "--training-batch", "2", "--training-steps", "1", "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "stacked ensemble ms/step <= 0.5 x naive K-force ensemble" in text
    assert "3 stacked members train >= 2 x as fast as 3 one by one" in text
    data = json.loads(out.read_text())
    rows = {r["model"]: r for r in data["results"]}
    assert all(r["architecture"] == "hipnn-ts" for r in rows.values())
    assert rows["ensemble"]["network_forces"] == 1 and rows["ensemble"]["networks_evaluated"] == 3
    assert rows["naive-ensemble"]["network_forces"] == 3
    goal = {g["goal"]: g for g in data["goals"]}["stacked ensemble ms/step <= 0.5 x naive K-force ensemble"]
    assert math.isclose(goal["value"], rows["ensemble"]["openmm"]["median_ms"]
                        / rows["naive-ensemble"]["openmm"]["median_ms"])
    training = data["training"]
    trows = {r["name"]: r for r in training["results"]}
    assert set(trows) == {"stacked x3", "stacked x1", "plain hipnn-ts", "plain graph-network"}
    for r in trows.values():
        assert _positive(r["ms_per_step"]) and r["batch_frames"] == 2
        assert math.isclose(r["frames_per_s"], 2e3 / r["ms_per_step"])
        assert math.isclose(r["member_frames_per_s"], r["frames_per_s"] * r["members"])
    speedup = training["goals"][0]
    assert speedup["limit"] == 2.0 and math.isclose(
        speedup["value"], trows["stacked x3"]["frames_per_s"] / (trows["stacked x1"]["frames_per_s"] / 3))
    assert training["system"]["stacked_architecture"]["cutoff_nm"] == 0.6
