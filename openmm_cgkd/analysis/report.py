"""Structural report of one CG model: replicas against an AA reference (what ``cgkd analyze`` runs).

``analyze_model`` loads the replicas (mdtraj trajectories or files), detects and discards
equilibration when potential-energy series are given, checks coordinates, computes RDF / ADF /
CDF of the replicas and the reference on common grids, TAEs per curve and per kind, statistics
over replicas and the stability of each replica. ``write_report`` writes ``report.json``,
``summary.md`` and the PNG plots.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from openmm_cgkd.analysis.adf import DEFAULT_ADF_BIN_WIDTH, adf_cutoffs_from_rdfs, compute_adfs
from openmm_cgkd.analysis.cdf import (DEFAULT_CDF_BIN_WIDTH, cdf_edges, cdf_from_merge_distances,
                                      frame_merge_distances)
from openmm_cgkd.analysis.distributions import AnalysisError, Distribution, bead_type_indices
from openmm_cgkd.analysis.equilibration import (EquilibrationResult, detect_equilibration, frames_to_discard,
                                                read_energy_log)
from openmm_cgkd.analysis.rdf import (AA_CONTACT_G, DEFAULT_RDF_BIN_WIDTH, DEFAULT_RDF_R_MAX, CloseContact,
                                      close_contacts, compute_rdfs, rdf_edges)
from openmm_cgkd.analysis.replicas import ReplicaStat, replica_mean, replica_stat, replica_tae_stats
from openmm_cgkd.analysis.stability import (DEFAULT_DRIFT_THRESHOLD, DEFAULT_N_BLOCKS, StabilityReport,
                                            assess_stability, check_coordinates, thermal_check)
from openmm_cgkd.analysis.tae import tae_table
from openmm_cgkd.config import Config
from openmm_cgkd.fileio import plain_values

__all__ = ["AnalysisSettings", "ReplicaAnalysis", "ModelReport", "analyze_model", "write_report",
           "load_trajectory", "load_reference", "summarize_taes", "KINDS"]

KINDS = ("rdf", "adf", "cdf")
NO_BOX = ("the reference has no periodic box (a solute in vacuum or implicit solvent): the RDF, ADF and CDF "
          "(and the CDF drift) need one (a density, minimum-image neighbours) and are not computed; the bond, "
          "angle and dihedral distributions, the coordinates, equilibration and the temperature and energy "
          "drift of the MD logs are")


@dataclass
class AnalysisSettings(Config):
    """Grids and thresholds of the structural analysis (nm, degree). ``from_dict`` / ``from_yaml``
    refuse unknown keys and wrong types (:mod:`openmm_cgkd.config`); bad values are
    :class:`~openmm_cgkd.analysis.distributions.AnalysisError` s."""

    rdf_r_max: float = DEFAULT_RDF_R_MAX
    rdf_bin_width: float = DEFAULT_RDF_BIN_WIDTH
    rdf_mode: str = "g"  # TAE of g(r) itself, or "density" (unit-area curves); see tae.py
    adf_cutoffs: tuple[float, ...] | None = None  # nm; None: each pair's first shell in the reference g(r)
    adf_bin_width: float = DEFAULT_ADF_BIN_WIDTH
    cdf_bin_width: float = DEFAULT_CDF_BIN_WIDTH
    cdf_r_max: float | None = None  # default: half the smallest box width
    n_blocks: int = DEFAULT_N_BLOCKS
    drift_threshold: float = DEFAULT_DRIFT_THRESHOLD
    max_extent_boxes: float = 10.0
    stride: int = 1  # of the CG trajectories, applied when loading files
    discard_frames: int = 0  # frames dropped from the start of EVERY replica of every model (after stride)
    reference_stride: int = 1
    reference_max_frames: int | None = None  # last frames of the reference kept (after stride)

    def __post_init__(self) -> None:
        from openmm_cgkd.analysis.tae import RDF_MODES

        if self.rdf_mode not in RDF_MODES:
            raise AnalysisError(f"rdf_mode must be one of {RDF_MODES}, got {self.rdf_mode!r}")
        for name in ("stride", "reference_stride", "n_blocks"):
            if int(getattr(self, name)) < 1:
                raise AnalysisError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.adf_cutoffs is not None:
            if not self.adf_cutoffs or min(self.adf_cutoffs) <= 0:
                raise AnalysisError(f"adf_cutoffs must be positive distances (nm), got {self.adf_cutoffs}")
            self.adf_cutoffs = tuple(float(c) for c in self.adf_cutoffs)

    def with_adf_cutoffs(self, reference) -> "AnalysisSettings":
        """These settings with the ADF cutoffs resolved: the given ones, else the first-shell
        cutoffs of the reference trajectory's g(r) (:func:`~openmm_cgkd.analysis.adf.adf_cutoffs_from_rdfs`)."""
        import dataclasses

        if self.adf_cutoffs is not None or reference.unitcell_vectors is None:  # no box: no ADFs (NO_BOX)
            return self
        from openmm_cgkd.analysis.distributions import box_half_width, require_periodic

        half = box_half_width(require_periodic(reference))
        rdfs = compute_rdfs(reference, rdf_edges(reference, r_max=self.rdf_r_max, bin_width=self.rdf_bin_width))
        return dataclasses.replace(self, adf_cutoffs=adf_cutoffs_from_rdfs(rdfs, max_nm=half))


