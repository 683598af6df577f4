"""Resumable all-atom MD with OpenMM: (anneal) -> NVT equilibration -> NVT production with forces.

A run lives in one directory::

    run.json            protocol, system definition, atom masses (written once; checked on rerun)
    start.pdb           copy of the starting structure
    checkpoint.chk      OpenMM checkpoint (exact continuation on the same platform)
    state.xml           portable OpenMM state (used if the checkpoint cannot be loaded)
    progress.json       step count, frames written, accumulated wall time (written LAST)
    frames/part_*.h5    production frames, one file per checkpoint interval (atomic renames)
    cg/part_*.h5        the same frames mapped to beads, when run with a mapping (kept in git)
    production.h5       all frames in one file, written when production finishes
    .lock               locked while the restart files are written (:class:`~openmm_cgkd.md.restart.RunLock`)

Every production frame holds positions (nm), TOTAL force-field forces on every atom (kJ/mol/nm;
constraint forces are not included, see the README), box vectors (nm), potential energy
(kJ/mol), time (ps) and step. A checkpoint is taken after each part file is renamed into place,
and progress.json after that, so a kill at any moment loses at most the frames after the last
progress.json; rerunning the same command deletes any part file past it and continues from
the matching checkpoint: no frame is lost or duplicated. A checkpoint that does not load back
exactly (another platform, truncated, damaged) is replaced by ``state.xml``. The restart set,
the lock and the resume checks are :mod:`openmm_cgkd.md.restart`'s, shared with CG runs; atomic writes
:mod:`openmm_cgkd.fileio`'s.
"""
from __future__ import annotations

import math

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from openmm_cgkd.errors import CGKDError
from openmm_cgkd.fileio import read_json, write_json
from openmm_cgkd.md.restart import (CHECKPOINT_FILE, PROGRESS_FILE, STATE_FILE, CheckpointError, load_checkpoint,
                                   ns_per_day, refuse_if_changed, save_restart)
from openmm_cgkd.platforms import GPU_PLATFORMS, select_platform
from openmm_cgkd.fileio import anchor_paths

__all__ = ["Protocol", "run_aa", "check_resume", "read_frames", "read_mapped", "consolidate", "RunError",
           "ProtocolError", "repartition_hydrogen_masses", "topology_record", "run_topology"]

FRAME_FIELDS = ("positions", "forces", "boxes", "potential_energy", "times", "steps")


class RunError(CGKDError, RuntimeError):
    """An AA run directory is inconsistent with the requested run."""


class ProtocolError(CGKDError, ValueError):
    """An AA protocol setting is out of range."""

    exit_code = 2  # bad settings: usage error


