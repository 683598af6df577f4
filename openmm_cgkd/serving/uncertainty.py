"""The uncertainty watch: while a student runs MD, the teacher ensemble judges its frames.

:class:`UncertaintyReporter` is an OpenMM reporter. Every ``interval`` steps it evaluates an
ensemble bundle (best a stacked one: all members in one pass) on the simulation's current frame
and records the ensemble force spread of every bead, ``s_i = sqrt(sum_xyz std_k(F_k,i)^2)``
(kJ/mol/nm, :mod:`openmm_cgkd.model.uncertainty`), as its maximum and mean over the beads. When
the maximum exceeds the threshold it warns (:class:`UncertaintyWarning`): the student has left
the region of configurations on which its teachers agree.

The threshold comes from, in this order: the ``threshold`` argument; the ensemble manifest's
``training.uncertainty.threshold_kj_mol_nm`` (written by the stacked teacher stage: the 0.99
quantile over training frames of the per-frame maximum); or :func:`fit_threshold` on a dataset.

Rows go to ``file`` (CSV: ``step, time_ps, max_spread_kj_mol_nm, mean_spread_kj_mol_nm,
over_threshold``) and to :attr:`UncertaintyReporter.records`. The watch costs one ensemble
evaluation per report and nothing in between; it never changes the dynamics.
"""
from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np

from openmm_cgkd.errors import CGKDError

__all__ = ["UncertaintyReporter", "UncertaintyWarning", "UncertaintyError", "fit_threshold", "manifest_threshold",
           "WATCH_COLUMNS"]

WATCH_COLUMNS = ["step", "time_ps", "max_spread_kj_mol_nm", "mean_spread_kj_mol_nm", "over_threshold"]


class UncertaintyWarning(UserWarning):
    """The ensemble force spread on an MD frame exceeds the watch threshold."""


class UncertaintyError(CGKDError, ValueError):
    """The watch cannot run as asked (no ensemble, no threshold, bead types that do not fit)."""

    exit_code = 2  # bad input: usage error


def _ensemble_bundle(ensemble):
    from openmm_cgkd.bundle import Bundle, load_bundle

    bundle = ensemble if isinstance(ensemble, Bundle) else load_bundle(ensemble)
    m = bundle.manifest
    if m.model_kind != "ensemble" or m.num_members < 2:
        raise UncertaintyError(f"the uncertainty watch needs an ensemble bundle (>= 2 members); {bundle.path} is a "
                               f"{m.model_kind} with {m.num_members} member(s)")
    if bundle.module is None:
        raise UncertaintyError(f"bundle {bundle.path} was loaded without its TorchScript module")
    return bundle


def manifest_threshold(bundle) -> float | None:
    """The watch threshold (kJ/mol/nm) an ensemble bundle's manifest carries, or None."""
    unc = (bundle.manifest.training or {}).get("uncertainty") or {}
    value = unc.get("threshold_kj_mol_nm")
    return None if value is None else float(value)


def _member_forces(module, bead_types, positions, box, device):
    import torch

    out = module.forward_members(torch.as_tensor(bead_types, dtype=torch.long, device=device),
                                 torch.as_tensor(positions, dtype=torch.float64, device=device),
                                 None if box is None else torch.as_tensor(box, dtype=torch.float64, device=device))
    return out[2].detach().double().cpu().numpy()


def fit_threshold(ensemble, dataset, frames=None, quantile: float = 0.99, max_frames: int = 200,
                  device: str = "cpu") -> dict:
    """The watch threshold of ``ensemble`` (bundle path or :class:`~openmm_cgkd.bundle.Bundle`) on
    ``dataset`` (:class:`~openmm_cgkd.data.dataset.CGDataset`, best its training frames):
    ``quantile`` of the per-frame maximum bead spread over ``frames`` (default: up to ``max_frames``
    evenly spaced frames). Returns :func:`~openmm_cgkd.model.uncertainty.force_std_threshold`'s mapping."""
    from openmm_cgkd.model.uncertainty import force_std_threshold

    bundle = _ensemble_bundle(ensemble)
    if list(bundle.manifest.type_names) != list(dataset.type_names):
        raise UncertaintyError(f"the ensemble's bead types {bundle.manifest.type_names} differ from the dataset's "
                               f"{list(dataset.type_names)}")
    idx = np.arange(dataset.n_frames) if frames is None else np.asarray(frames, dtype=np.int64)
    if len(idx) > max_frames:
        idx = idx[np.unique(np.linspace(0, len(idx) - 1, max_frames).astype(int))]
    module = bundle.module.to(device)
    forces = np.stack([_member_forces(module, dataset.bead_types, dataset.positions[i],
                                      dataset.boxes[i] if bundle.manifest.periodic else None, device) for i in idx],
                      axis=1)  # [K, F, N, 3]
    return force_std_threshold(forces, quantile)


