"""Contacts closer than the AA ever comes: per pair, the coordination number below the AA's
closest contact (docs/evidence.md, "Contacts"), and the gate a model must pass before it ships.

A six-pair mean TAE can hide a model that puts a few beads where the AA liquid has none (a
short-range trap of a network with no training data there). Per bead-type pair A-B:

* the AA's closest contact ``r_c`` is the first r (bin centre, nm) at which the reference g(r)
  reaches :data:`~openmm_cgkd.analysis.rdf.AA_CONTACT_G` (as in
  :func:`~openmm_cgkd.analysis.rdf.close_contacts`);
* the coordination number below it, of the model and of the AA, is the number of B beads closer
  than ``r_c`` to an A bead (and of A beads to a B bead), from the g(r) histogram:
  ``pairs within r_c = (n_pairs / V) sum_bins g_k 4/3 pi (r_{k+1}^3 - r_k^3)`` over the bins below
  ``r_c``, divided by the number of A beads (x2 for a like pair: each pair is a neighbour of both
  its beads). ``n_pairs`` is the pair count the g(r) was normalised with (``meta["n_pairs"]``), V
  the box volume (nm^3).

The gate (:func:`contact_gate`): a model fails when, in any pair, its coordination below ``r_c``
exceeds ``factor`` (2) times the AA's plus ``floor`` (default 0.001 per bead: the AA's own value
is often zero to four decimals, and twice zero would fail a model for one close pair in
thousands of frames). The ratio of model to AA coordination does not depend on V or the bead
counts when both share the box. Units: nm, nm^3, beads.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from openmm_cgkd.analysis.distributions import AnalysisError, Distribution
from openmm_cgkd.analysis.rdf import AA_CONTACT_G, paired_contact_bins

__all__ = ["ContactCoordination", "ContactGate", "pairs_within", "contact_coordination", "contact_gate",
           "GATE_FACTOR", "GATE_FLOOR"]

GATE_FACTOR = 2.0  # a model may have at most twice the AA's coordination below the AA contact ...
GATE_FLOOR = 0.001  # ... plus this many neighbours per bead


def pairs_within(g: Distribution, n_bins: int, volume_nm3: float) -> float:
    """Mean number of pairs per frame in the first ``n_bins`` bins of the g(r) ``g``
    (``meta["n_pairs"]`` pairs in a box of ``volume_nm3`` nm^3)."""
    n_pairs = g.meta.get("n_pairs")
    if not n_pairs:
        raise AnalysisError(f"RDF {g.key}: no pair count (meta['n_pairs']) to turn g(r) into neighbours")
    e = g.edges[:n_bins + 1]
    shell = 4.0 / 3.0 * math.pi * (e[1:] ** 3 - e[:-1] ** 3)
    return float(n_pairs) / float(volume_nm3) * float(np.sum(g.values[:n_bins] * shell))


def _bead_counts(key: str, g: Distribution, counts: Mapping[str, int] | None) -> tuple[int, int]:
    a, b = key.split("-")
    if counts is not None:
        return int(counts[a]), int(counts[b])
    p = int(g.meta["n_pairs"])
    if a == b:  # N (N - 1) / 2 pairs
        n = int(round((1 + math.sqrt(1 + 8 * p)) / 2))
        return n, n
    raise AnalysisError(f"RDF {key}: bead counts are needed for an unlike pair")


@dataclass(frozen=True)
class ContactCoordination:
    """Pair ``A-B``: the AA's closest contact ``contact_nm``; B neighbours of an A bead (and A
    neighbours of a B bead) closer than it, in the model and in the AA."""

    pair: str
    contact_nm: float
    model_per_a: float
    model_per_b: float
    reference_per_a: float
    reference_per_b: float

    @property
    def ratio(self) -> float:
        """Model over AA coordination below the contact (inf when the AA has none and the model some)."""
        if self.reference_per_a == 0.0:
            return 1.0 if self.model_per_a == 0.0 else math.inf
        return self.model_per_a / self.reference_per_a

    def passes(self, factor: float = GATE_FACTOR, floor: float = GATE_FLOOR) -> bool:
        return self.model_per_a <= factor * self.reference_per_a + floor and \
            self.model_per_b <= factor * self.reference_per_b + floor

    def to_dict(self) -> dict:
        return {"pair": self.pair, "contact_nm": self.contact_nm, "model_per_a": self.model_per_a,
                "model_per_b": self.model_per_b, "reference_per_a": self.reference_per_a,
                "reference_per_b": self.reference_per_b, "ratio": self.ratio}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ContactCoordination":
        return cls(d["pair"], float(d["contact_nm"]), float(d["model_per_a"]), float(d["model_per_b"]),
                   float(d["reference_per_a"]), float(d["reference_per_b"]))


def contact_coordination(model: Mapping[str, Distribution], reference: Mapping[str, Distribution],
                         volume_nm3: float, counts: Mapping[str, int] | None = None,
                         threshold: float = AA_CONTACT_G) -> dict[str, ContactCoordination]:
    """Per pair key ``"A-B"`` present in both, the :class:`ContactCoordination` of the model's
    g(r) (``model``, e.g. the mean over replicas) against the AA's (``reference``), both on one
    grid and in boxes of ``volume_nm3`` nm^3. ``counts``: beads per type (needed for unlike pairs
    unless derivable; like pairs give their own count). Pairs whose reference never reaches
    ``threshold`` are left out."""
    if not volume_nm3 > 0:
        raise AnalysisError(f"box volume must be positive, got {volume_nm3}")
    out = {}
    for key, cg, ref, first in paired_contact_bins(model, reference, threshold):
        n_a, n_b = _bead_counts(key, ref, counts)
        like = 2.0 if key.split("-")[0] == key.split("-")[1] else 1.0
        m, r = pairs_within(cg, first, volume_nm3) * like, pairs_within(ref, first, volume_nm3) * like
        out[key] = ContactCoordination(key, float(ref.centers[first]), m / n_a, m / n_b, r / n_a, r / n_b)
    return out


@dataclass(frozen=True)
class ContactGate:
    """The contact gate's result: ``passed`` and the pairs that ``failed`` it, in words."""

    passed: bool
    failed: tuple[str, ...]
    factor: float
    floor: float

    def to_dict(self) -> dict:
        return {"passed": self.passed, "failed": list(self.failed), "factor": self.factor, "floor": self.floor}


def contact_gate(coordination: Mapping[str, ContactCoordination | Mapping], factor: float = GATE_FACTOR,
                 floor: float = GATE_FLOOR) -> ContactGate:
    """Does a model pass the contact gate? It fails when in any pair its coordination below the
    AA's closest contact exceeds ``factor`` x the AA's + ``floor`` (per bead, either direction).
    ``coordination``: :func:`contact_coordination`'s result (or its ``to_dict`` form)."""
    failed = []
    for key, c in coordination.items():
        c = c if isinstance(c, ContactCoordination) else ContactCoordination.from_dict(c)
        if not c.passes(factor, floor):
            a, b = key.split("-")
            failed.append(f"{key}: {c.model_per_a:.4f} {b} per {a} below {c.contact_nm:.3f} nm "
                          f"(AA {c.reference_per_a:.4f})")
    return ContactGate(not failed, tuple(failed), float(factor), float(floor))