@dataclass
class Protocol:
    temperature_K: float = 298.1
    timestep_fs: float = 2.0
    thermostat: str = "langevin"  # "langevin" (LangevinMiddle) or "nose-hoover"
    friction_per_ps: float = 1.0  # Langevin friction / Nose-Hoover collision frequency
    anneal_ps: float = 0.0  # linear cool-down from anneal_temperature_K to temperature_K
    anneal_temperature_K: float = 400.0
    hot_ps: float = 0.0  # held at anneal_temperature_K before the cool-down (decorrelates a packing)
    equilibration_ps: float = 100.0
    production_ps: float = 500.0
    frame_interval_ps: float = 1.0
    checkpoint_every_frames: int = 10
    equilibration_chunk_ps: float = 10.0  # checkpoint interval before production
    seed: int = 1
    hydrogen_mass_da: float | None = None  # hydrogen-mass repartitioning for the integrator only

    def validate(self) -> "Protocol":
        """Raise :class:`ProtocolError` on settings no run can use (checked before any work); a
        length that is not a whole number of time steps (or a production not a whole number of
        frame intervals) is refused, not rounded: the run would record what it did not do."""
        numbers = {k: getattr(self, k) for k in ("temperature_K", "timestep_fs", "friction_per_ps", "anneal_ps",
                                                  "anneal_temperature_K", "hot_ps", "equilibration_ps",
                                                  "production_ps", "frame_interval_ps", "equilibration_chunk_ps")}
        for key, value in numbers.items():
            if not math.isfinite(value):
                raise ProtocolError(f"{key} must be finite, got {value}")

        def whole(ps: float, per: float) -> bool:
            return per > 0 and abs(ps / per - round(ps / per)) <= 1e-6 * max(1.0, abs(ps / per))

        checks = [
            (self.temperature_K > 0, f"temperature must be positive (K), got {self.temperature_K}"),
            (self.timestep_fs > 0, f"time step must be positive (fs), got {self.timestep_fs}"),
            (self.friction_per_ps > 0, f"friction must be positive (1/ps), got {self.friction_per_ps}"),
            (self.anneal_ps >= 0 and self.hot_ps >= 0 and self.equilibration_ps >= 0 and self.production_ps > 0,
             "hot, anneal and equilibration lengths must be >= 0 ps and the production length > 0 ps"),
            (self.anneal_temperature_K > 0, f"anneal temperature must be positive (K), got {self.anneal_temperature_K}"),
            (self.frame_interval_ps > 0 and self.steps(self.frame_interval_ps) >= 1,
             f"frame interval must be at least one time step, got {self.frame_interval_ps} ps"),
            (not self.timestep_fs > 0 or not self.frame_interval_ps > 0 or whole(self.frame_interval_ps, self.dt_ps),
             f"frame interval {self.frame_interval_ps} ps is not a whole number of {self.timestep_fs} fs steps; "
             f"give a multiple of {self.dt_ps:g} ps"),
            (not self.frame_interval_ps > 0 or whole(self.production_ps, self.frame_interval_ps),
             f"production length {self.production_ps} ps is not a whole number of {self.frame_interval_ps} ps "
             "frame intervals"),
            (not self.timestep_fs > 0 or all(whole(getattr(self, k), self.dt_ps) for k in
                                             ("anneal_ps", "hot_ps", "equilibration_ps")),
             f"hot, anneal and equilibration lengths must be whole numbers of {self.timestep_fs} fs steps"),
            (self.checkpoint_every_frames >= 1, f"checkpoint interval must be >= 1 frame, got {self.checkpoint_every_frames}"),
            (self.thermostat in ("langevin", "nose-hoover"), f"thermostat must be 'langevin' or 'nose-hoover', "
                                                             f"got {self.thermostat!r}"),
            (self.hydrogen_mass_da is None or 1.0 <= self.hydrogen_mass_da <= 4.5,
             f"hydrogen mass must lie in [1, 4.5] Da, got {self.hydrogen_mass_da}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ProtocolError(msg)
        return self

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
    def n_hot(self) -> int:
        """Steps held at the anneal temperature before the cool-down."""
        return self.steps(self.hot_ps)

    @property
    def n_anneal(self) -> int:
        """Steps of the whole high-temperature phase: the hot hold, then the linear cool-down."""
        return self.n_hot + self.steps(self.anneal_ps)

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
        if step < self.n_hot:
            return self.anneal_temperature_K
        if step < self.n_anneal:
            f = (step - self.n_hot) / max(self.n_anneal - self.n_hot, 1)
            return self.anneal_temperature_K + f * (self.temperature_K - self.anneal_temperature_K)
        return self.temperature_K


def _part_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "frames").glob("part_*.h5"))


def _write_part(run_dir: Path, subdir: str, first_frame: int, buf: dict[str, list]) -> None:
    """``<run_dir>/<subdir>/part_<first frame>.h5`` holding :data:`FRAME_FIELDS` (positions and
    forces float32, boxes float32, energies and times float64, steps int64), renamed into place."""
    import h5py

    dtypes = {"positions": np.float32, "forces": np.float32, "boxes": np.float32, "potential_energy": np.float64,
              "times": np.float64, "steps": np.int64}
    d = run_dir / subdir
    d.mkdir(exist_ok=True)
    path = d / f"part_{first_frame:07d}.h5"
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as h5:
        for name in FRAME_FIELDS:
            h5.create_dataset(name, data=np.asarray(buf[name], dtypes[name]))
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)


def read_frames(run_dir: str | Path, max_frames: int | None = None) -> dict[str, np.ndarray]:
    """All committed production frames of a run (partial runs too), as arrays."""
    import h5py

    run_dir = Path(run_dir)
    prod = run_dir / "production.h5"
    progress = read_json(run_dir / PROGRESS_FILE) or {}
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
            raise RunError(f"{run_dir} holds no committed AA production frames (frames/part_*.h5)")
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
    meta = read_json(run_dir / "run.json") or {}
    expected = int(round(meta["protocol"]["production_ps"] / meta["protocol"]["frame_interval_ps"])) if meta else None
    if expected is not None and len(frames["times"]) != expected:
        raise RunError(f"{run_dir}/frames holds {len(frames['times'])} contiguous AA frames of {expected} "
                       "(parts from an earlier machine are missing); production.h5 needs all of them")
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


