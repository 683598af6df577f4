"""The nine student variants of the paper as presets (name -> label source, targets, loss weights).

Kept apart from :mod:`openmm_cgkd.training.students` (which imports torch) so that ``cgkd --help``
can list them at once. Weights: per-bead energy w_e = 5, system energy w_E = 5, forces w_ft = 1
and w_aa = 2 when both force targets are used, else weight 1 for the one used.
"""
from __future__ import annotations

from dataclasses import dataclass

from openmm_cgkd.training.config import LossWeights

__all__ = ["Variant", "VARIANTS"]


@dataclass(frozen=True)
class Variant:
    name: str
    source: str  # "single" or "ensemble"
    targets: tuple[str, ...]  # paper notation
    weights: LossWeights


def _v(name: str, source: str, targets: tuple[str, ...], **w) -> Variant:
    return Variant(name, source, targets, LossWeights(**{"w_aa": 0.0, **w}))


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    _v("single-e-faa", "single", ("e", "F_AA"), w_e=5.0, w_aa=1.0),
    _v("single-e-ft", "single", ("e", "F_T"), w_e=5.0, w_ft=1.0),
    _v("single-e-ft-faa", "single", ("e", "F_T", "F_AA"), w_e=5.0, w_ft=1.0, w_aa=2.0),
    _v("ensemble-ft-faa", "ensemble", ("F_T", "F_AA"), w_ft=1.0, w_aa=2.0),
    _v("ensemble-e-faa", "ensemble", ("e", "F_AA"), w_e=5.0, w_aa=1.0),
    _v("ensemble-e-ft", "ensemble", ("e", "F_T"), w_e=5.0, w_ft=1.0),
    _v("ensemble-e-ft-faa", "ensemble", ("e", "F_T", "F_AA"), w_e=5.0, w_ft=1.0, w_aa=2.0),
    _v("ensemble-esys-ft-faa", "ensemble", ("E", "F_T", "F_AA"), w_E=5.0, w_ft=1.0, w_aa=2.0),
    _v("ensemble-esys-e-ft-faa", "ensemble", ("E", "e", "F_T", "F_AA"), w_E=5.0, w_e=5.0, w_ft=1.0, w_aa=2.0),
)}
