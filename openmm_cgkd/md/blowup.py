"""Diagnosing an MD run that blows up, and warning about a start that will.

:func:`run_simulation <openmm_cgkd.md.simulation.run_simulation>` keeps the state at the start of
every chunk of steps. When a chunk fails (OpenMM's "Particle coordinate is NaN", or a non-finite
energy at a report step), :func:`diagnose_blowup` replays the chunk from that state one step at
a time to find the step where the coordinates or the energy stop being finite, and looks at the
last finite configuration:

* the closest pair of beads (minimum image) against the typical nearest-neighbour distance:
  two beads far closer than their neighbours usually are means overlapping beads (a bad start
  structure, or a wall too weak to keep them apart);
* the largest force F on a bead of mass m: its displacement in one step from that force alone,
  F dt^2 / m (nm, with F in kJ/mol/nm, m in dalton, dt in ps), above :data:`MAX_FORCE_STEP_NM`
  means the time step is too large for these forces;
* the stiffest motion: per bead, k = ``|dF| / |dx|`` between the last two sane steps and
  omega = sqrt(k / m); omega * dt above :data:`MAX_OMEGA_DT` means the time step is too large
  (velocity Verlet is unstable beyond 2);
* the closest pair deep inside its repulsive wall (the pair's wall energy above
  :data:`DEEP_WALL_KT` kT): either the step is too large (beads overshoot into each other) or
  the network pulls the pair in against the wall (a hole in the learned potential at short
  range); a replay with a smaller step tells which (the second fails again);
* a kinetic temperature above :data:`HEATING_FACTOR` times the thermostat's: the integrator
  pumps energy in, the time step is too large;
* a replay of the same stretch with a :data:`SMALLER_STEP_FACTOR` times smaller step that runs
  through also convicts the time step;
* otherwise the network's forces diverged in a configuration far from its training data.

The replay uses new thermostat noise, so the exact step may differ from the original run's;
the diagnosis says when the replay did not fail. :func:`start_warning` flags a start whose
potential energy exceeds :data:`HUGE_ENERGY_PER_BEAD_KJ_MOL` per bead (overlapping beads: the
wall's energy reaches 1e30 kJ/mol and more). Units: nm, ps, kJ/mol, dalton.
"""
from __future__ import annotations

import math

import numpy as np

from openmm_cgkd.fileio import write_json
from openmm_cgkd.geometry import closest_pair, minimum_image
from openmm_cgkd.md.restart import SimulationError
from openmm_cgkd.md.thermo import MOLAR_GAS_CONSTANT_KJ, degrees_of_freedom, temperature_from_kinetic

__all__ = ["BlowUpError", "HUGE_ENERGY_PER_BEAD_KJ_MOL", "MAX_FORCE_STEP_NM", "MAX_OMEGA_DT", "OVERLAP_FRACTION", "closest_pair",
           "start_warning", "diagnose_blowup", "blowup_message", "stop_with_diagnosis"]

HUGE_ENERGY_PER_BEAD_KJ_MOL = 1.0e4  # ~4,000 kT per bead at 300 K: no liquid state has this
MAX_FORCE_STEP_NM = 0.01  # displacement in one step from the force alone (thermal motion: ~1e-3 nm per step)
MAX_OMEGA_DT = 1.0  # omega * dt of the stiffest bead motion; velocity Verlet is unstable beyond 2
HEATING_FACTOR = 1.5  # kinetic temperature above this times the thermostat's before a blow-up: the step heats
SMALLER_STEP_FACTOR = 4  # a replay with this many times smaller a step tells a too-large step from the rest
OVERLAP_FRACTION = 0.5  # closest pair below this fraction of the median nearest-neighbour distance: overlap
THERMAL_STEP_FRACTION = 0.05  # thermal motion of the lightest bead per step above this fraction of the
# neighbour spacing: the step is too large whatever the forces (a 150 fs step with 35 Da beads: 0.1)
DEEP_WALL_KT = 20.0  # the closest pair's wall energy above this many kT: it is deep inside the wall


class BlowUpError(SimulationError):
    """The MD run produced non-finite coordinates or energies; ``diagnosis`` (a dict) says at
    which step, which beads, the closest pair distance and the likely cause."""

    def __init__(self, message: str, diagnosis: dict):
        super().__init__(message)
        self.diagnosis = diagnosis


