"""The machinery every resumable MD run of the package shares: all-atom runs
(:mod:`openmm_cgkd.data.aamd`) and CG runs (:mod:`openmm_cgkd.md.simulation`).

* :func:`load_checkpoint`: an OpenMM checkpoint loads back EXACTLY or not at all: a truncated
  or damaged file (or one of another system) is a :class:`CheckpointError`, never a partial state.
* :func:`save_restart`: the restart set of a run directory, in this order, under the run's
  lock: ``state.xml`` (portable state), ``checkpoint.chk`` (exact continuation on the same
  platform), the progress record (``progress.json``, written LAST: what it names is on disk).
* :class:`RunLock`: an exclusive ``flock`` on ``<run dir>/.lock`` held while restart files are
  written, so a process that snapshots the run (a git commit of its restart state) never sees a
  half-updated set.
* :func:`refuse_if_changed`: a run is resumed only with the settings it was started with;
  otherwise an error lists what changed (:func:`openmm_cgkd.fingerprint.describe_changes`).
* :func:`ns_per_day`: the speed figure of every run.

The files each kind of run writes are documented in its module; this one adds none. Every file
is written atomically (:mod:`openmm_cgkd.fileio`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from openmm_cgkd.errors import CGKDError
from openmm_cgkd.fileio import atomic_write, write_json
from openmm_cgkd.fingerprint import describe_changes, digest

__all__ = ["SimulationError", "StaleRunError", "CheckpointError",
           "RunLock", "load_checkpoint", "save_restart", "refuse_if_changed", "ns_per_day",
           "STATE_FILE", "CHECKPOINT_FILE", "PROGRESS_FILE", "LOCK_FILE"]

STATE_FILE = "state.xml"
CHECKPOINT_FILE = "checkpoint.chk"
PROGRESS_FILE = "progress.json"
LOCK_FILE = ".lock"


class SimulationError(CGKDError, RuntimeError):
    """The simulation blew up (NaN energy) or cannot run as asked."""


class StaleRunError(SimulationError):
    """A run asked to resume was made with other settings; ``changes`` lists what differs."""

    exit_code = 2  # bad usage: the same settings, or a new directory, would run

    def __init__(self, message: str, changes: list[str] | None = None):
        super().__init__(message)
        self.changes = list(changes or [])


class CheckpointError(SimulationError):
    """A checkpoint file does not load back exactly (truncated, damaged, another system)."""


class RunLock:
    """Exclusive lock on ``<directory>/.lock`` (``with RunLock(d): ...``) while restart files are
    written; ``flock <directory>/.lock git commit ...`` waits for a complete set."""

    def __init__(self, directory: str | os.PathLike):
        self.path = Path(directory) / LOCK_FILE

    def __enter__(self):
        import fcntl

        self.fh = open(self.path, "a")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def load_checkpoint(context, path: str | os.PathLike, advice: str = "") -> None:
    """Load the checkpoint file ``path`` into the OpenMM ``context``, exactly or not at all.

    :class:`CheckpointError` (with ``advice`` appended) when OpenMM refuses it, or when a
    checkpoint of the loaded context differs from the file in size (in bytes too on the CPU and
    Reference platforms, which round-trip a checkpoint byte for byte): a truncated file can load
    without error and leave velocities unset.
    """
    import openmm

    path = Path(path)
    data = path.read_bytes()
    tail = f"; {advice}" if advice else ""
    try:
        context.loadCheckpoint(data)
    except openmm.OpenMMException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot resume: {path} does not load into this simulation ({first}){tail}") from None
    again = context.createCheckpoint()
    exact = context.getPlatform().getName() in ("Reference", "CPU")
    if len(again) != len(data) or (exact and again != data):
        raise CheckpointError(f"cannot resume: {path} is truncated or damaged ({len(data)} bytes; a checkpoint "
                              f"of this simulation has {len(again)}): positions and velocities cannot be "
                              f"trusted{tail}")


def save_restart(context, directory: str | os.PathLike, progress: Mapping) -> None:
    """Write the restart set of ``directory`` under its :class:`RunLock`: ``state.xml`` (positions,
    velocities, parameters, integrator parameters), ``checkpoint.chk``, then ``progress.json``
    holding ``progress``; each file atomically."""
    import openmm

    directory = Path(directory)
    state = context.getState(getPositions=True, getVelocities=True, getParameters=True,
                             getIntegratorParameters=True)
    with RunLock(directory):
        atomic_write(directory / STATE_FILE, openmm.XmlSerializer.serialize(state))
        atomic_write(directory / CHECKPOINT_FILE, context.createCheckpoint())
        write_json(directory / PROGRESS_FILE, dict(progress))


def refuse_if_changed(old: Mapping | None, new: Mapping, what: str, advice: str, error=StaleRunError) -> None:
    """Raise ``error("<what> (<changes>); <advice>")`` when the settings ``old`` (as recorded by
    the run; None when nothing was recorded) differ from ``new``; the exception's ``changes``
    lists them as ``"key: old -> new"``. Numbers compare by value (1500 equals 1500.0)."""
    old = None if old is None else _numbers_as_float(old)
    new = _numbers_as_float(new)
    if old is not None and digest(old) == digest(new):
        return
    changes = describe_changes(old, new)
    exc = error(f"{what} ({'; '.join(changes)}); {advice}")
    exc.changes = changes
    raise exc


def _numbers_as_float(obj):
    """``obj`` with every int (not bool) as a float: 1500 and 1500.0 are the same setting."""
    if isinstance(obj, Mapping):
        return {k: _numbers_as_float(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_numbers_as_float(v) for v in obj]
    if isinstance(obj, int) and not isinstance(obj, bool):
        return float(obj)
    return obj


def ns_per_day(simulated_ps: float, seconds: float) -> float:
    """Simulated nanoseconds per wall-clock day (nan when no time has passed)."""
    if not seconds > 0:
        return float("nan")
    return simulated_ps / 1000.0 / (seconds / 86400.0)
