"""Training throughput: K stacked members vs K members trained one by one (``cgkd benchmark --training``).

One training step = forward on a batch of B frames (network + repulsive wall), per-member force
loss (the teacher loss, Err(F, F_AA)), backward and optimiser step. What is timed:

=========================  ==============================================================================
``stacked xK``             K hipnn-ts members in ONE run (:mod:`openmm_cgkd.training.stacked`): one
                           pair list, one set of sensitivities and one wall per batch for all members
``stacked x1``             the same code with one member: K of these one after another is the
                           "one by one" baseline of the same architecture and implementation
``plain <architecture>``   today's one-member training step (:class:`~openmm_cgkd.training.model.TrainablePotential`,
                           autograd through the network twice, ``torch.optim.Adam``), for reference
=========================  ==============================================================================

Each row gives ms per step, frames per second (frames of the batch / step time) and member-frames
per second (frames x members trained / step time). Training K members one by one processes each
frame K times, so its throughput in frames (of all K members) per second is ``frames_per_s / K``.
The goal printed (issue 11): K = 8 stacked >= 2 x the throughput of 8 one by one (``stacked x1``).

Frames: B jittered lattices of a registered system (``system``, default ``des``;
:meth:`~openmm_cgkd.systems.CGSystem.lattice`: its composition at its reference density), random
target forces (speed does not depend on the data), the placeholder wall. Untrained weights.
Units: ms, frames/s.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

__all__ = ["TrainingBenchmarkSettings", "TrainingRow", "TrainingBenchmarkResult", "run_training_benchmark",
           "format_training_table", "GOAL_STACKED_TRAINING_SPEEDUP"]

GOAL_STACKED_TRAINING_SPEEDUP = 2.0  # K stacked members train >= 2x as fast as K one by one


@dataclass
class TrainingBenchmarkSettings:
    """What to time. ``references``: architectures of the plain one-member step to time as well.
    Every network takes its shipped config (:func:`~openmm_cgkd.model.potential.load_model_config`)
    with ``embedding_dim``, ``num_layers``, ``num_rbf`` and ``cutoff_nm`` replaced when given.
    ``system``: the registered system whose bead types, composition and density the frames have."""

    n_beads: int = 252
    system: str = "des"  # = openmm_cgkd.systems.DEFAULT_SYSTEM
    members: int = 8
    batch_size: int = 8
    steps: int = 2
    warmup_steps: int = 1
    repeats: int = 3
    threads: Optional[int] = None
    seed: int = 0
    architecture: str = "hipnn-ts"
    references: list[str] = field(default_factory=lambda: ["hipnn-ts", "graph-network"])
    device: str = "cpu"
    embedding_dim: Optional[int] = None
    num_layers: Optional[int] = None
    num_rbf: Optional[int] = None
    cutoff_nm: Optional[float] = None

    def __post_init__(self) -> None:
        from openmm_cgkd.benchmark.md import BenchmarkError

        if self.members < 2 or self.batch_size < 1 or self.steps < 1 or self.repeats < 1 or self.warmup_steps < 0:
            raise BenchmarkError("training benchmark needs members >= 2, batch_size, steps, repeats >= 1 and "
                                 f"warmup_steps >= 0; got {self.members}, {self.batch_size}, {self.steps}, "
                                 f"{self.repeats}, {self.warmup_steps}")


@dataclass
class TrainingRow:
    name: str
    architecture: str
    members: int  # members trained per step
    batch_frames: int
    ms_per_step: float
    repeats_ms: list[float]
    frames_per_s: float  # batch frames / step time
    member_frames_per_s: float  # batch frames x members / step time


@dataclass
class TrainingBenchmarkResult:
    settings: dict
    system: dict
    rows: list[TrainingRow]
    goals: list[dict]
    wall_seconds: float

    def to_dict(self) -> dict:
        return {"settings": self.settings, "system": self.system, "results": [asdict(r) for r in self.rows],
                "goals": self.goals, "wall_seconds": self.wall_seconds,
                "note": "untrained weights, random target forces: timings only"}


def _frames(settings: TrainingBenchmarkSettings, system, device):
    names_index = {name: k for k, name in enumerate(system.type_names)}
    lattices = [system.lattice(settings.n_beads, seed=settings.seed + f) for f in range(settings.batch_size)]
    names = lattices[0][0]
    # the same bead order in every frame (training frames share their beads): take frame 0's types
    types = torch.tensor([names_index[n] for n in names], dtype=torch.long, device=device)
    pos = torch.tensor(np.stack([lat[1] for lat in lattices]), dtype=torch.float32, device=device)
    boxes = torch.tensor(np.stack([lat[2] for lat in lattices]), dtype=torch.float32, device=device)
    g = torch.Generator().manual_seed(settings.seed)
    target = (torch.randn(pos.shape, generator=g) * 100.0).to(device)  # kJ/mol/nm, the scale of CG forces
    return types, pos, boxes, target


def _config(architecture: str, system, settings: TrainingBenchmarkSettings):
    from openmm_cgkd.model.potential import load_model_config, suggest_max_num_neighbors

    over = {k: getattr(settings, k) for k in ("embedding_dim", "num_layers", "num_rbf", "cutoff_nm")
            if getattr(settings, k) is not None}
    n_types = len(system.type_names)
    cfg = load_model_config(architecture, num_types=n_types, **over)
    return load_model_config(architecture, num_types=n_types, **over, max_num_neighbors=suggest_max_num_neighbors(
        system.bead_density_per_nm3, cfg.cutoff_nm, safety=2.0))


def _time(step: Callable[[], None], settings: TrainingBenchmarkSettings) -> list[float]:
    # on a GPU the steps only queue kernels: each timed block ends when the device has finished
    cuda = torch.device(settings.device).type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(torch.device(settings.device))

    for _ in range(settings.warmup_steps + 1):
        step()
    sync()
    samples = []
    for _ in range(settings.repeats):
        t0 = time.perf_counter()
        for _ in range(settings.steps):
            step()
        sync()
        samples.append((time.perf_counter() - t0) * 1e3 / settings.steps)
    return samples


def run_training_benchmark(settings: TrainingBenchmarkSettings, log: Callable[[str], None] | None = print
                           ) -> TrainingBenchmarkResult:
    """Time the training steps listed in the module docstring."""
    from openmm_cgkd.benchmark.md import BenchmarkError, check_box
    from openmm_cgkd.bundle import placeholder_wall
    from openmm_cgkd.model.potential import STACKED_ARCHITECTURES
    from openmm_cgkd.training.config import LossWeights
    from openmm_cgkd.training.loss import distillation_loss
    from openmm_cgkd.training.model import TrainablePotential
    from openmm_cgkd.systems import get_system
    from openmm_cgkd.training.stacked import StackedAdam, StackedTrainable, member_losses

    say = log or (lambda s: None)
    t_start = time.perf_counter()
    if settings.architecture not in STACKED_ARCHITECTURES:
        raise BenchmarkError(f"{settings.architecture!r} cannot be stacked; use one of {list(STACKED_ARCHITECTURES)}")
    if settings.threads is not None:
        torch.set_num_threads(int(settings.threads))
    device = torch.device(settings.device)
    system = get_system(settings.system)
    wall = placeholder_wall(system.type_names)
    box_edge = system.box_edge_nm(settings.n_beads)
    density = settings.n_beads / box_edge ** 3
    weights = LossWeights(w_aa=1.0)
    rows: list[TrainingRow] = []
    stacked_cfg = _config(settings.architecture, system, settings)
    check_box(system, settings.n_beads, max(stacked_cfg.cutoff_nm, wall.cutoff_nm))
    types, pos, boxes, target = _frames(settings, system, device)
    batch = {"positions": pos, "box": boxes, "forces": target}
    b = settings.batch_size

    def add(name, arch, k, samples):
        ms = float(statistics.median(samples))
        rows.append(TrainingRow(name, arch, k, b, ms, [float(s) for s in samples], 1e3 * b / ms, 1e3 * b * k / ms))
        say(f"  {name}: {ms:.1f} ms/step ({rows[-1].frames_per_s:.2f} frames/s, "
            f"{rows[-1].member_frames_per_s:.2f} member-frames/s)")

    for k in (settings.members, 1):
        model = StackedTrainable(stacked_cfg, k, [settings.seed + m for m in range(k)], wall, density).to(device)
        opt = StackedAdam(model.network.parameters(), torch.full((k,), 1e-3, dtype=torch.float64))

        def stacked_step(model=model, opt=opt):
            losses, _ = member_losses(model(types, pos, boxes), batch, weights)
            opt.zero_grad()
            losses.sum().backward()
            opt.step()

        add(f"stacked x{k}", settings.architecture, k, _time(stacked_step, settings))

    for arch in settings.references:
        torch.manual_seed(settings.seed)
        model = TrainablePotential(_config(arch, system, settings), wall, density).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def plain_step(model=model, opt=opt):
            pred = model(types, pos, boxes, create_graph=True)
            loss, _ = distillation_loss(pred, batch, weights)
            opt.zero_grad()
            loss.backward()
            opt.step()

        add(f"plain {arch}", arch, 1, _time(plain_step, settings))

    by = {r.name: r for r in rows}
    k = settings.members
    stacked, single = by[f"stacked x{k}"], by["stacked x1"]
    goals = [{"goal": f"{k} stacked members train >= {GOAL_STACKED_TRAINING_SPEEDUP:g} x as fast as {k} one by one",
              "value": stacked.frames_per_s / (single.frames_per_s / k), "limit": GOAL_STACKED_TRAINING_SPEEDUP,
              "met": bool(stacked.frames_per_s / (single.frames_per_s / k) >= GOAL_STACKED_TRAINING_SPEEDUP)}]
    for r in rows:
        if r.name.startswith("plain"):
            goals.append({"goal": f"{k} stacked vs {k} one by one with the plain {r.architecture} step (reference)",
                          "value": stacked.frames_per_s / (r.frames_per_s / k), "limit": None, "met": None})
    info = {"n_beads": settings.n_beads, "batch_frames": b, "box_nm": float(box_edge), "name": system.name,
            "description": f"{b} jittered lattices of {settings.n_beads} beads of system {system.name} at its "
                           "reference density",
            "stacked_architecture": stacked_cfg.to_dict()}
    return TrainingBenchmarkResult(asdict(settings), info, rows, goals, time.perf_counter() - t_start)


def format_training_table(result: TrainingBenchmarkResult) -> str:
    """Rows as a fixed-width table, then the goals."""
    k = result.settings["members"]
    head = f"{'training step':28s} {'members':>7s} {'ms/step':>9s} {'frames/s':>9s} {'member-frames/s':>15s}"
    lines = [head, "-" * len(head)]
    for r in result.rows:
        lines.append(f"{r.name:28s} {r.members:7d} {r.ms_per_step:9.1f} {r.frames_per_s:9.2f} "
                     f"{r.member_frames_per_s:15.2f}")
    lines.append(f"(K = {k} members one by one: frames/s of a one-member row / {k})")
    for g in result.goals:
        tag = "info" if g["limit"] is None else ("met" if g["met"] else "MISSED")
        lines.append(f"  [{tag}] {g['goal']}: {g['value']:.2f}x")
    return "\n".join(lines)
