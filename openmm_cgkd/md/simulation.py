"""Running CG molecular dynamics: DCD trajectory, CSV log, progress bar, ns/day, checkpoints.

:func:`run_simulation` advances an ``openmm.app.Simulation`` (e.g. from
:meth:`CGKDForceField.create_simulation`) by a number of steps and writes, in ``out_dir``:

====================  ==========================================================================
``trajectory.dcd``    bead positions (nm in mdtraj; DCD stores Angstrom) every ``report_interval``
                      steps, including step 0 for a fresh run; frame k <-> row k of the log
``log.csv``           ``step, time_ps, potential_kj_mol, kinetic_kj_mol, total_kj_mol,
                      temperature_k, speed_ns_day`` (speed since the previous row; ``nan`` at
                      the first row); read with the ``csv`` module, no pandas needed
``final.pdb``         the last configuration as a bead PDB with its box (a start structure)
``checkpoint.chk``    OpenMM checkpoint every ``checkpoint_interval`` steps (default with
                      ``resume=True``: every 10 report intervals) and at the end; ``resume=True``
                      continues from it: log rows and DCD frames written after the checkpoint
                      are dropped, then both are appended to; a finished run is not rerun
``fingerprint.json``  the run's settings (:func:`run_settings`), written when it starts
``run.json``          what ran: steps, timestep, platform, wall time, ns/day, final energies
====================  ==========================================================================

Resuming is keyed on the fingerprint: a run is continued (or, when finished, reported again)
only if its integrator, temperature (K), friction (1/ps), time step, random seed, report
interval, platform, particle masses and the caller's ``inputs`` (e.g. the bundle checksum and
the start structure's sha256) are those it was started with, and it has not already run more
steps than asked for. Otherwise :class:`StaleRunError` says what changed; nothing is appended.
A checkpoint that does not load back exactly (truncated or damaged) is a :class:`SimulationError`.

A blow-up (OpenMM's "Particle coordinate is NaN" between report steps, or a non-finite energy at
one) stops the run with one diagnosis (:class:`openmm_cgkd.md.blowup.BlowUpError`, a
:class:`SimulationError`): the step, the closest pair of beads and its distance, the largest
force, the likely cause (overlapping beads, too large a time step, or the network diverging).
The files written so far stay readable (the DCD and log are closed), ``last_sane.pdb`` holds
the last sane configuration and ``run.json`` the failure. A start whose potential energy is
absurd (overlapping beads) is warned about on stderr.

Checkpoint loading, the fingerprint check, atomic writes and the speed figure are
:mod:`openmm_cgkd.md.restart`'s, shared with the all-atom runs of :mod:`openmm_cgkd.data.aamd`.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from openmm_cgkd.fileio import write_json
from openmm_cgkd.fingerprint import array_digest, digest, read_fingerprint, write_fingerprint
from openmm_cgkd.md.blowup import start_warning, stop_with_diagnosis
from openmm_cgkd.md.restart import SimulationError, StaleRunError, load_checkpoint, ns_per_day, refuse_if_changed
from openmm_cgkd.md.thermo import degrees_of_freedom, temperature_from_kinetic
from openmm_cgkd.topology import write_bead_pdb

__all__ = ["run_simulation", "run_settings", "run_threads", "RunResult", "SimulationError", "StaleRunError",
           "CSVLogReporter", "LOG_COLUMNS", "read_log"]

LOG_COLUMNS = ["step", "time_ps", "potential_kj_mol", "kinetic_kj_mol", "total_kj_mol", "temperature_k",
               "speed_ns_day"]


# RunResult fields naming files of the run: run.json stores them relative to the run directory
_RUN_FILES = ("out_dir", "trajectory", "log", "final_structure", "checkpoint")
# RunResult figures that can be nan (no step run, no degrees of freedom): null in run.json (strict JSON)
_NAN_AS_NULL = ("ns_per_day", "final_temperature_k", "final_potential_kj_mol", "wall_seconds")


@dataclass
class RunResult:
    out_dir: str
    trajectory: str
    log: str
    final_structure: str
    checkpoint: str | None
    steps_run: int
    final_step: int
    timestep_ps: float
    simulated_ps: float
    wall_seconds: float
    ns_per_day: float
    platform: str
    final_potential_kj_mol: float
    final_temperature_k: float


class CSVLogReporter:
    """An OpenMM reporter writing :data:`LOG_COLUMNS` every ``interval`` steps; raises on NaN."""

    def __init__(self, path: str | Path, interval: int, system, append: bool = False):
        self.interval = int(interval)
        self.path = Path(path)
        fresh = not (append and self.path.exists())
        self._fh = open(self.path, "a" if not fresh else "w", newline="")
        self._writer = csv.writer(self._fh)
        if fresh:
            self._writer.writerow(LOG_COLUMNS)
            self._fh.flush()
        self._dof = degrees_of_freedom(system)
        self._last: tuple[float, float] | None = None  # (wall clock, simulated ps)
        self.last_row: dict | None = None

    def describeNextReport(self, simulation):
        steps = self.interval - simulation.currentStep % self.interval
        return {"steps": steps, "periodic": None, "include": ["energy"]}

    def report(self, simulation, state) -> None:
        from openmm import unit

        now = time.perf_counter()
        t_ps = state.getTime().value_in_unit(unit.picosecond)
        pot = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        kin = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        temp = temperature_from_kinetic(kin, self._dof)
        speed = float("nan")
        if self._last is not None and now > self._last[0] and t_ps > self._last[1]:
            speed = (t_ps - self._last[1]) / 1000.0 / ((now - self._last[0]) / 86400.0)
        self._last = (now, t_ps)
        row = [simulation.currentStep, t_ps, pot, kin, pot + kin, temp, speed]
        self._writer.writerow([row[0]] + [f"{v:.6f}" if abs(v) < 1e12 or not math.isfinite(v) else f"{v:.6e}"
                                          for v in row[1:]])
        self._fh.flush()
        self.last_row = dict(zip(LOG_COLUMNS, row))
        if not (math.isfinite(pot) and math.isfinite(kin)):
            raise SimulationError(f"the simulation blew up: energy is not finite at step {simulation.currentStep} "
                                  f"(potential {pot}, kinetic {kin} kJ/mol)")

    def close(self) -> None:
        self._fh.close()


def read_log(path: str | Path) -> dict[str, list[float]]:
    """The CSV log as columns of floats (``step`` as int)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols: dict[str, list[float]] = {c: [] for c in LOG_COLUMNS}
    for row in rows:
        for c in LOG_COLUMNS:
            cols[c].append(int(row[c]) if c == "step" else float(row[c]))
    return cols


