"""Backbone dihedrals of a peptide: the phi/psi free energy, basin populations, transitions, a score.

Plain functions of arrays, mdtraj style (angles in degrees in [-180, 180), times in ps, free
energies in kT). The system-specific part, which beads define phi and psi and where the basins
lie, is a :class:`RamachandranSpec` read from the system's folder (e.g.
``systems/dipeptide/ramachandran.yaml``), never written here.

* :func:`compute_dihedrals`: dihedral angles of bead quadruples (IUPAC sign, as
  ``mdtraj.compute_dihedrals``), from positions of whole molecules (no minimum image);
* :func:`free_energy_surface`: the 2-D histogram of (phi, psi) and ``F = -ln p`` (kT), shifted
  to 0 at its minimum; empty bins have ``F = +inf`` (plots leave them blank);
* :func:`basin_populations`: the fraction of time in each basin's region, with a standard error
  from block averages in time (:func:`block_average`);
* :func:`compare_populations`: a model's populations against the reference's, in standard
  errors and in kT;
* :func:`basin_transitions`: transitions between basin *cores* (transition-based assignment,
  Buchete and Hummer, J. Phys. Chem. B 112, 6057 (2008)): a frame outside every core keeps the
  last core visited, so a trajectory that recrosses a boundary without reaching another core
  counts no transition;
* :func:`fes_score`: the Jensen-Shannon divergence (nats, in [0, ln 2]) and the total absolute
  error (in [0, 2]) of a model's 2-D (phi, psi) histogram against the reference's;
* :func:`fes_noise_floor`: the same score for the reference against itself (first half vs second
  half, and blocks of one half vs the other half), the floor below which a score means nothing;
* :func:`analyze_phi_psi`: all of it for one trajectory (:class:`PhiPsiAnalysis`, JSON-ready).

Box convention of the basins: ``phi: [lo, hi]`` holds ``lo <= phi < hi`` (degrees); ``lo > hi``
wraps through 180 (``psi: [60, -160]`` is ``psi >= 60 or psi < -160``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from openmm_cgkd.analysis.distributions import AnalysisError
from openmm_cgkd.config import Config, ConfigError

__all__ = ["AngleBox", "Basin", "RamachandranSpec", "compute_dihedrals", "phi_psi", "FreeEnergySurface",
           "free_energy_surface", "DEFAULT_BIN_DEG", "block_average", "BlockAverage", "BasinPopulation",
           "basin_populations", "PopulationDifference", "compare_populations", "assign_regions",
           "committed_cores", "TransitionCounts", "basin_transitions",
           "FESScore", "fes_score", "jensen_shannon", "FESNoiseFloor", "fes_noise_floor", "wrap_degrees",
           "PhiPsiAnalysis", "analyze_phi_psi", "BLOCK_SCAN_PS"]

# 36 x 36 bins. With 1e4 to 1e5 frames (10 to 100 ns at 1 ps), the most populated 10-degree bin
# holds about 2 % of the frames and a bin 4 kT above it about 2 % of that: some 40 counts per
# 1e5 frames, an error of about 0.15 kT (uncorrelated; more with correlation). 5-degree bins
# quarter the counts (0.3 kT there) and leave most of a 10 ns model replica's bins empty.
DEFAULT_BIN_DEG = 10.0


def wrap_degrees(angle) -> np.ndarray:
    """Angles (degrees) mapped into [-180, 180)."""
    return (np.asarray(angle, dtype=np.float64) + 180.0) % 360.0 - 180.0


# --------------------------------------------------------------------------- the spec

@dataclass
class AngleBox(Config):
    """A rectangle of the (phi, psi) plane: ``lo <= angle < hi`` per angle (degrees in
    [-180, 180]); ``lo > hi`` wraps through 180."""

    phi: list[float]
    psi: list[float]

    def __post_init__(self) -> None:
        for name, rng in (("phi", self.phi), ("psi", self.psi)):
            if len(rng) != 2 or not all(-180.0 <= float(a) <= 180.0 for a in rng) or rng[0] == rng[1]:
                raise ConfigError(f"box {name} must be [lo, hi] in degrees within [-180, 180], lo != hi; got {rng}")

    def contains(self, phi: np.ndarray, psi: np.ndarray) -> np.ndarray:
        """Boolean mask [T]: which (phi, psi) pairs (degrees) lie in the box."""
        return _in_range(wrap_degrees(phi), *self.phi) & _in_range(wrap_degrees(psi), *self.psi)


def _in_range(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    lo, hi = wrap_degrees(lo), (180.0 if hi == 180.0 else wrap_degrees(hi))
    return (a >= lo) & (a < hi) if lo < hi else (a >= lo) | (a < hi)


@dataclass
class Basin(Config):
    """A basin of the (phi, psi) plane: ``key`` (short, for files), ``name`` (for people),
    ``region`` (boxes; populations count frames in them) and ``core`` (smaller boxes, apart from
    the other basins' cores; transitions are counted between cores; default: the region)."""

    key: str
    name: str
    region: list[AngleBox]
    core: list[AngleBox] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.region:
            raise ConfigError(f"basin {self.key}: region needs at least one box")
        if not self.core:
            self.core = list(self.region)

    def in_region(self, phi: np.ndarray, psi: np.ndarray) -> np.ndarray:
        return np.logical_or.reduce([b.contains(phi, psi) for b in self.region])

    def in_core(self, phi: np.ndarray, psi: np.ndarray) -> np.ndarray:
        return np.logical_or.reduce([b.contains(phi, psi) for b in self.core])


@dataclass
class RamachandranSpec(Config):
    """What the analysis needs to know of one peptide (a system's YAML file): the bead indices
    of ``phi`` and ``psi`` (4 each, 0-based) and the ``basins``; ``bin_deg`` the FES grid."""

    phi: list[int]
    psi: list[int]
    basins: list[Basin]
    bin_deg: float = DEFAULT_BIN_DEG
    description: str = ""

    def __post_init__(self) -> None:
        for name, q in (("phi", self.phi), ("psi", self.psi)):
            if len(q) != 4 or len(set(q)) != 4 or min(q) < 0:
                raise ConfigError(f"{name} must be 4 distinct bead indices (0-based), got {q}")
        keys = [b.key for b in self.basins]
        if not keys or len(set(keys)) != len(keys):
            raise ConfigError(f"basins need distinct keys, got {keys}")
        if not 0 < self.bin_deg <= 90 or abs(360.0 / self.bin_deg - round(360.0 / self.bin_deg)) > 1e-9:
            raise ConfigError(f"bin_deg must divide 360 (e.g. 5, 10, 15), got {self.bin_deg}")

    @property
    def keys(self) -> list[str]:
        return [b.key for b in self.basins]


# --------------------------------------------------------------------------- dihedrals

def compute_dihedrals(positions_nm, quadruples) -> np.ndarray:
    """Dihedral angles (degrees in [-180, 180)) of bead quadruples, IUPAC sign convention.

    Parameters
    ----------
    positions_nm : array [T, N, 3] (nm)
        Positions of whole molecules (no minimum image is applied).
    quadruples : array [K, 4] of int
        Bead indices i-j-k-l; the angle is that between the planes i-j-k and j-k-l.

    Returns
    -------
    array [T, K] (degrees); the same angles as ``mdtraj.compute_dihedrals`` (radians there).
    """
    x = np.asarray(positions_nm, dtype=np.float64)
    q = np.asarray(quadruples, dtype=np.int64).reshape(-1, 4)
    if x.ndim != 3 or x.shape[2] != 3:
        raise AnalysisError(f"positions must be [frames, beads, 3], got shape {x.shape}")
    if q.size and (q.min() < 0 or q.max() >= x.shape[1]):
        raise AnalysisError(f"dihedral bead indices {q.tolist()} outside the {x.shape[1]} beads")
    b1 = x[:, q[:, 1]] - x[:, q[:, 0]]
    b2 = x[:, q[:, 2]] - x[:, q[:, 1]]
    b3 = x[:, q[:, 3]] - x[:, q[:, 2]]
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=-1) * np.sum(b1 * n2, axis=-1)
    return wrap_degrees(np.degrees(np.arctan2(y, np.sum(n1 * n2, axis=-1))))