@dataclass
class ReplicaAnalysis:
    """One replica: what was used, its curves, its TAEs (per kind, per key) and its stability."""

    name: str
    n_frames_loaded: int
    start_frame: int  # first frame used (after equilibration / manual discard)
    stop_frame: int  # one past the last frame used (first broken frame, or the end)
    equilibration: EquilibrationResult | None
    stability: StabilityReport
    curves: dict[str, dict[str, Distribution]] = field(default_factory=dict)
    tae: dict[str, dict[str, float]] = field(default_factory=dict)
    energy_series: tuple[np.ndarray, np.ndarray] | None = None  # (x, energies), for plots only
    failure: str | None = None  # why the replica is not scored (MD failure, broken frames, nothing left)

    @property
    def n_frames_used(self) -> int:
        return max(0, self.stop_frame - self.start_frame)

    @property
    def failed(self) -> bool:
        """An unstable replica (MD stopped, NaN/exploded frames) is a result: counted, not scored."""
        return self.failure is not None

    @property
    def equilibrated_within_discard(self) -> bool | None:
        """pymbar's check of the fixed discard: False when its equilibration time lies beyond the
        discarded frames (None without an energy series)."""
        if self.equilibration is None:
            return None
        return frames_to_discard(self.equilibration, self.n_frames_loaded) <= self.start_frame

    def to_dict(self, curves: bool = False, blocks: bool = True) -> dict:
        """``curves``: this replica's RDF/ADF/CDF curves; ``blocks``: its time-resolved CDFs."""
        d = {"name": self.name, "n_frames_loaded": self.n_frames_loaded, "start_frame": self.start_frame,
             "stop_frame": self.stop_frame, "n_frames_used": self.n_frames_used, "failed": self.failed,
             "failure": self.failure, "equilibrated_within_discard": self.equilibrated_within_discard,
             "equilibration": None if self.equilibration is None else self.equilibration.to_dict(),
             "stability": self.stability.to_dict(curves=blocks), "tae": self.tae}
        if curves:
            d["curves"] = {k: {key: c.to_dict() for key, c in v.items()} for k, v in self.curves.items()}
        return d


