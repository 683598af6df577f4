"""A model's backbone dihedrals scored over its MD replicas against an AA reference.

Builds on :mod:`openmm_cgkd.analysis.ramachandran` (one trajectory) for what the pipeline,
``cgkd analyze --ramachandran`` and ``cgkd demo --system`` report of a peptide-like system:

* :class:`PhiPsiSeries`: the (phi, psi) series of one replica (degrees, evenly spaced frames in
  ps), stored in a replica's compact record in tenths of a degree (:meth:`PhiPsiSeries.to_record`:
  about 20 kB gzip-compressed for 5,000 frames) so that the analysis never reads a trajectory;
* :func:`trajectory_phi_psi`: that series from an mdtraj trajectory (minimum image when it has a box);
* :func:`reference_phi_psi`: the reference's :class:`~openmm_cgkd.analysis.ramachandran.PhiPsiAnalysis`
  (FES, populations +- SE from blocks, transitions, the score's noise floor) with blocks as long
  as a model replica;
* :func:`model_phi_psi`: per replica the FES score (JS, TAE), basin populations and transitions
  per ns; over the replicas their mean +- standard error (std / sqrt(n)); the populations'
  difference from the reference in standard errors and in kT; the pooled FES (:class:`ModelPhiPsi`).

Angles in degrees, times in ps, free energies in kT, rates per ns.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from openmm_cgkd.analysis.distributions import AnalysisError
from openmm_cgkd.analysis.ramachandran import (BasinPopulation, FESScore, FreeEnergySurface, PhiPsiAnalysis,
                                               RamachandranSpec, analyze_phi_psi, basin_populations,
                                               basin_transitions, compare_populations, fes_score,
                                               free_energy_surface, wrap_degrees)

__all__ = ["PhiPsiSeries", "trajectory_phi_psi", "reference_phi_psi", "reference_block_ps", "ReplicaPhiPsi",
           "ModelPhiPsi", "model_phi_psi", "MeanSE", "check_spec_beads", "phi_psi_markdown", "fes_from_dict",
           "ReferencePhiPsi", "reference_from_dict"]

# Angles are stored as the tenth of a degree they lie in (floor(10 x angle)) and read back as that
# tenth's middle: an error of at most 0.05 degree, and every angle stays on its side of any edge that
# is a multiple of 0.1 degree (FES bins, basin boxes), so scores from records equal those from the
# trajectory (rounding to the nearest tenth would move 179.96 to -180.0, into another bin).
RECORD_SCALE = 10.0


@dataclass(frozen=True)
class PhiPsiSeries:
    """(phi, psi) of the frames of one trajectory: ``phi``, ``psi`` [T] (degrees in [-180, 180)),
    frame ``i`` at ``start_ps + i * interval_ps`` (ps)."""

    phi: np.ndarray
    psi: np.ndarray
    start_ps: float
    interval_ps: float

    def __post_init__(self) -> None:
        if np.shape(self.phi) != np.shape(self.psi) or np.ndim(self.phi) != 1:
            raise AnalysisError(f"phi and psi must be series of one length, got {np.shape(self.phi)} and "
                                f"{np.shape(self.psi)}")
        if not self.interval_ps > 0:
            raise AnalysisError(f"frame interval must be > 0 ps, got {self.interval_ps}")

    @property
    def n_frames(self) -> int:
        return int(np.size(self.phi))

    @property
    def times_ps(self) -> np.ndarray:
        return self.start_ps + self.interval_ps * np.arange(self.n_frames, dtype=np.float64)

    @property
    def span_ps(self) -> float:
        """Time the frames stand for (frames x interval, ps)."""
        return self.n_frames * self.interval_ps

    def to_record(self) -> dict:
        """Plain data: each angle as the integer tenth of a degree it lies in (``RECORD_SCALE``)."""
        return {"start_ps": float(self.start_ps), "interval_ps": float(self.interval_ps),
                "phi_decideg": np.floor(wrap_degrees(self.phi) * RECORD_SCALE).astype(np.int64).tolist(),
                "psi_decideg": np.floor(wrap_degrees(self.psi) * RECORD_SCALE).astype(np.int64).tolist()}

    @classmethod
    def from_record(cls, data: Mapping) -> "PhiPsiSeries":
        return cls(wrap_degrees((np.asarray(data["phi_decideg"], dtype=np.float64) + 0.5) / RECORD_SCALE),
                   wrap_degrees((np.asarray(data["psi_decideg"], dtype=np.float64) + 0.5) / RECORD_SCALE),
                   float(data["start_ps"]), float(data["interval_ps"]))


def check_spec_beads(spec: RamachandranSpec, n_beads: int, what: str) -> None:
    """An :class:`AnalysisError` when a phi/psi bead index of ``spec`` is not below ``n_beads``
    (the beads of ``what``)."""
    bad = [i for i in (*spec.phi, *spec.psi) if i >= n_beads]
    if bad:
        raise AnalysisError(f"the Ramachandran spec names beads {sorted(set(bad))} but {what} has {n_beads} beads "
                            f"(0 .. {n_beads - 1}): phi {spec.phi}, psi {spec.psi}")


def trajectory_phi_psi(traj, spec: RamachandranSpec, interval_ps: float, start_ps: float = 0.0) -> PhiPsiSeries:
    """:class:`PhiPsiSeries` of an mdtraj trajectory of beads by the spec's bead indices (the
    minimum image of each bond vector when the trajectory has a box); frames ``interval_ps``
    apart from ``start_ps`` (ps)."""
    import mdtraj as md

    check_spec_beads(spec, traj.n_atoms, "the trajectory")
    angles = np.degrees(md.compute_dihedrals(traj, np.array([spec.phi, spec.psi]),
                                             periodic=traj.unitcell_vectors is not None))
    return PhiPsiSeries(wrap_degrees(angles[:, 0]), wrap_degrees(angles[:, 1]), float(start_ps), float(interval_ps))


def reference_block_ps(reference_span_ps: float, replica_ps: float) -> float:
    """Block length (ps) of the reference's population errors and noise floor: the length of a
    model replica when the reference holds at least 4 such blocks, else a quarter of the reference."""
    return float(replica_ps) if reference_span_ps >= 4 * replica_ps else reference_span_ps / 4.0


def reference_phi_psi(phi, psi, times_ps, spec: RamachandranSpec, replica_ps: float) -> PhiPsiAnalysis:
    """The reference's :func:`~openmm_cgkd.analysis.ramachandran.analyze_phi_psi` of (phi, psi)
    (degrees, [T]) at ``times_ps`` [T]: populations +- SE from blocks of :func:`reference_block_ps`,
    and the noise floor of the FES score for replicas of ``replica_ps`` (ps; blocks of that length
    against the other half when the reference holds two, else its halves only)."""
    t = np.asarray(times_ps, dtype=np.float64)
    if t.size < 4:
        raise AnalysisError(f"the reference holds {t.size} frame(s); phi/psi needs at least 4")
    span = float(t[-1] - t[0] + np.median(np.diff(t)))
    return analyze_phi_psi(phi, psi, t, spec, reference_block_ps(span, replica_ps), replica_ps=replica_ps)


@dataclass(frozen=True)
class MeanSE:
    """Mean over ``n`` replicas and its standard error ``std(ddof=1) / sqrt(n)`` (None for n < 2)."""

    mean: float
    se: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "MeanSE":
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            return cls(float("nan"), None, 0)
        return cls(float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else None, int(v.size))

    def to_dict(self) -> dict:
        return {"mean": self.mean, "se": self.se, "n": self.n}

    def text(self, spec: str = ".3f") -> str:
        if self.n == 0 or not np.isfinite(self.mean):
            return "n/a"
        return format(self.mean, spec) + ("" if self.se is None else " +- " + format(self.se, spec))


@dataclass(frozen=True)
class ReplicaPhiPsi:
    """One replica: its FES score against the reference, basin fractions, core transitions per ns."""

    name: str
    frames: int
    span_ps: float
    score: FESScore
    fractions: dict[str, float]
    transitions: int

    @property
    def transitions_per_ns(self) -> float:
        return self.transitions / (self.span_ps / 1000.0)

    def to_dict(self) -> dict:
        return {"name": self.name, "frames": self.frames, "span_ps": self.span_ps, **self.score.to_dict(),
                "fractions": self.fractions, "transitions": self.transitions,
                "transitions_per_ns": self.transitions_per_ns}


@dataclass(frozen=True)
class ModelPhiPsi:
    """A model's phi/psi over its replicas against the reference: ``js``, ``tae`` (FES score,
    :class:`MeanSE` over replicas), ``populations`` {basin key: BasinPopulation with the mean
    fraction over replicas and its SE, ``n_blocks`` the replicas and ``block_ps`` their mean span;
    with one replica, the SE of 4 blocks of it}, ``differences``
    (against the reference's populations: in SE and kT), ``transitions_per_ns``, the replicas'
    pooled ``fes`` and each replica's numbers."""

    name: str
    js: MeanSE
    tae: MeanSE
    populations: dict[str, BasinPopulation]
    differences: dict
    transitions_per_ns: MeanSE
    fes: FreeEnergySurface
    replicas: list[ReplicaPhiPsi]

    def to_dict(self, fes: bool = False) -> dict:
        d = {"name": self.name, "n_replicas": len(self.replicas), "js": self.js.to_dict(), "tae": self.tae.to_dict(),
             "populations": {k: v.to_dict() for k, v in self.populations.items()},
             "population_differences": {k: v.to_dict() for k, v in self.differences.items()},
             "transitions_per_ns": self.transitions_per_ns.to_dict(),
             "replicas": [r.to_dict() for r in self.replicas]}
        if fes:
            d["fes"] = self.fes.to_dict()
        return d


def model_phi_psi(name: str, replicas: Mapping[str, PhiPsiSeries], reference: PhiPsiAnalysis | ReferencePhiPsi,
                  spec: RamachandranSpec) -> ModelPhiPsi:
    """:class:`ModelPhiPsi` of a model's replicas ({replica name: series}, at least one) against
    the reference's ``fes`` (on the spec's grid) and ``populations``: its analysis
    (:func:`reference_phi_psi`) or a report of it read back (:func:`reference_from_dict`)."""
    if not replicas:
        raise AnalysisError(f"{name}: no replica to score by phi/psi")
    per, pooled = [], None
    for rname, s in replicas.items():
        if s.n_frames < 2:
            raise AnalysisError(f"{name} {rname}: {s.n_frames} frame(s); phi/psi needs at least 2")
        fes = free_energy_surface(s.phi, s.psi, spec.bin_deg)
        pooled = fes.counts.copy() if pooled is None else pooled + fes.counts
        regions_fraction = {b.key: float(np.mean(b.in_region(s.phi, s.psi))) for b in spec.basins}
        trans = basin_transitions(s.phi, s.psi, s.times_ps, spec.basins)
        per.append(ReplicaPhiPsi(rname, s.n_frames, s.span_ps, fes_score(fes, reference.fes), regions_fraction,
                                 trans.total))
    if len(per) > 1:
        pops = {}
        for b in spec.basins:
            m = MeanSE.of([r.fractions[b.key] for r in per])
            pops[b.key] = BasinPopulation(b.key, b.name, m.mean, m.se, m.n, float(np.mean([r.span_ps for r in per])))
    else:  # one replica: the error of 4 blocks of it
        s = next(iter(replicas.values()))
        pops = basin_populations(s.phi, s.psi, s.times_ps, spec.basins, s.span_ps / 4.0) if s.n_frames >= 4 else {
            b.key: BasinPopulation(b.key, b.name, per[0].fractions[b.key], 0.0, 1, s.span_ps) for b in spec.basins}
    grid = reference.fes
    return ModelPhiPsi(name, MeanSE.of([r.score.js for r in per]), MeanSE.of([r.score.tae for r in per]), pops,
                       compare_populations(pops, reference.populations),
                       MeanSE.of([r.transitions_per_ns for r in per]),
                       FreeEnergySurface(grid.phi_edges, grid.psi_edges, pooled), per)


@dataclass(frozen=True)
class ReferencePhiPsi:
    """What a model is scored against, read back from a reference's report (e.g. a system's
    ``aa_report.json``, a :class:`~openmm_cgkd.analysis.ramachandran.PhiPsiAnalysis` as JSON):
    its ``fes``, ``populations``, ``noise_floor`` (dict or None) and ``span_ns``."""

    fes: FreeEnergySurface
    populations: dict[str, BasinPopulation]
    noise_floor: dict | None
    span_ns: float


def reference_from_dict(data: Mapping, spec: RamachandranSpec) -> ReferencePhiPsi:
    """:class:`ReferencePhiPsi` of a ``PhiPsiAnalysis.to_dict()`` (with its ``fes``); its grid and
    basins must be the spec's."""
    try:
        fes = fes_from_dict(data["fes"])
        pops = {k: BasinPopulation(k, p["name"], float(p["fraction"]), float(p["se"]), int(p["n_blocks"]),
                                   float(p["block_ps"])) for k, p in data["populations"].items()}
        span = float(data["span_ns"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AnalysisError(f"not a phi/psi report (PhiPsiAnalysis.to_dict() with its fes): missing or bad {exc}") \
            from exc
    if abs(fes.bin_deg - spec.bin_deg) > 1e-9 or set(pops) != set(spec.keys):
        raise AnalysisError(f"the reference report has {fes.bin_deg:g}-degree bins and basins {sorted(pops)}; the "
                            f"spec {spec.bin_deg:g} and {sorted(spec.keys)}")
    return ReferencePhiPsi(fes, pops, data.get("noise_floor"), span)


def fes_from_dict(data: Mapping) -> FreeEnergySurface:
    """The :class:`FreeEnergySurface` of its ``to_dict`` (e.g. an AA report's ``fes``)."""
    return FreeEnergySurface(np.asarray(data["phi_edges_deg"], dtype=np.float64),
                             np.asarray(data["psi_edges_deg"], dtype=np.float64),
                             np.asarray(data["counts"], dtype=np.float64))


def _z(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:+.1f}"


def phi_psi_markdown(models: Mapping[str, Mapping], reference: Mapping, basins: Sequence[Mapping]) -> list[str]:
    """Markdown lines of the phi/psi table: the reference row, one row per model (``ModelPhiPsi.to_dict()``
    of each; the reference ``PhiPsiAnalysis.to_dict()``), and the noise floor."""
    keys = [b["key"] for b in basins]
    names = {b["key"]: b["name"] for b in basins}
    lines = ["| model | replicas | JS (nats) | TAE | " + " | ".join(
        f"{names[k]}: fraction (z, dF kT)" for k in keys) + " | transitions per ns |",
             "|---|---|---|---|" + "---|" * len(keys) + "---|"]
    ref_pops = reference["populations"]
    ref_rate = reference["transitions"]["total"] / reference["span_ns"]
    lines.append(f"| AA reference | {reference['span_ns']:.3g} ns | - | - | " + " | ".join(
        f"{ref_pops[k]['fraction']:.3f} +- {ref_pops[k]['se']:.3f}" for k in keys) + f" | {ref_rate:.3g} |")
    for name, m in models.items():
        def ms(d, spec=".3f"):
            return MeanSE(d["mean"], d["se"], d["n"]).text(spec)

        cells = []
        for k in keys:
            p, diff = m["populations"][k], m["population_differences"][k]
            se = "" if p["se"] is None else f" +- {p['se']:.3f}"
            df = diff["free_energy_difference_kT"]
            cells.append(f"{p['fraction']:.3f}{se} ({_z(diff['z'])}, {'n/a' if df is None else format(df + 0.0, '+.2f')})")
        lines.append(f"| {name} | {m['n_replicas']} | {ms(m['js'], '.4f')} | {ms(m['tae'])} | " + " | ".join(cells)
                     + f" | {ms(m['transitions_per_ns'], '.3g')} |")
    floor = reference.get("noise_floor")
    if floor:
        text = f"JS {floor['halves']['js']:.4f}, TAE {floor['halves']['tae']:.3f} (first half vs second half)"
        if floor.get("n_blocks"):
            text += (f"; {floor['n_blocks']} blocks of {floor['block_ps']:g} ps (a replica's length) against the "
                     f"other half: JS {floor['block_mean']['js']:.4f} +- {floor['block_std']['js']:.4f}, TAE "
                     f"{floor['block_mean']['tae']:.3f} +- {floor['block_std']['tae']:.3f}")
        lines += ["", f"Noise floor of the score (the AA reference against itself): {text}. A model scoring within "
                  "it cannot be told from the reference."]
    return lines