def phi_psi(positions_nm, spec: RamachandranSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(phi [T], psi [T])`` in degrees of positions [T, N, 3] (nm) by the spec's bead indices."""
    angles = compute_dihedrals(positions_nm, [spec.phi, spec.psi])
    return angles[:, 0], angles[:, 1]


# --------------------------------------------------------------------------- free energy

@dataclass(frozen=True)
class FreeEnergySurface:
    """The (phi, psi) histogram on a periodic grid and its free energy.

    ``counts`` [n_phi, n_psi] (frames per bin; rows phi, columns psi); ``phi_edges``,
    ``psi_edges`` (degrees, n+1 each); :attr:`probability` the fraction of frames per bin;
    :attr:`free_energy_kT` ``-ln(probability / bin area)`` shifted to 0 at its minimum, ``+inf``
    in empty bins.
    """

    phi_edges: np.ndarray
    psi_edges: np.ndarray
    counts: np.ndarray

    @property
    def n_samples(self) -> int:
        return int(self.counts.sum())

    @property
    def bin_deg(self) -> float:
        return float(self.phi_edges[1] - self.phi_edges[0])

    @property
    def probability(self) -> np.ndarray:
        """Fraction of the frames in each bin [n_phi, n_psi] (sums to 1)."""
        return self.counts / max(self.n_samples, 1)

    @property
    def density(self) -> np.ndarray:
        """Probability density per degree^2 [n_phi, n_psi]."""
        return self.probability / (np.diff(self.phi_edges)[:, None] * np.diff(self.psi_edges)[None, :])

    @property
    def free_energy_kT(self) -> np.ndarray:
        """``F = -ln p`` (kT) [n_phi, n_psi], minimum 0; ``+inf`` where no frame fell."""
        d = self.density
        with np.errstate(divide="ignore"):
            f = -np.log(d)
        finite = np.isfinite(f)
        return f - f[finite].min() if finite.any() else f

    def to_dict(self) -> dict:
        return {"phi_edges_deg": self.phi_edges.tolist(), "psi_edges_deg": self.psi_edges.tolist(),
                "counts": self.counts.astype(int).tolist()}


def free_energy_surface(phi, psi, bin_deg: float = DEFAULT_BIN_DEG) -> FreeEnergySurface:
    """The (phi, psi) histogram of angles in degrees ([T] each) on a grid of ``bin_deg``-degree
    bins from -180 to 180 (``bin_deg`` must divide 360; default :data:`DEFAULT_BIN_DEG`)."""
    phi, psi = wrap_degrees(phi).ravel(), wrap_degrees(psi).ravel()
    if phi.shape != psi.shape or phi.size == 0:
        raise AnalysisError(f"phi and psi must be non-empty series of one length, got {phi.size} and {psi.size}")
    n = 360.0 / bin_deg
    if abs(n - round(n)) > 1e-9:
        raise AnalysisError(f"bin_deg must divide 360, got {bin_deg}")
    edges = np.linspace(-180.0, 180.0, int(round(n)) + 1)
    counts, _, _ = np.histogram2d(phi, psi, bins=[edges, edges])
    return FreeEnergySurface(edges, edges.copy(), counts)


# --------------------------------------------------------------------------- block averages

@dataclass(frozen=True)
class BlockAverage:
    """Mean of a time series with its standard error from ``n_blocks`` block means of
    ``block_ps`` each (``se = std(block means, ddof=1) / sqrt(n_blocks)``)."""

    mean: float
    se: float
    n_blocks: int
    block_ps: float

    def to_dict(self) -> dict:
        return {"mean": self.mean, "se": self.se, "n_blocks": self.n_blocks, "block_ps": self.block_ps}


def _block_index(times_ps, block_ps: float) -> tuple[np.ndarray, int]:
    """Block of each frame (-1: in the incomplete last block) and the number of full blocks."""
    t = np.asarray(times_ps, dtype=np.float64)
    if t.ndim != 1 or t.size < 2 or np.any(np.diff(t) <= 0):
        raise AnalysisError("times must be an increasing series of at least 2 frames (ps)")
    if not block_ps > 0:
        raise AnalysisError(f"block_ps must be > 0, got {block_ps}")
    dt = float(np.median(np.diff(t)))
    span = t[-1] - t[0] + dt  # each frame stands for dt of time
    n_blocks = int(np.floor(span / block_ps + 1e-9))
    idx = np.floor((t - t[0]) / block_ps + 1e-9).astype(np.int64)
    idx[idx >= n_blocks] = -1
    return idx, n_blocks


def block_average(values, times_ps, block_ps: float) -> BlockAverage:
    """Mean and standard error of a correlated series by block averaging in time.

    Parameters
    ----------
    values : array [T]
        The series (e.g. 0/1 for "in basin A").
    times_ps : array [T]
        Increasing times (ps); frames need not be evenly spaced.
    block_ps : float
        Block length (ps); frames after the last full block are dropped. The error is right
        when blocks are much longer than the series' correlation time: check that it no longer
        grows with ``block_ps``. At least 2 blocks are needed.
    """
    v = np.asarray(values, dtype=np.float64)
    idx, n_blocks = _block_index(times_ps, block_ps)
    if v.shape != idx.shape:
        raise AnalysisError(f"values [{v.size}] and times [{idx.size}] differ in length")
    if n_blocks < 2:
        raise AnalysisError(f"blocks of {block_ps:g} ps: the series holds {n_blocks}, at least 2 are needed")
    keep = idx >= 0
    sums = np.bincount(idx[keep], weights=v[keep], minlength=n_blocks)
    counts = np.bincount(idx[keep], minlength=n_blocks)
    if np.any(counts == 0):
        raise AnalysisError(f"blocks of {block_ps:g} ps: some hold no frame (gaps in the times)")
    means = sums / counts
    return BlockAverage(float(v[keep].mean()), float(means.std(ddof=1) / np.sqrt(n_blocks)), n_blocks,
                        float(block_ps))


# --------------------------------------------------------------------------- basins

def assign_regions(phi, psi, basins: Sequence[Basin], core: bool = False) -> np.ndarray:
    """Index of the basin whose region (or core) holds each frame [T] (-1: none); a frame in
    two basins' boxes is an error of the definitions."""
    phi, psi = np.asarray(phi, np.float64), np.asarray(psi, np.float64)
    masks = np.array([(b.in_core if core else b.in_region)(phi, psi) for b in basins])
    if np.any(masks.sum(axis=0) > 1):
        raise AnalysisError(f"basin {'cores' if core else 'regions'} overlap: a frame lies in two of "
                            f"{[b.key for b in basins]}")
    out = np.full(phi.shape, -1, dtype=np.int64)
    for i, m in enumerate(masks):
        out[m] = i
    return out


@dataclass(frozen=True)
class BasinPopulation:
    """Fraction of time in one basin's region: ``fraction`` +- ``se`` (block averages),
    and the basin's free energy ``-ln(fraction)`` (kT) +- ``se / fraction``."""

    key: str
    name: str
    fraction: float
    se: float
    n_blocks: int
    block_ps: float

    @property
    def free_energy_kT(self) -> float:
        return float(-np.log(self.fraction)) if self.fraction > 0 else float("inf")

    @property
    def free_energy_se_kT(self) -> float:
        return self.se / self.fraction if self.fraction > 0 else float("inf")

    def to_dict(self) -> dict:
        return {"key": self.key, "name": self.name, "fraction": self.fraction, "se": self.se,
                "free_energy_kT": self.free_energy_kT, "free_energy_se_kT": self.free_energy_se_kT,
                "n_blocks": self.n_blocks, "block_ps": self.block_ps}


def basin_populations(phi, psi, times_ps, basins: Sequence[Basin], block_ps: float) -> dict[str, BasinPopulation]:
    """{basin key: :class:`BasinPopulation`} of (phi, psi) series (degrees, [T]) at
    ``times_ps`` [T]; standard errors from blocks of ``block_ps`` ps (:func:`block_average`).
    Frames in no region count in no basin (the fractions may sum to less than 1)."""
    region = assign_regions(phi, psi, basins)
    out = {}
    for i, b in enumerate(basins):
        avg = block_average(region == i, times_ps, block_ps)
        out[b.key] = BasinPopulation(b.key, b.name, avg.mean, avg.se, avg.n_blocks, avg.block_ps)
    return out


@dataclass(frozen=True)
class PopulationDifference:
    """A model's basin population against the reference's: ``difference`` (model - reference),
    ``z`` = difference / sqrt(se_model^2 + se_ref^2) (None when both errors are 0) and
    ``free_energy_difference_kT`` = -ln(p_model / p_ref) (None when either is 0)."""

    key: str
    difference: float
    z: float | None
    free_energy_difference_kT: float | None

    def to_dict(self) -> dict:
        return {"key": self.key, "difference": self.difference, "z": self.z,
                "free_energy_difference_kT": self.free_energy_difference_kT}


def compare_populations(model: Mapping[str, BasinPopulation],
                        reference: Mapping[str, BasinPopulation]) -> dict[str, PopulationDifference]:
    """{basin key: :class:`PopulationDifference`} of a model's populations against the
    reference's (the same basins; e.g. the goal "within 2 standard errors or 0.5 kT")."""
    if set(model) != set(reference):
        raise AnalysisError(f"populations of different basins: {sorted(model)} vs {sorted(reference)}")
    out = {}
    for key, ref in reference.items():
        m = model[key]
        se = float(np.hypot(m.se, ref.se))
        df = float(-np.log(m.fraction / ref.fraction)) if m.fraction > 0 and ref.fraction > 0 else None
        out[key] = PopulationDifference(key, m.fraction - ref.fraction,
                                        (m.fraction - ref.fraction) / se if se > 0 else None, df)
    return out


@dataclass(frozen=True)
class TransitionCounts:
    """Transitions between basin cores: ``counts[i, j]`` from basin i to basin j (``keys``
    order); ``events`` (time ps of the frame entering the new core, from key, to key);
    ``start_ps``, ``end_ps`` the series' span; ``unassigned_ps`` the time before the first core."""

    keys: list[str]
    counts: np.ndarray
    events: list[tuple[float, str, str]]
    start_ps: float
    end_ps: float
    unassigned_ps: float

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def between(self, a: str, b: str) -> int:
        """Transitions a -> b plus b -> a."""
        i, j = self.keys.index(a), self.keys.index(b)
        return int(self.counts[i, j] + self.counts[j, i])

    def to_dict(self) -> dict:
        """Counts, and the event times grouped by pair (``times_ps["beta->alpha_R"]``, ps)."""
        times: dict[str, list[float]] = {}
        for t, a, b in self.events:
            times.setdefault(f"{a}->{b}", []).append(t)
        return {"keys": self.keys, "counts": self.counts.astype(int).tolist(), "total": self.total,
                "times_ps": times, "start_ps": self.start_ps, "end_ps": self.end_ps,
                "unassigned_ps": self.unassigned_ps}


def committed_cores(phi, psi, basins: Sequence[Basin]) -> np.ndarray:
    """The core each frame last visited [T] (-1 before the first core): transition-based
    assignment."""
    core = assign_regions(phi, psi, basins, core=True)
    seen = np.where(core >= 0, np.arange(core.size), -1)
    last = np.maximum.accumulate(seen) if core.size else seen
    return np.where(last >= 0, core[np.maximum(last, 0)], -1)


def basin_transitions(phi, psi, times_ps, basins: Sequence[Basin]) -> TransitionCounts:
    """Transitions between the basins' cores in (phi, psi) series (degrees, [T]) at
    ``times_ps`` [T]: a transition i -> j is counted when the trajectory, last in core i,
    enters core j; excursions out of a core and back into it count nothing."""
    t = np.asarray(times_ps, dtype=np.float64)
    state = committed_cores(phi, psi, basins)
    if state.shape != t.shape:
        raise AnalysisError(f"angles [{state.size}] and times [{t.size}] differ in length")
    keys = [b.key for b in basins]
    counts = np.zeros((len(keys), len(keys)), dtype=np.int64)
    change = np.flatnonzero((state[1:] != state[:-1]) & (state[:-1] >= 0)) + 1
    events = []
    for k in change:
        a, b = state[k - 1], state[k]
        counts[a, b] += 1
        events.append((float(t[k]), keys[a], keys[b]))
    first = np.flatnonzero(state >= 0)
    unassigned = float(t[first[0]] - t[0]) if first.size else float(t[-1] - t[0])
    return TransitionCounts(keys, counts, events, float(t[0]), float(t[-1]), unassigned)


# --------------------------------------------------------------------------- score

@dataclass(frozen=True)
class FESScore:
    """A model's (phi, psi) histogram against the reference's on one grid: ``js`` the
    Jensen-Shannon divergence (nats, 0 to ln 2), ``tae`` ``sum |p - q|`` over bins (0 to 2)."""

    js: float
    tae: float

    def to_dict(self) -> dict:
        return {"js": self.js, "tae": self.tae}


def jensen_shannon(p, q) -> float:
    """Jensen-Shannon divergence (natural log; 0 to ln 2) of two histograms of one shape (each
    normalised to sum 1 here; empty bins allowed)."""
    p = np.asarray(p, np.float64).ravel()
    q = np.asarray(q, np.float64).ravel()
    if p.shape != q.shape or p.sum() <= 0 or q.sum() <= 0:
        raise AnalysisError("Jensen-Shannon divergence needs two non-empty histograms of one shape")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / m[nz])))

    return max(0.5 * kl(p) + 0.5 * kl(q), 0.0)


