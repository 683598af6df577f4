"""One executor for the independent tasks of every stage (teacher members, students, MD replicas
with their analysis), on ``dask.distributed``.

* By default an in-process :class:`~distributed.LocalCluster` sized to the machine (worker
  processes of one task at a time each, the cores shared out between them), started on the
  first task and stopped with the command: nothing to set up.
* ``cluster: {kind: serial}`` runs every task in this process, one after another, without Dask:
  for a debugger (a breakpoint in a task stops there) and for tasks so small that a worker's
  start-up (importing torch, OpenMM and Lightning: 6-18 s of CPU a process) outweighs them.
* ``cluster:`` (:class:`ClusterConfig`) points it at an existing scheduler (``kind: address``,
  or ``cgkd pipeline --scheduler ADDRESS``) or starts a ``dask-jobqueue`` cluster whose workers
  are batch jobs (``kind: slurm | pbs | lsf``: queue, cores, memory, walltime, GPUs per job,
  fixed or adaptive number of jobs).
* Tasks declare what they need (:class:`Need`: CPU threads, a GPU) as Dask worker resources
  (``CPU``, ``GPU``); a worker with a GPU offers one device (``CUDA_VISIBLE_DEVICES`` set to it
  before the task touches CUDA).
* Faults: a worker that dies under a task (kill -9, node lost, walltime) is noticed by the
  scheduler, which runs the task again on another worker, up to ``retries`` deaths per task
  (``distributed.scheduler.allowed-failures``); an exception that escapes a task is retried as
  often (``retries=``). A task resumes from its committed state (MD checkpoints, training
  checkpoints, the stage cache), so a retry costs at most the progress since the last
  checkpoint. A failure that is the answer (an MD blow-up) is returned by the task as a
  result; a user error (:class:`~openmm_cgkd.errors.CGKDError`) is returned to the client and
  raised there, never retried.
* Shared file system: the client and every worker must see the run's output directory at the
  same path. The executor writes a marker file there; a task on a worker that cannot see it
  refuses to run and the command stops with one line (:class:`SharedFileSystemError`).
* Progress: a tqdm bar per batch of tasks (done, with running / queued counts); the Dask
  dashboard address is printed when one is up (it needs ``bokeh``).

Everything Dask is imported lazily: ``import openmm_cgkd`` and ``cgkd --help`` stay light.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import re
import socket
import time
import uuid
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterator, Sequence

from openmm_cgkd.config import Config, ConfigError
from openmm_cgkd.errors import CGKDError

__all__ = ["ClusterConfig", "Need", "Executor", "SharedFileSystemError", "TaskFailedError", "make_jobqueue_cluster",
           "local_workers", "task_threads", "KINDS"]

KINDS = ("local", "serial", "address", "slurm", "pbs", "lsf")
_JOBQUEUE_KEYS = ("queue", "account", "cores", "memory", "walltime", "gpus", "job_extra", "jobs", "adaptive_min",
                  "adaptive_max", "python", "job_script_prologue", "interface", "log_directory")


class SharedFileSystemError(CGKDError):
    """A worker cannot see the run's output directory (the pipeline needs a shared file system)."""

    exit_code = 2


class TaskFailedError(CGKDError):
    """A task failed on every try (its workers died ``retries`` times, or it raised each time)."""