def repartition_hydrogen_masses(system, topology, hydrogen_mass_da: float) -> None:
    """Set every hydrogen's mass to ``hydrogen_mass_da``, taking the difference from its bonded
    heavy atom (total mass unchanged). For the integrator only: configurations and forces do not
    depend on masses, and the mapping uses the physical masses recorded in run.json."""
    from openmm import unit

    for a, b in topology.bonds():
        for h, heavy in ((a, b), (b, a)):
            if h.element is not None and h.element.symbol == "H" and (heavy.element is None or heavy.element.symbol != "H"):
                m_h = system.getParticleMass(h.index).value_in_unit(unit.dalton)
                m_x = system.getParticleMass(heavy.index).value_in_unit(unit.dalton)
                dm = hydrogen_mass_da - m_h
                if m_x - dm <= 1.0:
                    raise ProtocolError(f"repartitioning to {hydrogen_mass_da} Da leaves atom {heavy.index} "
                                        f"({heavy.name}) with {m_x - dm:.2f} Da")
                system.setParticleMass(h.index, hydrogen_mass_da)
                system.setParticleMass(heavy.index, m_x - dm)


def _write_mapped_part(run_dir: Path, first_frame: int, cgmap, buf: dict[str, list]) -> None:
    """Map one part's frames to beads and write ``cg/part_*.h5`` (small: committed with the run)."""
    pos, frc = cgmap.map_frames(np.asarray(buf["positions"]), np.asarray(buf["forces"]), np.asarray(buf["boxes"]))
    _write_part(run_dir, "cg", first_frame, {**buf, "positions": pos, "forces": frc})


SYSTEM_FILE_KEYS = ("forcefield", "source", "structure")  # run.json's system entries that name files (relative to the run)


def read_mapped(run_dir: str | Path, mapping=None):
    """The CG dataset of a run's committed production frames, from its mapped parts ``cg/``.

    The mapped parts are written during the run (``run_aa(..., mapping=...)``) and survive a
    fresh clone where the AA frames do not. Bead types and masses (physical masses, dalton)
    come from the mapping spec recorded in run.json (or ``mapping``, a MappingSpec).
    """
    import h5py

    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.data.mapping import MappingSpec

    run_dir = Path(run_dir)
    meta = read_json(run_dir / "run.json")
    if meta is None:
        raise RunError(f"{run_dir} is not an aa-run directory (no run.json)")
    committed = int((read_json(run_dir / PROGRESS_FILE) or {}).get("frames", 0))
    if mapping is None:
        if "mapping" not in meta:
            raise RunError(f"{run_dir} was run without on-the-fly mapping (no cg/ parts); use `cgkd map --run-dir`")
        record = meta["mapping"]
        if "allow_unmapped" not in record:  # recorded before run.json kept the whole spec: the run checked
            record = {**record, "allow_unmapped": True}  # the spec when it started; this rebuilds its beads
        mapping = MappingSpec.from_dict(record, "run.json")
    cgmap = _cg_map(meta, mapping)
    chunks = {k: [] for k in FRAME_FIELDS if k != "positions" and k != "forces"}
    chunks.update(positions=[], forces=[])
    n = 0
    for p in sorted((run_dir / "cg").glob("part_*.h5")):
        first = int(p.stem.split("_")[1])
        if first >= committed:
            break
        if first != n:
            raise RunError(f"{run_dir}/cg: part {p.name} starts at frame {first}, expected {n} (a part is missing)")
        with h5py.File(p, "r") as h5:
            for k in chunks:
                chunks[k].append(h5[k][()])
            n += h5["times"].shape[0]
    n = min(n, committed)
    if n == 0:
        raise RunError(f"{run_dir} holds no committed mapped frames yet")
    arr = {k: np.concatenate(v)[:n] for k, v in chunks.items()}
    # run.json names the system's files relative to the run directory; absolute here, the dataset's
    # save() makes them relative to wherever the dataset is written (e.g. a shipped copy)
    system = anchor_paths(meta["system"], SYSTEM_FILE_KEYS, run_dir)
    prov = {"source": "cgkd aa-run (mapped during the run)", "system": system, "protocol": meta["protocol"],
            "frames_committed": committed, "mapping": meta.get("mapping"),
            "masses": "bead masses and centres from PHYSICAL atomic masses (hydrogen-mass repartitioning, if any, "
                      "was used by the AA integrator only)",
            "forces": "total force-field force per atom summed per bead (constraint forces excluded; they "
                      "cancel within one-molecule beads)"}
    return CGDataset(positions=arr["positions"], forces=arr["forces"], boxes=arr["boxes"], times=arr["times"],
                     bead_types=cgmap.bead_types, type_names=cgmap.type_names, masses=cgmap.bead_masses,
                     potential_energy=arr["potential_energy"], provenance=prov, topology=cgmap.topology,
                     temperature_K=float(meta["protocol"]["temperature_K"]), bead_names=dict(mapping.bead_names))


