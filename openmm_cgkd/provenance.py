"""Portable provenance: what a written file or bundle records about its inputs.

Everything this package writes (bundle manifests, model cards, CG datasets, run records) names
its inputs by a path RELATIVE to where the record is stored, plus a sha256 of the content where
the input is a file, never by an absolute path of the machine that wrote it. A record stays
valid when a run directory is moved or copied to another machine, and the checksum says
whether the file found there is the one that was used.

* :func:`relative_path` - ``path`` relative to a base directory (POSIX separators);
* :func:`file_reference` - ``{"path": relative path, "sha256": hex digest}`` of a file;
* :func:`rebase` - a relative path recorded against one directory, re-expressed against another;
* :func:`make_portable` - a copy of a nested record with every absolute path in it (whole
  values or tokens inside text) made relative to a base directory;
* :func:`absolute_paths` - the absolute paths left in a record (what the tests scan for).
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["relative_path", "file_reference", "rebase", "make_portable", "absolute_paths", "sha256_file",
           "anchor_paths"]

# An absolute POSIX path of at least two components ("/work/main", "/tmp/x/y.h5"), not part of a
# longer token (so "kJ/mol/nm" or "1/ps" are not paths); a Windows drive path; a home-relative path.
_POSIX = r"(?<![\w./~:-])/[\w.+@-]+(?:/[\w.+@-]*)+"
_WINDOWS = r"(?<![\w])[A-Za-z]:[\\/][^\s'\",;]+"
_HOME = r"(?<![\w./-])~/[^\s'\",;]+"
_ABS_RE = re.compile(f"{_POSIX}|{_WINDOWS}|{_HOME}")


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def relative_path(path: str | os.PathLike, base: str | os.PathLike) -> str:
    """``path`` relative to the directory ``base`` (both resolved first), with ``/`` separators."""
    rel = os.path.relpath(Path(path).expanduser().resolve(), Path(base).expanduser().resolve())
    return Path(rel).as_posix()


def file_reference(path: str | os.PathLike, base: str | os.PathLike) -> dict:
    """``{"path": relative to base, "sha256": digest}``; ``sha256`` is None when ``path`` is not a file."""
    p = Path(path).expanduser()
    return {"path": relative_path(p, base), "sha256": sha256_file(p) if p.is_file() else None}


def rebase(path: str, old_base: str | os.PathLike, new_base: str | os.PathLike) -> str:
    """A path recorded relative to ``old_base`` (or absolute), expressed relative to ``new_base``."""
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = Path(old_base) / p
    return relative_path(p, new_base)


def anchor_paths(record: dict, keys: tuple[str, ...], base: str | os.PathLike) -> dict:
    """A copy of ``record`` whose entries ``keys``, paths recorded relative to ``base``, are made
    absolute, so that a record copied into a file elsewhere (which :func:`make_portable` makes
    relative to that file) still names the same files."""
    return {k: (str((Path(base) / v).resolve()) if k in keys and isinstance(v, str) and v and not Path(v).is_absolute()
                else v) for k, v in record.items()}


def make_portable(record: Any, base: str | os.PathLike) -> Any:
    """A copy of ``record`` (nested dicts, lists, strings, numbers) in which every absolute path,
    whether a whole string or a token inside a longer text, is replaced by its path relative to
    ``base``. Relative paths and other values are kept as they are."""
    def fix(text: str) -> str:
        return _ABS_RE.sub(lambda m: _relative_token(m.group(0), base), text)

    if isinstance(record, str):
        return fix(record)
    if isinstance(record, Path):
        return fix(str(record))
    if isinstance(record, dict):
        return {fix(k) if isinstance(k, str) else k: make_portable(v, base) for k, v in record.items()}
    if isinstance(record, (list, tuple)):
        return [make_portable(v, base) for v in record]
    return record


def _relative_token(token: str, base) -> str:
    if re.match(r"^[A-Za-z]:[\\/]", token) and os.name != "nt":
        return Path(token.replace("\\", "/")).name  # a Windows path on a POSIX machine: keep the name
    stripped = token.rstrip(".")  # a path that ends a sentence
    return relative_path(stripped, base) + token[len(stripped):]


def absolute_paths(record: Any) -> list[str]:
    """Every absolute path in ``record`` (nested dicts, lists and strings; keys included)."""
    found: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, (str, Path)):
            found.extend(m.group(0) for m in _ABS_RE.finditer(str(x)))
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(k)
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(record)
    return found