def fes_score(model: FreeEnergySurface, reference: FreeEnergySurface) -> FESScore:
    """:class:`FESScore` of ``model`` against ``reference`` (same grid)."""
    if model.counts.shape != reference.counts.shape or not np.allclose(model.phi_edges, reference.phi_edges):
        raise AnalysisError(f"FES score of surfaces on different grids ({model.bin_deg:g} vs "
                            f"{reference.bin_deg:g} degree bins)")
    p, q = model.probability, reference.probability
    return FESScore(jensen_shannon(p, q), float(np.abs(p - q).sum()))


@dataclass(frozen=True)
class FESNoiseFloor:
    """The reference scored against itself: ``halves`` first half vs second half (in time);
    ``blocks`` each block of ``block_ps`` of one half against the other half (mean, std over
    the blocks in ``block_mean``, ``block_std``)."""

    halves: FESScore
    block_ps: float | None
    blocks: list[FESScore]

    def block_mean(self) -> FESScore:
        return FESScore(float(np.mean([b.js for b in self.blocks])), float(np.mean([b.tae for b in self.blocks])))

    def block_std(self) -> FESScore:
        return FESScore(float(np.std([b.js for b in self.blocks])), float(np.std([b.tae for b in self.blocks])))

    def to_dict(self) -> dict:
        d = {"halves": self.halves.to_dict(), "block_ps": self.block_ps, "n_blocks": len(self.blocks)}
        if self.blocks:
            d.update(block_mean=self.block_mean().to_dict(), block_std=self.block_std().to_dict())
        return d


