"""Inference speed of teachers, ensembles and students in OpenMM (``cgkd benchmark``).

What is timed, per architecture (and per CUDA-graphs setting):

==================  =====================================================================
``teacher``         one network (member 0 of the ensemble), one ``TorchForce``
``ensemble``        the K-member :class:`~openmm_cgkd.model.ensemble.EnsemblePotential` as
                    ONE module in one ``TorchForce`` (shared pair list, one backward pass)
``naive-ensemble``  the same K members as K separate ``TorchForce`` objects, each evaluating
                    its member alone (own pair list, own backward pass) with its outputs
                    scaled by 1/K (:class:`ScaledPotential`), so OpenMM sums them to the mean
``student``         one network with the architecture of a teacher
==================  =====================================================================

For a stacked architecture (``hipnn-ts``) the ensemble is the
:class:`~openmm_cgkd.model.stacked.StackedEnsemblePotential` (K members in one pass, the mean
force from one backward pass) and teacher / naive-ensemble members are its members extracted as
plain networks; the goal "stacked ensemble <= 0.5 x naive ensemble" is printed for it.
Training throughput (``cgkd benchmark --training``) is :mod:`openmm_cgkd.benchmark.training`.

For each, two figures:

* **OpenMM**: milliseconds per MD step (``LangevinMiddleIntegrator``, 2 fs by default) of the
  System that :meth:`CGKDForceField.create_system` builds (network force(s), the repulsive wall
  as a ``CustomNonbondedForce``, a ``CMMotionRemover``), and the ns/day that follows;
* **torch**: milliseconds per bare call of the very modules the ``TorchForce`` objects run
  (:class:`~openmm_cgkd.serving.network_force.TorchForceModule`: wrap into the box, network
  forward, forces by autograd; serialized, reloaded and ``torch.jit.freeze``'d as openmm-torch
  does), without OpenMM,
  with the positions in the dtype OpenMM hands over
  (float64 on CPU / Reference, float32 on CUDA unless ``precision='double'``).

Each model is timed with each serving backend of ``backends`` (:mod:`openmm_cgkd.serving.network_force`):
``torchforce`` (openmm-torch ``TorchForce``, TorchScript, the default) and ``python``
(``openmm.PythonForce`` calling the eager module; its bare torch call is the eager module with
float64 positions, as the State hands them over). CUDA graphs apply to ``torchforce`` only.

``openmm_overhead = openmm_ms_per_step / torch_ms_per_call - 1``: the time OpenMM adds on top of
the network (integrator, wall, data exchange with torch). Warm-up steps / calls are excluded;
each figure is the median over ``repeats`` timed blocks of ``steps`` steps / calls. Goals printed
against the figures (issue 6): ensemble-as-one-module <= 2x the student (OpenMM ms/step), OpenMM
overhead <= 10 %.

The system: ``n_beads`` beads of a system of the registry (``system``, :mod:`openmm_cgkd.systems`;
default ``des``: Cho:Cl:Urea = 1:1:2 at the reline CG number density, 1000 beads per 4.484^3 nm^3)
in its composition and at its reference density, on a jittered cubic lattice
(:meth:`~openmm_cgkd.systems.CGSystem.lattice`), or a bead PDB (``structure``). Models: untrained
networks with the system's bead types (random weights: speed does not depend on the weights; the
output says so) or given bundles. Units: nm, ps, kJ/mol, ms, ns/day.

Python API::

    from openmm_cgkd.benchmark.md import BenchmarkSettings, run_benchmark, format_table
    result = run_benchmark(BenchmarkSettings(n_beads=250, architectures=["graph-network"], members=8))
    print(format_table(result)); result.to_json("benchmark.json")

The JSON (:meth:`BenchmarkResult.to_dict`) also holds ``benchmarks``: one entry per row with the
fields of OpenMM's own ``examples/benchmark.py`` (``test``, ``platform``, ``platform_properties``,
``precision``, ``ensemble``, ``constraints``, ``hydrogen_mass``, ``timestep_in_fs``, ``steps``,
``elapsed_time`` s, ``ns_per_day`` = time step / (elapsed / steps)), so results compare with
OpenMM's, plus ours (``system``, ``n_beads``, ``model``, ``architecture``, ``backend``,
``cuda_graphs``, ``ms_per_step`` = 1000 elapsed / steps, ``ms_per_step_median``,
``torch_ms_per_call``, ``openmm_overhead``); ``machine`` carries OpenMM's system-info keys too.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import math
import os
import platform as _platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from openmm_cgkd.config import Config
from openmm_cgkd.errors import CGKDError
from openmm_cgkd.systems import DEFAULT_SYSTEM

__all__ = ["MODEL_NAMES", "GOAL_ENSEMBLE_OVER_STUDENT", "GOAL_OPENMM_OVERHEAD",
           "BenchmarkError", "BenchmarkFailed", "BenchmarkSettings", "Timing", "BenchmarkRow", "BenchmarkResult",
           "check_box", "ScaledPotential", "ensemble_member_modules",
           "build_variant_system", "untrained_model_config", "time_openmm", "time_torch", "run_benchmark", "format_table",
           "format_goals", "default_architecture"]

MODEL_NAMES = ("teacher", "ensemble", "naive-ensemble", "student")
GOAL_ENSEMBLE_OVER_STUDENT = 2.0  # ensemble (one module) ms/step <= 2 x the student's
GOAL_OPENMM_OVERHEAD = 0.10  # OpenMM ms/step <= 1.1 x the bare torch call
GOAL_STACKED_OVER_NAIVE = 0.5  # a stacked ensemble (hipnn-ts) ms/step <= 0.5 x the naive K-force ensemble's
STACKED_ARCHITECTURES = ("hipnn-ts",)  # = openmm_cgkd.model.potential.STACKED_ARCHITECTURES
STATIC_SHAPE_ARCHITECTURES = ("tensornet", "hipnn-ts")  # those with PotentialConfig.static_shapes


class BenchmarkError(CGKDError, RuntimeError):
    """A benchmark that cannot run as asked (box too small, platform missing, bad settings or
    bundles): bad input, exit code 2 as for every command."""

    exit_code = 2


class BenchmarkFailed(BenchmarkError):
    """A benchmark run that started and failed (the MD blew up): exit code 1."""

    exit_code = 1


# --------------------------------------------------------------------------- settings / results

@dataclass
class BenchmarkSettings(Config):
    """What to benchmark. Lengths nm, time step fs, temperature K. ``from_dict`` / ``from_yaml``
    refuse unknown keys and wrong types (:mod:`openmm_cgkd.config`); bad values are
    :class:`BenchmarkError` s.

    ``architectures``: None = graph-network on CPU / Reference, tensornet on CUDA. Untrained
    models take the shipped architecture config of that name (``openmm_cgkd/model/configs``,
    :func:`~openmm_cgkd.model.potential.load_model_config`); ``embedding_dim``, ``num_layers``,
    ``num_rbf`` and ``cutoff_nm`` override it when given (the neighbour budget is then resized for
    the system's density). Given bundles bring their own architecture. ``cuda_graphs``: 'off', 'on' or 'both' (CUDA only).
    ``static_shapes``: untrained models with a fixed-size (padded) pair list, which CUDA graphs need;
    None (default) = on when ``cuda_graphs`` is 'on' or 'both' and the architecture has it
    (tensornet, hipnn-ts), else the shipped config's (off); True for another architecture is a
    :class:`~openmm_cgkd.config.ConfigError`.
    ``system``: the registered system (:mod:`openmm_cgkd.systems`) whose composition and reference
    density make the box of ``n_beads`` (unless ``structure`` is given) and whose bead types the
    untrained models have.
    """

    n_beads: int = 250
    system: str = DEFAULT_SYSTEM
    architectures: Optional[list[str]] = None
    members: int = 8
    models: list[str] = field(default_factory=lambda: list(MODEL_NAMES))
    embedding_dim: Optional[int] = None
    num_layers: Optional[int] = None
    num_rbf: Optional[int] = None
    cutoff_nm: Optional[float] = None
    platform: str = "CPU"
    precision: Optional[str] = None
    cuda_graphs: str = "off"
    static_shapes: Optional[bool] = None
    threads: Optional[int] = None
    steps: int = 5
    warmup_steps: int = 3
    repeats: int = 3
    timestep_fs: float = 2.0
    temperature_k: float = 298.1
    wall: bool = True
    seed: int = 0
    structure: Optional[str] = None
    ensemble_bundle: Optional[str] = None
    student_bundle: Optional[str] = None
    skip_torch: bool = False
    backends: list[str] = field(default_factory=lambda: ["torchforce"])

    def __post_init__(self) -> None:
        if self.n_beads < 2:
            raise BenchmarkError(f"n_beads must be >= 2, got {self.n_beads}")
        if self.members < 2:
            raise BenchmarkError(f"an ensemble needs members (K) >= 2, got {self.members}")
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown or not self.models:
            raise BenchmarkError(f"models must be a non-empty subset of {list(MODEL_NAMES)}, got {self.models}")
        if self.steps < 1 or self.repeats < 1 or self.warmup_steps < 0:
            raise BenchmarkError("steps and repeats must be >= 1 and warmup_steps >= 0, got "
                                 f"{self.steps}, {self.repeats}, {self.warmup_steps}")
        from openmm_cgkd.serving.network_force import BACKENDS

        if not self.backends or any(b not in BACKENDS for b in self.backends) \
                or len(set(self.backends)) < len(self.backends):
            raise BenchmarkError(f"backends must be distinct names from {list(BACKENDS)}, got {self.backends}")
        if self.cuda_graphs not in ("off", "on", "both"):
            raise BenchmarkError(f"cuda_graphs must be 'off', 'on' or 'both', got {self.cuda_graphs!r}")
        if not self.timestep_fs > 0 or not self.temperature_k > 0 or not (self.cutoff_nm is None or self.cutoff_nm > 0):
            raise BenchmarkError("timestep (fs), temperature (K) and cutoff (nm) must be positive")


@dataclass
class Timing:
    """Median and all repeats of one timing, in milliseconds per step (or per call)."""

    median_ms: float
    repeats_ms: list[float]

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> "Timing":
        return cls(float(statistics.median(samples_ms)), [float(s) for s in samples_ms])


@dataclass
class BenchmarkRow:
    """One model on one architecture / CUDA-graphs setting."""

    model: str
    architecture: str
    cuda_graphs: bool
    trained: bool
    network_forces: int  # network force objects (TorchForce or PythonForce) in the System
    networks_evaluated: int  # networks evaluated per step
    openmm: Timing
    torch: Optional[Timing]
    ns_per_day: float
    openmm_overhead: Optional[float]  # openmm / torch - 1
    backend: str = "torchforce"  # serving backend of the network force(s)

    @property
    def label(self) -> str:
        return self.model + (" +graphs" if self.cuda_graphs else "") + \
            ("" if self.backend == "torchforce" else f" [{self.backend}]")


@dataclass
class BenchmarkResult:
    settings: dict
    system: dict
    machine: dict
    untrained: bool
    rows: list[BenchmarkRow]
    goals: list[dict]
    wall_seconds: float

    def to_dict(self) -> dict:
        return {"settings": self.settings, "system": self.system, "machine": self.machine,
                "untrained": self.untrained,
                "note": ("UNTRAINED models (random weights): timings only; speed does not depend on the weights"
                         if self.untrained else "trained bundles"),
                "results": [asdict(r) for r in self.rows], "goals": self.goals,
                "benchmarks": self.openmm_benchmarks(), "wall_seconds": self.wall_seconds}

    def openmm_benchmarks(self) -> list[dict]:
        """One entry per row in the fields of OpenMM's ``examples/benchmark.py`` plus ours (module doc)."""
        platform = self.machine.get("openmm_platform", self.settings.get("platform"))
        precision = {"CPU": "mixed", "Reference": "double"}.get(platform, self.settings.get("precision") or "single")
        out = []
        for r in self.rows:
            steps = int(self.settings["steps"]) * len(r.openmm.repeats_ms)
            elapsed = sum(r.openmm.repeats_ms) * int(self.settings["steps"]) / 1e3
            dt_fs = float(self.settings["timestep_fs"])
            test = f"cgkd-{r.model}-{r.architecture}" + ("-cudagraphs" if r.cuda_graphs else "") + f"-{r.backend}"
            out.append({
                "test": test, "ensemble": "NVT", "precision": precision, "constraints": "None",
                "hydrogen_mass": None, "timestep_in_fs": dt_fs, "platform": platform,
                "platform_properties": dict(self.settings.get("platform_properties") or {}),
                "steps": steps, "elapsed_time": elapsed, "ns_per_day": dt_fs * 1e-6 / (elapsed / steps) * 86400,
                "system": self.system.get("description"), "n_beads": self.system.get("n_beads"),
                "model": r.model, "architecture": r.architecture, "backend": r.backend, "cuda_graphs": r.cuda_graphs,
                "ms_per_step": 1e3 * elapsed / steps, "ms_per_step_median": r.openmm.median_ms,
                "torch_ms_per_call": None if r.torch is None else r.torch.median_ms,
                "openmm_overhead": r.openmm_overhead})
        return out

    def to_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=True) + "\n")
        return path

    def row(self, model: str, architecture: str | None = None, cuda_graphs: bool = False,
            backend: str = "torchforce") -> BenchmarkRow:
        for r in self.rows:
            if r.model == model and r.cuda_graphs == cuda_graphs and r.backend == backend \
                    and (architecture is None or r.architecture == architecture):
                return r
        raise KeyError(f"no result for {model} ({architecture}, cuda_graphs={cuda_graphs}, backend {backend})")


