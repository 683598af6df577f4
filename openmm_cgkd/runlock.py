"""One run per output directory: the lock every ``cgkd`` run holds on its directory.

:func:`hold_run_dir` takes an exclusive, non-blocking ``flock`` on ``<directory>/.cgkd-run.lock``
for the whole run and writes the holder into the file (pid, host, command, start time, UTC). A
second run on the same directory is refused at once with :class:`RunDirectoryBusy` (one line
naming the holder) instead of writing the same files at the same time.

A run killed with ``kill -9`` (or a crashed machine) leaves the file but not the lock: the kernel
drops a ``flock`` when its holder dies, so the next run takes the lock over and says whose it
was (``taking over the lock of <holder>: that process is gone``). The holder record is
informative only; the lock itself is the kernel's, so two runs starting at the same instant
cannot both win.

The lock is re-entrant within a process (the pipeline holds its directory while its stages hold
theirs; a stage may lock a directory its caller already holds). It is not the short write lock
of a restart set (``<directory>/.lock``, :class:`openmm_cgkd.md.restart.RunLock`), which an outside
process may wait on (``flock .lock git commit ...``) while a run goes on.

A target that is a file (``cgkd label`` writes one HDF5 file) is locked through
``<parent>/.<name>.cgkd-run.lock``.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
import time
from pathlib import Path

from openmm_cgkd.errors import CGKDError

__all__ = ["RunDirectoryBusy", "UnwritableOutput", "hold_run_dir", "lock_path", "pid_alive", "RUN_LOCK_FILE"]

RUN_LOCK_FILE = ".cgkd-run.lock"
# how long a refused run waits for the lock holder to record itself, s
HOLDER_WAIT_S = 5.0

# lock file path -> [open file, depth]: the locks this process holds (re-entrant)
_HELD: dict[str, list] = {}


class RunDirectoryBusy(CGKDError, RuntimeError):
    """Another live process runs in this directory (or writes this file)."""

    exit_code = 1


class UnwritableOutput(CGKDError, PermissionError):
    """The output location cannot be created or written (read-only, no permission)."""

    exit_code = 2


def lock_path(target: str | os.PathLike, is_file: bool = False) -> Path:
    """The lock file of a run directory ``target`` (or of an output file when ``is_file``)."""
    target = Path(target)
    if is_file:
        return target.parent / f".{target.name}.cgkd-run.lock"
    return target / RUN_LOCK_FILE


def _describe(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}: "
            f"{holder.get('command', '?')}")


def _read_holder(fh) -> dict:
    try:
        fh.seek(0)
        text = fh.read()
        return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}


def pid_alive(pid) -> bool:
    """Whether process ``pid`` of this host exists (unknown: assumed alive)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True
    return True


@contextlib.contextmanager
def hold_run_dir(target: str | os.PathLike, what: str = "run", is_file: bool = False, quiet: bool = False):
    """Hold the run lock of ``target`` (a directory, created when missing; or a file's, with
    ``is_file``) for the ``with`` block.

    Raises
    ------
    RunDirectoryBusy
        Another live process holds it; the message names that process.
    """
    import fcntl

    path = lock_path(target, is_file)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = str(path.resolve())
        if key in _HELD:
            fh = None
        else:
            fh = open(path, "a+")
    except OSError as exc:
        raise UnwritableOutput(f"cannot write to {path.parent}: {exc.strerror or exc}; give an output location "
                               "you can write to") from None
    if fh is None:
        _HELD[key][1] += 1
        try:
            yield path
        finally:
            _HELD[key][1] -= 1
        return
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fh)
        # the winner writes its record just after taking the lock: a run refused in that instant
        # waits briefly for it rather than naming nobody
        deadline = time.monotonic() + HOLDER_WAIT_S
        while not holder and time.monotonic() < deadline:
            time.sleep(0.05)
            holder = _read_holder(fh)
        fh.close()
        name = f"{target} is" if not is_file else f"{target} is being written:"
        raise RunDirectoryBusy(f"{name} in use by another {what} ({_describe(holder)}); wait for it to finish "
                               f"or stop it, or use another output location") from None
    old = _read_holder(fh)
    if old and not quiet:
        here = old.get("host") == socket.gethostname()
        state = "that process is gone" if (here and not pid_alive(old.get("pid"))) else "its lock was released"
        if old.get("pid") != os.getpid():
            print(f"taking over the lock of {_describe(old)} ({state})", file=sys.stderr)
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300] if sys.argv else "python"}
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps(holder))
    fh.flush()
    _HELD[key] = [fh, 1]
    try:
        yield path
    finally:
        _HELD.pop(key, None)
        try:
            fh.seek(0)
            fh.truncate()  # a clean finish leaves no holder behind
        except OSError:
            pass
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()