def _truncate_outputs(log_path: Path, dcd_path: Path, step: int) -> None:
    """Drop log rows (and their DCD frames: frame k <-> row k) written after ``step``."""
    import struct

    with open(log_path, newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    keep = [r for r in body if int(r[0]) <= step]
    if len(keep) != len(body):
        with open(log_path, "w", newline="") as fh:
            csv.writer(fh).writerows([header] + keep)
    with open(dcd_path, "r+b") as fh:  # DCD layout as openmm.app.DCDFile writes it
        head = fh.read(96)
        if len(head) < 96 or head[4:8] != b"CORD":
            raise SimulationError(f"cannot resume: {dcd_path} is not a DCD file")
        n_frames = struct.unpack("<i", head[8:12])[0]
        has_box = struct.unpack("<i", head[48:52])[0] == 1
        comments = struct.unpack("<i", head[92:96])[0]
        fh.seek(104 + comments)
        n_atoms = struct.unpack("<i", fh.read(4))[0]
        first_frame = 104 + comments + 8
        # a frame: unit-cell record (4 + 48 + 4 bytes) if periodic, then x, y, z records (4 + 4N + 4 bytes each)
        frame_bytes = (56 if has_box else 0) + 3 * (8 + 4 * n_atoms)
        if len(keep) > n_frames:
            raise SimulationError(f"cannot resume: {log_path} has {len(keep)} rows up to the checkpoint (step "
                                  f"{step}) but {dcd_path} only {n_frames} frames")
        if len(keep) < n_frames:
            fh.truncate(first_frame + len(keep) * frame_bytes)
            fh.seek(8)
            fh.write(struct.pack("<i", len(keep)))


def run_settings(simulation, report_interval: int, inputs: dict | None = None) -> dict:
    """What an MD run is keyed on: the integrator's kind, time step (ps), temperature (K),
    friction (1/ps) and random seed where it has them, the report interval (steps), the
    platform (a checkpoint loads only on the platform that wrote it), a digest of the particle
    masses (dalton) and ``inputs`` (content checksums of what built the system)."""
    from openmm import unit

    integ = simulation.integrator
    system = simulation.system
    settings = {"integrator": type(integ).__name__,
                "timestep_ps": float(integ.getStepSize().value_in_unit(unit.picosecond)),
                "report_interval": int(report_interval),
                "platform": simulation.context.getPlatform().getName(),
                "particles": int(system.getNumParticles()),
                "masses": array_digest([system.getParticleMass(i).value_in_unit(unit.dalton)
                                        for i in range(system.getNumParticles())])[:16]}
    if hasattr(integ, "getTemperature"):
        settings["temperature_K"] = float(integ.getTemperature().value_in_unit(unit.kelvin))
    if hasattr(integ, "getFriction"):
        settings["friction_per_ps"] = float(integ.getFriction().value_in_unit(unit.picosecond ** -1))
    if hasattr(integ, "getRandomNumberSeed"):
        settings["seed"] = int(integ.getRandomNumberSeed())
    settings["inputs"] = dict(inputs or {})
    return settings


def run_threads(simulation) -> dict:
    """The thread counts the run's forces are summed with: OpenMM's CPU platform's ``Threads``
    (None on other platforms) and torch's intra-op threads. A resume continues bit-identically
    only with the same counts (the order of floating-point sums depends on them); they are stored
    beside the fingerprint, not in it (a resume with other counts is allowed, and says so)."""
    import torch

    ctx = simulation.context
    platform = ctx.getPlatform()
    omm = None
    if platform.getName() == "CPU":
        try:
            omm = int(platform.getPropertyValue(ctx, "Threads"))
        except Exception:  # noqa: BLE001 - a platform without the property
            omm = None
    return {"openmm": omm, "torch": int(torch.get_num_threads())}


def _warn_about_start(simulation, state, minimized: bool = False) -> None:
    """Print a warning (stderr) when the start's potential energy is absurd (overlapping beads)."""
    import sys

    text = start_warning(simulation, state, minimized=minimized)
    if text:
        print(text, file=sys.stderr, flush=True)


def _blowup(simulation, failure, paths: dict, timestep_ps: float, platform: str, fingerprint: str,
            minimized: bool = False):
    """The :class:`~openmm_cgkd.md.blowup.BlowUpError` of a failed chunk ``failure`` = (exception,
    step and state at the chunk's start, chunk length, steps done); writes run.json with it."""
    exc, good_step, good_state, k, done = failure
    info = {"out_dir": ".", "trajectory": paths["trajectory"].name, "log": paths["log"].name,
            "final_structure": None, "checkpoint": str(paths["checkpoint"]) if paths["checkpoint"].exists() else None,
            "steps_run": int(done), "final_step": int(good_step), "timestep_ps": timestep_ps,
            "simulated_ps": done * timestep_ps, "platform": platform, "fingerprint": fingerprint}
    return stop_with_diagnosis(simulation, good_state, good_step, k, exc, paths["meta"].parent, info,
                               minimized=minimized)


def run_simulation(simulation, steps: int, out_dir: str | Path, *, report_interval: int = 100,
                   checkpoint_interval: int | None = None, progress: bool = True, resume: bool = False,
                   description: str = "MD", inputs: dict | None = None, overwrite: bool = False,
                   minimized: bool = False) -> RunResult:
    """Run ``steps`` MD steps of ``simulation`` and write the outputs listed in the module doc.

    The run holds the lock of ``out_dir`` (:func:`openmm_cgkd.runlock.hold_run_dir`): a second run
    there meanwhile is refused. A fresh run (no ``resume``, or nothing to resume) in a directory
    holding an earlier run's outputs is refused (:class:`StaleRunError`) unless ``overwrite``.
    ``minimized``: the caller minimised the start (a blow-up diagnosis then does not advise it).
    """
    from openmm_cgkd.runlock import hold_run_dir

    with hold_run_dir(out_dir, "MD run"):
        return _run_simulation(simulation, steps, out_dir, report_interval=report_interval,
                               checkpoint_interval=checkpoint_interval, progress=progress, resume=resume,
                               description=description, inputs=inputs, overwrite=overwrite, minimized=minimized)


def _finished_result(out: Path, paths: dict, fingerprint: str, steps: int) -> RunResult | None:
    """The :class:`RunResult` of the run finished in ``out`` with this fingerprint and ``steps``
    steps (None when there is none)."""
    try:
        meta = json.loads(paths["meta"].read_text()) if paths["meta"].exists() else None
    except (OSError, ValueError):
        return None
    if not meta or meta.get("fingerprint") != fingerprint or meta.get("final_step") != steps:
        return None
    return RunResult(**{k: str(out / meta[k]) if k in _RUN_FILES and meta[k] is not None
                        else (float("nan") if meta[k] is None and k in _NAN_AS_NULL else meta[k])
                        for k in RunResult.__dataclass_fields__})


def _earlier_run(out: Path, paths: dict) -> str | None:
    """A description of the earlier run whose outputs lie in ``out`` (None when there are none)."""
    if not any(paths[k].exists() for k in ("trajectory", "checkpoint", "meta")):
        return None
    meta = None
    try:
        meta = json.loads(paths["meta"].read_text()) if paths["meta"].exists() else None
    except (OSError, ValueError):
        meta = None
    if meta and meta.get("final_step") is not None:
        return f"a finished run of {meta['final_step']} steps"
    if paths["log"].exists():
        try:
            last = read_log(paths["log"])["step"]
            if last:
                return f"an unfinished run up to step {last[-1]}"
        except (OSError, ValueError, KeyError):
            pass
    return "an earlier run's trajectory"


def _run_simulation(simulation, steps: int, out_dir: str | Path, *, report_interval: int,
                    checkpoint_interval: int | None, progress: bool, resume: bool,
                    description: str, inputs: dict | None, overwrite: bool, minimized: bool) -> RunResult:
    """:func:`run_simulation` under the directory's lock.

    A fresh run starts the clock at step 0, time 0 (whatever the simulation did before, e.g.
    minimisation or equilibration). With ``resume=True`` and a checkpoint in ``out_dir``, the
    simulation is restored from it and runs until it reaches step ``steps`` in total (the
    checkpoint's step counts), if its fingerprint (:func:`run_settings`, including ``inputs``:
    content checksums of what built the simulation, e.g. ``{"bundle": ..., "structure": ...}``)
    is the one it was started with; else :class:`StaleRunError`. ns/day is measured after three
    warm-up force evaluations.
    """
    import openmm
    from openmm import app, unit
    from tqdm.auto import tqdm

    steps = int(steps)
    report_interval = int(report_interval)
    if steps < 0:
        raise SimulationError(f"steps must be >= 0, got {steps}")
    if report_interval < 1:
        raise SimulationError(f"report interval must be >= 1 step, got {report_interval}")
    if checkpoint_interval is not None and int(checkpoint_interval) < 1:
        raise SimulationError(f"checkpoint interval must be >= 1 step (or None: no checkpoints), got "
                              f"{checkpoint_interval}")
    if steps > 0 and report_interval > steps:
        from openmm_cgkd.errors import UsageError

        raise UsageError(f"report interval {report_interval} is longer than the run ({steps} steps): only the start "
                         "frame would be written; report more often or run longer")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / v for k, v in {"trajectory": "trajectory.dcd", "log": "log.csv", "final": "final.pdb",
                                     "checkpoint": "checkpoint.chk", "meta": "run.json"}.items()}
    if resume and checkpoint_interval is None:
        checkpoint_interval = 10 * report_interval
    settings = run_settings(simulation, report_interval, inputs)
    fingerprint = digest(settings)
    resuming = False
    if resume and paths["checkpoint"].exists():
        if not (paths["trajectory"].exists() and paths["log"].exists()):
            raise SimulationError(f"cannot resume: {out} has a checkpoint but no trajectory/log to append to")
        old = read_fingerprint(out)
        refuse_if_changed(old["settings"] if old else None, settings,
                          f"cannot resume {out}: it was run with other settings",
                          f"resume with the original settings, or start afresh in a new output directory "
                          f"(or after deleting {out})")
        used = (old or {}).get("threads")
        if isinstance(used, dict) and used != run_threads(simulation):
            import sys

            print(f"note: resuming {out} with threads {run_threads(simulation)} where it ran with {used}: the "
                  "continuation is valid but not bit-identical to an uninterrupted run", file=sys.stderr)
        load_checkpoint(simulation.context, paths["checkpoint"],
                        f"delete {out} (or use another output directory) to start afresh, or restore the "
                        "checkpoint from a copy")
        resuming = True
        if simulation.currentStep > steps:
            raise StaleRunError(f"cannot resume {out}: it has run {simulation.currentStep} steps already, more than "
                                f"the {steps} asked for; ask for at least {simulation.currentStep} steps, or start "
                                "afresh in a new output directory", [f"steps: {simulation.currentStep} -> {steps}"])
        remaining = steps - simulation.currentStep
        done_before = _finished_result(out, paths, fingerprint, steps) if remaining == 0 else None
        if done_before is not None:  # finished earlier: report that run
            return done_before
        _truncate_outputs(paths["log"], paths["trajectory"], simulation.currentStep)
    else:
        done_before = _finished_result(out, paths, fingerprint, steps) if resume else None
        if done_before is not None:  # a run without checkpoints, finished as asked: report it
            return done_before
        # a fresh run: nothing of an earlier run in out_dir may be taken for this one
        earlier = _earlier_run(out, paths)
        if earlier and not overwrite:
            how = ("it has no checkpoint to resume from" if resume else
                   "resume it (--resume, with at least as many steps; runs with checkpoints only)")
            raise StaleRunError(f"{out} holds {earlier}: {how}; replace it (--overwrite) or choose another "
                                "output directory")
        for key in ("checkpoint", "meta"):
            paths[key].unlink(missing_ok=True)
        write_fingerprint(out, settings, {"threads": run_threads(simulation)})
        simulation.currentStep = 0
        simulation.context.setTime(0.0)
        remaining = steps

    system = simulation.system
    dcd = app.DCDReporter(str(paths["trajectory"]), report_interval, append=resuming)
    log = CSVLogReporter(paths["log"], report_interval, system, append=resuming)
    simulation.reporters.extend([dcd, log])
    ckpt = None
    if checkpoint_interval:
        ckpt = app.CheckpointReporter(str(paths["checkpoint"]), int(checkpoint_interval))
        simulation.reporters.append(ckpt)
    timestep_ps = simulation.integrator.getStepSize().value_in_unit(unit.picosecond)
    platform = simulation.context.getPlatform().getName()
    failure = None
    try:
        if not resuming:  # frame 0 / row 0: the start
            state = simulation.context.getState(getPositions=True, getEnergy=True,
                                                enforcePeriodicBox=system.usesPeriodicBoundaryConditions())
            dcd.report(simulation, state)
            log.report(simulation, state)
            _warn_about_start(simulation, state, minimized)
        # Warm up outside the timing: TorchScript profiles the first two calls and optimises on
        # the third, so ns/day is the steady-state speed.
        for _ in range(3):
            simulation.context.getState(getForces=True)
        chunk = max(1, min(report_interval, 1000))
        t0 = time.perf_counter()
        with tqdm(total=remaining, unit="step", desc=description, disable=not progress, dynamic_ncols=True) as bar:
            done = 0
            while done < remaining:
                k = min(chunk, remaining - done)
                good = (simulation.currentStep, simulation.context.getState(getPositions=True, getVelocities=True,
                                                                            getParameters=True))
                try:
                    simulation.step(k)
                except (openmm.OpenMMException, SimulationError) as exc:  # a blow-up: diagnosed below
                    failure = (exc, *good, k, done)
                    break
                done += k
                bar.update(k)
                wall = time.perf_counter() - t0
                if wall > 0:
                    bar.set_postfix_str(f"{done * timestep_ps / 1000.0 / (wall / 86400.0):.2f} ns/day")
        wall = time.perf_counter() - t0
    finally:
        for r in (dcd, log, ckpt):
            if r is not None and r in simulation.reporters:
                simulation.reporters.remove(r)
        log.close()
        dcd._out.close()  # DCDReporter closes its file only when garbage-collected
    if failure is not None:
        raise _blowup(simulation, failure, paths, timestep_ps, platform, fingerprint, minimized)

    simulated_ps = remaining * timestep_ps
    ns_day = ns_per_day(simulated_ps, wall) if remaining else float("nan")
    state = simulation.context.getState(getPositions=True, getEnergy=True,
                                        enforcePeriodicBox=system.usesPeriodicBoundaryConditions())
    pot = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    if not math.isfinite(pot):
        raise SimulationError(f"the simulation blew up: potential energy is {pot} at step {simulation.currentStep}")
    box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) \
        if system.usesPeriodicBoundaryConditions() else None
    write_bead_pdb(paths["final"], simulation.topology,
                   state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), box)
    if checkpoint_interval:
        simulation.saveCheckpoint(str(paths["checkpoint"]))
    kin = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    dof = degrees_of_freedom(system)
    result = RunResult(
        out_dir=str(out), trajectory=str(paths["trajectory"]), log=str(paths["log"]),
        final_structure=str(paths["final"]), checkpoint=str(paths["checkpoint"]) if checkpoint_interval else None,
        steps_run=remaining, final_step=simulation.currentStep, timestep_ps=timestep_ps,
        simulated_ps=simulated_ps, wall_seconds=wall, ns_per_day=ns_day, platform=platform,
        final_potential_kj_mol=pot, final_temperature_k=temperature_from_kinetic(kin, dof))
    record = {k: (os.path.relpath(v, out) if k in _RUN_FILES and v is not None else
                  None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(result).items()}
    write_json(paths["meta"], {**record, "openmm_version": openmm.__version__, "fingerprint": fingerprint},
               indent=2)
    return result
