"""Checks of output locations, light enough for the CLI's parser (no numpy, no torch): the
one place that says why a path cannot take a command's or the pipeline's outputs."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["output_dir_problem"]


def output_dir_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be an output directory, or None: it (or a folder above it) is an
    existing file, or the nearest existing directory at or above it is not writable. Reads only."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            return f"{p} is a file, not a directory; give a directory for the outputs"
    existing = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable; give an output location you can write to"
    return None