# --------------------------------------------------------------------------- the system

def default_architecture(platform_name: str) -> str:
    """graph-network on CPU / Reference (cheap), tensornet on GPU platforms."""
    return "tensornet" if str(platform_name).upper() in ("CUDA", "OPENCL", "HIP") else "graph-network"


def check_box(system, n_beads: int, cutoff_nm: float) -> None:
    """:class:`BenchmarkError` when ``n_beads`` of ``system`` (a :class:`~openmm_cgkd.systems.CGSystem`)
    at its reference density fill a cube shorter than twice ``cutoff_nm`` (nm)."""
    box_edge = system.box_edge_nm(n_beads)
    need = 2.0 * cutoff_nm
    if box_edge < need:
        n_min = int(math.ceil(system.bead_density_per_nm3 * need ** 3))
        raise BenchmarkError(f"{n_beads} beads of system {system.name} at its density "
                             f"({system.bead_density_per_nm3:.4g} beads/nm^3) fill a {box_edge:.3f} nm box, smaller "
                             f"than twice the interaction cutoff ({cutoff_nm:g} nm); use at least {n_min} beads "
                             "(--beads) or a smaller cutoff (--cutoff)")


# --------------------------------------------------------------------------- modules

class ScaledPotential(torch.nn.Module):
    """``model`` with every output multiplied by ``scale`` (a naive-ensemble member: 1/K).

    Same signature as :class:`~openmm_cgkd.model.potential.CGPotential`: ``(bead_types,
    positions nm, box nm) -> (energy kJ/mol, bead_energies kJ/mol, forces kJ/mol/nm)``.
    """

    def __init__(self, model: torch.nn.Module, scale: float):
        super().__init__()
        self.model = model
        self.scale = float(scale)

    def forward(self, bead_types: Tensor, positions: Tensor,
                box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        out = self.model(bead_types, positions, box)
        return out[0] * self.scale, out[1] * self.scale, out[2] * self.scale


def ensemble_member_modules(ensemble_module, config=None) -> list:
    """The K member networks of an ensemble module (eager :class:`EnsemblePotential` or its
    TorchScript form from a bundle), each callable with the CG-potential signature. A stacked
    ensemble (:class:`~openmm_cgkd.model.stacked.StackedEnsemblePotential`, eager or scripted; a
    scripted one needs its ``config``) gives its members extracted as plain ``CGPotential`` s."""
    from openmm_cgkd.model.stacked import StackedEnsemblePotential, is_stacked_module, load_stacked

    if is_stacked_module(ensemble_module):
        if config is None and not isinstance(ensemble_module, StackedEnsemblePotential):
            raise BenchmarkError("the members of a scripted stacked ensemble need its architecture config")
        return load_stacked(ensemble_module, config).members()
    members = ensemble_module.members
    if hasattr(members, "_modules") and not hasattr(ensemble_module, "_c"):
        return list(members)
    return [getattr(members, str(k)) for k in range(int(ensemble_module.num_members))]


def build_variant_system(ff, topology, box_nm, networks: Sequence, *, wall: bool = True,
                         network_properties: dict | None = None, backend: str = "torchforce",
                         device: str | None = None):
    """A System from ``ff.create_system`` whose network force is replaced by one network force
    (``backend``: TorchForce or PythonForce on ``device``) per module in ``networks`` (None:
    keep the bundle's own network force).

    Everything else (masses, the wall, the CMMotionRemover) is what ``create_system`` builds;
    ``wall=False`` removes the wall force.
    """
    from openmm_cgkd.serving.network_force import NETWORK_FORCE_NAME, make_network_force
    from openmm_cgkd.serving.wall_force import WALL_FORCE_NAME

    props = dict(network_properties or {})
    system = ff.create_system(topology, box_nm, network_properties=props, backend=backend, device=device)
    drop = []
    if networks is not None:
        drop.append(NETWORK_FORCE_NAME)
    if not wall:
        drop.append(WALL_FORCE_NAME)
    for i in reversed(range(system.getNumForces())):
        if system.getForce(i).getName() in drop:
            system.removeForce(i)
    if networks is not None:
        types = ff.bead_type_indices(topology).tolist()
        for net in networks:
            system.addForce(make_network_force(net, types, periodic=ff.periodic, properties=props, backend=backend,
                                               device=device))
    return system


# --------------------------------------------------------------------------- timing

def _sync(device) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def _as_openmm_torch_runs(module: torch.nn.Module):
    """``module`` as openmm-torch runs it: scripted, serialized and loaded back (a fresh
    compilation unit, not shared with the ensemble a member came from), then frozen."""
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    buf.seek(0)
    return torch.jit.freeze(torch.jit.load(buf).eval())


def time_torch(modules: Sequence, positions_nm: np.ndarray, box_nm: Optional[np.ndarray], *, steps: int,
               warmup: int, repeats: int, device: str = "cpu", dtype=None) -> Timing:
    """Median ms per call of ``sum(m(positions, box) for m in modules)`` (TorchForceModule-like:
    ``forward(positions, box) -> (energy, forces)``), warm-up calls excluded."""
    dev = torch.device(device)
    dtype = dtype or torch.float64
    pos = torch.as_tensor(np.asarray(positions_nm), dtype=dtype, device=dev)
    box = None if box_nm is None else torch.as_tensor(np.asarray(box_nm), dtype=dtype, device=dev)
    mods = [m.to(dev) for m in modules]

    def call():
        for m in mods:
            m(pos, box)

    for _ in range(warmup + 1):  # + 1: OpenMM's first evaluation before its warm-up steps
        call()
    samples = []
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(steps):
            call()
        _sync(dev)
        samples.append((time.perf_counter() - t0) * 1e3 / steps)
    return Timing.from_samples(samples)


def time_openmm(system, positions_nm: np.ndarray, platform_choice, *, steps: int, warmup: int, repeats: int,
                timestep_fs: float = 2.0, temperature_k: float = 298.1, seed: int = 0) -> Timing:
    """Median ms per MD step of ``system`` (LangevinMiddleIntegrator, friction 1/ps).

    Each timed block ends with a ``getState`` (positions) so asynchronous platforms finish;
    raises :class:`BenchmarkError` if the energy is not finite afterwards.
    """
    import openmm
    from openmm import unit

    integrator = openmm.LangevinMiddleIntegrator(temperature_k * unit.kelvin, 1.0 / unit.picosecond,
                                                 timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(int(seed) + 1)
    context = openmm.Context(system, integrator, platform_choice.platform, dict(platform_choice.properties))
    try:
        context.setPositions(np.asarray(positions_nm) * unit.nanometer)
        context.setVelocitiesToTemperature(temperature_k * unit.kelvin, int(seed) + 1)
        context.getState(getEnergy=True)  # first evaluation: TorchScript optimisation, allocations
        if warmup:
            integrator.step(int(warmup))
        context.getState(getPositions=True)
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            integrator.step(int(steps))
            context.getState(getPositions=True)
            samples.append((time.perf_counter() - t0) * 1e3 / steps)
        energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    finally:
        del context, integrator
    if not math.isfinite(energy):
        raise BenchmarkFailed(f"the benchmark MD blew up (potential energy {energy} kJ/mol); use a smaller time step")
    return Timing.from_samples(samples)


# --------------------------------------------------------------------------- machine

def _machine_info(platform_name: str) -> dict:
    import openmm

    info = {"hostname": _platform.node(), "cpu": _platform.processor() or _platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": _platform.python_version(), "torch": torch.__version__, "openmm": openmm.__version__,
            "openmm_platform": platform_name}
    # the keys of OpenMM's examples/benchmark.py system block
    info.update({"timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(), "openmm_version": openmm.__version__,
                 "cpuarch": _platform.processor(), "system": _platform.system()})
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = info["cpuinfo"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["load_average_1min"] = os.getloadavg()[0]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# --------------------------------------------------------------------------- models

@dataclass
class _Models:
    ensemble_ff: object  # CGKDForceField
    student_ff: object
    ensemble_trained: bool
    student_trained: bool


def untrained_model_config(architecture: str, settings: BenchmarkSettings):
    """The shipped config of ``architecture`` with the settings' size overrides (see
    :class:`BenchmarkSettings`); as many bead types as the settings' system has."""
    from openmm_cgkd.model.potential import load_model_config, suggest_max_num_neighbors
    from openmm_cgkd.systems import get_system

    system = get_system(settings.system)
    overrides = {k: v for k, v in (("embedding_dim", settings.embedding_dim), ("num_layers", settings.num_layers),
                                   ("num_rbf", settings.num_rbf)) if v is not None}
    if settings.cutoff_nm is not None:
        overrides["cutoff_nm"] = float(settings.cutoff_nm)
        overrides["max_num_neighbors"] = suggest_max_num_neighbors(system.bead_density_per_nm3, settings.cutoff_nm)
    if settings.static_shapes or (settings.static_shapes is None and settings.cuda_graphs != "off"
                                  and architecture in STATIC_SHAPE_ARCHITECTURES):
        overrides["static_shapes"] = True  # CUDA graphs need it (serving refuses graphs without it)
    return load_model_config(architecture, num_types=len(system.type_names), **overrides)


def _prepare_models(settings: BenchmarkSettings, architecture: str, workdir: Path) -> _Models:
    from openmm_cgkd.bundle import build_untrained_bundle, load_bundle
    from openmm_cgkd.serving.forcefield import CGKDForceField

    ens = load_bundle(settings.ensemble_bundle) if settings.ensemble_bundle else None
    stu = load_bundle(settings.student_bundle) if settings.student_bundle else None
    if ens is not None and ens.manifest.model_kind != "ensemble":
        raise BenchmarkError(f"{settings.ensemble_bundle} is a {ens.manifest.model_kind} bundle, not an ensemble")
    if stu is not None and stu.manifest.model_kind == "ensemble":
        raise BenchmarkError(f"{settings.student_bundle} is an ensemble bundle; give a student (one network)")
    given = ens or stu
    if given is not None:
        config, bead_types, wall = given.manifest.potential_config, given.manifest.bead_types, given.manifest.wall
    else:
        config = untrained_model_config(architecture, settings)
        bead_types, wall = None, None
    if ens is None:
        path = build_untrained_bundle(workdir / f"{architecture}-ensemble", config, bead_types=bead_types, wall=wall,
                                      model_kind="ensemble", num_members=settings.members,
                                      seed=settings.seed, overwrite=True, system=settings.system)
        ens = load_bundle(path)
    if stu is None:
        path = build_untrained_bundle(workdir / f"{architecture}-student", config, bead_types=bead_types, wall=wall,
                                      model_kind="student", seed=settings.seed + 1000, overwrite=True,
                                      system=settings.system)
        stu = load_bundle(path)
    return _Models(CGKDForceField(ens), CGKDForceField(stu), settings.ensemble_bundle is not None,
                   settings.student_bundle is not None)


def _system_input(settings: BenchmarkSettings, ff):
    """``(topology, positions nm, box nm or None, description)``: the structure file, or
    ``n_beads`` of the settings' system on a lattice."""
    from openmm_cgkd.systems import get_system
    from openmm_cgkd.topology import bead_topology, read_bead_pdb

    if settings.structure:
        topology, positions, box = read_bead_pdb(settings.structure)
        return topology, positions, box, f"{topology.getNumAtoms()} beads from {settings.structure}"
    system = get_system(settings.system)
    if sorted(ff.type_names) != sorted(system.type_names):
        raise BenchmarkError(f"the model's bead types {ff.type_names} are not those of system {system.name} "
                             f"({', '.join(system.type_names)}); give the model's system (--system) or a structure "
                             "(bead PDB) for it")
    check_box(system, settings.n_beads, ff.interaction_cutoff_nm)
    names, positions, box = system.lattice(settings.n_beads, seed=settings.seed)
    residue = {b.name: b.residue_name for b in ff.bead_types}
    topology = bead_topology(names, box, residue_names=residue)
    counts = ", ".join(f"{name} {n}" for name, n in system.counts(settings.n_beads).items())
    return topology, positions, box, (f"{settings.n_beads} beads of system {system.name} ({counts}) in a "
                                      f"{box[0, 0]:.3f} nm cube (its reference density, "
                                      f"{system.bead_density_per_nm3:.4g} beads/nm^3)")


# --------------------------------------------------------------------------- the benchmark

def run_benchmark(settings: BenchmarkSettings, progress: bool = True,
                  log: Callable[[str], None] | None = print) -> BenchmarkResult:
    """Run the benchmark described by ``settings``; see the module docstring."""
    from tqdm.auto import tqdm

    from openmm_cgkd.serving.network_force import TorchForceModule, served_model
    from openmm_cgkd.platforms import select_platform
    from openmm_cgkd.systems import get_system

    say = log or (lambda s: None)
    t_start = time.perf_counter()
    # the system first (a name not registered is a usage error before any work); not needed for a
    # structure file served by given bundles
    cg_system = None
    if not settings.structure or not (settings.ensemble_bundle or settings.student_bundle):
        cg_system = get_system(settings.system)
    if settings.threads is not None:
        torch.set_num_threads(int(settings.threads))
    try:
        choice0 = select_platform(settings.platform, precision=settings.precision, threads=settings.threads)
    except ValueError as exc:
        raise BenchmarkError(str(exc)) from None
    platform_name = choice0.name
    graph_modes = {"off": [False], "on": [True], "both": [False, True]}[settings.cuda_graphs]
    if any(graph_modes) and platform_name != "CUDA":
        raise BenchmarkError(f"CUDA graphs need the CUDA platform, not {platform_name}")
    if settings.ensemble_bundle or settings.student_bundle:
        archs = ["(bundle)"]
    else:
        archs = list(settings.architectures or [default_architecture(platform_name)])
        if not settings.structure:  # the box check before any model is built (the wall's range is checked later)
            for arch in archs:
                check_box(cg_system, settings.n_beads, untrained_model_config(arch, settings).cutoff_nm)
    on_gpu = platform_name in ("CUDA", "OpenCL", "HIP")
    device = "cuda" if platform_name == "CUDA" else "cpu"
    pos_dtype = torch.float64 if (not on_gpu or settings.precision == "double") else torch.float32

    rows: list[BenchmarkRow] = []
    system_info: dict = {}
    backends = list(settings.backends)
    n_work = len(archs) * len(settings.models) * sum(1 if g else len(backends) for g in graph_modes)
    untrained_any = False
    with tempfile.TemporaryDirectory(prefix="cgkd-benchmark-") as tmp:
        bar = tqdm(total=n_work * (1 if settings.skip_torch else 2) + len(archs), unit="task", desc="benchmark",
                   disable=not progress, dynamic_ncols=True)
        with bar:
            for arch in archs:
                bar.set_postfix_str(f"{arch}: building models")
                models = _prepare_models(settings, arch, Path(tmp))
                bar.update(1)
                ens_ff, stu_ff = models.ensemble_ff, models.student_ff
                arch_name = ens_ff.manifest.architecture.get("architecture", arch)
                topology, positions, box, described = _system_input(settings, ens_ff)
                if not system_info:
                    system_info = {"description": described, "n_beads": int(topology.getNumAtoms()),
                                   "name": None if settings.structure else settings.system,
                                   "box_nm": None if box is None else np.asarray(box).tolist(),
                                   "density_per_nm3": (None if box is None else
                                                       float(topology.getNumAtoms() / abs(np.linalg.det(box)))),
                                   "wall": settings.wall}
                    (bar.write if progress and log is not None else say)(f"system: {described}; platform {platform_name}")
                members = ensemble_member_modules(ens_ff.bundle.module, ens_ff.manifest.potential_config)
                k = len(members)
                variants = {
                    "teacher": (ens_ff, [members[0]], 1, models.ensemble_trained),
                    "ensemble": (ens_ff, None, k, models.ensemble_trained),
                    "naive-ensemble": (ens_ff, [ScaledPotential(m, 1.0 / k) for m in members], k, models.ensemble_trained),
                    "student": (stu_ff, None, 1, models.student_trained),
                }
                if "python" in backends:  # the python backend serves the eager networks
                    eager = ensemble_member_modules(ens_ff.bundle.eager_model())
                    eager_networks = {"teacher": [eager[0]],
                                      "naive-ensemble": [ScaledPotential(m, 1.0 / k) for m in eager]}
                types = ens_ff.bead_type_indices(topology).tolist()
                for graphs in graph_modes:
                    choice = select_platform(settings.platform, precision=settings.precision, threads=settings.threads,
                                             use_cuda_graphs=graphs)
                    # CUDA graphs are an openmm-torch option: the python backend runs without
                    for name, backend in [(m, b) for m in settings.models for b in backends
                                          if not (graphs and b != "torchforce")]:
                        ff, networks, n_eval, trained = variants[name]
                        if backend == "python" and networks is not None:
                            networks = eager_networks[name]
                        untrained_any |= not trained
                        bar.set_postfix_str(f"{arch_name} {name}{' +graphs' if graphs else ''} {backend}: OpenMM")
                        system = build_variant_system(ff, topology, box, networks, wall=settings.wall,
                                                      network_properties=choice.network_properties, backend=backend,
                                                      device=None if backend == "torchforce" else device)
                        n_forces = 1 if networks is None else len(networks)
                        omm = time_openmm(system, positions, choice, steps=settings.steps,
                                          warmup=settings.warmup_steps, repeats=settings.repeats,
                                          timestep_fs=settings.timestep_fs, temperature_k=settings.temperature_k,
                                          seed=settings.seed)
                        bar.update(1)
                        tt = None
                        if not settings.skip_torch:
                            bar.set_postfix_str(f"{arch_name} {name}: bare torch")
                            if backend == "python":  # the eager module, float64 positions (what PythonForce hands)
                                nets = [served_model(ff.bundle.eager_model())] if networks is None else networks
                                mods = [TorchForceModule(n, types, periodic=ff.periodic) for n in nets]
                            else:
                                nets = [served_model(ff.bundle.module)] if networks is None else networks
                                mods = [_as_openmm_torch_runs(TorchForceModule(n, types, periodic=ff.periodic))
                                        for n in nets]
                            tt = time_torch(mods, positions, box if ff.periodic else None, steps=settings.steps,
                                            warmup=settings.warmup_steps, repeats=settings.repeats, device=device,
                                            dtype=torch.float64 if backend == "python" else pos_dtype)
                            bar.update(1)
                        ns_day = settings.timestep_fs * 1e-6 * 86400e3 / omm.median_ms
                        overhead = None if tt is None else omm.median_ms / tt.median_ms - 1.0
                        rows.append(BenchmarkRow(name, arch_name, graphs, trained, n_forces, n_eval, omm, tt,
                                                 ns_day, overhead, backend=backend))
                        if log is not None:
                            (bar.write if progress else say)(
                                f"  {rows[-1].label}: OpenMM {omm.median_ms:.2f} ms/step ({ns_day:.3f} ns/day)"
                                + ("" if tt is None else f", torch {tt.median_ms:.2f} ms/call"))
    result = BenchmarkResult(settings={**asdict(settings), "platform_properties": dict(choice0.properties)},
                             system=system_info, machine=_machine_info(platform_name),
                             untrained=untrained_any, rows=rows, goals=_goals(rows),
                             wall_seconds=time.perf_counter() - t_start)
    return result


def _goals(rows: Sequence[BenchmarkRow]) -> list[dict]:
    goals = []
    keys = sorted({(r.architecture, r.cuda_graphs, r.backend) for r in rows},
                  key=lambda x: (x[0], x[1], x[2] != "torchforce"))
    for arch, graphs, backend in keys:
        by = {r.model: r for r in rows if r.architecture == arch and r.cuda_graphs == graphs and r.backend == backend}
        tag = f"{arch}{' +graphs' if graphs else ''}" + ("" if backend == "torchforce" else f" [{backend}]")
        if "ensemble" in by and "student" in by:
            v = by["ensemble"].openmm.median_ms / by["student"].openmm.median_ms
            goals.append({"goal": "ensemble (one module) ms/step <= 2 x student", "setting": tag,
                          "backend": backend, "architecture": arch, "cuda_graphs": graphs, "value": v,
                          "limit": GOAL_ENSEMBLE_OVER_STUDENT, "met": bool(v <= GOAL_ENSEMBLE_OVER_STUDENT)})
        if "ensemble" in by and "naive-ensemble" in by and arch in STACKED_ARCHITECTURES:
            v = by["ensemble"].openmm.median_ms / by["naive-ensemble"].openmm.median_ms
            goals.append({"goal": f"stacked ensemble ms/step <= {GOAL_STACKED_OVER_NAIVE:g} x naive K-force ensemble",
                          "setting": tag, "backend": backend, "architecture": arch, "cuda_graphs": graphs,
                          "value": v, "limit": GOAL_STACKED_OVER_NAIVE, "met": bool(v <= GOAL_STACKED_OVER_NAIVE)})
        if "naive-ensemble" in by and "student" in by:
            v = by["naive-ensemble"].openmm.median_ms / by["student"].openmm.median_ms
            goals.append({"goal": "naive ensemble (K forces) ms/step / student (for reference)", "setting": tag,
                          "backend": backend, "architecture": arch, "cuda_graphs": graphs, "value": v,
                          "limit": None, "met": None})
        for name in ("student", "ensemble"):
            r = by.get(name)
            if r is not None and r.openmm_overhead is not None:
                goals.append({"goal": f"OpenMM overhead of the {name} <= 10 %", "setting": tag,
                              "backend": backend, "architecture": arch, "cuda_graphs": graphs,
                              "value": r.openmm_overhead,
                              "limit": GOAL_OPENMM_OVERHEAD, "met": bool(r.openmm_overhead <= GOAL_OPENMM_OVERHEAD)})
    return goals


# --------------------------------------------------------------------------- output

def format_table(result: BenchmarkResult) -> str:
    """The results as a fixed-width text table (ms per step / call, ns/day, overhead %)."""
    head = (f"{'architecture':16s} {'model':36s} {'nets':>4s} {'forces':>6s} {'torch ms/call':>13s} "
            f"{'OpenMM ms/step':>14s} {'ns/day':>9s} {'overhead':>8s}")
    lines = [head, "-" * len(head)]
    for r in result.rows:
        torch_ms = f"{r.torch.median_ms:13.2f}" if r.torch else f"{'-':>13s}"
        over = f"{100 * r.openmm_overhead:7.1f}%" if r.openmm_overhead is not None else f"{'-':>8s}"
        label = r.label + ("" if r.trained else " (untrained)")
        lines.append(f"{r.architecture:16s} {label:36s} {r.networks_evaluated:4d} {r.network_forces:6d} {torch_ms} "
                     f"{r.openmm.median_ms:14.2f} {r.ns_per_day:9.3f} {over}")
    return "\n".join(lines)


def format_goals(result: BenchmarkResult) -> str:
    lines = []
    for g in result.goals:
        if g["limit"] is None:
            lines.append(f"  [info] {g['goal']} [{g['setting']}]: {g['value']:.2f}x")
        elif "overhead" in g["goal"]:
            lines.append(f"  [{'met' if g['met'] else 'MISSED'}] {g['goal']} [{g['setting']}]: "
                         f"{100 * g['value']:.1f} %")
        else:
            lines.append(f"  [{'met' if g['met'] else 'MISSED'}] {g['goal']} [{g['setting']}]: {g['value']:.2f}x")
    return "\n".join(lines)
