"""Resumable all-atom MD with OpenMM: (anneal) -> NVT equilibration -> NVT production with forces.

A run lives in one directory::

    run.json            protocol, system definition, atom masses (written once; checked on rerun)
    start.pdb           copy of the starting structure
    checkpoint.chk      OpenMM checkpoint (exact continuation on the same platform)
    state.xml           portable OpenMM state (used if the checkpoint cannot be loaded)
    progress.json       step count, frames written, accumulated wall time (written LAST)
    frames/part_*.h5    production frames, one file per checkpoint interval (atomic renames)
    production.h5       all frames in one file, written when production finishes

Every production frame holds positions (nm), TOTAL force-field forces on every atom (kJ/mol/nm;
constraint forces are not included, see the README), box vectors (nm), potential energy
(kJ/mol), time (ps) and step. A checkpoint is taken after each part file is renamed into place,
and progress.json after that, so a kill at any moment loses at most the frames after the last
progress.json; rerunning the same command deletes any part file past it and continues from
the matching checkpoint: no frame is lost or duplicated.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["Protocol", "select_platform", "run_aa", "read_frames", "consolidate", "RunError"]

FRAME_FIELDS = ("positions", "forces", "boxes", "potential_energy", "times", "steps")


class RunError(RuntimeError):
    """An AA run directory is inconsistent with the requested run."""


@dataclass
class Protocol:
    temperature_K: float = 298.1
    timestep_fs: float = 2.0
    thermostat: str = "langevin"  # "langevin" (LangevinMiddle) or "nose-hoover"
    friction_per_ps: float = 1.0  # Langevin friction / Nose-Hoover collision frequency
    anneal_ps: float = 0.0  # linear cool-down from anneal_temperature_K to temperature_K
    anneal_temperature_K: float = 400.0
    equilibration_ps: float = 100.0
    production_ps: float = 500.0
    frame_interval_ps: float = 1.0
    checkpoint_every_frames: int = 10
    equilibration_chunk_ps: float = 10.0  # checkpoint interval before production
    seed: int = 1

    @property
    def dt_ps(self) -> float:
        return self.timestep_fs / 1000.0

    def steps(self, ps: float) -> int:
        return int(round(ps / self.dt_ps))

    @property
    def frame_steps(self) -> int:
        k = self.steps(self.frame_interval_ps)
        if k < 1:
            raise ValueError("frame_interval_ps must be at least one time step")
        return k

    @property
    def n_anneal(self) -> int:
        return self.steps(self.anneal_ps)

    @property
    def n_pre(self) -> int:
        """Steps before production (anneal + equilibration)."""
        return self.n_anneal + self.steps(self.equilibration_ps)

    @property
    def n_frames(self) -> int:
        return int(round(self.production_ps / self.frame_interval_ps))

    @property
    def n_total(self) -> int:
        return self.n_pre + self.n_frames * self.frame_steps

    def temperature_at(self, step: int) -> float:
        if step < self.n_anneal:
            f = step / max(self.n_anneal, 1)
            return self.anneal_temperature_K + f * (self.temperature_K - self.anneal_temperature_K)
        return self.temperature_K


def select_platform(name: str | None = None, threads: int | None = None):
    """OpenMM platform: ``name`` if given, else CUDA when it works, else CPU. Returns (platform, properties)."""
    import openmm as mm

    names = [name] if name else ["CUDA", "CPU"]
    last = None
    for n in names:
        try:
            plat = mm.Platform.getPlatformByName(n)
        except Exception as exc:  # noqa: BLE001 - platform not compiled in
            last = exc
            continue
        props = {}
        if n == "CPU" and threads:
            props["Threads"] = str(int(threads))
        if n == "CUDA":
            props["Precision"] = "mixed"
            try:  # make sure a device really exists
                ctx = mm.Context(_tiny_system(), mm.VerletIntegrator(0.001), plat, props)
                del ctx
            except Exception as exc:  # noqa: BLE001
                last = exc
                continue
        return plat, props
    raise RunError(f"no usable OpenMM platform among {names}: {last}")


def _tiny_system():
    import openmm as mm

    s = mm.System()
    s.addParticle(1.0)
    return s


def _atomic_write(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb" if isinstance(data, bytes) else "w") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def _part_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "frames").glob("part_*.h5"))


def _write_part(run_dir: Path, first_frame: int, buf: dict[str, list]) -> None:
    import h5py

    d = run_dir / "frames"
    d.mkdir(exist_ok=True)
    path = d / f"part_{first_frame:07d}.h5"
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as h5:
        h5.create_dataset("positions", data=np.asarray(buf["positions"], np.float32))
        h5.create_dataset("forces", data=np.asarray(buf["forces"], np.float32))
        h5.create_dataset("boxes", data=np.asarray(buf["boxes"], np.float32))
        h5.create_dataset("potential_energy", data=np.asarray(buf["potential_energy"], np.float64))
        h5.create_dataset("times", data=np.asarray(buf["times"], np.float64))
        h5.create_dataset("steps", data=np.asarray(buf["steps"], np.int64))
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)


def read_frames(run_dir: str | Path, max_frames: int | None = None) -> dict[str, np.ndarray]:
    """All committed production frames of a run (partial runs too), as arrays."""
    import h5py

    run_dir = Path(run_dir)
    prod = run_dir / "production.h5"
    progress = _read_json(run_dir / "progress.json") or {}
    committed = int(progress.get("frames", 0))
    if prod.is_file():
        with h5py.File(prod, "r") as h5:
            out = {k: h5[k][()] for k in FRAME_FIELDS}
    else:
        chunks = {k: [] for k in FRAME_FIELDS}
        n = 0
        for p in _part_files(run_dir):
            first = int(p.stem.split("_")[1])
            if first != n or first >= committed:
                break
            with h5py.File(p, "r") as h5:
                for k in FRAME_FIELDS:
                    chunks[k].append(h5[k][()])
                n += h5["times"].shape[0]
        if n == 0:
            raise RunError(f"{run_dir} holds no committed production frames yet")
        out = {k: np.concatenate(v) for k, v in chunks.items()}
        n = min(n, committed)
        out = {k: v[:n] for k, v in out.items()}
    if max_frames is not None:
        out = {k: v[:max_frames] for k, v in out.items()}
    return out


def consolidate(run_dir: str | Path) -> Path:
    """Write ``production.h5`` (all frames + masses) from the part files."""
    import h5py

    run_dir = Path(run_dir)
    frames = read_frames(run_dir) if not (run_dir / "production.h5").is_file() else None
    if frames is None:
        return run_dir / "production.h5"
    meta = _read_json(run_dir / "run.json") or {}
    path = run_dir / "production.h5"
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as h5:
        for k, v in frames.items():
            h5.create_dataset(k, data=v, compression="gzip" if v.ndim == 3 else None)
        if "masses" in meta:
            h5.create_dataset("masses", data=np.asarray(meta["masses"], np.float64))
        h5.attrs["units"] = json.dumps({"positions": "nm", "forces": "kJ/mol/nm (total force-field force per atom)",
                                        "boxes": "nm (rows are box vectors)", "potential_energy": "kJ/mol",
                                        "times": "ps"})
        h5.attrs["run"] = json.dumps(meta, default=str)
    tmp.replace(path)
    return path


def _read_json(path: Path):
    if path.is_file():
        return json.loads(path.read_text())
    return None


def _make_integrator(protocol: Protocol, temperature: float):
    import openmm as mm

    dt = protocol.dt_ps
    if protocol.thermostat == "langevin":
        integ = mm.LangevinMiddleIntegrator(temperature, protocol.friction_per_ps, dt)
        integ.setRandomNumberSeed(int(protocol.seed))
    elif protocol.thermostat == "nose-hoover":
        integ = mm.NoseHooverIntegrator(temperature, protocol.friction_per_ps, dt)
    else:
        raise ValueError(f"thermostat must be 'langevin' or 'nose-hoover', got {protocol.thermostat!r}")
    integ.setConstraintTolerance(1e-6)
    return integ


def _set_temperature(integ, protocol: Protocol, temperature: float) -> None:
    integ.setTemperature(temperature)


def run_aa(run_dir: str | Path, sysdef, protocol: Protocol, structure_pdb: str | Path | None = None, *,
           platform: str | None = None, threads: int | None = None, progress: bool = True,
           stop_after_steps: int | None = None, log=print) -> dict:
    """Run (or resume) the AA protocol in ``run_dir``. Returns a summary dict.

    ``structure_pdb`` (packed and minimised, e.g. from :func:`~openmm_cgkd.data.build.build_box`) is
    needed on the first call only. ``stop_after_steps`` stops early after about that many new
    steps (for tests of resuming); the run can be continued by calling again.
    """
    import openmm as mm
    from openmm import unit
    from tqdm import tqdm

    from openmm_cgkd.data.build import read_pdb_positions
    from openmm_cgkd.data.opls import build_topology, create_system

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ff = sysdef.forcefield
    top = build_topology(ff, sysdef.composition, sysdef.box_vectors())
    cutoff = sysdef.cutoff_nm
    system = create_system(ff, top, cutoff_nm=cutoff, constraints=sysdef.constraints)
    masses = [system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())]

    meta_path = run_dir / "run.json"
    proto_d = asdict(protocol)
    meta = _read_json(meta_path)
    if meta is None:
        if structure_pdb is None:
            raise RunError(f"{run_dir} is a new run: give the starting structure (PDB from `cgkd aa-build`)")
        shutil.copyfile(structure_pdb, run_dir / "start.pdb")
        meta = {"protocol": proto_d, "system": sysdef.to_dict(), "masses": masses,
                "residues": [(r.name, len(list(r.atoms()))) for r in top.residues()],
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _atomic_write(meta_path, json.dumps(meta, indent=1))
    else:
        old = dict(meta["protocol"])
        for k in ("production_ps",):  # production may be extended on a rerun
            old.pop(k, None)
        new = {k: v for k, v in proto_d.items() if k != "production_ps"}
        diff = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
        if diff:
            raise RunError(f"{run_dir} was started with a different protocol {diff} (old, new); "
                           "use a new run directory or the original settings")
        if meta["system"]["composition"] != sysdef.composition or abs(meta["system"]["box_nm"] - sysdef.box_nm) > 1e-9:
            raise RunError(f"{run_dir} was started with another system ({meta['system']['composition']}, "
                           f"{meta['system']['box_nm']} nm)")
        if meta["protocol"].get("production_ps") != protocol.production_ps:
            meta["protocol"]["production_ps"] = protocol.production_ps
            _atomic_write(meta_path, json.dumps(meta, indent=1))

    plat, props = select_platform(platform, threads)
    integ = _make_integrator(protocol, protocol.temperature_K)
    ctx = mm.Context(system, integ, plat, props)
    prog = _read_json(run_dir / "progress.json")
    if prog is None:
        pos = read_pdb_positions(run_dir / "start.pdb")
        if pos.shape[0] != system.getNumParticles():
            raise RunError(f"start.pdb has {pos.shape[0]} atoms; the system has {system.getNumParticles()}")
        ctx.setPositions(pos * unit.nanometer)
        ctx.applyConstraints(1e-6)
        ctx.setVelocitiesToTemperature(protocol.temperature_at(0), int(protocol.seed))
        ctx.setStepCount(0)
        ctx.setTime(0.0)
        prog = {"step": 0, "frames": 0, "wall_s": 0.0, "platform": plat.getName()}
        for p in _part_files(run_dir):
            p.unlink()
    else:
        loaded = False
        if (run_dir / "checkpoint.chk").is_file() and prog.get("platform") == plat.getName():
            try:
                ctx.loadCheckpoint((run_dir / "checkpoint.chk").read_bytes())
                loaded = ctx.getStepCount() == prog["step"]
            except Exception:  # noqa: BLE001 - fall back to the portable state
                loaded = False
        if not loaded:
            st = mm.XmlSerializer.deserialize((run_dir / "state.xml").read_text())
            ctx.setState(st)
            ctx.setStepCount(int(prog["step"]))
            ctx.setTime(int(prog["step"]) * protocol.dt_ps)
        if ctx.getStepCount() != prog["step"]:
            raise RunError(f"checkpoint is at step {ctx.getStepCount()}, progress.json says {prog['step']}")
        # drop frames written after the last committed progress record
        for p in _part_files(run_dir):
            if int(p.stem.split("_")[1]) >= prog["frames"]:
                p.unlink()
        (run_dir / "production.h5").unlink(missing_ok=True) if prog["frames"] < protocol.n_frames else None
        log(f"resuming {run_dir} at step {prog['step']} ({prog['frames']} frames written)")

    n_total = protocol.n_total
    step0 = int(prog["step"])
    if step0 > n_total:
        raise RunError(f"run is already at step {step0}, beyond the requested {n_total} steps")
    expected_frames = max(0, (step0 - protocol.n_pre) // protocol.frame_steps)
    if step0 >= protocol.n_pre and (step0 - protocol.n_pre) % protocol.frame_steps != 0:
        raise RunError(f"checkpoint step {step0} is not on a frame boundary")
    if prog["frames"] != expected_frames:
        raise RunError(f"progress.json holds {prog['frames']} frames at step {step0}; expected {expected_frames}")

    def checkpoint(step: int, frames: int, wall: float) -> None:
        st = ctx.getState(getPositions=True, getVelocities=True, getParameters=True, getIntegratorParameters=True)
        _atomic_write(run_dir / "state.xml", mm.XmlSerializer.serialize(st))
        _atomic_write(run_dir / "checkpoint.chk", ctx.createCheckpoint())
        here = time.time() - t_start
        rate = (step - step0) * protocol.dt_ps / 1000.0 / max(here, 1e-9) * 86400.0
        rec = {"step": step, "frames": frames, "wall_s": round(wall, 2), "platform": plat.getName(),
               "ns_per_day_this_call": round(rate, 3), "threads": props.get("Threads"),
               "phase": "production" if step >= protocol.n_pre else "equilibration",
               "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _atomic_write(run_dir / "progress.json", json.dumps(rec, indent=1))
        prog.update(rec)

    wall_base = float(prog.get("wall_s", 0.0))
    t_start = time.time()
    steps_done_here = 0
    bar = tqdm(total=n_total, initial=step0, unit="step", disable=not progress, dynamic_ncols=True,
               desc="AA MD", mininterval=5.0, smoothing=0.05)

    def budget_left() -> bool:
        return stop_after_steps is None or steps_done_here < stop_after_steps

    step = step0
    # --- anneal + equilibration, checkpointed every equilibration_chunk_ps
    chunk = max(1, protocol.steps(protocol.equilibration_chunk_ps))
    sub = max(1, protocol.steps(1.0))  # progress / anneal-temperature updates every 1 ps
    while step < protocol.n_pre and budget_left():
        before = step
        target = min(protocol.n_pre, step + chunk)
        if step < protocol.n_anneal:
            target = min(target, protocol.n_anneal)
        bar.set_description("AA anneal" if step < protocol.n_anneal else "AA equilibration")
        while step < target:
            n = min(sub, target - step)
            _set_temperature(integ, protocol, protocol.temperature_at(step))
            integ.step(n)
            step += n
            bar.update(n)
        steps_done_here += step - before
        checkpoint(step, 0, wall_base + time.time() - t_start)
    _set_temperature(integ, protocol, protocol.temperature_K)

    # --- production
    frames = int(prog["frames"])
    k = protocol.frame_steps
    buf = {f: [] for f in FRAME_FIELDS}
    first = frames
    bar.set_description("AA production")
    while step >= protocol.n_pre and frames < protocol.n_frames and budget_left():
        integ.step(k)
        step += k
        steps_done_here += k
        bar.update(k)
        st = ctx.getState(getPositions=True, getForces=True, getEnergy=True)
        buf["positions"].append(st.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        buf["forces"].append(st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
        buf["boxes"].append(st.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
        buf["potential_energy"].append(st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        buf["times"].append(step * protocol.dt_ps)
        buf["steps"].append(step)
        frames += 1
        if not np.all(np.isfinite(buf["positions"][-1])):
            raise RunError(f"non-finite positions at step {step}: the simulation blew up")
        if len(buf["times"]) >= protocol.checkpoint_every_frames or frames == protocol.n_frames or not budget_left():
            _write_part(run_dir, first, buf)
            checkpoint(step, frames, wall_base + time.time() - t_start)
            buf = {f: [] for f in FRAME_FIELDS}
            first = frames
            bar.set_postfix(frames=frames)
    bar.close()
    wall = wall_base + time.time() - t_start
    done = frames >= protocol.n_frames and step >= n_total
    elapsed = time.time() - t_start
    speed = (step - step0) * protocol.dt_ps / 1000.0 / max(elapsed, 1e-9) * 86400.0  # ns/day
    summary = {"run_dir": str(run_dir), "step": step, "frames": frames, "finished": bool(done),
               "wall_s": round(wall, 1), "ns_per_day_this_call": round(speed, 2), "platform": plat.getName()}
    if done:
        consolidate(run_dir)
        summary["production"] = str(run_dir / "production.h5")
    log(json.dumps(summary))
    return summary
