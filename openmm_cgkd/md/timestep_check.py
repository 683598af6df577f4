"""Is a CG time step safe? A short NVT and NVE run of a bundle at that step.

CG beads weigh 35-104 Da (the DES), so steps longer than the 2 fs of atomistic MD may be
possible; :func:`check_timestep` shows whether one is, on the model itself:

1. **NVT** (``LangevinMiddleIntegrator``, the integrator of the MD stage) for ``nvt_ps`` from the
   given start: the mean kinetic temperature over its second half against the thermostat's
   (a step too long heats the system; LangevinMiddle keeps the configurational sampling exact,
   so a biased kinetic temperature is the integrator's error);
2. **NVE** (``VerletIntegrator``: velocity Verlet) for ``nve_ps`` from the end of the NVT run,
   without the centre-of-mass motion remover: the drift of the total energy, the slope of a
   straight-line fit, in kJ/mol per ns per bead and in kT per ns per bead, and the RMS of the
   total energy about that line (per bead; it grows as dt^2 for velocity Verlet).

The step is called safe when the run did not blow up, the drift is not significantly beyond
``max_drift_kT_per_ns`` (kT per ns per bead): ``|drift| <= max_drift_kT_per_ns + 2 * se`` (se: the
slope's standard error, the least-squares one inflated by the residuals' statistical
inefficiency, pymbar; a few beads' total energy fluctuates too much for a short run to resolve a
small limit), and the NVT temperature is not significantly further than
``max_temperature_error`` (relative) from the target: ``|mean - target| <= max_temperature_error
* target + 2 * sem`` (sem: standard error of the mean from 4 blocks; a small system's
temperature fluctuates a lot). Defaults: 0.05 kT/ns/bead and 2 %. Units: fs (steps), ps, K,
kJ/mol, nm.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from openmm_cgkd.quiet import import_pymbar_timeseries

__all__ = ["TimestepCheck", "check_timestep", "linear_drift", "DEFAULT_MAX_DRIFT_KT_PER_NS", "DEFAULT_MAX_TEMPERATURE_ERROR"]

DEFAULT_MAX_DRIFT_KT_PER_NS = 0.05  # |total-energy drift| per bead, in kT per ns
DEFAULT_MAX_TEMPERATURE_ERROR = 0.02  # relative deviation of the NVT kinetic temperature
KB_KJ_MOL_K = 0.00831446261815324


@dataclass
class TimestepCheck:
    """What :func:`check_timestep` measured (units in the field names)."""

    timestep_fs: float
    n_beads: int
    target_temperature_K: float
    nvt_ps: float
    nve_ps: float
    nvt_mean_temperature_K: float = float("nan")  # over the second half of the NVT run
    nvt_temperature_sem_K: float = float("nan")  # standard error of that mean (4 blocks)
    nvt_temperature_error: float = float("nan")  # (mean - target) / target
    nve_drift_kj_mol_per_ns_per_bead: float = float("nan")
    nve_drift_kT_per_ns_per_bead: float = float("nan")
    nve_drift_se_kT_per_ns_per_bead: float = float("nan")  # standard error of that slope (correlated residuals)
    nve_rms_kj_mol_per_bead: float = float("nan")  # RMS of the total energy about the fitted line
    nve_mean_temperature_K: float = float("nan")
    blew_up: str | None = None  # why the run stopped, when it did
    max_drift_kT_per_ns: float = DEFAULT_MAX_DRIFT_KT_PER_NS
    max_temperature_error: float = DEFAULT_MAX_TEMPERATURE_ERROR
    series: dict = field(default_factory=dict, repr=False)  # nvt: time_ps, temperature_K; nve: time_ps, total_kj_mol

    @property
    def temperature_ok(self) -> bool:
        """The NVT temperature is within the tolerance, up to 2 standard errors (True without NVT)."""
        if not self.nvt_ps > 0:
            return True
        sem = self.nvt_temperature_sem_K if np.isfinite(self.nvt_temperature_sem_K) else 0.0
        bias = abs(self.nvt_mean_temperature_K - self.target_temperature_K)
        return bool(bias <= self.max_temperature_error * self.target_temperature_K + 2.0 * sem)

    @property
    def drift_ok(self) -> bool:
        """The NVE drift is within the limit, up to 2 standard errors (True without NVE)."""
        if not self.nve_ps > 0:
            return True
        se = self.nve_drift_se_kT_per_ns_per_bead if np.isfinite(self.nve_drift_se_kT_per_ns_per_bead) else 0.0
        return bool(abs(self.nve_drift_kT_per_ns_per_bead) <= self.max_drift_kT_per_ns + 2.0 * se)

    @property
    def safe(self) -> bool:
        return self.blew_up is None and self.drift_ok and self.temperature_ok

    def to_dict(self, series: bool = False) -> dict:
        d = asdict(self)
        if not series:
            d.pop("series")
        d["safe"] = self.safe
        d["temperature_ok"] = self.temperature_ok
        d["drift_ok"] = self.drift_ok
        d["summary"] = self.summary()
        return d

    def summary(self) -> str:
        """One line: the step, the drift, the temperature and the verdict."""
        if self.blew_up:
            return f"{self.timestep_fs:g} fs: NOT safe, the run blew up ({self.blew_up})"
        nvt = "no NVT run" if not self.nvt_ps > 0 else (
            f"NVT {self.nvt_mean_temperature_K:.1f} +- {self.nvt_temperature_sem_K:.1f} K for "
            f"{self.target_temperature_K:g} K ({100 * self.nvt_temperature_error:+.1f} %; limit "
            f"{100 * self.max_temperature_error:g} %)")
        return (f"{self.timestep_fs:g} fs: NVE drift {self.nve_drift_kj_mol_per_ns_per_bead:+.3g} kJ/mol/ns per bead "
                f"({self.nve_drift_kT_per_ns_per_bead:+.3g} +- {self.nve_drift_se_kT_per_ns_per_bead:.2g} kT/ns; limit "
                f"{self.max_drift_kT_per_ns:g}), NVE RMS "
                f"{self.nve_rms_kj_mol_per_bead:.3g} kJ/mol per bead; {nvt}: " + ("safe" if self.safe else "NOT safe"))


def _block_sem(x: np.ndarray, n_blocks: int = 4) -> float:
    if len(x) < n_blocks:
        return float("nan")
    means = [b.mean() for b in np.array_split(x, n_blocks)]
    return float(np.std(means, ddof=1) / np.sqrt(n_blocks))


def linear_drift(t, e) -> tuple[float, float, float]:
    """(slope, intercept, standard error of the slope) of the least-squares line of ``e`` against
    ``t`` (units of e per unit of t), for correlated residuals: the ordinary standard error times
    the square root of the residuals' statistical inefficiency (pymbar); NaN for fewer than 4 points."""
    t, e = np.asarray(t, dtype=np.float64), np.asarray(e, dtype=np.float64)
    slope, intercept = np.polyfit(t, e, 1)
    resid = e - (slope * t + intercept)
    sxx = float(np.sum((t - t.mean()) ** 2))
    if len(t) < 4 or not sxx > 0:
        return float(slope), float(intercept), float("nan")
    se = np.sqrt(np.sum(resid ** 2) / (len(t) - 2) / sxx)
    g = import_pymbar_timeseries().statistical_inefficiency(resid) if np.std(resid) > 0 else 1.0
    return float(slope), float(intercept), float(se * np.sqrt(max(float(g), 1.0)))