def fes_noise_floor(phi, psi, times_ps, bin_deg: float = DEFAULT_BIN_DEG,
                    block_ps: float | None = None) -> FESNoiseFloor:
    """The sampling noise of :func:`fes_score` from the reference itself (degrees, ps, [T]).

    The series is cut into two halves in time; ``halves`` scores the first against the second.
    With ``block_ps`` (the length of a model replica that is scored), each half is cut into
    blocks of that length and every block is scored against the OTHER half: a model replica
    of that length scoring within these values cannot be told from the reference. (Scores of
    samples of different sizes have different biases: size the blocks like the replicas.)
    """
    phi, psi = wrap_degrees(phi).ravel(), wrap_degrees(psi).ravel()
    t = np.asarray(times_ps, dtype=np.float64).ravel()
    if not (phi.size == psi.size == t.size) or t.size < 4:
        raise AnalysisError("noise floor: phi, psi and times must be series of one length (>= 4 frames)")
    mid = t[0] + 0.5 * (t[-1] - t[0] + float(np.median(np.diff(t))))
    halves = [t < mid, t >= mid]
    fes = [free_energy_surface(phi[h], psi[h], bin_deg) for h in halves]
    blocks: list[FESScore] = []
    if block_ps is not None:
        for h, other in ((halves[0], fes[1]), (halves[1], fes[0])):
            idx, n_blocks = _block_index(t[h], block_ps)
            if n_blocks < 1:
                raise AnalysisError(f"noise floor: a half of {t[h][-1] - t[h][0]:g} ps holds no block of "
                                    f"{block_ps:g} ps")
            for k in range(n_blocks):
                sel = idx == k
                blocks.append(fes_score(free_energy_surface(phi[h][sel], psi[h][sel], bin_deg), other))
    return FESNoiseFloor(fes_score(fes[0], fes[1]), block_ps, blocks)



