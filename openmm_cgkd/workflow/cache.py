"""The stage cache of the pipeline: one marker per finished stage, ``<out>/stages/<stage>.json``.

A marker holds the stage's fingerprint (:mod:`openmm_cgkd.fingerprint`: the settings it depends
on and the digest of the CONTENT of its inputs, never their paths), its typed outputs
(:mod:`openmm_cgkd.workflow.results`, paths as ``$OUT/...``), the files it made and the wall
time summed over the attempts that made it. :class:`StageCache` reads and writes the markers;
:func:`stage_outputs` reads one stage's result back.
"""
from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from openmm_cgkd.config import ConfigError
from openmm_cgkd.fileio import read_json, write_json
from openmm_cgkd.fingerprint import describe_changes, digest
from openmm_cgkd.workflow.results import RESULT_TYPES, StageResult
from openmm_cgkd.workflow.results import from_portable as _local
from openmm_cgkd.workflow.results import to_portable as _portable

__all__ = ["STAGES", "StageCache", "stage_outputs"]

STAGES = ("aa", "teachers", "labels", "students", "md", "analysis", "report")


def stage_outputs(out: str | Path, name: str) -> StageResult | None:
    """The typed result (:mod:`openmm_cgkd.workflow.results`) recorded in
    ``<out>/stages/<name>.json``, paths made absolute for ``out``; None when the stage has not
    finished."""
    if name not in RESULT_TYPES:
        raise ConfigError(f"unknown stage {name!r}; stages: {list(STAGES)}")
    out = Path(out).resolve()
    p = out / "stages" / f"{name}.json"
    if not p.is_file():
        return None
    return RESULT_TYPES[name].from_marker(json.loads(p.read_text())["outputs"], out)


class StageCache:
    """Markers ``<out>/stages/<name>.json``: {fingerprint digest, key (the settings and input
    checksums it was computed from), outputs, files, seconds (wall time summed over the attempts
    that made it), attempts, finished}. The time of an unfinished attempt waits in
    ``<name>.clock.json`` for the attempt that finishes the stage."""

    def __init__(self, out: Path, log):
        self.out = out
        self.dir = out / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = log

    def done(self, name: str, key: dict) -> dict | None:
        p = self.dir / f"{name}.json"
        if not p.is_file():
            return None
        marker = _local(json.loads(p.read_text()), self.out)
        if marker.get("fingerprint") != digest(key):
            changes = describe_changes(marker.get("key"), key)
            self.log(f"[{name}] changed since the last run ({'; '.join(changes[:5])}"
                     f"{'; ...' if len(changes) > 5 else ''}): running it again")
            return None
        missing = [o for o in marker.get("files", []) if not Path(o).exists()]
        if missing:
            self.log(f"[{name}] outputs missing ({missing[0]} ...): running it again")
            return None
        return marker

    def _clock_file(self, name: str) -> Path:
        return self.dir / f"{name}.clock.json"

    def clock(self, name: str) -> dict:
        try:
            return json.loads(self._clock_file(name).read_text())
        except (OSError, ValueError):
            return {"seconds": 0.0, "attempts": 0}

    @contextmanager
    def timed(self, name: str, key: dict):
        """Time one attempt at stage ``name`` with fingerprint ``key``; ``tick()`` (yielded) saves the
        time so far, so that a killed attempt still counts up to its last tick. Earlier attempts
        count only when they had the same fingerprint."""

        fp = digest(key)
        before = self.clock(name)
        if before.get("fingerprint") != fp:
            before = {"seconds": 0.0, "attempts": 0}
        t0 = time.time()

        def save(running: bool = True) -> None:
            rec = {"seconds": round(before["seconds"] + time.time() - t0, 2), "attempts": before["attempts"] + 1,
                   "fingerprint": fp}
            if running:  # who runs it since when: `--status` counts the time of an attempt under way
                rec["running"] = {"since": t0, "seconds_before": before["seconds"], "pid": os.getpid(),
                                  "host": socket.gethostname()}
            write_json(self._clock_file(name), rec, indent=None, newline=False)

        save()
        try:
            yield save
        finally:
            save(running=False)

    def done_seconds(self, name: str) -> dict | None:
        """{seconds, attempts} of a finished stage's marker (None when it has not finished)."""
        marker = read_json(self.dir / f"{name}.json")
        if marker is None:
            return None
        return {"seconds": marker.get("seconds"), "attempts": marker.get("attempts")}

    def mark(self, name: str, key: dict, result: StageResult) -> dict:
        clock = self.clock(name)
        marker = {"stage": name, "fingerprint": digest(key), "key": key, "outputs": result.to_dict(),
                  "files": [str(f) for f in result.files()], "seconds": clock["seconds"],
                  "attempts": clock["attempts"],
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_json(self.dir / f"{name}.json", _portable(marker, self.out), newline=False)
        self._clock_file(name).unlink(missing_ok=True)
        return marker