class UncertaintyReporter:
    """OpenMM reporter: the ensemble force spread every ``interval`` steps (see the module docstring).

    ``ensemble``: an ensemble bundle (path, shipped name or loaded :class:`~openmm_cgkd.bundle.Bundle`)
    with the same bead types as the simulated model. ``threshold`` (kJ/mol/nm) overrides the
    manifest's. ``file``: a CSV path (optional). ``atoms``: the particle indices of the beads (default:
    every particle). ``device``: where the ensemble runs (default CPU). ``warn``: whether exceeding the
    threshold issues an :class:`UncertaintyWarning` (it is always recorded).
    """

    def __init__(self, ensemble, interval: int, *, threshold: float | None = None, file: str | Path | None = None,
                 atoms=None, device: str = "cpu", warn: bool = True, append: bool = False):
        import torch

        self.interval = int(interval)
        if self.interval < 1:
            raise UncertaintyError(f"interval must be >= 1 step, got {interval}")
        self.bundle = _ensemble_bundle(ensemble)
        self.threshold = float(threshold) if threshold is not None else manifest_threshold(self.bundle)
        if self.threshold is None:
            raise UncertaintyError(f"ensemble {self.bundle.path} carries no watch threshold "
                                   "(training.uncertainty.threshold_kj_mol_nm); pass threshold= in kJ/mol/nm, e.g. "
                                   "fit_threshold(bundle, dataset)['threshold_kj_mol_nm']")
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise UncertaintyError(f"threshold must be a positive number of kJ/mol/nm, got {self.threshold}")
        self.device = torch.device(device)
        self.module = self.bundle.module.to(self.device)
        self.atoms = None if atoms is None else np.asarray(list(atoms), dtype=np.int64)
        self.warn = bool(warn)
        self.records: list[dict] = []
        self._types = None
        self._fh = None
        self._writer = None
        if file is not None:
            path = Path(file)
            path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not (append and path.exists())
            self._fh = open(path, "w" if fresh else "a", newline="")
            self._writer = csv.writer(self._fh)
            if fresh:
                self._writer.writerow(WATCH_COLUMNS)
                self._fh.flush()

    # -- OpenMM reporter interface ----------------------------------------------------------------
    def describeNextReport(self, simulation):
        steps = self.interval - simulation.currentStep % self.interval
        return {"steps": steps, "periodic": bool(self.bundle.manifest.periodic), "include": ["positions"]}

    def _bead_types(self, simulation) -> np.ndarray:
        if self._types is None:
            from openmm_cgkd.serving.forcefield import CGKDForceField, ServingError

            try:
                types = CGKDForceField(self.bundle).bead_type_indices(
                    simulation.topology, None if self.atoms is None else self.atoms.tolist())
            except ServingError as exc:
                raise UncertaintyError(f"the watch ensemble cannot read this system: {exc}") from None
            n_types = int(self.module.num_types)
            if len(types) and int(types.max()) >= n_types:  # checked once, not per report
                raise UncertaintyError(f"bead types up to {int(types.max())} for an ensemble of {n_types} types")
            self._types = types
        return self._types

    def report(self, simulation, state) -> None:
        from openmm import unit

        types = self._bead_types(simulation)
        pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if self.atoms is not None:
            pos = pos[self.atoms]
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) \
            if self.bundle.manifest.periodic else None
        self.evaluate(types, np.asarray(pos), None if box is None else np.asarray(box),
                      step=simulation.currentStep, time_ps=state.getTime().value_in_unit(unit.picosecond))

    # -- the computation (also usable without OpenMM) ---------------------------------------------
    def evaluate(self, bead_types, positions_nm, box_nm, step: int = 0, time_ps: float = float("nan")) -> dict:
        """Spread statistics of one frame (positions ``[N,3]`` nm, box ``[3,3]`` nm or None); records,
        writes and warns as a report does. Returns the record."""
        from openmm_cgkd.model.uncertainty import bead_force_spread

        forces = _member_forces(self.module, bead_types, positions_nm, box_nm, self.device)  # [K, N, 3]
        spread = bead_force_spread(forces.std(axis=0))
        rec = {"step": int(step), "time_ps": float(time_ps), "max_spread_kj_mol_nm": float(spread.max()),
               "mean_spread_kj_mol_nm": float(spread.mean()), "worst_bead": int(spread.argmax())}
        rec["over_threshold"] = bool(not rec["max_spread_kj_mol_nm"] <= self.threshold)  # NaN counts as over
        self.records.append(rec)
        if self._writer is not None:
            self._writer.writerow([rec["step"], f"{rec['time_ps']:.6f}", f"{rec['max_spread_kj_mol_nm']:.6g}",
                                   f"{rec['mean_spread_kj_mol_nm']:.6g}", int(rec["over_threshold"])])
            self._fh.flush()
        if rec["over_threshold"] and self.warn:
            warnings.warn(UncertaintyWarning(
                f"step {rec['step']}: ensemble force spread {rec['max_spread_kj_mol_nm']:.4g} kJ/mol/nm (bead "
                f"{rec['worst_bead']}) exceeds the watch threshold {self.threshold:.4g} kJ/mol/nm: the simulation "
                "has left the configurations on which the teachers agree"), stacklevel=2)
        return rec

    def summary(self) -> dict:
        """Reports made, how many exceeded the threshold, the first such step and the largest spread."""
        over = [r for r in self.records if r["over_threshold"]]
        return {"reports": len(self.records), "over_threshold": len(over), "threshold_kj_mol_nm": self.threshold,
                "first_step_over": over[0]["step"] if over else None,
                "max_spread_kj_mol_nm": max((r["max_spread_kj_mol_nm"] for r in self.records), default=float("nan"))}

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self._writer = None
