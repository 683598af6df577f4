"""The CG dataset: mapped positions and forces of beads, the input of training and analysis.

File format (HDF5, one file per dataset; ``FORMAT_VERSION`` is stored and checked):

=================  ============  ==========  =========================================
dataset            shape         dtype       unit / meaning
=================  ============  ==========  =========================================
positions          (F, N, 3)     float32     nm, bead centres of mass
forces             (F, N, 3)     float32     kJ/mol/nm, summed atomic forces per bead
boxes              (F, 3, 3)     float32     nm, box vectors as rows; all zeros: not periodic
times              (F,)          float64     ps
bead_types         (N,)          int32       index into the ``type_names`` attribute
masses             (N,)          float64     dalton, summed atomic masses per bead
potential_energy   (F,)          float64     kJ/mol, AA potential energy (optional)
labels/...         see below                 distillation labels (optional, issue #4)
topology/bonds     (B, 2)        int64       bonded bead pairs (format 2; optional)
=================  ============  ==========  =========================================

``topology`` (format 2) holds the bonds between beads
(:class:`~openmm_cgkd.cgtopology.CGTopology`; angles, dihedrals and molecules follow from
them). A format-1 file, or one without the group, loads as one-bead molecules without bonds.

``labels`` (written by the training module) holds ``forces`` (F, N, 3) kJ/mol/nm,
``bead_energies`` (F, N) kJ/mol, ``energy`` (F,) kJ/mol and ``force_std`` (F, N, 3)
kJ/mol/nm, with a ``provenance`` attribute naming the teachers.

Root attributes: ``format_version``, ``type_names`` (JSON list) and ``provenance`` (JSON
object: how the data was made); optional: ``temperature_K`` (the AA data's temperature, K; absent
in datasets made before it was recorded: unknown) and ``bead_names`` (JSON object, bead type ->
``[residue name, atom name]`` of its beads in topologies, set by the mapping; absent: the default
codes of :func:`openmm_cgkd.topology.default_residue_name`). Provenance is portable: absolute paths in it are written relative
to the file's directory (:mod:`openmm_cgkd.fileio`); a nested record copied from another
file (e.g. the ``system`` of an AA run) keeps that file's anchor.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from openmm_cgkd.cgtopology import CGTopology
from openmm_cgkd.errors import CGKDError
from openmm_cgkd.plausibility import bead_spacing_problem, force_scale_problem
from openmm_cgkd.fileio import make_portable

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: before bead bonds (loads as unbonded beads)

__all__ = ["CGDataset", "DistillationLabels", "DatasetError", "FORMAT_VERSION"]


class DatasetError(CGKDError, ValueError):
    """A CG dataset file or array is missing, malformed or inconsistent."""

    exit_code = 2  # bad input: usage error


def _json_attr(attrs, key: str, path, default):
    """The JSON-encoded HDF5 attribute ``key`` (``default`` when absent); :class:`DatasetError` when
    it is not valid JSON."""
    if key not in attrs:
        return default
    raw = attrs[key]
    try:
        return json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except ValueError as exc:
        raise DatasetError(f"{path}: attribute {key!r} is not valid JSON ({exc})") from None


@dataclass
class DistillationLabels:
    """Teacher predictions on every frame of a dataset (member means for an ensemble)."""

    forces: np.ndarray  # (F, N, 3) kJ/mol/nm
    bead_energies: np.ndarray  # (F, N) kJ/mol
    energy: np.ndarray  # (F,) kJ/mol
    force_std: np.ndarray  # (F, N, 3) kJ/mol/nm, member spread (zeros for one teacher)
    provenance: dict = field(default_factory=dict)


@dataclass
class CGDataset:
    """Frames of a coarse-grained system. Units: nm, kJ/mol/nm, ps, dalton."""

    positions: np.ndarray
    forces: np.ndarray
    boxes: np.ndarray
    times: np.ndarray
    bead_types: np.ndarray
    type_names: list[str]
    masses: np.ndarray
    potential_energy: np.ndarray | None = None
    labels: DistillationLabels | None = None
    provenance: dict = field(default_factory=dict)
    topology: CGTopology | None = None  # bonds between beads; None: one-bead molecules
    temperature_K: float | None = None  # the AA data's temperature (K); None: unknown
    bead_names: dict[str, tuple[str, str]] | None = None  # type -> (residue name, atom name)

    def __post_init__(self) -> None:
        if self.temperature_K is not None:
            self.temperature_K = float(self.temperature_K)
            if not 0.0 < self.temperature_K < 1.0e4:
                raise DatasetError(f"temperature_K must be a positive temperature in K, got {self.temperature_K}")
        if self.bead_names is not None:
            self.bead_names = {str(k): (str(v[0]), str(v[1])) for k, v in self.bead_names.items()}
        self.positions = np.asarray(self.positions, dtype=np.float32)
        self.forces = np.asarray(self.forces, dtype=np.float32)
        self.boxes = np.asarray(self.boxes, dtype=np.float32)
        self.times = np.asarray(self.times, dtype=np.float64)
        self.bead_types = np.asarray(self.bead_types, dtype=np.int32)
        self.masses = np.asarray(self.masses, dtype=np.float64)
        self.type_names = [str(t) for t in self.type_names]
        if self.potential_energy is not None:
            self.potential_energy = np.asarray(self.potential_energy, dtype=np.float64)
        if self.topology is None:
            self.topology = CGTopology.unbonded(self.positions.shape[1] if self.positions.ndim == 3 else 0)
        self.validate()

    @property
    def periodic(self) -> bool:
        """False when every box is all zeros (a system without a periodic box)."""
        return bool(np.any(self.boxes != 0))

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_beads(self) -> int:
        return int(self.positions.shape[1])

    def validate(self) -> None:
        """Raise :class:`DatasetError` naming the first inconsistency found."""
        if self.positions.ndim != 3 or self.positions.shape[2] != 3:
            raise DatasetError(f"positions must have shape (frames, beads, 3), got {self.positions.shape}")
        f, n, _ = self.positions.shape
        expect = {
            "positions": (self.positions, (f, n, 3)),
            "forces": (self.forces, (f, n, 3)),
            "boxes": (self.boxes, (f, 3, 3)),
            "times": (self.times, (f,)),
            "bead_types": (self.bead_types, (n,)),
            "masses": (self.masses, (n,)),
        }
        if self.potential_energy is not None:
            expect["potential_energy"] = (self.potential_energy, (f,))
        if self.labels is not None:
            lab = self.labels
            expect.update({
                "labels.forces": (np.asarray(lab.forces), (f, n, 3)),
                "labels.bead_energies": (np.asarray(lab.bead_energies), (f, n)),
                "labels.energy": (np.asarray(lab.energy), (f,)),
                "labels.force_std": (np.asarray(lab.force_std), (f, n, 3)),
            })
        for name, (arr, shape) in expect.items():
            if arr.shape != shape:
                raise DatasetError(f"{name} has shape {arr.shape}; expected {shape} for {f} frames of {n} beads")
            if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
                bad = int(np.count_nonzero(~np.isfinite(arr)))
                raise DatasetError(f"{name} holds {bad} NaN/inf values")
        if f == 0:
            raise DatasetError("dataset has no frames")
        if len(self.type_names) == 0 or len(set(self.type_names)) != len(self.type_names):
            raise DatasetError(f"type_names must be non-empty and unique, got {self.type_names}")
        if self.bead_types.min() < 0 or self.bead_types.max() >= len(self.type_names):
            raise DatasetError(
                f"bead_types must index type_names (0..{len(self.type_names) - 1}), "
                f"got range {self.bead_types.min()}..{self.bead_types.max()}")
        if np.any(self.masses <= 0):
            raise DatasetError("every bead mass must be positive (dalton)")
        if self.topology.n_beads != n:
            raise DatasetError(f"the CG topology has {self.topology.n_beads} beads; the dataset has {n}")
        lengths = np.linalg.norm(self.boxes, axis=2)
        if not self.periodic:
            if f > 1 and np.any(np.diff(self.times) <= 0):
                raise DatasetError("times must be strictly increasing (ps)")
            return
        if np.any(lengths <= 0):
            raise DatasetError("box vectors must be non-zero (nm), or zero in every frame (no periodic box)")
        if f > 1 and np.any(np.diff(self.times) <= 0):
            raise DatasetError("times must be strictly increasing (ps)")
        # Guard against Angstrom or metre input: bead spacing is 0.1-5 nm in any sane system.
        median_box = float(np.median(lengths))
        if not 0.5 <= median_box <= 1000.0:
            raise DatasetError(f"median box length {median_box:g} nm is implausible: are the units nm?")

    def check_forces(self, what: str = "the dataset's forces (F_AA)") -> "CGDataset":
        """Raise :class:`DatasetError` when the mapped forces cannot be trained on: all zero, or
        41.84x off (kcal/mol/A stored as kJ/mol/nm, or converted twice); see
        :func:`openmm_cgkd.plausibility.force_scale_problem`. Returns the dataset."""
        problem = force_scale_problem(self.forces, what)
        if problem:
            raise DatasetError(problem)
        return self

    def type_counts(self) -> dict[str, int]:
        counts = np.bincount(self.bead_types, minlength=len(self.type_names))
        return {name: int(c) for name, c in zip(self.type_names, counts)}

    def select_frames(self, index) -> "CGDataset":
        """A new dataset holding frames ``index`` (a slice or integer array)."""
        labels = None
        if self.labels is not None:
            lab = self.labels
            labels = DistillationLabels(lab.forces[index], lab.bead_energies[index], lab.energy[index],
                                        lab.force_std[index], dict(lab.provenance))
        pe = None if self.potential_energy is None else self.potential_energy[index]
        return CGDataset(self.positions[index], self.forces[index], self.boxes[index], self.times[index],
                         self.bead_types, list(self.type_names), self.masses, pe, labels, dict(self.provenance),
                         self.topology, self.temperature_K, self.bead_names)
    def window(self, frames: tuple[int | None, int | None] | None = None,
               time_ps: tuple[float | None, float | None] | None = None) -> "CGDataset":
        """The frames ``frames = (start, stop)`` (indices, Python slice rules) or those with
        ``time_ps[0] <= time < time_ps[1]`` (ps; None: open end); the window is recorded in the
        provenance (``frame_window``: [first, stop) frame indices of this dataset) and, for this
        session only, as ``source_window``."""
        if (frames is None) == (time_ps is None):
            raise DatasetError("give a frame window (start:stop) or a time window in ps, not both or neither")
        if frames is not None:
            idx = np.arange(self.n_frames)[slice(*frames)]
        else:
            lo = -np.inf if time_ps[0] is None else time_ps[0]
            hi = np.inf if time_ps[1] is None else time_ps[1]
            idx = np.flatnonzero((self.times >= lo) & (self.times < hi))
        if len(idx) == 0:
            span = f"frames {frames}" if frames is not None else f"times {time_ps} ps"
            raise DatasetError(f"the window {span} holds no frame of the dataset ({self.n_frames} frames, "
                               f"{self.times[0]:g}-{self.times[-1]:g} ps)")
        out = self.select_frames(slice(int(idx[0]), int(idx[-1]) + 1))
        out.provenance["frame_window"] = [int(idx[0]), int(idx[-1]) + 1]
        out.source_window = (int(idx[0]), int(idx[-1]) + 1)  # of the dataset it was cut from; not saved
        return out

    # ----------------------------------------------------------------- HDF5 I/O
    def save(self, path: str | Path) -> Path:
        """Write the dataset to ``path`` (HDF5), atomically (a temporary file is renamed)."""
        import h5py

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        with h5py.File(tmp, "w") as h5:
            h5.attrs["format_version"] = FORMAT_VERSION
            h5.attrs["type_names"] = json.dumps(self.type_names)
            h5.attrs["provenance"] = json.dumps(make_portable(self.provenance, path.parent), default=str)
            if self.temperature_K is not None:
                h5.attrs["temperature_K"] = float(self.temperature_K)
            if self.bead_names is not None:
                h5.attrs["bead_names"] = json.dumps({k: list(v) for k, v in self.bead_names.items()})
            kw = dict(compression="gzip", compression_opts=4)
            h5.create_dataset("positions", data=self.positions, **kw)
            h5.create_dataset("forces", data=self.forces, **kw)
            h5.create_dataset("boxes", data=self.boxes)
            h5.create_dataset("times", data=self.times)
            h5.create_dataset("bead_types", data=self.bead_types)
            h5.create_dataset("masses", data=self.masses)
            if self.potential_energy is not None:
                h5.create_dataset("potential_energy", data=self.potential_energy)
            if self.labels is not None:
                self._write_labels(h5, self.labels)
            g = h5.create_group("topology")
            g.create_dataset("bonds", data=np.asarray(self.topology.bonds, np.int64).reshape(-1, 2))
        tmp.replace(path)
        return path

    @staticmethod
    def _write_labels(h5, labels: DistillationLabels) -> None:
        if "labels" in h5:
            del h5["labels"]
        g = h5.create_group("labels")
        g.attrs["provenance"] = json.dumps(make_portable(labels.provenance, Path(h5.filename).parent), default=str)
        g.create_dataset("forces", data=np.asarray(labels.forces, dtype=np.float32), compression="gzip")
        g.create_dataset("bead_energies", data=np.asarray(labels.bead_energies, dtype=np.float32))
        g.create_dataset("energy", data=np.asarray(labels.energy, dtype=np.float64))
        g.create_dataset("force_std", data=np.asarray(labels.force_std, dtype=np.float32), compression="gzip")

    @classmethod
    def load(cls, path: str | Path) -> "CGDataset":
        """Read and validate a dataset written by :meth:`save`."""
        import h5py

        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"CG dataset not found: {path}")
        try:
            h5 = h5py.File(path, "r")
        except OSError as exc:
            raise DatasetError(f"{path} is not a readable HDF5 file: {exc}") from exc
        with h5:
            version = int(h5.attrs.get("format_version", -1))
            if version not in READABLE_VERSIONS:
                raise DatasetError(f"{path}: format_version {version}, this package reads {list(READABLE_VERSIONS)}")
            missing = [k for k in ("positions", "forces", "boxes", "times", "bead_types", "masses") if k not in h5]
            if missing:
                raise DatasetError(f"{path} lacks dataset(s) {missing}")
            type_names = _json_attr(h5.attrs, "type_names", path, None)
            if not isinstance(type_names, list):
                raise DatasetError(f"{path} lacks the root attribute 'type_names' (a JSON list of bead type names, "
                                   "in bead_types index order)")
            labels = None
            if "labels" in h5:
                g = h5["labels"]
                lacking = [k for k in ("forces", "bead_energies", "energy", "force_std") if k not in g]
                if lacking:
                    raise DatasetError(f"{path}: the labels group lacks {lacking} (incomplete labelling?): relabel "
                                       "the dataset with `cgkd label`")
                labels = DistillationLabels(g["forces"][()], g["bead_energies"][()], g["energy"][()],
                                            g["force_std"][()], _json_attr(g.attrs, "provenance", path, {}))
            ds = cls(
                positions=h5["positions"][()], forces=h5["forces"][()], boxes=h5["boxes"][()],
                times=h5["times"][()], bead_types=h5["bead_types"][()],
                type_names=type_names, masses=h5["masses"][()],
                potential_energy=h5["potential_energy"][()] if "potential_energy" in h5 else None,
                labels=labels, provenance=_json_attr(h5.attrs, "provenance", path, {}),
                topology=_read_topology(h5, path),
                temperature_K=float(h5.attrs["temperature_K"]) if "temperature_K" in h5.attrs else None,
                bead_names=_json_attr(h5.attrs, "bead_names", path, None),
            )
        problem = bead_spacing_problem(ds.positions[0], ds.boxes[0] if ds.periodic else None,
                                       what=f"{path} (frame 0)")
        if problem:  # positions/boxes in Angstrom stored as nm would otherwise train on isolated beads
            raise DatasetError(problem)
        return ds

    def save_labels(self, path: str | Path, labels: DistillationLabels) -> None:
        """Add (or replace) distillation labels in the existing file ``path``."""
        import h5py

        self.labels = labels
        self.validate()
        with h5py.File(path, "a") as h5:
            self._write_labels(h5, labels)


def _read_topology(h5, path) -> CGTopology | None:
    """The bead bonds of a file (None for a file without them: one-bead molecules)."""
    if "topology" not in h5:
        return None
    g = h5["topology"]
    if "bonds" not in g:
        raise DatasetError(f"{path}: the topology group lacks 'bonds'")
    from openmm_cgkd.cgtopology import TopologyError

    try:
        return CGTopology(int(h5["bead_types"].shape[0]), g["bonds"][()])
    except TopologyError as exc:
        raise DatasetError(f"{path}: {exc}") from None
