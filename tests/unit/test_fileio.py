"""openmm_cgkd/fileio.py: strict JSON, atomic replacement, file hashes."""
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from openmm_cgkd.fileio import atomic_path, file_sha256, plain_values, read_json, write_json


def test_json_is_strict_and_plain(tmp_path):
    path = write_json(tmp_path / "sub" / "a.json", {"r2": float("nan"), "inf": np.float32("inf"), "n": np.int64(3),
                                                    "x": np.arange(3.0), "p": Path("/a/b"), "t": (1, 2), 4: "four"})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text and text.endswith("\n")
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} written"))  # valid JSON for any reader
    assert read_json(path) == {"r2": None, "inf": None, "n": 3, "x": [0.0, 1.0, 2.0], "p": "/a/b", "t": [1, 2],
                               "4": "four"}
    assert plain_values({"v": float("nan")}, finite=False)["v"] != plain_values({"v": float("nan")})["v"]


def test_files_of_earlier_versions_with_bare_nan_still_read(tmp_path):
    (tmp_path / "old.json").write_text('{"best_val_loss": NaN}')
    assert math.isnan(read_json(tmp_path / "old.json")["best_val_loss"])
    assert read_json(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text('{"cut": ')
    with pytest.raises(ValueError, match="bad.json"):
        read_json(tmp_path / "bad.json")


def test_portable_json_names_inputs_relative_to_its_folder(tmp_path):
    path = write_json(tmp_path / "run" / "r.json", {"data": str(tmp_path / "data" / "cg.h5")}, portable=True)
    assert read_json(path) == {"data": "../data/cg.h5"}


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_part(tmp_path):
    path = write_json(tmp_path / "m.json", {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert read_json(path) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_file_hashes_equal_hashlib(tmp_path):
    data = np.random.default_rng(0).bytes(3_000_000)
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    assert file_sha256(tmp_path / "f", max_bytes=1_500_001, with_size=True) == \
        hashlib.sha256(data[:1_500_001] + b"3000000").hexdigest()