def _bead_name(topology, i: int) -> str:
    if topology is None or i < 0:
        return f"bead {i}"
    atom = list(topology.atoms())[i]
    return f"bead {i} ({atom.residue.name})"


def _state_arrays(state, periodic: bool):
    from openmm import unit

    pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) if periodic else None
    return np.asarray(pos, dtype=np.float64), None if box is None else np.asarray(box, dtype=np.float64)


def start_warning(simulation, state, minimized: bool = False) -> str | None:
    """A warning (text) when the potential energy of ``state`` exceeds
    :data:`HUGE_ENERGY_PER_BEAD_KJ_MOL` per bead, naming the closest pair; else None.
    ``minimized``: the start was minimised already (no advice to minimise it)."""
    from openmm import unit

    n = simulation.system.getNumParticles()
    pot = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    if not (math.isfinite(pot) and pot > HUGE_ENERGY_PER_BEAD_KJ_MOL * max(n, 1)):
        return None
    pos, box = _state_arrays(state, simulation.system.usesPeriodicBoundaryConditions())
    i, j, d = closest_pair(pos, box)
    return (f"warning: the potential energy at the start is {pot:.3g} kJ/mol ({pot / n:.3g} per bead): "
            f"{_bead_name(simulation.topology, i)} and {_bead_name(simulation.topology, j)} are only {d:.3f} nm "
            "apart. The run will likely blow up; " + (
                "the start was minimised, so the model's repulsive wall does not keep them apart: fix the "
                "structure or the model's wall" if minimized else
                "minimise the start first (cgkd simulate --minimize, or simulation.minimizeEnergy()) or fix the "
                "structure"))


def _sane(state, start_pos: np.ndarray, limit_nm: float) -> bool:
    """Finite positions and energy, and no bead moved more than ``limit_nm`` since ``start_pos``
    (a state with beads flung across the box is already past the blow-up: no use diagnosing it)."""
    from openmm import unit

    pos = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    pot = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    if not (np.all(np.isfinite(pos)) and math.isfinite(pot)):
        return False
    return bool(np.max(np.linalg.norm(pos - start_pos, axis=1)) < limit_nm)


def _pair_distance(pos: np.ndarray, box, i: int, j: int) -> float:
    """Minimum-image distance (nm) of beads i and j (triclinic box rows, or None)."""
    v = np.asarray(pos[j], dtype=np.float64) - np.asarray(pos[i], dtype=np.float64)
    if box is not None:
        v = minimum_image(v, box)
    return float(np.linalg.norm(v))


def pair_wall_energy(system, i: int, j: int, r_nm: float) -> float | None:
    """The repulsive wall's energy (kJ/mol) of beads ``i`` and ``j`` at distance ``r_nm``, read
    from the system's ``cgkd_wall`` force; None when the system has none."""
    from openmm import unit

    from openmm_cgkd.serving.wall_force import WALL_FORCE_NAME

    wall = next((f for f in system.getForces() if f.getName() == WALL_FORCE_NAME), None)
    if wall is None:
        return None
    if r_nm >= wall.getCutoffDistance().value_in_unit(unit.nanometer):
        return 0.0
    ti, tj = int(wall.getParticleParameters(i)[0]), int(wall.getParticleParameters(j)[0])
    tables = {}
    for k in range(wall.getNumTabulatedFunctions()):
        nx, _ny, values = wall.getTabulatedFunction(k).getFunctionParameters()
        tables[wall.getTabulatedFunctionName(k)] = values[ti + nx * tj]
    c, r0, a, shift = (tables[n] for n in ("wall_C", "wall_r0", "wall_a", "wall_S"))
    return float(c * math.exp(min(-a * (r_nm - r0), 700.0)) - shift)