def _run(simulation, steps: int, every: int, record) -> None:
    """``steps`` steps in chunks of ``every``, calling ``record(state)`` after each chunk."""
    done = 0
    while done < steps:
        k = min(every, steps - done)
        simulation.step(k)
        done += k
        record(simulation.context.getState(getEnergy=True))


def check_timestep(bundle, topology, positions, box, *, timestep_fs: float, temperature_K: float | None = None,
                   friction_per_ps: float = 1.0, nvt_ps: float = 10.0, nve_ps: float = 10.0,
                   sample_every_steps: int = 10, platform: str | None = None, threads: int | None = None,
                   seed: int = 1, max_drift_kT_per_ns: float = DEFAULT_MAX_DRIFT_KT_PER_NS,
                   max_temperature_error: float = DEFAULT_MAX_TEMPERATURE_ERROR) -> TimestepCheck:
    """NVT then NVE of ``bundle`` (a path or :class:`~openmm_cgkd.serving.CGKDForceField`) from
    ``positions`` (N, 3) nm in ``box`` (3, 3) nm (None for a non-periodic model) with bead ``topology`` at ``timestep_fs``; see
    the module doc. Energies and temperatures are sampled every ``sample_every_steps`` steps.
    ``temperature_K``: default the bundle's training data's
    (:meth:`~openmm_cgkd.serving.CGKDForceField.md_temperature`)."""
    import openmm
    from openmm import unit

    from openmm_cgkd.errors import CGKDError
    from openmm_cgkd.serving import CGKDForceField
    from openmm_cgkd.md.thermo import degrees_of_freedom

    if not timestep_fs > 0 or nvt_ps < 0 or nve_ps <= 0 or sample_every_steps < 1:
        raise CGKDError(f"check_timestep needs timestep_fs > 0, nvt_ps >= 0, nve_ps > 0 and sample_every_steps >= 1 "
                        f"(got {timestep_fs}, {nvt_ps}, {nve_ps}, {sample_every_steps})")
    ff = bundle if isinstance(bundle, CGKDForceField) else CGKDForceField(bundle)
    temperature_K = ff.md_temperature(temperature_K)
    dt_ps = timestep_fs / 1000.0
    n_nvt, n_nve = int(round(nvt_ps / dt_ps)), int(round(nve_ps / dt_ps))
    every = int(sample_every_steps)
    if n_nve < 3 * every:
        raise CGKDError(f"nve_ps = {nve_ps} gives fewer than 3 samples of the total energy at every "
                        f"{every} steps of {timestep_fs} fs")
    n = int(np.asarray(positions).reshape(-1, 3).shape[0])
    result = TimestepCheck(float(timestep_fs), n, float(temperature_K), float(nvt_ps), float(nve_ps),
                           max_drift_kT_per_ns=float(max_drift_kT_per_ns),
                           max_temperature_error=float(max_temperature_error))
    kT = KB_KJ_MOL_K * temperature_K

    nvt = ff.create_simulation(topology, positions, box_vectors=box, temperature=temperature_K,
                               friction_per_ps=friction_per_ps, timestep_fs=timestep_fs, platform=platform,
                               threads=threads, seed=seed)
    dof = degrees_of_freedom(nvt.system)
    t_nvt, temps = [], []

    def record_nvt(state):
        kin = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        t_nvt.append(state.getTime().value_in_unit(unit.picosecond))
        temps.append(2.0 * kin / (dof * KB_KJ_MOL_K))
        if not np.isfinite(temps[-1]):
            raise openmm.OpenMMException("the kinetic energy is not finite")

    try:
        _run(nvt, n_nvt, every, record_nvt)
    except openmm.OpenMMException as exc:
        result.blew_up = f"NVT: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        return result
    if temps:
        second = np.asarray(temps[len(temps) // 2:])
        result.nvt_mean_temperature_K = float(second.mean())
        result.nvt_temperature_sem_K = _block_sem(second)
        result.nvt_temperature_error = float((second.mean() - temperature_K) / temperature_K)
    end = nvt.context.getState(getPositions=True, getVelocities=True)

    nve = ff.create_simulation(topology, positions, box_vectors=box, temperature=temperature_K, platform=platform,
                               threads=threads, seed=seed, remove_cm_motion=False,
                               integrator=openmm.VerletIntegrator(timestep_fs * unit.femtosecond))
    nve.context.setPositions(end.getPositions())
    nve.context.setVelocities(end.getVelocities())
    dof_nve = degrees_of_freedom(nve.system)
    t_nve, total, temps_nve = [], [], []

    def record_nve(state):
        kin = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        pot = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        t_nve.append(state.getTime().value_in_unit(unit.picosecond))
        total.append(kin + pot)
        temps_nve.append(2.0 * kin / (dof_nve * KB_KJ_MOL_K))
        if not np.isfinite(total[-1]):
            raise openmm.OpenMMException("the total energy is not finite")

    record_nve(nve.context.getState(getEnergy=True))
    try:
        _run(nve, n_nve, every, record_nve)
    except openmm.OpenMMException as exc:
        result.blew_up = f"NVE: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        return result
    t, e = np.asarray(t_nve) - t_nve[0], np.asarray(total)
    slope, intercept, se = linear_drift(t, e)  # kJ/mol per ps
    result.nve_drift_kj_mol_per_ns_per_bead = float(slope * 1000.0 / n)
    result.nve_drift_kT_per_ns_per_bead = float(slope * 1000.0 / n / kT)
    result.nve_drift_se_kT_per_ns_per_bead = float(se * 1000.0 / n / kT)
    result.nve_rms_kj_mol_per_bead = float(np.sqrt(np.mean((e - (slope * t + intercept)) ** 2)) / n)
    result.nve_mean_temperature_K = float(np.mean(temps_nve))
    result.series = {"nvt": {"time_ps": t_nvt, "temperature_K": temps},
                     "nve": {"time_ps": t.tolist(), "total_kj_mol": e.tolist()}}
    return result