@dataclass
class ModelReport:
    """Everything ``cgkd analyze`` reports for one model (replicas vs one AA reference)."""

    name: str
    settings: AnalysisSettings
    reference_name: str
    reference: dict[str, dict[str, Distribution]]  # kind -> key -> curve
    replicas: list[ReplicaAnalysis]
    mean: dict[str, dict[str, Distribution]]  # kind -> key -> mean curve (std over replicas)
    tae: dict[str, dict[str, ReplicaStat]]  # kind -> key -> TAE over replicas
    summary: dict[str, ReplicaStat]  # "rdf", "adf", "adf@0.60", ..., "cdf" -> mean TAE over curves
    # molecules (the reference's beads are bonded): kind ("rdf_intra", "bond", "angle", "dihedral") ->
    # {"reference": curves, "mean": curves, "tae": {key: ReplicaStat}}; the "rdf" kind is then intermolecular
    molecular: dict | None = None
    skipped: str | None = None  # why the RDF / ADF / CDF kinds are empty (NO_BOX: a reference without a box)

    @property
    def stable(self) -> bool:
        return all(r.stability.stable and not r.failed for r in self.replicas)

    @property
    def good_replicas(self) -> list[ReplicaAnalysis]:
        return [r for r in self.replicas if not r.failed]

    @property
    def n_failed(self) -> int:
        return len(self.replicas) - len(self.good_replicas)

    @property
    def contacts(self) -> dict[str, CloseContact]:
        """Per pair, the model's g(r) (mean over scored replicas) below the reference's first contact
        (:func:`~openmm_cgkd.analysis.rdf.close_contacts`)."""
        if not self.mean.get("rdf") or not self.reference.get("rdf"):
            return {}
        return close_contacts(self.mean["rdf"], self.reference["rdf"])

    @property
    def not_equilibrated(self) -> list[str]:
        """Scored replicas whose pymbar equilibration time exceeds the fixed discard."""
        return [r.name for r in self.good_replicas if r.equilibrated_within_discard is False]

    def to_dict(self, curves: bool = True, replica_curves: bool = False) -> dict:
        """JSON-ready numbers. ``curves``: mean model and reference curves and the time-resolved
        CDFs; ``replica_curves``: every replica's own curves too (large)."""
        d = {
            "name": self.name, "reference": self.reference_name, "units": {"distance": "nm", "angle": "degree"},
            "settings": self.settings.to_dict(), "stable": self.stable, "n_replicas": len(self.replicas),
            "n_failed": self.n_failed, "not_equilibrated_within_discard": self.not_equilibrated,
            "summary": {k: v.to_dict() for k, v in self.summary.items()},
            "contacts": {k: c.to_dict() for k, c in self.contacts.items()},
            "tae": {kind: {key: s.to_dict() for key, s in v.items()} for kind, v in self.tae.items()},
            "replicas": [r.to_dict(curves=replica_curves, blocks=curves) for r in self.replicas],
        }
        if self.skipped is not None:
            d["skipped"] = {"kinds": list(KINDS), "reason": self.skipped}
        if self.molecular is not None:
            from openmm_cgkd.analysis.molecules import mean_value

            d["molecular"] = {
                "rdf": "intermolecular pairs only (non-bonded; the contacts too)",
                **{kind: {"tae": {k: s.to_dict() for k, s in m["tae"].items()},
                          "mean_value": {k: {"model": mean_value(m["mean"][k]), "reference": mean_value(ref)}
                                         for k, ref in m["reference"].items()} if kind != "rdf_intra" else {},
                          **({"curves": {k: {"model": m["mean"][k].to_dict(), "reference": ref.to_dict()}
                                         for k, ref in m["reference"].items()}} if curves else {})}
                   for kind, m in self.molecular.items()}}
        if curves:
            d["curves"] = {kind: {key: {"model": self.mean[kind][key].to_dict(), "reference": ref.to_dict()}
                                  for key, ref in self.reference[kind].items() if key in self.mean.get(kind, {})}
                           for kind in self.reference}
        return d


# ------------------------------------------------------------------------------------ loading
def load_trajectory(path, topology=None, stride: int = 1):
    """An mdtraj trajectory from a file (DCD + ``topology`` PDB, or anything mdtraj loads)."""
    import mdtraj as md

    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"trajectory not found: {path}")
    if topology is not None and not Path(topology).is_file():
        raise AnalysisError(f"topology not found: {topology}")
    if topology is None and path.suffix.lower() in (".dcd", ".xtc", ".trr", ".nc", ".binpos"):
        raise AnalysisError(f"{path} holds no topology: give a topology file (bead PDB)")
    from openmm_cgkd.quiet import filtered_native_output

    kw = {} if topology is None else {"top": str(topology)}
    try:
        with filtered_native_output():  # mdtraj's DCD reader prints "dcdplugin) ..." lines from C
            return md.load(str(path), stride=max(1, int(stride)), **kw)
    except Exception as exc:  # noqa: BLE001 - mdtraj raises many types for unreadable or mismatched files
        raise AnalysisError(f"could not read trajectory {path}" + (f" with topology {topology}" if topology else "")
                            + f": {exc}") from exc


