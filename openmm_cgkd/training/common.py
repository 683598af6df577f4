"""Pieces shared by the teacher and student stages: bead types of a dataset, provenance, reports."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from openmm_cgkd.version import __version__
from openmm_cgkd.data.dataset import CGDataset, DatasetError
from openmm_cgkd.fileio import file_sha256, write_json

__all__ = ["dataset_bead_types", "dataset_provenance", "code_provenance", "write_test_report"]


def dataset_bead_types(dataset: CGDataset):
    """Bundle bead types (names, topology residue codes, masses) of a dataset, in type order."""
    from openmm_cgkd.bundle import bead_types_from_masses

    masses = {}
    for t, name in enumerate(dataset.type_names):
        m = dataset.masses[dataset.bead_types == t]
        if len(m) == 0:
            raise DatasetError(f"bead type {name!r} has no bead in the dataset: its mass is unknown")
        if np.ptp(m) > 1e-6 * m.max():
            raise DatasetError(f"beads of type {name!r} have different masses ({m.min()}..{m.max()} Da)")
        masses[name] = float(m[0])
    names = dataset.bead_names or {}
    return bead_types_from_masses(masses, {t: n[0] for t, n in names.items()}, {t: n[1] for t, n in names.items()})


def _file_digest(path: Path, limit: int = 1 << 26) -> str:
    """sha256 of the first ``limit`` bytes and the size: identifies a dataset file cheaply."""
    return file_sha256(path, max_bytes=limit, with_size=True)[:16]


def dataset_provenance(path: str | Path, dataset: CGDataset, blocks: dict[str, np.ndarray]) -> dict:
    """The training data of a bundle: its file (an absolute path here, written relative to the
    bundle by :func:`~openmm_cgkd.bundle.save_bundle`) and sha256, sizes, blocks and own provenance."""

    path = Path(path).resolve()
    return {
        "path": str(path), "sha256": file_sha256(path) if path.is_file() else None,
        "digest": _file_digest(path) if path.is_file() else None,
        "n_frames": dataset.n_frames, "n_beads": dataset.n_beads, "type_names": list(dataset.type_names),
        "blocks": {k: ([int(v[0]), int(v[-1]) + 1] if len(v) else []) for k, v in blocks.items()},
        "source": dataset.provenance,
    }


def code_provenance() -> dict:
    """The package version and, when running from a git checkout, its commit."""
    from openmm_cgkd.resources import checkout_root

    out = {"package_version": __version__}
    root = checkout_root()
    if root is None:
        return out
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5)
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def write_test_report(out: Path, name: str, metrics: dict, pred: dict, dataset: CGDataset, indices) -> None:
    """``<out>/metrics.json`` plus parity plots of forces (vs AA, and vs teacher labels if any)."""
    from openmm_cgkd.training.metrics import parity_plot

    write_json(out / "metrics.json", metrics, indent=2, portable=True)
    parity_plot(pred["forces"], dataset.forces[indices], out / "parity_forces_vs_aa.png",
                f"{name}: forces vs mapped AA (test block)", "kJ/mol/nm")
    if dataset.labels is not None:
        parity_plot(pred["forces"], dataset.labels.forces[indices], out / "parity_forces_vs_teacher.png",
                    f"{name}: forces vs teacher (test block)", "kJ/mol/nm")
        parity_plot(pred["bead_energies"], dataset.labels.bead_energies[indices],
                    out / "parity_bead_energies_vs_teacher.png",
                    f"{name}: per-bead energies vs teacher (test block)", "kJ/mol")