# --------------------------------------------------------------------------- all of it

BLOCK_SCAN_PS = (100.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0)


@dataclass(frozen=True)
class PhiPsiAnalysis:
    """Everything :func:`analyze_phi_psi` measures on one (phi, psi) trajectory.

    ``fes``; ``populations`` (blocks of ``block_ps``); ``se_by_block_ps`` {basin key: {block ps:
    SE}} (the errors should stop growing with the block length); ``transitions``;
    ``dwell_ps`` {basin key: time committed to its core / exits from it (ps), None without exit};
    ``noise_floor`` (None unless asked for); ``frames``, ``span_ps`` (frames x frame interval).
    """

    frames: int
    start_ps: float
    span_ps: float
    frame_interval_ps: float
    fes: FreeEnergySurface
    populations: dict[str, BasinPopulation]
    se_by_block_ps: dict[str, dict[float, float]]
    transitions: TransitionCounts
    dwell_ps: dict[str, float | None]
    noise_floor: FESNoiseFloor | None

    def to_dict(self) -> dict:
        return {"frames": self.frames, "start_ps": self.start_ps, "span_ns": self.span_ps / 1000.0,
                "frame_interval_ps": self.frame_interval_ps, "bin_deg": self.fes.bin_deg,
                "populations": {k: v.to_dict() for k, v in self.populations.items()},
                "outside_basins_fraction": float(1.0 - sum(v.fraction for v in self.populations.values())),
                "population_se_by_block_ps": {k: {f"{bp:g}": se for bp, se in v.items()}
                                              for k, v in self.se_by_block_ps.items()},
                "transitions": self.transitions.to_dict(), "mean_dwell_ps": self.dwell_ps,
                "noise_floor": None if self.noise_floor is None else self.noise_floor.to_dict(),
                "fes": self.fes.to_dict()}


