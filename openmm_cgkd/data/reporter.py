"""An OpenMM reporter that records AA positions and forces for ``cgkd map``, in your own script.

::

    from openmm_cgkd.data.reporter import ForceReporter

    simulation.reporters.append(ForceReporter("aa_frames.h5", 500))   # every 500 steps
    simulation.step(200_000)
    simulation.reporters[-1].close()   # or: with ForceReporter(...) as rep: ...

    # then:  cgkd map --trajectory aa_frames.h5 --topology system.pdb --mapping my_mapping.yaml --out cg.h5

The file (HDF5) holds the fields a ``cgkd aa-run`` writes (:data:`openmm_cgkd.data.aamd.FRAME_FIELDS`):

=================  ==========  =========  ==============================================
dataset            shape       dtype      unit / meaning
=================  ==========  =========  ==============================================
positions          (F, N, 3)   float32    nm, unwrapped (molecules whole)
forces             (F, N, 3)   float32    kJ/mol/nm, total force of every Force in the System
boxes              (F, 3, 3)   float32    nm, box vectors as rows
potential_energy   (F,)        float64    kJ/mol
times              (F,)        float64    ps (``State.getTime()``)
steps              (F,)        int64      the integrator's step count
masses             (N,)        float64    dalton, the System's particle masses (``cgkd map``
                                          takes the atoms' masses from here, never from elements)
=================  ==========  =========  ==============================================

Attributes: ``temperature_K`` (the thermostat's temperature: the integrator's ``getTemperature()``,
else an ``AndersenThermostat``'s, else the ``temperature`` given; NaN when none is known) and
``periodic``. Forces are those of the System's Forces: constraint forces are not included
(they cancel inside a bead only when each constrained group lies in one bead; see
:mod:`openmm_cgkd.data.mapping`). Frames are flushed to disk as they are written, so a killed
run keeps what it recorded; ``append=True`` continues a file (e.g. after a restart).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from openmm_cgkd.errors import CGKDError

__all__ = ["ForceReporter", "ReporterError"]


class ReporterError(CGKDError, ValueError):
    """The reporter's file cannot be continued, or its arguments are invalid."""

    exit_code = 2


def _kelvin(value) -> float | None:
    if value is None:
        return None
    from openmm import unit

    return float(value.value_in_unit(unit.kelvin)) if unit.is_quantity(value) else float(value)


class ForceReporter:
    """Write positions, forces, box, potential energy and time every ``report_interval`` steps.

    Parameters
    ----------
    file
        Output HDF5 file (``.h5``).
    report_interval
        Steps between frames.
    temperature
        The thermostat temperature (K or an OpenMM Quantity), when the integrator does not
        report one (e.g. a ``VerletIntegrator`` with a thermostat Force other than Andersen).
    append
        Continue an existing file written by this reporter instead of refusing it.
    """

    FIELDS = ("positions", "forces", "boxes", "potential_energy", "times", "steps")

    def __init__(self, file: str | Path, report_interval: int, *, temperature=None, append: bool = False) -> None:
        if int(report_interval) < 1:
            raise ReporterError(f"report_interval must be >= 1 step, got {report_interval}")
        self.path = Path(file)
        if self.path.suffix not in (".h5", ".hdf5"):
            raise ReporterError(f"{self.path}: the reporter writes HDF5; name the file .h5")
        if self.path.exists() and not append:
            raise ReporterError(f"{self.path} exists: pass append=True to continue it, or choose another file")
        self.report_interval = int(report_interval)
        self.temperature_K = _kelvin(temperature)
        self._h5 = None
        self._append = append

    # ------------------------------------------------------------------ OpenMM reporter protocol
    def describeNextReport(self, simulation):
        steps = self.report_interval - simulation.currentStep % self.report_interval
        return {"steps": steps, "periodic": False, "include": ["positions", "forces", "energy"]}

    def report(self, simulation, state) -> None:
        from openmm import unit

        if self._h5 is None:
            self._open(simulation)
        pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        frc = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        row = {"positions": pos, "forces": frc, "boxes": box,
               "potential_energy": state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
               "times": state.getTime().value_in_unit(unit.picosecond), "steps": simulation.currentStep}
        n = self._h5["times"].shape[0]
        for k in self.FIELDS:
            ds = self._h5[k]
            ds.resize(n + 1, axis=0)
            ds[n] = row[k]
        self._h5.flush()

    # ------------------------------------------------------------------ file
    def _thermostat_K(self, simulation) -> float | None:
        import openmm

        integ = simulation.integrator
        if hasattr(integ, "getTemperature"):
            return _kelvin(integ.getTemperature())
        for f in simulation.system.getForces():
            if isinstance(f, openmm.AndersenThermostat):
                return _kelvin(f.getDefaultTemperature())
        return None

    def _open(self, simulation) -> None:
        import h5py

        n = simulation.system.getNumParticles()
        own = self._thermostat_K(simulation)
        if own is not None and self.temperature_K is not None and abs(own - self.temperature_K) > 1e-6:
            raise ReporterError(f"temperature {self.temperature_K:g} K given, but the integrator's is {own:g} K")
        temperature = own if own is not None else self.temperature_K
        if self._append and self.path.exists():
            self._h5 = h5py.File(self.path, "a")
            if set(self.FIELDS) - set(self._h5) or self._h5["positions"].shape[1] != n:
                self._h5.close()
                raise ReporterError(f"{self.path} is not a ForceReporter file of {n} atoms: cannot append")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        h5 = h5py.File(self.path, "w")
        shapes = {"positions": ((n, 3), np.float32), "forces": ((n, 3), np.float32), "boxes": ((3, 3), np.float32),
                  "potential_energy": ((), np.float64), "times": ((), np.float64), "steps": ((), np.int64)}
        for k, (shape, dtype) in shapes.items():
            h5.create_dataset(k, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype, chunks=(16, *shape))
        from openmm import unit

        h5.create_dataset("masses", data=np.array([simulation.system.getParticleMass(i).value_in_unit(unit.dalton)
                                                   for i in range(n)], dtype=np.float64))
        h5.attrs["temperature_K"] = np.nan if temperature is None else float(temperature)
        h5.attrs["periodic"] = bool(simulation.system.usesPeriodicBoundaryConditions())
        h5.attrs["units"] = "positions nm, forces kJ/mol/nm, boxes nm, potential_energy kJ/mol, times ps"
        h5.attrs["writer"] = "openmm_cgkd.data.reporter.ForceReporter"
        self._h5 = h5
        self._append = True  # reports after a close() continue this file, never overwrite it

    def close(self) -> None:
        """Close the file (frames already written are on disk)."""
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __enter__(self) -> "ForceReporter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
