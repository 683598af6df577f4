"""Shared file I/O of the package: atomic writes and JSON files.

Every file another process (or a later run) reads back is written atomically: to
``<name>.part`` first, then renamed over ``<name>``, so that a reader sees the old file or the
new one, never half of one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["write_json", "read_json"]


def write_json(path: str | os.PathLike, data) -> Path:
    """Write ``data`` to ``path`` as indented JSON with a final newline, atomically (values JSON
    does not know written as their ``str``); the folder is made when missing. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)
    return path


def read_json(path: str | os.PathLike) -> dict | None:
    """The JSON object in ``path``; None when the file is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
