"""Fingerprints: what keys every cached or resumable result of the package.

A fingerprint is a JSON-able mapping of the settings a result depends on and of the CONTENT of
its inputs (sha256 of files, datasets and bundles; never their paths or modification times),
together with its short digest. A cached result is reused, or a run resumed, only when the
fingerprint it was made with equals the one asked for now; otherwise the layer that owns it
either redoes the work or refuses with :func:`describe_changes`'s list of what changed.

Layers keyed this way: the pipeline stages (``<out>/stages/*.json``), a training run
(``<run>/fingerprint.json``), the teachers' shared set-up (``setup.json``), a member bundle
(its run's fingerprint in the manifest) and an MD run (``<out>/fingerprint.json``).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from openmm_cgkd.errors import MissingFileError
from openmm_cgkd.fileio import file_sha256, read_json, write_json

__all__ = ["digest", "bundle_checksum", "array_digest", "cg_dataset_digest", "describe_changes",
           "read_fingerprint", "write_fingerprint", "FINGERPRINT_FILE"]

FINGERPRINT_FILE = "fingerprint.json"


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def digest(obj: Any) -> str:
    """Short (16 hex) sha256 of ``obj`` in canonical JSON (sorted keys): equal settings, equal digest."""
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()[:16]


def bundle_checksum(path: str | os.PathLike) -> str:
    """sha256 over every file of a bundle directory (names and contents, hidden files excluded):
    the manifest (wall, bead types, masses, architecture) and the weights. A re-saved bundle has
    a new checksum (its manifest records when it was made)."""
    root = Path(path)
    if not root.is_dir():
        raise MissingFileError(f"model bundle not found: {root} is not a directory")
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file() and not any(s.startswith(".") for s in
                                                                          q.relative_to(root).parts)):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + file_sha256(p).encode())
    return h.hexdigest()


def array_digest(*arrays) -> str:
    """sha256 (hex) of arrays' dtypes, shapes and bytes (``None`` entries allowed)."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none;")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def cg_dataset_digest(dataset) -> str:
    """Content digest of a :class:`~openmm_cgkd.data.dataset.CGDataset` in memory: bead types,
    masses, positions, boxes, forces, distillation labels and bead names when the mapping set
    them (not its provenance, times or temperature)."""
    labels = dataset.labels
    h = hashlib.sha256(_canonical(list(dataset.type_names)).encode())
    if getattr(dataset, "bead_names", None):  # absent: digests of datasets from before bead names stay
        h.update(_canonical({k: list(v) for k, v in dataset.bead_names.items()}).encode())
    h.update(array_digest(dataset.bead_types, dataset.masses, dataset.positions, dataset.boxes,
                          dataset.forces).encode())
    if labels is not None:
        h.update(array_digest(labels.forces, labels.bead_energies, labels.energy, labels.force_std).encode())
    topology = getattr(dataset, "topology", None)
    if topology is not None and topology.has_bonds:  # unbonded datasets keep the digest they always had
        h.update(array_digest(topology.bonds).encode())
    return h.hexdigest()


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    return {prefix: obj}


def _short(v: Any) -> str:
    s = _canonical(v) if not isinstance(v, str) else v
    if isinstance(v, str) and len(v) >= 32 and all(c in "0123456789abcdef" for c in v):
        return v[:12]  # a checksum: its first characters tell old from new
    return s if len(s) <= 60 else s[:57] + "..."


def describe_changes(old: Mapping | None, new: Mapping) -> list[str]:
    """``["md.temperature_K: 298.1 -> 310.0", ...]``: the dotted keys whose values differ."""
    if old is None:
        return ["no fingerprint recorded (written by an older version, or interrupted before it started)"]
    a, b = _flatten(old), _flatten(new)
    changes = []
    for key in sorted(set(a) | set(b)):
        if key not in a:
            changes.append(f"{key}: (absent) -> {_short(b[key])}")
        elif key not in b:
            changes.append(f"{key}: {_short(a[key])} -> (absent)")
        elif _canonical(a[key]) != _canonical(b[key]):
            changes.append(f"{key}: {_short(a[key])} -> {_short(b[key])}")
    return changes


def read_fingerprint(directory: str | os.PathLike) -> dict | None:
    """``{"digest", "settings"}`` stored in ``<directory>/fingerprint.json``, or None."""
    try:
        data = read_json(Path(directory) / FINGERPRINT_FILE)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and "digest" in data and "settings" in data else None


def write_fingerprint(directory: str | os.PathLike, settings: Mapping, extra: Mapping | None = None) -> str:
    """Write ``settings`` and their digest to ``<directory>/fingerprint.json`` (atomically); the
    digest. ``extra``: more keys stored beside them, outside the digest (e.g. the thread counts a
    resume should reuse to continue bit-identically)."""
    d = digest(settings)
    write_json(Path(directory) / FINGERPRINT_FILE, {**dict(extra or {}), "digest": d, "settings": settings},
               sort_keys=True)
    return d
