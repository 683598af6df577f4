"""`cgkd benchmark --static-shapes`: untrained models with a padded pair list (what CUDA graphs need),
chosen automatically with CUDA graphs; a tiny CPU run of a static-shape stacked ensemble."""
import json

import pytest

from openmm_cgkd.benchmark.md import BenchmarkSettings, untrained_model_config
from openmm_cgkd.cli.main import main
from openmm_cgkd.config import ConfigError


def test_static_shapes_follow_cuda_graphs_unless_set():
    def static(arch, **kw):
        return untrained_model_config(arch, BenchmarkSettings(**kw)).static_shapes

    assert not static("hipnn-ts") and not static("tensornet")  # the shipped configs: dynamic
    for graphs in ("on", "both"):  # CUDA graphs need a fixed-size pair list
        assert static("hipnn-ts", cuda_graphs=graphs) and static("tensornet", cuda_graphs=graphs)
        assert not static("graph-network", cuda_graphs=graphs)  # has none: serving refuses graphs for it
    assert static("tensornet", static_shapes=True)
    assert not static("hipnn-ts", cuda_graphs="on", static_shapes=False)
    with pytest.raises(ConfigError, match="static_shapes is supported by the tensornet and hipnn-ts"):
        untrained_model_config("graph-network", BenchmarkSettings(static_shapes=True))


def test_static_shape_stacked_ensemble_runs_in_openmm_and_torch(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["benchmark", "--beads", "30", "--cutoff", "0.6", "--architecture", "hipnn-ts", "--members", "2",
               "--embedding-dim", "8", "--layers", "1", "--num-rbf", "6", "--steps", "2", "--warmup", "1",
               "--repeats", "1", "--platform", "CPU", "--threads", "1", "--static-shapes", "on",
               "--models", "ensemble", "student", "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0, text
    data = json.loads(out.read_text())
    assert data["settings"]["static_shapes"] is True
    rows = {(r["model"], r["backend"]): r for r in data["results"]}
    assert set(rows) == {(m, b) for m in ("ensemble", "student") for b in ("torchforce", "python")}
    for r in rows.values():
        assert r["openmm"]["median_ms"] > 0 and r["torch"]["median_ms"] > 0
