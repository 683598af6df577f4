"""Keep dependencies' start-up chatter out of the user's terminal, and nothing else.

Three messages that say nothing about the user's run are silenced at their source:

* NVIDIA Warp (a torchmd-net dependency) prints ``Warp CUDA warning: Could not find or load the
  NVIDIA CUDA driver`` from C when it initialises on a machine without a GPU:
  :func:`init_warp` initialises it while :func:`filtered_native_output` holds the C streams;
* the openmm-torch wheel imports ``simtk.openmm``, whose shim logs ``importing 'simtk.openmm'
  is deprecated`` on the root logger: :func:`import_torchforce` drops that one record;
* mdtraj's DCD reader (VMD's dcdplugin, C code) prints ``dcdplugin) detected standard 32-bit
  DCD file ...`` lines: wrap the load in :func:`filtered_native_output`;
* pymbar prints banners (jax, timeseries caveats) on import: :func:`import_pymbar_timeseries`.

:func:`filtered_native_output` captures what C code writes to file descriptors 1 and 2 while a
block runs and writes back every line that matches none of the known patterns, so a real
error from the same code still reaches the terminal (after the block ends).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence

__all__ = ["NATIVE_NOISE", "filtered_native_output", "init_warp", "import_torchforce", "import_torchmdnet",
           "quiet_lightning", "LIGHTNING_NOISE", "import_pymbar_timeseries"]

# Exact text of the lines dropped (substring match on one line).
NATIVE_NOISE: tuple[str, ...] = (
    "Warp CUDA warning: Could not find or load the NVIDIA CUDA driver",
    "dcdplugin) ",  # VMD's DCD reader (inside mdtraj) narrates every file it opens; its errors raise in Python
)
# Lightning's start-up lines, tips and deprecation notes: nothing about the user's run. Its errors
# and the run's own messages pass. Substrings of the log record / warning text.
LIGHTNING_NOISE: tuple[str, ...] = (
    "GPU available:", "TPU available:", "HPU available:", "IPU available:", "LOCAL_RANK:", "💡 Tip:", "Tip: For seamless",
    "`Trainer.fit` stopped:", "is deprecated, use `isinstance(treespec",
    "is smaller than the logging interval Trainer(log_every_n_steps",
)
SIMTK_WARNING = "importing 'simtk.openmm' is deprecated"


def _flush_c_streams() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)  # libc's stdio buffers (printf to a pipe is block-buffered)
    except Exception:  # pragma: no cover - no libc (not on Linux/macOS): nothing buffered there
        pass


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # pragma: no cover - a closed or replaced stream
            pass


@contextlib.contextmanager
def filtered_native_output(patterns: Sequence[str] = NATIVE_NOISE, fds: Sequence[int] = (1, 2)) -> Iterator[None]:
    """Capture C-level output to ``fds`` during the block; then write back the lines that contain
    none of ``patterns`` (unknown output, e.g. a real error, is kept, in order, per stream)."""
    saved: list[tuple[int, int, object]] = []
    _flush_python_streams()
    _flush_c_streams()
    for fd in fds:
        try:
            copy = os.dup(fd)
        except OSError:  # the descriptor is closed: nothing to filter
            continue
        tmp = tempfile.TemporaryFile()
        os.dup2(tmp.fileno(), fd)
        saved.append((fd, copy, tmp))
    try:
        yield
    finally:
        _flush_python_streams()
        _flush_c_streams()
        for fd, copy, tmp in reversed(saved):
            os.dup2(copy, fd)
            os.close(copy)
            tmp.seek(0)
            data = tmp.read()
            tmp.close()
            kept = [line for line in data.splitlines(keepends=True)
                    if not any(p in line.decode("utf-8", "replace") for p in patterns)]
            if kept:
                os.write(fd, b"".join(kept))


def init_warp() -> None:
    """Initialise NVIDIA Warp quietly (its CUDA-driver warning on GPU-less machines is dropped;
    other output and errors pass). No-op when Warp is not installed."""
    try:
        import warp
    except Exception:  # pragma: no cover - warp is a torchmd-net dependency
        return
    warp.config.quiet = True
    if hasattr(warp, "LOG_WARNING"):
        warp.config.log_level = warp.LOG_WARNING
    with filtered_native_output():
        warp.init()


class _DropLightningNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in LIGHTNING_NOISE)


_LIGHTNING_QUIET = False


def quiet_lightning() -> None:
    """Drop Lightning's start-up chatter (:data:`LIGHTNING_NOISE`) at its source: a filter on the
    loggers that emit it and warning filters for its deprecation and logging-interval notes. Call
    before a ``Trainer`` is built; idempotent."""
    global _LIGHTNING_QUIET
    if _LIGHTNING_QUIET:
        return
    import re
    import warnings

    drop = _DropLightningNoise()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).addFilter(drop)
    for noise in LIGHTNING_NOISE:
        warnings.filterwarnings("ignore", message=".*" + re.escape(noise) + ".*")
    _LIGHTNING_QUIET = True


class _DropSimtkWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return SIMTK_WARNING not in record.getMessage()


def import_torchforce():
    """``openmmtorch.TorchForce``, imported without the ``simtk.openmm`` deprecation record that
    the wheel's own ``import simtk.openmm`` logs (other log records pass)."""
    root = logging.getLogger()
    drop = _DropSimtkWarning()
    root.addFilter(drop)
    try:
        from openmmtorch import TorchForce
    finally:
        root.removeFilter(drop)
    return TorchForce


def import_torchmdnet():
    """Import torchmd-net (registers its custom ops, needed before loading a TorchScript model).

    Also initialises NVIDIA Warp (which torchmd-net's kernels use) without its start-up banner
    and its CUDA-driver warning on GPU-less machines (:func:`init_warp`).
    """
    init_warp()
    import torchmdnet  # noqa: F401
    import torchmdnet.extensions.ops  # noqa: F401  (registers torch.ops.torchmdnet.*)

    return torchmdnet


def import_pymbar_timeseries():
    """``pymbar.timeseries``, imported without its banners on stdout/stderr."""
    import io

    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        import pymbar.timeseries as ts
    return ts