def _is_cg_dataset(path: Path) -> bool:
    if path.suffix.lower() not in (".h5", ".hdf5", ".hdf"):
        return False
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            return "positions" in h5 and "type_names" in h5.attrs
    except OSError:
        return False


def load_reference(reference, topology=None, stride: int = 1, max_frames: int | None = None):
    """The AA reference as an mdtraj trajectory of beads: an ``mdtraj.Trajectory``, a
    :class:`~openmm_cgkd.data.dataset.CGDataset`, a CG dataset file (HDF5), or a trajectory file."""
    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.topology import dataset_trajectory

    stride = max(1, int(stride))
    if isinstance(reference, CGDataset):
        traj = dataset_trajectory(reference, slice(None, None, stride))
    elif isinstance(reference, (str, Path)):
        path = Path(reference)
        if not path.is_file():
            raise AnalysisError(f"reference not found: {path}")
        if _is_cg_dataset(path):
            traj = dataset_trajectory(CGDataset.load(path), slice(None, None, stride))
        else:
            traj = load_trajectory(path, topology, stride)
    else:
        traj = reference[::stride] if stride > 1 else reference
    if max_frames is not None and traj.n_frames > max_frames:
        traj = traj[traj.n_frames - int(max_frames):]
    return traj


def _energy_input(item):
    """(times or None, energies) from a path, an array, or a (times, energies) pair."""
    if item is None:
        return None
    if isinstance(item, (str, Path)):
        return read_energy_log(item)
    if isinstance(item, tuple) and len(item) == 2:
        return (None if item[0] is None else np.asarray(item[0], float)), np.asarray(item[1], float)
    return None, np.asarray(item, float)


def _replica_name(item, i: int) -> str:
    return Path(item).stem if isinstance(item, (str, Path)) else f"replica{i + 1}"


def summarize_taes(tables: Sequence[dict[str, dict[str, float]]], cutoffs) -> dict[str, ReplicaStat]:
    """Mean and spread over replicas (or blocks) of the per-kind TAE means: ``tables`` holds one
    {kind: {curve: TAE}} per replica; per kind (``rdf``, ``adf``, ``cdf``, and ``adf@<rc>`` per ADF
    cutoff in ``cutoffs``, nm) the :class:`ReplicaStat` of the curve-mean TAE."""
    out = {}
    if cutoffs is None:  # the cutoffs the tables hold (keys "J-I-K@rc")
        cutoffs = sorted({float(k.rsplit("@", 1)[1]) for t in tables for k in t.get("adf", {}) if "@" in k})
    for kind in KINDS:
        out[kind] = replica_stat([float(np.mean(list(t[kind].values()))) for t in tables if t.get(kind)])
        if kind == "adf":
            for rc in cutoffs:
                tag = f"@{rc:.2f}"
                out[f"adf{tag}"] = replica_stat([float(np.mean([v for k, v in t["adf"].items() if k.endswith(tag)]))
                                                 for t in tables if t.get("adf")])
    return out


