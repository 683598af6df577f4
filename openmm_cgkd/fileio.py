"""Shared file I/O of the package: atomic writes, JSON files, file hashes, portable paths.

* :func:`atomic_path` / :func:`atomic_write`: every file another process (or a later run) reads
  back is written to ``<name>.part`` first, flushed to disk and renamed over ``<name>``, so that a
  reader sees the old file or the new one, never half of one (a kill mid-write leaves the old).
* :func:`write_json` / :func:`read_json`: JSON written atomically and strictly (a non-finite
  float is written as ``null``, never as the bare ``NaN`` / ``Infinity`` that other JSON readers
  refuse; numpy scalars and arrays and paths as their plain values); read back as written, files
  of earlier versions with a bare ``NaN`` included.
* :func:`file_sha256`: the sha256 of a file's bytes, read in chunks.
* Portable paths. Everything this package writes (bundle manifests, model cards, CG datasets,
  run records) names its inputs by a path RELATIVE to where the record is stored, plus a sha256
  of the content where the input is a file, never by an absolute path of the machine that wrote
  it: a record stays valid when a run directory is moved or copied to another machine, and the
  checksum says whether the file found there is the one that was used.
  :func:`relative_path` (``path`` relative to a base directory, POSIX separators);
  :func:`file_reference` (``{"path", "sha256"}`` of a file); :func:`rebase` (a relative path
  re-expressed against another directory); :func:`make_portable` (a copy of a nested record with
  every absolute path in it, whole values or tokens inside text, made relative);
  :func:`anchor_paths`; :func:`absolute_paths` (the absolute paths left in a record, what the
  tests scan for); :func:`map_strings` (the walk over nested records that the portable forms are
  made with: these, the pipeline's ``$OUT/...`` markers, the training checkpoints'
  ``@checkpoint_dir``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

__all__ = ["atomic_path", "atomic_write", "write_json", "plain_values", "read_json", "file_sha256", "relative_path", "map_strings",
           "file_reference", "rebase", "anchor_paths", "make_portable", "absolute_paths"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_path(p) as tmp: save(tmp)``: ``tmp`` (``<name>.part`` beside ``p``, its
    folder made when missing) replaces ``p`` when the block ends without an error, and is removed
    when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Replace ``path`` by ``data`` (text or bytes) atomically, synced to disk first."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb" if isinstance(data, bytes) else "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def plain_values(obj: Any, finite: bool = True) -> Any:
    """``obj`` (nested mappings, lists, tuples) as plain JSON / YAML values: numpy scalars and
    arrays as Python numbers and lists, paths as strings, tuples as lists, mapping keys as
    strings; with ``finite``, non-finite floats as None."""
    if isinstance(obj, Mapping):
        return {str(k): plain_values(v, finite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_values(v, finite) for v in obj]
    if isinstance(obj, np.ndarray):
        return plain_values(obj.tolist(), finite)
    if isinstance(obj, np.generic):
        return plain_values(obj.item(), finite)
    if isinstance(obj, float) and finite:
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def write_json(path: str | os.PathLike, data: Any, indent: int | None = 1, sort_keys: bool = False,
               portable: bool = False, newline: bool = True) -> Path:
    """Write ``data`` to ``path`` as JSON (with a final newline unless ``newline`` is False: the
    byte layout of files that never had one, e.g. the pipeline's markers), atomically (:func:`atomic_write`);
    ``portable``: absolute paths in it written relative to the file's folder (:func:`make_portable`).
    Strict: non-finite floats are written as ``null``, never as a bare ``NaN``; numpy values and
    paths as their plain values, any other value JSON cannot hold as its ``str``. Returns the path."""
    if portable:
        data = make_portable(data, Path(path).parent)
    text = json.dumps(plain_values(data), indent=indent, sort_keys=sort_keys, allow_nan=False, default=str)
    return atomic_write(path, text + ("\n" if newline else ""))


def read_json(path: str | os.PathLike) -> Any:
    """The JSON content of ``path``; None when there is no such file. A file that is not JSON
    raises ``ValueError`` (files are written atomically: a damaged one is not ours to guess at)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path} is not a JSON file ({exc})") from None


def file_sha256(path: str | os.PathLike, max_bytes: int | None = None, with_size: bool = False) -> str:
    """sha256 (hex) of a file's bytes (of its first ``max_bytes`` only, when given; followed by
    its size in bytes as decimal text when ``with_size``)."""
    h = hashlib.sha256()
    left = math.inf if max_bytes is None else int(max_bytes)
    with open(path, "rb") as fh:
        while left > 0:
            chunk = fh.read(int(min(1 << 20, left)))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    if with_size:
        h.update(str(Path(path).stat().st_size).encode())
    return h.hexdigest()


def relative_path(path: str | os.PathLike, base: str | os.PathLike) -> str:
    """``path`` relative to the directory ``base`` (both resolved first), with ``/`` separators."""
    rel = os.path.relpath(Path(path).expanduser().resolve(), Path(base).expanduser().resolve())
    return Path(rel).as_posix()


def map_strings(obj: Any, fn: Callable[[str], str], keys: bool = True) -> Any:
    """A copy of ``obj`` (nested dicts, lists, tuples, strings, paths) with ``fn`` applied to every
    string and path (as a string), dict keys too when ``keys``; tuples become lists, other values
    are kept."""
    if isinstance(obj, (str, os.PathLike)):
        return fn(os.fspath(obj))
    if isinstance(obj, dict):
        return {(fn(k) if keys and isinstance(k, str) else k): map_strings(v, fn, keys) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [map_strings(v, fn, keys) for v in obj]
    return obj


# An absolute POSIX path of at least two components ("/work/main", "/tmp/x/y.h5"), not part of a
# longer token (so "kJ/mol/nm" or "1/ps" are not paths); a Windows drive path; a home-relative path.
_POSIX = r"(?<![\w./~:-])/[\w.+@-]+(?:/[\w.+@-]*)+"
_WINDOWS = r"(?<![\w])[A-Za-z]:[\\/][^\s'\",;]+"
_HOME = r"(?<![\w./-])~/[^\s'\",;]+"
_ABS_RE = re.compile(f"{_POSIX}|{_WINDOWS}|{_HOME}")


def file_reference(path: str | os.PathLike, base: str | os.PathLike) -> dict:
    """``{"path": relative to base, "sha256": digest}``; ``sha256`` is None when ``path`` is not a file."""
    p = Path(path).expanduser()
    return {"path": relative_path(p, base), "sha256": file_sha256(p) if p.is_file() else None}


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
    return map_strings(record, lambda text: _ABS_RE.sub(lambda m: _relative_token(m.group(0), base), text))


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