def topology_record(topology) -> dict:
    """The parts of an OpenMM topology that ``run.json`` keeps beside its residues: element
    symbols (``""`` for a virtual site) and bonds (atom index pairs). Runs started before this
    record existed (OPLS systems) rebuild their topology from the force field."""
    return {"elements": [a.element.symbol if a.element is not None else "" for a in topology.atoms()],
            "bonds": [[b[0].index, b[1].index] for b in topology.bonds()]}


def run_topology(meta: dict):
    """The mdtraj topology of a run from its ``run.json`` (residues, atom names, elements, bonds);
    None for a run without the topology record (an OPLS run from before it existed)."""
    import mdtraj as md

    rec = meta.get("topology")
    if rec is None:
        return None
    top = md.Topology()
    chain = top.add_chain()
    atoms, i = [], 0
    for name, n_atoms, *atom_names in meta["residues"]:
        res = top.add_residue(name, chain)
        for k in range(n_atoms):
            symbol = rec["elements"][i + k]
            element = md.element.get_by_symbol(symbol) if symbol else md.element.virtual
            atoms.append(top.add_atom(atom_names[0][k] if atom_names else str(k), element, res))
        i += n_atoms
    for a, b in rec["bonds"]:
        top.add_bond(atoms[a], atoms[b])
    return top


def _cg_map(meta: dict, mapping):
    from openmm_cgkd.data.mapping import CGMap

    residues, i = [], 0
    for name, n_atoms, *atom_names in meta["residues"]:
        names = atom_names[0] if atom_names else [str(k) for k in range(n_atoms)]
        residues.append((name, [(i + k, names[k]) for k in range(n_atoms)]))
        i += n_atoms
    rec = meta.get("topology")
    if rec is None:  # a run from before the topology record: no bead bonds
        return CGMap.build(mapping, residues, np.asarray(meta["masses"]))
    return CGMap.build(mapping, residues, np.asarray(meta["masses"]), rec["bonds"],
                       np.asarray([e == "H" for e in rec["elements"]], bool))


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


def check_resume(run_dir: str | Path, sysdef, protocol: Protocol, mapping=None) -> dict:
    """The ``run.json`` of the existing run ``run_dir``, after checking that ``protocol`` (but for
    the production length, which a rerun may change), the system (composition, box; for a system
    given by its files, their content) and the use of on-the-fly mapping are those it was started with; :class:`RunError` naming what changed
    otherwise. Reads only; no MD."""
    run_dir = Path(run_dir)
    meta = read_json(run_dir / "run.json")
    if meta is None:
        raise RunError(f"{run_dir} is not an aa-run directory (no run.json)")
    started = {"hot_ps": 0.0, **meta["protocol"]}  # runs from before the hot hold existed had none
    refuse_if_changed({k: v for k, v in started.items() if k != "production_ps"},
                      {k: v for k, v in asdict(protocol).items() if k != "production_ps"},
                      f"{run_dir} was started with a different protocol",
                      "use a new run directory or the original settings", error=RunError)
    def box(value):
        return None if value is None else round(float(value), 9)

    refuse_if_changed({"composition": meta["system"]["composition"], "box_nm": box(meta["system"].get("box_nm"))},
                      {"composition": sysdef.composition, "box_nm": box(sysdef.box_nm if sysdef.periodic else None)},
                      f"{run_dir} was started with another system",
                      "use a new run directory or the original --system / --molecules / --scale", error=RunError)
    if meta["system"].get("kind", "opls") != "opls" and sysdef.kind != "opls":  # given by files: their content
        keys = ("structure_sha256", "forcefield_sha256")
        now = sysdef.to_dict(relative_to=run_dir)
        refuse_if_changed({k: meta["system"].get(k) for k in keys}, {k: now.get(k) for k in keys},
                          f"{run_dir} was started from other files (its structure or force field changed since)",
                          "use a new run directory or restore the original files", error=RunError)
    if (mapping is not None) != ("mapping" in meta):
        raise RunError(f"{run_dir} was started {'with' if 'mapping' in meta else 'without'} on-the-fly mapping; "
                       "resume it the same way")
    if mapping is not None:  # parts mapped two ways would make one dataset of two maps
        recorded = meta["mapping"]  # runs of older versions recorded fewer of the spec's keys: those are compared
        now = {k: v for k, v in mapping.to_dict().items() if k in recorded}
        refuse_if_changed(recorded, now, f"{run_dir} was mapped with another mapping spec",
                          "resume with the spec it was started with, or use a new run directory", error=RunError)
    return meta