# ------------------------------------------------------------------------------------ analysis
def analyze_model(trajectories, reference, *, topology=None, reference_topology=None, energies=None,
                  failures=None, settings: AnalysisSettings | None = None, name: str = "model",
                  progress: bool = False, thermostat_K: float | None = None) -> ModelReport:
    """Analyse replicas of one CG model against an AA reference.

    ``trajectories``: mdtraj trajectories and/or files (with ``topology`` for DCD); bead types are
    residue names. ``reference``: trajectory, CGDataset or file (``reference_topology`` defaults
    to ``topology`` for trajectory files). ``energies``: one potential-energy series per replica
    (CSV log path, array, (times, array) pair, or None): pymbar's equilibration time is reported
    beside the fixed ``settings.discard_frames`` (the same for every replica and model) and a
    replica not equilibrated within it is flagged. ``failures``: per replica, why its MD stopped
    (None when it ran to the end). A failed or broken replica is counted, not scored: the TAEs
    are those of the others. An energy series given as an MD log with a temperature column
    (``cgkd simulate``'s ``log.csv``) also judges the replica's temperature against the thermostat
    (``thermostat_K``, default the run's ``fingerprint.json``) and its energy drift
    (:func:`~openmm_cgkd.analysis.stability.thermal_check`): a replica that heats is not stable.
    Returns a :class:`ModelReport`.
    """
    from tqdm.auto import tqdm

    s = settings or AnalysisSettings()
    if isinstance(trajectories, (str, Path)) or hasattr(trajectories, "xyz"):
        trajectories = [trajectories]
    trajectories = list(trajectories)
    if not trajectories:
        raise AnalysisError("no CG trajectories given")
    energies = [None] * len(trajectories) if energies is None else list(energies)
    if len(energies) != len(trajectories):
        raise AnalysisError(f"{len(energies)} energy series for {len(trajectories)} trajectories")
    failures = [None] * len(trajectories) if failures is None else list(failures)
    if len(failures) != len(trajectories):
        raise AnalysisError(f"{len(failures)} failure records for {len(trajectories)} trajectories")

    ref = load_reference(reference, reference_topology or topology, s.reference_stride, s.reference_max_frames)
    ref_check = check_coordinates(ref, s.max_extent_boxes)
    if not ref_check.ok:
        raise AnalysisError(f"reference has broken frames (first: {ref_check.first_bad_frame})")
    ref_types = set(bead_type_indices(ref.topology))
    periodic = ref.unitcell_vectors is not None  # without a box: no RDF / ADF / CDF (NO_BOX)
    s = s.with_adf_cutoffs(ref)

    names = [_replica_name(item, i) for i, item in enumerate(trajectories)]
    if len(set(names)) < len(names):  # e.g. rep1/traj.dcd, rep2/traj.dcd
        names = [f"{Path(item).parent.name}/{Path(item).stem}" if isinstance(item, (str, Path)) else n
                 for item, n in zip(trajectories, names)]
    if len(set(names)) < len(names):
        names = [f"replica{i + 1}" for i in range(len(names))]

    # Load, cut equilibration and broken frames.
    loaded = []
    for i, item in enumerate(trajectories):
        if hasattr(item, "xyz"):
            traj = item[::s.stride] if s.stride > 1 else item
        else:
            traj = load_trajectory(item, topology, s.stride)
        types = set(bead_type_indices(traj.topology))
        if types != ref_types:
            raise AnalysisError(f"{names[i]} has bead types {sorted(types)}; the reference has "
                                f"{sorted(ref_types)}")
        series = _energy_input(energies[i])
        eq, start, plot_series = None, min(int(s.discard_frames), traj.n_frames), None
        if series is not None:
            times, e = series
            finite = np.isfinite(e)
            if finite.sum() >= 3:  # a replica that blew up may end in NaN energies
                eq = detect_equilibration(e[finite], None if times is None else np.asarray(times)[finite])
            plot_series = (np.arange(len(e)) if times is None else times, e)
        coords = check_coordinates(traj, s.max_extent_boxes)
        stop = traj.n_frames if coords.first_bad_frame is None else coords.first_bad_frame
        failure = failures[i]
        if failure is None and coords.first_bad_frame is not None:
            failure = f"broken coordinates from frame {coords.first_bad_frame} (NaN or exploded)"
        if failure is None and stop <= start:
            failure = f"no frames left after the {start}-frame discard ({traj.n_frames} loaded)"
        loaded.append((names[i], traj, eq, start, max(start, stop), coords, plot_series, failure))

    good = [t[start:stop] for _, t, _, start, stop, _, _, failure in loaded if failure is None]
    if not good:
        reasons = "; ".join(f"{n}: {f}" for n, *_, f in loaded)
        raise AnalysisError(f"no replica can be scored ({reasons})")
    if periodic:
        r_edges = rdf_edges(ref, *good, r_max=s.rdf_r_max, bin_width=s.rdf_bin_width)
        c_edges = cdf_edges(ref, *good, r_max=s.cdf_r_max, bin_width=s.cdf_bin_width)

    from openmm_cgkd.analysis.molecules import bonded_distributions, trajectory_cg_topology

    ref_topo = trajectory_cg_topology(ref.topology)
    molecules = ref_topo.molecule if ref_topo.has_bonds else None
    for name_i, traj, *_ in loaded:
        if molecules is not None and trajectory_cg_topology(traj.topology) != ref_topo:
            raise AnalysisError(f"{name_i}: its topology's bonds differ from the reference's ({ref_topo.n_bonds} bonds): "
                                "give the bead PDB with the molecules' CONECT records (e.g. the run's final.pdb)")

    def curves_of(traj):
        if not periodic:
            return {kind: {} for kind in KINDS}, None
        merges = frame_merge_distances(traj, progress=progress)
        return {"rdf": compute_rdfs(traj, r_edges, progress=progress, molecules=molecules,
                                    which="all" if molecules is None else "inter"),
                "adf": compute_adfs(traj, s.adf_cutoffs, bin_width=s.adf_bin_width, progress=progress),
                "cdf": cdf_from_merge_distances(merges, c_edges)}, merges

    ref_curves, _ = curves_of(ref)
    replicas = []
    for i, (name_i, traj, eq, start, stop, coords, plot_series, failure) in enumerate(
            tqdm(loaded, desc="replicas", disable=not progress)):
        used = traj[start:stop]
        if failure is not None:
            stab = StabilityReport(coords, [], [], [], {})
            replicas.append(ReplicaAnalysis(name_i, traj.n_frames, start, stop, eq, stab, energy_series=plot_series,
                                            failure=failure))
            continue
        curves, merges = curves_of(used)
        if periodic:
            stab = assess_stability(used, edges=c_edges, n_blocks=s.n_blocks, threshold=s.drift_threshold,
                                    max_extent_boxes=s.max_extent_boxes, merges=merges)
        else:  # no CDF drift without a box: coordinates (and the MD log's thermal check) only
            stab = StabilityReport(coords, [], [], [], {})
        stab.coordinates = coords  # report broken frames of the whole replica, not of the used part
        if isinstance(energies[i], (str, Path)):
            stab.thermal = thermal_check(energies[i], traj.n_atoms, target_K=thermostat_K,
                                         start_fraction=start / max(traj.n_frames, 1))
        taes = {kind: tae_table(curves[kind], ref_curves[kind], s.rdf_mode) for kind in KINDS}
        replicas.append(ReplicaAnalysis(name_i, traj.n_frames, start, stop, eq, stab, curves, taes, plot_series))

    ok = [r for r in replicas if not r.failed]
    mean = {kind: replica_mean([r.curves[kind] for r in ok]) for kind in KINDS}
    tae = {kind: replica_tae_stats([r.tae[kind] for r in ok]) for kind in KINDS}
    summary = summarize_taes([r.tae for r in ok], s.adf_cutoffs)
    ref_name = reference if isinstance(reference, (str, Path)) else type(reference).__name__
    molecular = None
    if molecules is not None:
        def molecular_curves(traj):
            out = bonded_distributions(traj, ref_topo)
            if periodic:
                out["rdf_intra"] = compute_rdfs(traj, r_edges, molecules=molecules, which="intra")
            return out

        ref_mol = molecular_curves(ref)
        reps = [molecular_curves(t[start:stop]) for _, t, _, start, stop, *_, failure in loaded if failure is None]
        molecular = {}
        for kind, ref_c in ref_mol.items():
            if not ref_c:
                continue
            molecular[kind] = {"reference": ref_c, "mean": replica_mean([r[kind] for r in reps]),
                               "tae": replica_tae_stats([tae_table(r[kind], ref_c, s.rdf_mode) for r in reps])}
    return ModelReport(name, s, str(ref_name), ref_curves, replicas, mean, tae, summary, molecular,
                       None if periodic else NO_BOX)