@dataclass
class ClusterConfig(Config):
    """Where the pipeline's tasks run (``cluster:`` in the pipeline config).

    ``kind``: ``local`` (default: a LocalCluster on this machine of ``workers`` processes, or
    ``md.workers``, or sized to the machine), ``serial`` (every task in this process, one at a
    time, no Dask: debugging and tiny jobs; a task's exception stops the command with its
    traceback, not retried), ``address`` (an existing scheduler,
    ``tcp://host:8786``), or ``slurm`` / ``pbs`` / ``lsf`` (dask-jobqueue: each batch job of
    ``cores`` cores, ``memory``, ``walltime`` and ``gpus`` GPUs runs ``max(1, gpus)`` workers,
    one GPU each; ``jobs`` jobs, or between ``adaptive_min`` and ``adaptive_max`` jobs as the
    queue of tasks asks). ``retries``: how many times a task is run again after its worker died
    or it raised. Hardware only: nothing here changes a result or a fingerprint."""

    kind: str = "local"
    address: str | None = None
    workers: int | None = None  # kind local: worker processes (default: md.workers, else sized to the machine)
    queue: str | None = None
    account: str | None = None
    cores: int = 1  # per job
    memory: str = "4GiB"  # per job
    walltime: str = "04:00:00"  # per job, HH:MM:SS
    gpus: int = 0  # per job
    job_extra: list[str] = field(default_factory=list)  # more batch directives (#SBATCH ... lines)
    job_script_prologue: list[str] = field(default_factory=list)  # shell lines before the worker starts
    python: str | None = None  # the workers' python (default: this one)
    interface: str | None = None  # network interface the workers reach the scheduler on (e.g. ib0)
    log_directory: str | None = None
    jobs: int = 1  # jobs kept running (when not adaptive)
    adaptive_min: int | None = None  # adaptive scaling between these many jobs
    adaptive_max: int | None = None
    retries: int = 2

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if (self.kind == "address") != bool(self.address):
            raise ConfigError("address (tcp://host:port) is needed with kind: address, and only with it")
        if self.kind in ("local", "serial", "address"):
            defaults = {f.name: f.default if f.default_factory is MISSING else f.default_factory()
                        for f in fields(ClusterConfig)}
            set_here = [k for k in _JOBQUEUE_KEYS if getattr(self, k) != defaults[k]]
            if set_here:
                raise ConfigError(f"{set_here[0]} applies to kind slurm, pbs or lsf, not {self.kind}")
        if self.workers is not None and (self.kind != "local" or self.workers < 1):
            raise ConfigError("workers (>= 1) applies to kind: local")
        if self.cores < 1 or self.gpus < 0 or self.jobs < 0 or self.retries < 0:
            raise ConfigError("cores must be >= 1; gpus, jobs and retries >= 0")
        if self.gpus and self.cores % self.gpus:
            raise ConfigError(f"cores ({self.cores}) must be a multiple of gpus ({self.gpus}): "
                              "each GPU gets a worker with an equal share of the cores")
        if not re.fullmatch(r"\d+:\d{2}(:\d{2})?", self.walltime):
            raise ConfigError(f"walltime must be HH:MM:SS, got {self.walltime!r}")
        if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", self.memory):
            raise ConfigError(f"memory must be a size such as 16GiB or 4000MB, got {self.memory!r}")
        if (self.adaptive_min is None) != (self.adaptive_max is None):
            raise ConfigError("give both adaptive_min and adaptive_max, or neither")
        if self.adaptive_max is not None and not 0 <= self.adaptive_min <= self.adaptive_max >= 1:
            raise ConfigError(f"need 0 <= adaptive_min <= adaptive_max, adaptive_max >= 1; got "
                              f"{self.adaptive_min}, {self.adaptive_max}")

    @property
    def processes(self) -> int:
        """Workers per batch job: one per GPU, or one of all the job's cores."""
        return max(1, self.gpus)


@dataclass(frozen=True)
class Need:
    """What one task needs of a worker: ``threads`` CPU threads (None: the worker's share of
    cores) and one GPU or none."""

    threads: int | None = None
    gpu: bool = False


