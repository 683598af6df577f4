"""AA trajectories with forces: our OpenMM runs, GROMACS TRR files, mdtraj/OpenMM trajectories.

Everything is converted to an :class:`AATrajectory` in nm, ps, kJ/mol/nm, dalton, ready for
:func:`openmm_cgkd.data.mapping.map_trajectory`. Errors are explicit when forces are absent,
when atom counts disagree with the topology, or when units look wrong.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from openmm_cgkd.errors import CGKDError, MissingFileError
from openmm_cgkd.quiet import filtered_native_output

__all__ = ["AATrajectory", "InputError", "load_run", "load_trajectory", "read_trr", "read_topology",
           "read_masses", "read_mdp_temperature", "FORCE_UNITS", "TIMELESS_SUFFIXES"]

# trajectory formats that store no frame times (mdtraj numbers their frames 0, 1, 2, ... "ps"):
# their times are frame index x --timestep-ps
TIMELESS_SUFFIXES = (".dcd", ".pdb", ".xyz", ".binpos", ".arc", ".lammpstrj", ".mol2")

# conversion factors to kJ/mol/nm
FORCE_UNITS = {"kJ/mol/nm": 1.0, "kJ/mol/A": 10.0, "kcal/mol/A": 41.84, "kcal/mol/nm": 4.184}
# RMS atomic force (per Cartesian component) of a molecular liquid near room temperature, kJ/mol/nm.
# Measured on reline (OPLS-DES, 298 K): 590 with H-bond constraints, 750 without. Forces in kcal/mol/A
# read as kJ/mol/nm come out 41.84x too small (~15), kJ/mol/A 10x (~60), and kJ/mol/nm read as
# kcal/mol/A 41.84x too large (~25,000): all outside this range. Weakly bound systems (noble-gas
# liquids, ~20-50) need check_units=False (--no-unit-check).
PLAUSIBLE_RMS_FORCE = (100.0, 1.0e4)


class InputError(CGKDError, ValueError):
    """An AA input is missing forces, has mismatched atoms, or implausible units."""

    exit_code = 2  # bad input: usage error


@dataclass
class AATrajectory:
    topology: object  # mdtraj.Topology
    masses: np.ndarray  # (n_atoms,) dalton
    positions: np.ndarray  # (F, n_atoms, 3) nm
    forces: np.ndarray  # (F, n_atoms, 3) kJ/mol/nm
    boxes: np.ndarray  # (F, 3, 3) nm, rows are box vectors; all zeros: no periodic box
    times: np.ndarray  # (F,) ps
    potential_energy: np.ndarray | None = None  # (F,) kJ/mol
    provenance: dict = field(default_factory=dict)
    temperature_K: float | None = None  # the run's thermostat temperature (K); None: unknown

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions)
        self.forces = np.asarray(self.forces)
        self.boxes = np.asarray(self.boxes)
        self.times = np.asarray(self.times, dtype=np.float64)
        self.masses = np.asarray(self.masses, dtype=np.float64)

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[1])

    def validate(self, check_units: bool = True) -> "AATrajectory":
        if self.positions.ndim != 3 or self.positions.shape[2] != 3:
            raise InputError(f"positions must be (frames, atoms, 3), got {self.positions.shape}")
        f, n = self.positions.shape[:2]
        if f == 0:
            raise InputError("the trajectory has no frames")
        if self.topology.n_atoms != n:
            raise InputError(f"the topology has {self.topology.n_atoms} atoms but the trajectory has {n}")
        if self.forces.shape != self.positions.shape:
            raise InputError(f"forces have shape {self.forces.shape}; positions have {self.positions.shape} "
                             "(frame and atom counts must agree)")
        if self.masses.shape != (n,):
            raise InputError(f"{self.masses.shape[0]} masses for {n} atoms")
        if self.boxes.shape != (f, 3, 3):
            raise InputError(f"boxes must be (frames, 3, 3) nm (all zeros for a system without a periodic box), "
                             f"got {self.boxes.shape}")
        if self.times.shape != (f,):
            raise InputError(f"times must be (frames,), got {self.times.shape}")
        for name in ("positions", "forces", "boxes"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise InputError(f"{name} contain NaN/inf")
        if self.forces.shape != self.positions.shape:
            raise InputError(f"forces have shape {self.forces.shape}; the positions {self.positions.shape}")
        if self.potential_energy is not None:
            energy = np.asarray(self.potential_energy)
            if energy.shape != (f,):
                raise InputError(f"the potential energies have shape {energy.shape}; the trajectory has {f} frames: "
                                 "one energy per frame is needed (or none)")
            if not np.all(np.isfinite(energy)):
                raise InputError("the potential energies contain NaN/inf")
        lengths = np.linalg.norm(self.boxes, axis=2)
        periodic = bool(np.any(lengths > 0))
        if periodic and np.any(lengths <= 0):
            raise InputError("box vectors must be non-zero in every frame (or zero in all: no periodic box)")
        if check_units and periodic:
            med = float(np.median(lengths))
            if not 0.5 <= med <= 1000.0:
                raise InputError(f"median box length {med:g} is implausible in nm (Angstrom input?)")
            # condensed phases hold ~30-150 atoms/nm^3; Angstrom read as nm gives 1000x less
            dens = n / float(np.median(np.abs(np.linalg.det(self.boxes))))
            if not 5.0 <= dens <= 1000.0:
                raise InputError(f"{dens:.3g} atoms/nm^3 is implausible for a liquid: are positions/box in nm "
                                 "(Angstrom input?)? Pass --no-unit-check for dilute systems")
            rms = float(np.sqrt(np.mean(np.asarray(self.forces, dtype=np.float64) ** 2)))
            if rms == 0:
                raise InputError("the forces are all zero: nothing to map or train on; were they written?")
            lo, hi = PLAUSIBLE_RMS_FORCE
            if not lo <= rms <= hi:
                why = ("too SMALL: forces in kcal/mol/A read as kJ/mol/nm are 41.84x too small" if rms < lo else
                       "too LARGE: forces in kJ/mol/nm declared as kcal/mol/A (or converted twice) are 41.84x too "
                       "large")
                raise InputError(f"RMS atomic force {rms:.3g} kJ/mol/nm (per component) is implausible for a "
                                 f"molecular liquid (expected {lo:g}-{hi:g}; reline at 298 K: 590), {why}. Declare "
                                 "the unit of the force array (--force-unit), or pass --no-unit-check for weakly "
                                 "bound systems (e.g. noble-gas liquids)")
        return self


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (third-party readers write pages)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if "pytables" in str(exc).lower() or "tables" == (getattr(exc, "name", None) or "") or "No module named 'tables'" in str(exc):
        return "mdtraj reads .h5 trajectories with PyTables, which is not installed; give a DCD/XTC/TRR trajectory"
    return lines[0][:300]


def read_masses(path: str | Path) -> np.ndarray:
    """Per-atom masses (dalton) from a .npy file or a text file of numbers."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"masses file not found: {path}")
    try:
        masses = np.load(path) if path.suffix == ".npy" else np.loadtxt(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        raise InputError(f"could not read masses from {path}: {exc} (.npy, or text with one number per atom)") from exc
    masses = np.asarray(masses, dtype=np.float64).ravel()
    if masses.size == 0 or not np.all(np.isfinite(masses)) or np.any(masses <= 0):
        raise InputError(f"{path}: masses must be positive finite numbers (dalton)")
    return masses


def read_mdp_temperature(path: str | Path) -> float:
    """The thermostat temperature (K) of a GROMACS .mdp file: its ``ref_t`` (``ref-t``), one value
    per coupling group; :class:`InputError` when there is none or the groups differ."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f".mdp file not found: {path}")
    values = None
    for line in path.read_text(errors="replace").splitlines():
        key, eq, value = line.split(";", 1)[0].partition("=")
        if eq and key.strip().lower().replace("-", "_") == "ref_t":
            try:
                values = [float(v) for v in value.split()]
            except ValueError:
                raise InputError(f"{path}: ref_t = {value.strip()!r} is not a list of temperatures (K)") from None
    if not values:
        raise InputError(f"{path} sets no ref_t (thermostat temperature): give --temperature K instead")
    if max(values) - min(values) > 1e-6:
        raise InputError(f"{path}: ref_t differs between coupling groups ({values}): give --temperature K")
    if not values[0] > 0:
        raise InputError(f"{path}: ref_t {values[0]} K is not a positive temperature")
    return float(values[0])


def is_force_file(path: str | Path) -> bool:
    """Whether ``path`` is an HDF5 file of :class:`openmm_cgkd.data.reporter.ForceReporter`."""
    path = Path(path)
    if path.suffix not in (".h5", ".hdf5") or not path.is_file():
        return False
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            return {"positions", "forces", "boxes", "times"} <= set(h5)
    except OSError:
        return False


def _read_force_h5(path: Path) -> dict:
    """positions, forces, boxes, times, potential_energy and temperature_K of a ForceReporter file."""
    import h5py

    with h5py.File(path, "r") as h5:
        out = {k: h5[k][()] for k in ("positions", "forces", "boxes", "times")}
        out["potential_energy"] = h5["potential_energy"][()] if "potential_energy" in h5 else None
        out["masses"] = h5["masses"][()] if "masses" in h5 else None  # files written before it was recorded: none
        t = h5.attrs.get("temperature_K")
        out["temperature_K"] = None if t is None or not np.isfinite(t) else float(t)
    return out


def read_topology(path: str | Path):
    """(mdtraj Topology, masses dalton or None) from .gro / .pdb / .top (+ anything mdtraj reads).

    Masses come from the .top file's atom records; a .pdb or .gro carries none (None): masses are
    never taken from elements, which are wrong for united atoms, virtual sites and repartitioned
    hydrogens (give them with ``--masses``, or record them with the ForceReporter).
    """
    import mdtraj as md

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"topology file not found: {path}")
    if path.suffix == ".top":
        from openmm.app import GromacsTopFile
        from openmm import unit

        try:
            top = GromacsTopFile(str(path))
            system = top.createSystem()
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"could not read GROMACS topology {path}: {exc} (give a .gro/.pdb instead, "
                             "with --masses if needed)") from exc
        masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])
        return md.Topology.from_openmm(top.topology), masses
    try:
        top = md.load_topology(str(path))
    except Exception as exc:  # noqa: BLE001 - mdtraj raises many types for unreadable files
        raise InputError(f"could not read topology {path}: {exc} (give a .gro, .pdb or .top file)") from exc
    if top.n_atoms == 0:
        raise InputError(f"topology {path} holds no atoms")
    return top, None


def read_trr(path: str | Path):
    """(positions nm, forces kJ/mol/nm, boxes nm, times ps) from a GROMACS TRR WITH forces."""
    from mdtraj.formats import TRRTrajectoryFile

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"TRR file not found: {path}")
    try:
        fh = TRRTrajectoryFile(str(path))
    except Exception as exc:  # noqa: BLE001 - mdtraj raises many types for unreadable files
        raise InputError(f"could not read {path} as a GROMACS TRR file: {_first_line(exc)}") from None
    with fh:
        _, has_forces = fh._check_has_velocities_forces()
        if not has_forces:
            raise InputError(f"{path} holds no forces: write them in GROMACS with nstfout > 0 "
                             "(and the same frequency as nstxout), or rerun with `gmx mdrun -rerun`")
        parts = []
        while True:
            try:
                chunk = fh._read(1000, None, get_velocities=False, get_forces=True)
            except (RuntimeError, OSError, ValueError) as exc:  # mdtraj's xdrfile: "TRR read error" and kin
                read = sum(len(p[0]) for p in parts)
                raise InputError(f"{path} is truncated or damaged: reading failed after {read} complete frame "
                                 f"chunk(s) ({_first_line(exc)}); copy it again or cut it to its whole frames "
                                 "(gmx trjconv)") from None
            if len(chunk[0]) == 0:
                break
            parts.append(chunk)
    if not parts:
        raise InputError(f"{path} holds no frames")
    xyz = np.concatenate([p[0] for p in parts])
    time = np.concatenate([p[1] for p in parts])
    box = np.concatenate([p[3] for p in parts])
    forces = None if any(p[6] is None for p in parts) else np.concatenate([p[6] for p in parts])
    if forces is None or len(forces) != len(xyz):
        raise InputError(f"{path}: not every frame carries forces (set nstfout = nstxout)")
    return xyz, forces, box, np.asarray(time, dtype=np.float64)


def load_trajectory(trajectory: str | Path, topology: str | Path, *, forces=None, force_unit: str = "kJ/mol/nm",
                    masses: np.ndarray | None = None, timestep_ps: float | None = None,
                    check_units: bool = True, mdp: str | Path | None = None) -> AATrajectory:
    """A GROMACS TRR (forces inside), a :class:`~openmm_cgkd.data.reporter.ForceReporter` HDF5
    file, or any mdtraj trajectory plus a force array/file.

    Frame times: the file's own; for formats that store none (:data:`TIMELESS_SUFFIXES`, e.g.
    DCD) frame index x ``timestep_ps`` (required there for more than one frame). ``mdp``: the
    GROMACS .mdp of the run, whose ``ref_t`` is the data's temperature. Atom masses (dalton):
    ``masses`` when given, else the .top topology's, else those a ForceReporter file recorded;
    never from elements (:class:`InputError` when none of these has them)."""
    import mdtraj as md

    trajectory = Path(trajectory)
    top, top_masses = read_topology(topology)
    if masses is None:
        masses = top_masses
    if force_unit not in FORCE_UNITS:
        raise InputError(f"force unit {force_unit!r} not one of {list(FORCE_UNITS)}")
    temperature, t_source = (read_mdp_temperature(mdp), f"ref_t of {mdp}") if mdp else (None, None)
    if is_force_file(trajectory) and forces is None:
        rec = _read_force_h5(trajectory)
        xyz, frc, box, times, energy = (rec[k] for k in ("positions", "forces", "boxes", "times", "potential_energy"))
        if rec["temperature_K"] is not None:
            if temperature is not None and abs(temperature - rec["temperature_K"]) > 1e-6:
                raise InputError(f"{mdp} says {temperature:g} K, {trajectory} {rec['temperature_K']:g} K")
            temperature, t_source = rec["temperature_K"], f"the integrator of {trajectory.name}"
        if masses is None and rec["masses"] is not None:  # the System's masses, as the reporter recorded them
            masses = rec["masses"]
        if xyz.shape[1] != top.n_atoms:
            raise InputError(f"{trajectory} has {xyz.shape[1]} atoms; topology {topology} has {top.n_atoms}")
    elif trajectory.suffix == ".trr" and forces is None:
        xyz, frc, box, times = read_trr(trajectory)
        energy = None
        if xyz.shape[1] != top.n_atoms:
            raise InputError(f"{trajectory} has {xyz.shape[1]} atoms; topology {topology} has {top.n_atoms}")
    else:
        if forces is None:
            raise InputError(f"{trajectory} carries no forces: give a force array (--forces F.npy, "
                             "(frames, atoms, 3)) or use a TRR written with forces")
        if not trajectory.is_file():
            raise MissingFileError(f"trajectory not found: {trajectory}")
        try:
            with filtered_native_output():  # mdtraj's DCD reader prints "dcdplugin) ..." lines from C
                traj = md.load(str(trajectory), top=top)
        except Exception as exc:  # noqa: BLE001 - mdtraj raises many types for unreadable or mismatched files
            raise InputError(f"could not read {trajectory} with topology {topology}: {_first_line(exc)}") from None
        xyz = traj.xyz
        # no box: a solute in vacuum or implicit solvent (a non-periodic dataset)
        box = np.zeros((traj.n_frames, 3, 3)) if traj.unitcell_vectors is None else traj.unitcell_vectors
        times = np.asarray(traj.time, dtype=np.float64)
        frc, energy = _read_force_array(forces)
        frc = frc * FORCE_UNITS[force_unit]
        if frc.ndim != 3 or frc.shape[2] != 3:
            raise InputError(f"the force array must have shape (frames, atoms, 3), got {frc.shape}")
        if frc.shape[0] != xyz.shape[0]:
            raise InputError(f"forces have {frc.shape[0]} frames; the trajectory has {xyz.shape[0]}")
    if trajectory.suffix.lower() in TIMELESS_SUFFIXES and len(times) > 1:
        if timestep_ps is None:
            raise InputError(f"{trajectory.suffix} files store no frame times: give --timestep-ps, the time between "
                             "saved frames in ps (e.g. the reporter interval x the MD time step)")
        times = np.arange(len(times)) * timestep_ps
    elif timestep_ps and (len(times) > 1 and np.all(times == times[0])):
        times = np.arange(len(times)) * timestep_ps
    elif len(times) > 1 and np.any(np.diff(times) <= 0):
        if timestep_ps is None:
            raise InputError("frame times are not increasing: give --timestep-ps")
        times = np.arange(len(times)) * timestep_ps
    if masses is None:
        raise InputError(f"no atom masses: the topology {Path(topology).name} ({Path(topology).suffix or 'no suffix'}) "
                         "carries none and masses are never taken from elements (wrong for united atoms, virtual "
                         "sites, repartitioned hydrogens): give --masses FILE (dalton per atom, .npy or text), a "
                         "GROMACS .top topology, or a ForceReporter file (it records the System's masses)")
    prov = {"source": str(trajectory), "topology": str(topology), "force_unit_in": force_unit}
    if temperature is not None:
        prov["temperature_source"] = t_source
    aa = AATrajectory(top, masses, xyz, frc, box, times, energy, prov, temperature)
    return aa.validate(check_units)


def _read_force_array(forces):
    if isinstance(forces, np.ndarray):
        return np.asarray(forces, dtype=np.float64), None
    path = Path(forces)
    if not path.is_file():
        raise MissingFileError(f"force file not found: {path}")
    try:
        return _read_force_file(path)
    except (InputError, MissingFileError):
        raise
    except Exception as exc:  # noqa: BLE001 - numpy / h5py raise many types for unreadable files
        raise InputError(f"could not read forces from {path}: {_first_line(exc)} (.npy, or .npz/.h5 with a 'forces' "
                         "array of shape (frames, atoms, 3))") from exc


def _read_force_file(path: Path):
    if path.suffix == ".npy":
        return np.load(path).astype(np.float64), None
    if path.suffix == ".npz":
        z = np.load(path)
        if "forces" not in z:
            raise InputError(f"{path} has no 'forces' array (keys: {list(z.keys())})")
        return z["forces"].astype(np.float64), (z["potential_energy"] if "potential_energy" in z else None)
    import h5py

    with h5py.File(path, "r") as h5:
        if "forces" not in h5:
            raise InputError(f"{path} has no 'forces' dataset (datasets: {list(h5.keys())})")
        return h5["forces"][()].astype(np.float64), (h5["potential_energy"][()] if "potential_energy" in h5 else None)


def load_run(run_dir: str | Path, max_frames: int | None = None, check_units: bool = True) -> AATrajectory:
    """The committed production frames of a ``cgkd aa-run`` directory (finished or not)."""
    import mdtraj as md

    from openmm_cgkd.data.aamd import read_frames, run_topology
    from openmm_cgkd.data.opls import build_topology
    from openmm_cgkd.data.systemdef import SystemDefinition

    run_dir = Path(run_dir)
    meta_path = run_dir / "run.json"
    if not meta_path.is_file():
        raise InputError(f"{run_dir} is not an aa-run directory (no run.json)")
    try:
        meta = json.loads(meta_path.read_text())
        sysd, _, _ = meta["system"], meta["protocol"], meta["masses"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{meta_path} is not the run.json of a `cgkd aa-run` directory: {exc!r}") from None
    fr = read_frames(run_dir, max_frames)
    top = run_topology(meta)
    if top is None:  # an OPLS run from before run.json kept its topology: rebuilt from the force field
        sysdef = SystemDefinition(name=sysd["name"], forcefield_path=run_dir / sysd["forcefield"],
                                  composition=sysd["composition"], box_nm=sysd["box_nm"])
        if not sysdef.forcefield_path.is_file():  # run directory moved: the same file of a registered system
            from openmm_cgkd.systems import find_system_file

            sysdef.forcefield_path = find_system_file(sysdef.forcefield_path.name, sysd.get("forcefield_sha256"))
        top = md.Topology.from_openmm(build_topology(sysdef.forcefield, sysdef.composition))
    progress = json.loads((run_dir / "progress.json").read_text()) if (run_dir / "progress.json").is_file() else {}
    from openmm_cgkd.data.aamd import SYSTEM_FILE_KEYS
    from openmm_cgkd.fileio import anchor_paths

    prov = {"source": "cgkd aa-run", "run_dir": str(run_dir.resolve()),
            "system": anchor_paths(sysd, SYSTEM_FILE_KEYS, run_dir), "protocol": meta["protocol"],
            "frames_committed": int(progress.get("frames", len(fr["times"]))), "wall_s": progress.get("wall_s"),
            "platform": progress.get("platform"), "force_field": sysd.get("forcefield"), "forces": "total force-field force per atom "
            "(constraint forces excluded; the mapping checks that every constrained pair lies within one bead)"}
    prov["temperature_source"] = "the aa-run protocol"
    aa = AATrajectory(top, np.asarray(meta["masses"]), fr["positions"], fr["forces"], fr["boxes"], fr["times"],
                      fr["potential_energy"], prov, float(meta["protocol"]["temperature_K"]))
    return aa.validate(check_units)