# ------------------------------------------------------------------------------------ output
def _pm(stat: ReplicaStat, digits: int = 3) -> str:
    if stat.n == 0 or not math.isfinite(stat.mean):
        return "n/a"
    return f"{stat.mean:.{digits}g} ± {stat.std:.2g}" if stat.n > 1 else f"{stat.mean:.{digits}g}"


def summary_markdown(report: ModelReport, plots: Sequence[str] = ()) -> str:
    s = report.settings
    ok = report.good_replicas
    failed = f"**{report.n_failed} of {len(report.replicas)} replicas failed**" if report.n_failed else \
        f"0 of {len(report.replicas)} replicas failed"
    lines = [f"# Structural analysis: {report.name}", "",
             f"{failed}; the TAEs are those of the {len(ok)} others. Every replica is scored after a fixed "
             f"discard of {s.discard_frames} frames (pymbar's equilibration time is reported as a check).", "",
             f"{len(report.replicas)} replica(s) ({len(ok)} analysed) against the AA reference "
             f"`{report.reference_name}`. TAE = sum |p_CG - p_AA| dx; values are mean ± std over replicas. "
             f"RDF TAE compares {'g(r) itself (nm)' if s.rdf_mode == 'g' else 'unit-area g(r) curves'}; "
             "ADF and CDF TAEs compare normalised densities (0 = identical, 2 = disjoint).", "",
             "| kind | curves | TAE |", "|---|---|---|"]
    if report.skipped is not None:  # stated above the (then empty) table
        lines[-2:-2] = [f"RDF, ADF and CDF not computed: {report.skipped}.", ""]
    for key, stat in report.summary.items():
        if "@" in key:  # "adf@0.60": the ADFs of one cutoff
            tag = key[3:]
            n = len([k for k in report.tae.get("adf", {}) if k.endswith(tag)])
            label = f"ADF, cutoff {tag[1:]} nm"
        else:
            n, label = len(report.tae.get(key, {})), key.upper()
        lines.append(f"| {label} | {n} | {_pm(stat)} |")
    for kind, title in (("rdf", "RDF per pair"), ("cdf", "CDF per species")):
        lines += ["", f"## {title}", "", "| curve | TAE |", "|---|---|"]
        lines += [f"| {key} | {_pm(stat)} |" for key, stat in report.tae.get(kind, {}).items()]
    if report.molecular:
        from openmm_cgkd.analysis.molecules import mean_value

        lines += ["", "## Molecules", "",
                  "The beads are bonded: the RDFs above and the contact check are intermolecular (non-bonded) pairs. "
                  "Bond (nm), angle and dihedral (degree) distributions are normalised densities (TAE in [0, 2]); "
                  "the intramolecular RDFs are g(r) of bead pairs within one molecule.", "",
                  "| kind | curve | model mean | AA mean | TAE |", "|---|---|---|---|---|"]
        for kind, m in report.molecular.items():
            for key, stat in m["tae"].items():
                if kind == "rdf_intra":
                    lines.append(f"| intramolecular RDF | {key} | - | - | {_pm(stat)} |")
                else:
                    lines.append(f"| {kind} | {key} | {mean_value(m['mean'][key]):.4g} | "
                                 f"{mean_value(m['reference'][key]):.4g} | {_pm(stat)} |")
    contacts = report.contacts
    if contacts:
        lines += ["", "## Contacts closer than any in the AA reference", "",
                  f"Per pair: where the AA g(r) first reaches {AA_CONTACT_G:g}, and the model's highest g(r) below "
                  "that distance (0: none; a peak there is a pairing the AA liquid does not have).", "",
                  "| pair | AA contact from (nm) | model max g(r) below it | at r (nm) |", "|---|---|---|---|"]
        lines += [f"| {c.pair} | {c.reference_contact_nm:.3f} | {c.peak_g:.3g} | "
                  f"{'-' if c.peak_r_nm is None else format(c.peak_r_nm, '.3f')} |" for c in contacts.values()]
    species = sorted({sp for r in ok for sp in r.stability.drift})
    lines += ["", "## Stability", "",
              f"Drift = fitted relative change of the mean single-linkage merge distance over the analysed "
              f"frames; flagged (clustering) below -{s.drift_threshold:g}.", "",
              "| replica | frames used | discarded | pymbar t0 (frame) | broken frames | "
              + " | ".join(f"drift {sp}" for sp in species) + " | verdict |",
              "|---|---|---|---|---|" + "---|" * len(species) + "---|"]
    for r in report.replicas:
        c = r.stability.coordinates
        broken = "none" if c.ok else f"from frame {c.first_bad_frame}"
        drifts = [f"{r.stability.drift[sp].relative_change:+.3f}" + (" ⚠" if r.stability.drift[sp].flagged else "")
                  if sp in r.stability.drift else "n/a" for sp in species]
        th = r.stability.thermal
        verdict = f"failed: {r.failure}" if r.failed else ("stable" if r.stability.stable else
                                                           ("clustering" if r.stability.clustering else
                                                            "broken" if not r.stability.coordinates.ok else
                                                            "heating or drifting"))
        if th is not None and not r.failed:
            verdict += f" ({th.describe()})"
        if r.equilibration is None:
            t0 = "n/a"
        else:
            t0 = str(frames_to_discard(r.equilibration, r.n_frames_loaded))
            t0 += "" if r.equilibrated_within_discard else " ⚠ beyond the discard"
        lines.append(f"| {r.name} | {0 if r.failed else r.n_frames_used} | {r.start_frame} | {t0} | {broken} | "
                     + " | ".join(drifts) + f" | {verdict} |")
    lines += ["", f"Overall: **{'stable' if report.stable else 'NOT stable'}**."]
    if report.not_equilibrated:
        lines += ["", f"⚠ Not equilibrated within the {s.discard_frames}-frame discard (pymbar): "
                  + ", ".join(report.not_equilibrated) + "."]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def write_report(report: ModelReport, out_dir: str | Path, plots: bool = True,
                 replica_curves: bool = False) -> dict[str, Path]:
    """Write ``report.json``, ``summary.md`` and (``plots``) PNG files into ``out_dir``; returns
    their paths by name (``json``, ``markdown``, ``rdf_png``, ...)."""
    from openmm_cgkd.analysis import plots as P

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if plots and report.skipped is None:
        tag = f"{report.name}: {len(report.good_replicas)} replica(s) vs AA"
        written["rdf_png"] = P.plot_overlays(report.mean["rdf"], report.reference["rdf"], out / "rdf.png",
                                             f"RDF, {tag}", tae=report.tae["rdf"])
        for rc in report.settings.adf_cutoffs:
            sel = {k: v for k, v in report.reference["adf"].items() if k.endswith(f"@{rc:.2f}")}
            written[f"adf_{rc:.2f}_png"] = P.plot_overlays(report.mean["adf"], sel, out / f"adf_{rc:.2f}.png",
                                                           f"ADF (cutoff {rc:.2f} nm), {tag}", tae=report.tae["adf"])
        written["cdf_png"] = P.plot_overlays(report.mean["cdf"], report.reference["cdf"], out / "cdf.png",
                                             f"CDF, {tag}", tae=report.tae["cdf"])
        ok = report.good_replicas
        n_blocks = min((len(r.stability.blocks) for r in ok), default=0)
        if n_blocks:
            blocks = [replica_mean([r.stability.blocks[b] for r in ok]) for b in range(n_blocks)]
            labels = [f"frames {a}-{b - 1}" for a, b in ok[0].stability.block_frames[:n_blocks]]
            written["cdf_time_png"] = P.plot_time_resolved_cdfs(blocks, report.reference["cdf"], out / "cdf_time.png",
                                                                labels, f"Time-resolved CDF, {tag}")
        written["tae_png"] = P.plot_tae_bars(report.tae, out / "tae.png", f"TAE, {tag} (error bars: 1 std)")
    if plots:
        series = [(r.energy_series[0], r.energy_series[1], None if r.equilibration is None else r.equilibration.t0_index,
                   r.name) for r in report.replicas if r.energy_series is not None]
        if series:
            written["energy_png"] = P.plot_energies(series, out / "energy.png", "Potential energy (dotted: equilibrated from)")
    json_path = out / "report.json"
    json_path.write_text(json.dumps(plain_values(report.to_dict(curves=True, replica_curves=replica_curves)), indent=1))
    written["json"] = json_path
    md_path = out / "summary.md"
    md_path.write_text(summary_markdown(report, [str(p) for k, p in written.items() if k.endswith("_png")]))
    written["markdown"] = md_path
    return written