def diagnose_blowup(simulation, good_state, good_step: int, max_steps: int, minimized: bool = False) -> dict:
    """Replay up to ``max_steps`` steps from ``good_state`` (taken at step ``good_step``) one at a
    time; return the diagnosis of the last sane configuration (finite, no bead moved more than
    half the box since ``good_state``; see the module doc). ``minimized``: the start was energy
    minimised (no advice to minimise it again)."""
    import openmm
    from openmm import unit

    ctx = simulation.context
    periodic = simulation.system.usesPeriodicBoundaryConditions()
    ctx.setState(good_state)
    ctx.setStepCount(int(good_step))
    last = ctx.getState(getPositions=True, getEnergy=True, getForces=True)
    start_pos, start_box = _state_arrays(last, periodic)
    limit = 0.5 * float(np.min(np.linalg.norm(start_box, axis=1))) if start_box is not None else 1.0
    last_step, bad_step, prev = int(good_step), None, None
    for s in range(1, int(max_steps) + 1):
        try:
            simulation.integrator.step(1)
            st = ctx.getState(getPositions=True, getEnergy=True, getForces=True)
            ok = _sane(st, start_pos, limit)
        except openmm.OpenMMException:
            ok = False
        if not ok:
            bad_step = int(good_step) + s
            break
        prev, last, last_step = last, st, int(good_step) + s

    pos, box = _state_arrays(last, periodic)
    i, j, d = closest_pair(pos, box)
    from openmm_cgkd.plausibility import median_nearest_neighbor_nm

    nn = median_nearest_neighbor_nm(pos, box)
    forces = np.asarray(last.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
    fmag = np.linalg.norm(forces, axis=1)
    fmag[~np.isfinite(fmag)] = np.inf
    k = int(np.argmax(fmag))
    mass = simulation.system.getParticleMass(k).value_in_unit(unit.dalton)
    dt = simulation.integrator.getStepSize().value_in_unit(unit.picosecond)
    step_nm = float(fmag[k] * dt * dt / mass) if mass > 0 else float("inf")
    omega_dt, kb = _stiffness(simulation, prev, last, dt)
    temp, target = _temperatures(simulation, last)
    heated = target is not None and temp > HEATING_FACTOR * target
    kt = MOLAR_GAS_CONSTANT_KJ * (target if target is not None else 300.0)  # kJ/mol
    masses = [simulation.system.getParticleMass(b).value_in_unit(unit.dalton)
              for b in range(simulation.system.getNumParticles())]
    lightest = min((m for m in masses if m > 0), default=float("inf"))
    thermal_step_nm = math.sqrt(kt / lightest) * dt  # thermal speed (nm/ps) x step (ps)
    step_too_long = np.isfinite(nn) and thermal_step_nm > THERMAL_STEP_FRACTION * nn
    # the closest pair deep inside its wall now but not when the replay started: pulled in (or overshot)
    wall_e = pair_wall_energy(simulation.system, i, j, d) if np.isfinite(d) else None
    d_start = _pair_distance(start_pos, start_box, i, j)
    wall_e_start = pair_wall_energy(simulation.system, i, j, d_start)
    pulled = (wall_e is not None and wall_e > DEEP_WALL_KT * kt
              and not (wall_e_start is not None and wall_e_start > DEEP_WALL_KT * kt))
    smaller_dt_passes = None
    if bad_step is not None and (pulled or (d >= OVERLAP_FRACTION * nn and step_nm <= MAX_FORCE_STEP_NM
                                            and omega_dt <= MAX_OMEGA_DT and not heated)):
        smaller_dt_passes = _replay_with_smaller_step(simulation, good_state, good_step, bad_step - good_step,
                                                      start_pos, limit, (i, j) if pulled else None,
                                                      DEEP_WALL_KT * kt)
    pot = last.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    top = simulation.topology
    if step_too_long:
        cause = (f"the time step ({dt * 1000:g} fs) is far too large: in one step the lightest bead ({lightest:g} Da) "
                 f"moves {thermal_step_nm:.3g} nm by thermal motion alone, {thermal_step_nm / nn:.0%} of the typical "
                 f"neighbour distance {nn:.3f} nm (keep it under {THERMAL_STEP_FRACTION:.0%}); try a smaller "
                 "--timestep (and check it with the time-step check)")
    elif pulled and smaller_dt_passes is False:
        cause = (f"a pair pulled into its repulsive wall: {_bead_name(top, i)} and {_bead_name(top, j)} are {d:.3f} nm "
                 f"apart, deep inside the wall (its energy {wall_e:.3g} kJ/mol = {wall_e / kt:.3g} kT; {d_start:.3f} nm "
                 f"at step {int(good_step)}), and a replay with a {SMALLER_STEP_FACTOR}x smaller step failed too: the "
                 "network's forces drive the pair together (a hole in the learned potential at short range, where "
                 "the training data has no pairs); a smaller time step will not help")
    elif d < OVERLAP_FRACTION * nn:
        cause = (f"overlapping beads: {_bead_name(top, i)} and {_bead_name(top, j)} are {d:.3f} nm apart while "
                 f"neighbours are typically {nn:.3f} nm apart; " + (
                     "the start was minimised, so the model's repulsive wall does not keep them apart: fix the "
                     "structure or the model's wall" if minimized else
                     "the start structure has overlapping beads or the model's repulsive wall does not keep them "
                     "apart (minimise the start with --minimize, or fix the structure)")
                 + "; a smaller time step will not help")
    elif pulled and smaller_dt_passes:
        cause = (f"the time step ({dt * 1000:g} fs) is too large: {_bead_name(top, i)} and {_bead_name(top, j)} "
                 f"overshot deep into their repulsive wall ({d:.3f} nm apart, wall energy {wall_e:.3g} kJ/mol), "
                 f"and a replay of the same stretch with a {SMALLER_STEP_FACTOR}x smaller step ran through; try a "
                 "smaller --timestep")
    elif step_nm > MAX_FORCE_STEP_NM:
        cause = (f"the time step ({dt * 1000:g} fs) is too large for these forces: the largest force, "
                 f"{fmag[k]:.3g} kJ/mol/nm on {_bead_name(top, k)} ({mass:g} Da), moves it {step_nm:.3g} nm in "
                 "one step; try a smaller --timestep")
    elif omega_dt > MAX_OMEGA_DT:
        cause = (f"the time step ({dt * 1000:g} fs) is too large for the stiffest motion: the force on "
                 f"{_bead_name(top, kb)} changes as a spring with omega * dt = {omega_dt:.2f} per step (stable "
                 f"integration needs well below {MAX_OMEGA_DT:g}); try a smaller --timestep")
    elif heated:
        cause = (f"the time step ({dt * 1000:g} fs) is too large: the system heated up to {temp:.0f} K before it "
                 f"blew up, with the thermostat at {target:g} K (the integrator pumps energy in); try a smaller "
                 "--timestep")
    elif smaller_dt_passes:
        cause = (f"the time step ({dt * 1000:g} fs) is too large: a replay of the same stretch with a "
                 f"{SMALLER_STEP_FACTOR}x smaller step ran through (the largest force before the blow-up was "
                 f"{fmag[k]:.3g} kJ/mol/nm on {_bead_name(top, k)}); try a smaller --timestep")
    else:
        cause = (f"the network's forces diverged without overlapping beads (largest force {fmag[k]:.3g} kJ/mol/nm "
                 f"on {_bead_name(top, k)}): the configuration left the region the model was trained on; check "
                 "that the model fits this state point, or try a smaller --timestep")
    return {"failed_at_step": bad_step, "last_sane_step": last_step, "replay_from_step": int(good_step),
            "replay_reproduced": bad_step is not None,
            "closest_pair": {"beads": [i, j], "names": [_bead_name(top, i), _bead_name(top, j)],
                             "distance_nm": d},
            "median_nearest_neighbor_nm": nn,
            "largest_force": {"bead": k, "name": _bead_name(top, k), "kj_mol_nm": float(fmag[k]),
                              "mass_dalton": mass, "displacement_per_step_nm": step_nm},
            "closest_pair_wall_energy_kj_mol": wall_e,
            "temperature_k": temp, "thermostat_k": target, "max_omega_dt": omega_dt, "thermal_step_nm": thermal_step_nm,
            "smaller_step_replay_passes": smaller_dt_passes, "potential_kj_mol": float(pot), "likely_cause": cause, "last_sane_positions_nm": pos, "box_nm": box}


def _replay_with_smaller_step(simulation, good_state, good_step: int, n_steps: int, start_pos, limit: float,
                              pair: tuple[int, int] | None = None, max_wall_kj_mol: float = math.inf) -> bool:
    """Whether ``n_steps`` steps' worth of time from ``good_state`` run through with a time step
    :data:`SMALLER_STEP_FACTOR` times smaller (the integrator's step is restored afterwards); with
    ``pair``, also that the pair does not end with a wall energy above ``max_wall_kj_mol`` (trapped
    deep in the wall at any check, every 50 steps, is not running through; the replay then lasts
    twice as long: the smaller step's more accurate trajectory may arrive later)."""
    import openmm

    integ, ctx = simulation.integrator, simulation.context
    dt = integ.getStepSize()
    try:
        integ.setStepSize(dt / SMALLER_STEP_FACTOR)
        ctx.setState(good_state)
        ctx.setStepCount(int(good_step))
        todo = int(n_steps) * SMALLER_STEP_FACTOR * (1 if pair is None else 2)
        periodic = simulation.system.usesPeriodicBoundaryConditions()
        while todo > 0:
            k = min(todo, 50)
            integ.step(k)
            todo -= k
            st = ctx.getState(getPositions=True, getEnergy=True)
            if not _sane(st, start_pos, limit):
                return False
            if pair is not None:
                pos, box = _state_arrays(st, periodic)
                e = pair_wall_energy(simulation.system, pair[0], pair[1], _pair_distance(pos, box, *pair))
                if e is not None and e > max_wall_kj_mol:
                    return False
        return True
    except openmm.OpenMMException:
        return False
    finally:
        integ.setStepSize(dt)


def _temperatures(simulation, state) -> tuple[float, float | None]:
    """(kinetic temperature of ``state``, the integrator's thermostat temperature or None), K."""
    from openmm import unit

    kin = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    temp = temperature_from_kinetic(kin, degrees_of_freedom(simulation.system))
    integ = simulation.integrator
    target = integ.getTemperature().value_in_unit(unit.kelvin) if hasattr(integ, "getTemperature") else None
    return float(temp), target


def _stiffness(simulation, prev, last, dt: float) -> tuple[float, int]:
    """(largest omega * dt, its bead): per bead, the stiffness k = |dF| / |dx| between the last two
    sane states and omega = sqrt(k / m); (0, -1) when there is only one state."""
    from openmm import unit

    if prev is None:
        return 0.0, -1
    x0 = np.asarray(prev.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    x1 = np.asarray(last.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    kjn = unit.kilojoule_per_mole / unit.nanometer
    f0 = np.asarray(prev.getForces(asNumpy=True).value_in_unit(kjn))
    f1 = np.asarray(last.getForces(asNumpy=True).value_in_unit(kjn))
    dx = np.linalg.norm(x1 - x0, axis=1)
    df = np.linalg.norm(f1 - f0, axis=1)
    m = np.array([simulation.system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(len(dx))])
    ok = (dx > 1e-9) & (m > 0)
    if not np.any(ok):
        return 0.0, -1
    w = np.zeros(len(dx))
    w[ok] = np.sqrt(df[ok] / dx[ok] / m[ok]) * dt
    kb = int(np.argmax(w))
    return float(w[kb]), kb


def blowup_message(diag: dict, original: Exception) -> str:
    """One paragraph: where it blew up, the closest pair, the likely cause."""
    where = (f"at step {diag['failed_at_step']}" if diag["replay_reproduced"] else
             f"after step {diag['replay_from_step']} (a replay from there with new thermostat noise did not fail; "
             f"diagnosis of the state at step {diag['last_sane_step']})")
    first = str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
    first = first.split(". ")[0].rstrip(".")  # OpenMM's NaN message ends with a link to its FAQ
    cp = diag["closest_pair"]
    return (f"the simulation blew up {where}: {first}. Closest pair: {cp['names'][0]} and {cp['names'][1]}, "
            f"{cp['distance_nm']:.3f} nm apart. Likely cause: {diag['likely_cause']}")


def stop_with_diagnosis(simulation, good_state, good_step: int, max_steps: int, original: Exception,
                        out_dir, run_info: dict, minimized: bool = False) -> BlowUpError:
    """Diagnose a failed chunk, write ``out_dir/last_sane.pdb`` (the last sane configuration)
    and ``out_dir/run.json`` (``run_info`` plus ``failed: true`` and the diagnosis); return the
    :class:`BlowUpError` to raise. Call it after the reporters are closed."""
    from pathlib import Path

    from openmm_cgkd.topology import write_bead_pdb

    out = Path(out_dir)
    diag = diagnose_blowup(simulation, good_state, good_step, max_steps, minimized=minimized)
    pos, box = diag.pop("last_sane_positions_nm"), diag.pop("box_nm")
    try:
        write_bead_pdb(out / "last_sane.pdb", simulation.topology, pos, box)
        diag["last_sane_structure"] = "last_sane.pdb"  # relative to the run directory, as run.json's other paths
    except Exception:  # noqa: BLE001 - the structure is a convenience; the diagnosis must still be written
        diag["last_sane_structure"] = None
    message = blowup_message(diag, original)
    record = {**run_info, "failed": True, "error": message, "diagnosis": diag}
    write_json(out / "run.json", record, indent=2)
    return BlowUpError(message, diag)
