"""Old release vs this code: the figures of the comparison scripts, for ``cgkd benchmark``'s JSON.

``benchmarks/serving_speed.py`` (MD ms/step) and ``benchmarks/training_speed.py`` (labels and
student-training frames/s) run the release before the fast paths (``git archive``) and this code
side by side in one run; they need the git checkout, ``cgkd benchmark`` does not. Both use
:func:`export_release` (the old code, ``git archive``) and :func:`run_worker` (one timed
configuration in a worker process that imports the code of the directory it is given).
``cgkd benchmark --release-comparison FILE ...`` reads their JSON outputs with
:func:`release_comparison` and writes the figures, with the machine and its load, into its own JSON
(section ``release_comparison``) and prints them (:func:`format_release_comparison`). Units: ms per
MD step, frames per second.
"""
from __future__ import annotations

import json
import os
import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from openmm_cgkd.errors import UsageError

__all__ = ["release_comparison", "format_release_comparison", "checkout_state", "export_release", "run_worker",
           "old_release"]


def checkout_state(repo: str | os.PathLike) -> tuple[str, bool]:
    """The short commit id of the checkout ``repo`` and whether its package has local changes."""
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "openmm_cgkd"],
                                capture_output=True, text=True).stdout.strip())
    return sha, dirty


def export_release(repo: str | os.PathLike, ref: str, dest: str | os.PathLike) -> str:
    """Extract the package ``openmm_cgkd`` of git ``ref`` of the checkout ``repo`` into ``dest``;
    returns the short commit id (what the comparison records, never a path)."""
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", ref], check=True, capture_output=True,
                         text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(repo), "archive", ref, "openmm_cgkd"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return sha


@contextlib.contextmanager
def old_release(repo: str | os.PathLike, ref: str) -> Iterator[tuple[Path, str, str, bool]]:
    """The release ``ref`` of the checkout ``repo`` exported into a temporary directory (removed
    afterwards); yields (its directory, its short commit id, :func:`checkout_state` of ``repo``:
    its short commit id and whether its package has local changes)."""
    new_sha, dirty = checkout_state(repo)
    with tempfile.TemporaryDirectory(prefix="cgkd_old_") as tmp:
        old_dir = Path(tmp)
        yield old_dir, export_release(repo, ref, old_dir), new_sha, dirty


def run_worker(script: str | os.PathLike, code_dir: str | os.PathLike, arguments: Sequence[str],
               what: str) -> dict:
    """Run ``script --worker ARGUMENTS`` with ``code_dir`` first on ``PYTHONPATH`` and one thread
    (OpenMP, MKL, OpenMM's CPU platform); returns the JSON of its ``RESULT `` line. ``what`` names
    the configuration in the error raised when the worker fails."""
    env = dict(os.environ, PYTHONPATH=str(code_dir), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OPENMM_CPU_THREADS="1")
    cmd = [sys.executable, str(Path(script).resolve()), "--worker", *arguments]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(code_dir))
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"worker {what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def _serving(data: dict) -> list[dict]:
    return [{"kind": "serving", "backend": r["backend"], "n_beads": int(r["n_beads"]), "model": r["model"],
             "old_ms_per_step": float(r["old_ms_per_step"]), "new_ms_per_step": float(r["new_ms_per_step"]),
             "speedup": float(r["old_ms_per_step"]) / float(r["new_ms_per_step"]),
             "load_1min": [float(r["old"]["load_before"][0]), float(r["new"]["load_after"][0])]}
            for r in data["rows"]]


def _training(data: dict) -> list[dict]:
    return [{"kind": r["stage"], "frames": int(r["frames"]),
             "old_frames_per_s": float(r["old_frames_per_s_wall"]), "new_frames_per_s": float(r["new_frames_per_s_wall"]),
             "speedup": float(r["speedup_wall"]), "speedup_cpu_time": float(r["speedup_cpu"]),
             "load_1min": [float(r["old"]["load_before"][0]), float(r["new"]["load_after"][0])]}
            for r in data["rows"]]


_READERS = {"serving_speed": _serving, "training_speed": _training}


def release_comparison(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """One entry per file: ``benchmark``, ``file`` (its name), ``date``, ``old_sha``, ``new_sha``,
    ``machine`` (node, CPUs, load at the end) and ``rows`` (serving: ``old_ms_per_step`` /
    ``new_ms_per_step`` per backend, size and model; labels / train: ``old_frames_per_s`` /
    ``new_frames_per_s``; each with the 1-minute load before the old and after the new worker).
    :class:`~openmm_cgkd.errors.UsageError` for a file that is not such a result."""
    out = []
    for path in paths:
        try:
            with open(path) as fh:
                data = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"--release-comparison {path}: cannot read it as JSON ({exc})") from None
        kind = data.get("benchmark") if isinstance(data, dict) else None
        if kind not in _READERS:
            raise UsageError(f"--release-comparison {path}: not a result of benchmarks/serving_speed.py or "
                             f"benchmarks/training_speed.py (its 'benchmark' field is {kind!r})")
        try:
            rows = _READERS[kind](data)
        except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as exc:
            raise UsageError(f"--release-comparison {path}: a {kind} result without the expected fields ({exc!r})") \
                from None
        out.append({"benchmark": kind, "file": os.path.basename(os.fspath(path)), "date": data.get("date"),
                    "old_sha": data.get("old_sha"), "new_sha": data.get("new_sha"),
                    "machine": data.get("machine", {}), "rows": rows})
    return out


def format_release_comparison(entries: Sequence[dict]) -> str:
    """The figures of :func:`release_comparison` as text lines."""
    lines = []
    for e in entries:
        m = e["machine"]
        lines.append(f"{e['benchmark']} ({e['file']}, {e['date']}; old {e['old_sha']}, new {e['new_sha']}; "
                     f"{m.get('cpus')} CPUs):")
        for r in e["rows"]:
            load = f"load {r['load_1min'][0]:.1f}-{r['load_1min'][1]:.1f}"
            if r["kind"] == "serving":
                lines.append(f"  {r['backend']} {r['n_beads']} beads {r['model']}: old {r['old_ms_per_step']:.2f} "
                             f"ms/step, new {r['new_ms_per_step']:.2f} ms/step (x{r['speedup']:.2f}; {load})")
            else:
                lines.append(f"  {r['kind']}: old {r['old_frames_per_s']:.2f} frames/s, new {r['new_frames_per_s']:.2f} "
                             f"frames/s (x{r['speedup']:.2f}, CPU time x{r['speedup_cpu_time']:.2f}; {load})")
    return "\n".join(lines)