def local_workers(workers: int | None, threads: int | None = None) -> int:
    """Worker processes of the local cluster: ``workers``, else as many as the machine's cores
    hold at ``threads`` each (the GPUs' count when there are GPUs)."""
    if workers is not None:
        return int(workers)
    gpus = _local_gpus()
    return gpus if gpus else max(1, _cores() // max(1, threads or 1))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _local_gpus() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


def task_threads() -> int | None:
    """CPU threads the task running in this Dask worker may use (its worker's ``CPU``
    resource); None outside a worker."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    cpu = worker.state.total_resources.get("CPU")
    return None if cpu is None else max(1, int(cpu))


# --------------------------------------------------------------------------- worker side
@dataclass
class _Ok:
    value: object


@dataclass
class _Refused:
    error: CGKDError


def _bind_gpu() -> None:
    """Make this worker's one GPU the only visible device (before CUDA is initialised): the
    k-th of the devices the worker was given, k the number at the end of its name (a local
    worker ``3``, a jobqueue worker ``SLURMCluster-0-1``)."""
    if os.environ.get("CGKD_GPU_BOUND"):
        return
    from distributed import get_worker

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",") if visible else [str(i) for i in range(_local_gpus())]
    if len(devices) > 1:
        m = re.search(r"(\d+)$", str(get_worker().name))
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[(int(m.group(1)) if m else 0) % len(devices)]
    os.environ["CGKD_GPU_BOUND"] = "1"


def _run_task(fn: Callable, job, marker: str | None, gpu: bool):
    """Runs on a worker: checks the shared file system, binds the GPU, sets the threads, runs
    ``fn(job)``. A user error comes back as a value (raised by the client, never retried)."""
    if marker is not None and not Path(marker).is_file():
        return _Refused(SharedFileSystemError(
            f"worker on {socket.gethostname()} cannot see the run's output directory ({Path(marker).parent.parent}): "
            "the pipeline needs a file system shared by the client and every worker, at the same path"))
    if gpu:
        _bind_gpu()
    threads = task_threads()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)  # Dask's nanny starts workers with OMP_NUM_THREADS=1
    try:
        return _Ok(fn(job))
    except CGKDError as exc:
        try:
            pickle.dumps(exc)
        except Exception:  # an error type that does not pickle: its message, as the base type
            exc = CGKDError(str(exc))
        return _Refused(exc)


# --------------------------------------------------------------------------- client side
def make_jobqueue_cluster(cfg: ClusterConfig):
    """The dask-jobqueue cluster of ``cfg`` (kind slurm, pbs or lsf), not scaled yet (no job is
    submitted): each job runs :attr:`ClusterConfig.processes` workers, every worker declaring
    ``CPU`` (its share of the job's cores) and ``GPU`` (1 when the job has GPUs) resources."""
    import dask_jobqueue

    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster,
           "lsf": dask_jobqueue.LSFCluster}[cfg.kind]
    procs = cfg.processes
    resources = f"CPU={cfg.cores // procs}" + (",GPU=1" if cfg.gpus else "")
    directives = list(cfg.job_extra)
    kwargs = {}
    if cfg.gpus:
        if cfg.kind == "slurm":
            directives.append(f"--gres=gpu:{cfg.gpus}")
        elif cfg.kind == "pbs":
            kwargs["resource_spec"] = f"select=1:ncpus={cfg.cores}:ngpus={cfg.gpus}:mem={cfg.memory.replace('i', '')}"
        else:
            directives.append(f'-gpu "num={cfg.gpus}"')
    if cfg.account:
        kwargs["account" if cfg.kind != "lsf" else "project"] = cfg.account
    return cls(queue=cfg.queue, cores=cfg.cores, memory=cfg.memory, walltime=cfg.walltime, processes=procs,
               job_extra_directives=directives, job_script_prologue=list(cfg.job_script_prologue),
               worker_extra_args=["--resources", resources], python=cfg.python, interface=cfg.interface,
               log_directory=cfg.log_directory, job_name="cgkd-worker", scheduler_options={"dashboard_address": ":0"}, **kwargs)


class Executor:
    """Runs batches of independent tasks on a Dask cluster (see the module docstring).

    Parameters
    ----------
    cluster : ClusterConfig, optional
        Where the tasks run (default: a local cluster).
    workers : int, optional
        Size of a local cluster (``md.workers``); default ``cluster.workers``, else sized to the
        machine (:func:`local_workers`).
    threads : int, optional
        CPU threads of one task on a local cluster sized to the machine (``md.threads``).
    shared_dir : path, optional
        The run's output directory: every worker must see it (checked by every task).
    log : callable
        Where the cluster's own lines go (its size, the dashboard address).
    progress : bool
        tqdm bars of the tasks.

    The cluster starts on the first :meth:`map` and stops with :meth:`close` (or the ``with``
    block); an existing scheduler (``kind: address``) is left running.
    """

    def __init__(self, cluster: ClusterConfig | None = None, workers: int | None = None, threads: int | None = None,
                 shared_dir: str | os.PathLike | None = None, log=print, progress: bool = True):
        self.cfg = cluster or ClusterConfig()
        if workers is not None and workers < 1:
            raise ConfigError(f"the local cluster needs >= 1 worker, got {workers}")
        self.n_local = local_workers(workers if workers is not None else self.cfg.workers, threads)
        self.threads = threads
        self.shared_dir = None if shared_dir is None else Path(shared_dir).resolve()
        self.log, self.progress = log, progress
        self._cluster = self._client = self._marker = None
        self._serial_said = False

    @property
    def slots(self) -> int | None:
        """Tasks at once on a local cluster (its workers) or serially (1); None for other clusters
        (they decide)."""
        return {"local": self.n_local, "serial": 1}.get(self.cfg.kind)

    # ------------------------------------------------------------------ life cycle
    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def client(self):
        """The Dask client (the cluster is started on first use)."""
        if self._client is None:
            self._start()
        return self._client

    def _start(self) -> None:
        import dask
        import distributed

        dask.config.set({"distributed.scheduler.allowed-failures": self.cfg.retries,
                         "distributed.worker.daemon": False})  # a training task may start processes
        cfg = self.cfg
        if cfg.kind == "local":
            gpus = _local_gpus()
            cores = self._local_cores()
            resources = {"CPU": cores, **({"GPU": 1} if gpus else {})}
            self._cluster = distributed.LocalCluster(
                n_workers=self.n_local, threads_per_worker=1, processes=True, resources=resources,
                memory_limit=0, dashboard_address=":0", silence_logs=logging.ERROR)
            what = f"a local cluster of {self.n_local} worker process(es), {cores} core(s)" + \
                   (f" and one of {gpus} GPU(s)" if gpus else "") + " each"
        elif cfg.kind == "address":
            self._cluster = None
            what = f"the scheduler at {cfg.address}"
        else:
            self._cluster = make_jobqueue_cluster(cfg)
            if cfg.adaptive_max is not None:
                self._cluster.adapt(minimum_jobs=cfg.adaptive_min, maximum_jobs=cfg.adaptive_max)
                n = f"{cfg.adaptive_min} to {cfg.adaptive_max}"
            else:
                self._cluster.scale(jobs=cfg.jobs)
                n = str(cfg.jobs)
            what = f"a {cfg.kind.upper()} cluster of {n} job(s) of {cfg.processes} worker(s)"
        try:
            self._client = distributed.Client(cfg.address if cfg.kind == "address" else self._cluster,
                                              set_as_default=False)
        except OSError as exc:
            self.close()
            raise ConfigError(f"cannot reach the Dask scheduler at {cfg.address}: {exc}") from None
        if self.shared_dir is not None:
            self._marker = self.shared_dir / ".cluster" / f"{uuid.uuid4().hex}.marker"
            self._marker.parent.mkdir(parents=True, exist_ok=True)
            self._marker.write_text(socket.gethostname() + "\n")
        self.log(f"[cluster] tasks run on {what}")
        if importlib.util.find_spec("bokeh") and "dashboard" in self._client.scheduler_info().get("services", {}):
            self.log(f"[cluster] dashboard: {self._client.dashboard_link}")

    def close(self) -> None:
        """Stop the cluster this executor started (and its workers); idempotent."""
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        if self._marker is not None:
            self._marker.unlink(missing_ok=True)
            try:
                self._marker.parent.rmdir()  # when no other run's marker is there
            except OSError:
                pass
        self._cluster = self._client = self._marker = None

    # ------------------------------------------------------------------ what the workers have
    def _worker_resources(self) -> list[dict]:
        return [w.get("resources", {}) for w in self.client.scheduler_info()["workers"].values()]

    @property
    def has_gpus(self) -> bool:
        """Whether the cluster's workers offer GPUs (for an existing scheduler: those connected now)."""
        if self.cfg.kind in ("local", "serial"):
            return _local_gpus() > 0
        if self.cfg.kind == "address":
            return any(r.get("GPU") for r in self._worker_resources())
        return self.cfg.gpus > 0

    def _local_cores(self) -> int:
        """CPU threads of each worker of the local cluster."""
        return max(1, _cores() // self.n_local, self.threads or 1)

    def _check(self, need: Need) -> dict:
        """The Dask resources of ``need``: ``CPU`` its threads (None: all of a worker's, so that a
        worker runs one task at a time), ``GPU`` 1 for a GPU task. A need no worker can meet is
        a ConfigError (instead of tasks queued for ever)."""
        if self.cfg.kind == "local":
            offered = [{"CPU": self._local_cores(), "GPU": int(_local_gpus() > 0)}]
        elif self.cfg.kind == "address":
            offered = self._worker_resources()  # none connected yet: nothing to check against
        else:
            offered = [{"CPU": self.cfg.cores // self.cfg.processes, "GPU": int(self.cfg.gpus > 0)}]
        res = {}
        if self.cfg.kind == "local":  # one task per worker; its threads are its own business
            res["CPU"] = offered[0]["CPU"]
        elif need.threads or self.cfg.kind != "address":
            res["CPU"] = need.threads or offered[0]["CPU"]
        if need.gpu:
            res["GPU"] = 1
        if offered and not any(all(o.get(k, 0) >= v for k, v in res.items()) for o in offered):
            raise ConfigError(f"tasks need {need.threads or 1} thread(s){' and a GPU' if need.gpu else ''} but the "
                              f"cluster's workers offer {offered[0]}: change md.threads / the trainer's devices, or "
                              "the cluster (cluster.cores, cluster.gpus)")
        return res

    # ------------------------------------------------------------------ tasks
    def map(self, fn: Callable, jobs: Sequence, names: Sequence[str], need: Need = Need(),
            what: str = "tasks") -> Iterator[tuple[object, object]]:
        """``fn(job)`` for every job on the cluster, started in the order given; yields
        ``(job, result)`` as they finish.

        ``fn`` must be a module-level function (it is pickled to the workers); ``names`` label
        the tasks (Dask keys ``<what>-<name>-<id>``). A task that raises a
        :class:`~openmm_cgkd.errors.CGKDError` stops the batch with that error; one that died
        or raised more than ``cluster.retries`` times is a :class:`TaskFailedError`. Leaving the
        loop early (an error, a stop) cancels the tasks not finished."""
        import distributed
        from tqdm import tqdm

        jobs = list(jobs)
        if not jobs:
            return
        if self.cfg.kind == "serial":
            yield from self._map_serial(fn, jobs, names, what)
            return
        resources = self._check(need)
        client = self.client
        marker = None if self._marker is None else str(self._marker)
        tag = uuid.uuid4().hex[:6]
        futures = {}
        for i, (job, name) in enumerate(zip(jobs, names, strict=True)):  # started in the order given
            fut = client.submit(_run_task, fn, job, marker, need.gpu, key=f"{what}-{name}-{tag}",
                                resources=resources or None, retries=self.cfg.retries, pure=False,
                                priority=len(jobs) - i)
            futures[fut] = (job, name)
        bar = tqdm(total=len(jobs), desc=what, unit="task", disable=not self.progress, leave=False)
        pending = distributed.as_completed(list(futures), loop=client.loop)
        shown = 0.0
        try:
            while not pending.is_empty():
                done = pending.next_batch(block=False)
                if not done:
                    time.sleep(0.2)
                for fut in done:
                    job, name = futures[fut]
                    try:
                        out = fut.result()
                    except distributed.KilledWorker:
                        raise TaskFailedError(f"{what} {name}: its worker died {self.cfg.retries + 1} times; the "
                                              "work done up to its last checkpoint is kept: rerun to resume") from None
                    if isinstance(out, _Refused):
                        raise out.error
                    bar.update(1)
                    yield job, out.value
                if self.progress and time.time() - shown > 2.0:
                    left = {f.key for f in futures if not f.done()}
                    running = self._running(left)
                    bar.set_postfix_str(f"running {running}, queued {len(left) - running}", refresh=True)
                    shown = time.time()
        finally:
            bar.close()
            unfinished = [f for f in futures if not f.done()]
            if unfinished:
                client.cancel(unfinished)

    def _map_serial(self, fn: Callable, jobs: list, names: Sequence[str], what: str):
        """``cluster.kind: serial``: ``fn(job)`` in this process, in the order given."""
        from tqdm import tqdm

        if len(names) != len(jobs):
            raise ValueError(f"{len(jobs)} jobs but {len(names)} names")
        if not self._serial_said:
            self.log("[cluster] tasks run one at a time in this process (cluster.kind: serial)")
            self._serial_said = True
        with tqdm(total=len(jobs), desc=what, unit="task", disable=not self.progress, leave=False) as bar:
            for job in jobs:
                out = fn(job)
                bar.update(1)
                yield job, out

    def _running(self, keys: set) -> int:
        """How many of ``keys`` are executing now (not only assigned to a worker). A key the
        scheduler does not hold at this moment (its task not yet registered there, or already
        forgotten) is not running: the scheduler answers such a query with a KeyError."""
        try:
            stacks = self.client.call_stack(keys=list(keys))
        except (OSError, TimeoutError, KeyError):
            return 0
        return sum(len(tasks) for tasks in stacks.values())