def analyze_phi_psi(phi, psi, times_ps, spec: RamachandranSpec, block_ps: float,
                    replica_ps: float | None = None) -> PhiPsiAnalysis:
    """FES, populations (+- SE from blocks of ``block_ps`` ps, and the SE at the block lengths
    of ``BLOCK_SCAN_PS`` that fit 4 times), core transitions, dwell times and, with
    ``replica_ps``, the noise floor of the score (:func:`fes_noise_floor`; halves only when a
    half is shorter than ``replica_ps``) of (phi, psi) series (degrees, [T]) at ``times_ps``."""
    t = np.asarray(times_ps, dtype=np.float64)
    phi, psi = wrap_degrees(phi), wrap_degrees(psi)
    if not phi.shape == psi.shape == t.shape or t.size < 4:
        raise AnalysisError("phi, psi and times must be series of one length (>= 4 frames)")
    dt = float(np.median(np.diff(t)))
    span = float(t[-1] - t[0] + dt)
    regions = assign_regions(phi, psi, spec.basins)
    scan = {b.key: {bp: block_average(regions == i, t, bp).se for bp in BLOCK_SCAN_PS if span / bp >= 4}
            for i, b in enumerate(spec.basins)}
    trans = basin_transitions(phi, psi, t, spec.basins)
    state = committed_cores(phi, psi, spec.basins)
    dwell = {}
    for i, b in enumerate(spec.basins):
        exits = int(trans.counts[i].sum())
        dwell[b.key] = float(np.count_nonzero(state == i) * dt / exits) if exits else None
    floor = None
    if replica_ps is not None:
        blocks = replica_ps if span >= 2 * replica_ps else None
        floor = fes_noise_floor(phi, psi, t, spec.bin_deg, block_ps=blocks)
    return PhiPsiAnalysis(int(t.size), float(t[0]), span, dt, free_energy_surface(phi, psi, spec.bin_deg),
                          basin_populations(phi, psi, t, spec.basins, block_ps), scan, trans, dwell, floor)
