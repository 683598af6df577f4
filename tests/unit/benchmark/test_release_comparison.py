"""cgkd benchmark --release-comparison: the figures of the comparison scripts' JSON results."""
import json
from pathlib import Path

import pytest

from openmm_cgkd.benchmark.release import format_release_comparison, release_comparison
from openmm_cgkd.errors import UsageError

ROOT = Path(__file__).resolve().parents[3]


def test_serving_and_training_results_are_read(tmp_path):
    serving = ROOT / "benchmarks" / "results" / "serving_speed_cpu_quiet.json"
    raw = json.loads(serving.read_text())
    training = tmp_path / "training_speed.json"
    training.write_text(json.dumps({
        "benchmark": "training_speed", "date": "2026-12-07T19:00:00Z", "old_sha": "13cb8d4", "new_sha": "abc",
        "machine": {"node": "vm", "cpus": 2, "load_end": [3.0, 2.0, 1.0]},
        "rows": [{"stage": "labels", "frames": 32, "old_frames_per_s_wall": 2.0, "new_frames_per_s_wall": 10.0,
                  "speedup_wall": 5.0, "speedup_cpu": 6.0, "old": {"load_before": [3.5, 0, 0]},
                  "new": {"load_after": [2.5, 0, 0]}}]}))
    entries = release_comparison([serving, training])
    assert [e["benchmark"] for e in entries] == ["serving_speed", "training_speed"]
    first = raw["rows"][0]
    row = entries[0]["rows"][0]
    assert row["old_ms_per_step"] == first["old_ms_per_step"] and row["new_ms_per_step"] == first["new_ms_per_step"]
    assert row["speedup"] == pytest.approx(first["old_ms_per_step"] / first["new_ms_per_step"])
    assert entries[1]["rows"][0]["new_frames_per_s"] == 10.0 and entries[1]["rows"][0]["load_1min"] == [3.5, 2.5]
    text = format_release_comparison(entries)
    assert "labels: old 2.00 frames/s, new 10.00 frames/s (x5.00" in text and "ms/step" in text


def test_other_files_are_usage_errors(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"benchmark": "something else"}))
    with pytest.raises(UsageError, match="not a result of benchmarks/serving_speed.py"):
        release_comparison([other])
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"benchmark": "serving_speed", "rows": [{"backend": "torchforce"}]}))
    with pytest.raises(UsageError, match="without the expected fields"):
        release_comparison([broken])
    text = tmp_path / "text.json"
    text.write_text("not json")
    with pytest.raises(UsageError, match="cannot read it as JSON"):
        release_comparison([text])


def test_export_release_and_run_worker_time_the_code_they_are_given(tmp_path):
    """The old release is the package of the git ref (its own files), and a worker imports the
    package of the directory it is given, not this checkout's."""
    import subprocess

    from openmm_cgkd.benchmark.release import checkout_state, export_release, run_worker

    sha, _ = checkout_state(ROOT)
    old = tmp_path / "old"
    old.mkdir()
    assert export_release(ROOT, "HEAD", old) == sha
    committed = subprocess.run(["git", "-C", str(ROOT), "show", "HEAD:openmm_cgkd/version.py"],
                               capture_output=True, text=True, check=True).stdout
    assert (old / "openmm_cgkd" / "version.py").read_text() == committed
    script = tmp_path / "worker.py"
    script.write_text("import json, os, sys\nimport openmm_cgkd\n"
                      "print('RESULT ' + json.dumps({'args': sys.argv[2:], 'package': openmm_cgkd.__file__,"
                      " 'threads': os.environ['OMP_NUM_THREADS']}))\n")
    res = run_worker(script, old, ["--x", "1"], "probe")
    assert res["args"] == ["--x", "1"] and res["threads"] == "1"
    assert res["package"].startswith(str(old))
    script.write_text("raise SystemExit(3)\n")
    with pytest.raises(RuntimeError, match="worker probe failed \\(3\\)"):
        run_worker(script, old, [], "probe")


def test_old_release_is_exported_for_the_comparison_and_removed_after():
    from openmm_cgkd.benchmark.release import checkout_state, old_release

    with old_release(ROOT, "HEAD") as (old_dir, old_sha, new_sha, dirty):
        assert (old_dir / "openmm_cgkd" / "__init__.py").is_file()
        assert (old_sha, (new_sha, dirty)) == (checkout_state(ROOT)[0], checkout_state(ROOT))
    assert not old_dir.exists()