def _restore(ctx, run_dir: Path, prog: dict, protocol: Protocol) -> str:
    """Put the run's restart state into ``ctx``: ``checkpoint.chk`` when it was written on this
    platform, loads back exactly and is at the recorded step, else ``state.xml`` at the recorded
    step. Returns the file used; :class:`RunError` when neither loads."""
    import openmm as mm

    chk = run_dir / CHECKPOINT_FILE
    if chk.is_file() and prog.get("platform") == ctx.getPlatform().getName():
        try:
            load_checkpoint(ctx, chk)
            if ctx.getStepCount() == prog["step"]:
                return CHECKPOINT_FILE
        except (CheckpointError, OSError):  # fall back to the portable state
            pass
    try:
        ctx.setState(mm.XmlSerializer.deserialize((run_dir / STATE_FILE).read_text()))
    except Exception as exc:  # noqa: BLE001 - OSError, or OpenMM's reader on a damaged file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"cannot resume {run_dir}: neither {CHECKPOINT_FILE} nor {STATE_FILE} loads ({first}); "
                       "restore them from a copy (e.g. git) or start a new run directory") from None
    ctx.setStepCount(int(prog["step"]))
    ctx.setTime(int(prog["step"]) * protocol.dt_ps)
    return STATE_FILE


def run_aa(run_dir: str | Path, sysdef, protocol: Protocol, structure_pdb: str | Path | None = None, *,
           platform: str | None = None, threads: int | None = None, progress: bool = True,
           mapping=None, stop_after_steps: int | None = None, log=print) -> dict:
    """Run (or resume) the AA protocol in ``run_dir``. Returns a summary dict.

    ``structure_pdb`` (packed and minimised, e.g. from :func:`~openmm_cgkd.data.build.build_box`) is
    needed on the first call only. ``mapping`` (a MappingSpec) maps every part to beads as it is
    written (``cg/part_*.h5``, physical masses), so that the small mapped frames can be kept
    (committed) while the bulky AA frames are not; :func:`read_mapped` reads them back.
    ``stop_after_steps`` stops early after about that many new steps (for tests of resuming);
    the run can be continued by calling again.
    """
    import openmm as mm
    from openmm import unit
    from tqdm import tqdm

    from openmm_cgkd.data.build import read_pdb_positions

    protocol.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    top, system = sysdef.create_openmm()
    periodic = system.usesPeriodicBoundaryConditions()
    masses = [system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())]
    if protocol.hydrogen_mass_da is not None:
        if sysdef.constraints != "HBonds":
            raise ProtocolError("hydrogen-mass repartitioning is meant for runs with H-bond constraints")
        repartition_hydrogen_masses(system, top, protocol.hydrogen_mass_da)

    meta_path = run_dir / "run.json"
    proto_d = asdict(protocol)
    meta = read_json(meta_path)
    if meta is None:
        if structure_pdb is None:
            raise RunError(f"{run_dir} is a new run: give the starting structure (PDB from `cgkd aa-build`)")
        shutil.copyfile(structure_pdb, run_dir / "start.pdb")
        meta = {"protocol": proto_d, "system": sysdef.to_dict(relative_to=run_dir), "masses": masses,
                "masses_note": "physical atomic masses (dalton); the mapping uses these"
                               + ("" if protocol.hydrogen_mass_da is None else
                                  f"; the integrator used hydrogen masses of {protocol.hydrogen_mass_da} Da "
                                  "taken from the bonded heavy atom"),
                "residues": [(r.name, len(list(r.atoms())), [a.name for a in r.atoms()]) for r in top.residues()],
                "topology": topology_record(top),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if mapping is not None:
            meta["mapping"] = mapping.to_dict()  # all of it: read_mapped rebuilds the map from it
        write_json(meta_path, meta)
    else:
        check_resume(run_dir, sysdef, protocol, mapping)
        if meta["protocol"].get("production_ps") != protocol.production_ps:
            meta["protocol"]["production_ps"] = protocol.production_ps
            write_json(meta_path, meta)

    cgmap = _cg_map(meta, mapping) if mapping is not None else None
    plat, props = select_platform(platform, threads)
    if plat.getName() in GPU_PLATFORMS:
        props.setdefault("Precision", "mixed")
    integ = _make_integrator(protocol, protocol.temperature_K)
    ctx = mm.Context(system, integ, plat, props)
    prog = read_json(run_dir / PROGRESS_FILE)
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
        for p in _part_files(run_dir) + sorted((run_dir / "cg").glob("part_*.h5")):
            p.unlink()
    else:
        source = _restore(ctx, run_dir, prog, protocol)
        if ctx.getStepCount() != prog["step"]:
            raise RunError(f"checkpoint is at step {ctx.getStepCount()}, progress.json says {prog['step']}")
        # drop frames written after the last committed progress record
        for p in _part_files(run_dir) + sorted((run_dir / "cg").glob("part_*.h5")):
            if int(p.stem.split("_")[1]) >= prog["frames"]:
                p.unlink()
        (run_dir / "production.h5").unlink(missing_ok=True) if prog["frames"] < protocol.n_frames else None
        log(f"resuming {run_dir} at step {prog['step']} ({prog['frames']} frames written; from {source})")

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
        """The restart set (state.xml, checkpoint.chk, then the progress record) under the run's lock."""
        rate = ns_per_day((step - step0) * protocol.dt_ps, max(time.time() - t_start, 1e-9))
        rec = {"step": step, "frames": frames, "wall_s": round(wall, 2), "platform": plat.getName(),
               "ns_per_day_this_call": round(rate, 3), "threads": props.get("Threads"),
               "phase": "production" if step >= protocol.n_pre else "equilibration",
               "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        save_restart(ctx, run_dir, rec)
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
        buf["boxes"].append(st.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) if periodic
                            else np.zeros((3, 3)))  # all zeros: no periodic box
        buf["potential_energy"].append(st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        buf["times"].append(step * protocol.dt_ps)
        buf["steps"].append(step)
        frames += 1
        if not np.all(np.isfinite(buf["positions"][-1])):
            raise RunError(f"non-finite positions at step {step}: the simulation blew up")
        if len(buf["times"]) >= protocol.checkpoint_every_frames or frames == protocol.n_frames or not budget_left():
            _write_part(run_dir, "frames", first, buf)
            if cgmap is not None:
                _write_mapped_part(run_dir, first, cgmap, buf)
            checkpoint(step, frames, wall_base + time.time() - t_start)
            buf = {f: [] for f in FRAME_FIELDS}
            first = frames
            bar.set_postfix(frames=frames)
    bar.close()
    wall = wall_base + time.time() - t_start
    done = frames >= protocol.n_frames and step >= n_total
    speed = ns_per_day((step - step0) * protocol.dt_ps, max(time.time() - t_start, 1e-9))
    summary = {"run_dir": str(run_dir), "step": step, "frames": frames, "finished": bool(done),
               "wall_s": round(wall, 1), "ns_per_day_this_call": round(speed, 2), "platform": plat.getName()}
    if done:
        try:
            consolidate(run_dir)
            summary["production"] = str(run_dir / "production.h5")
        except RunError:  # AA parts of earlier sessions are not kept (only the mapped ones)
            log(f"note: no production.h5: the AA frames of {run_dir} are not all here"
                + (" (its mapped frames are)" if cgmap is not None else ""))
        if cgmap is not None:
            read_mapped(run_dir, mapping).save(run_dir / "cg.h5")
            summary["mapped"] = str(run_dir / "cg.h5")
    log(json.dumps(summary))
    return summary
