"""Regression metrics of trained models on the test block, as JSON and PNG.

For every comparison (prediction vs reference) :func:`regression_metrics` gives

* ``mae``, ``rmse`` (units of the quantity),
* ``r2`` = 1 - SS_res / SS_tot (SS_tot about the reference mean),
* ``cv`` = RMSE / mean |reference|: the coefficient of variation of the error, a unitless
  relative error (for forces, relative to the mean force component magnitude).

:func:`evaluate_frames` compares forces with the mapped AA forces (``forces_vs_aa``) and, where
the dataset has distillation labels, forces, per-bead energies and energies per bead with the
teacher labels (``forces_vs_teacher``, ``bead_energies_vs_teacher``,
``energy_per_bead_vs_teacher``). Remember (docs/METHOD.md section 4) that force metrics against
noisy AA labels are poor judges of a CG model; the structural analysis is the real test.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from openmm_cgkd.data.dataset import CGDataset

__all__ = ["regression_metrics", "predict_frames", "evaluate_frames", "compare_predictions",
           "parity_plot", "training_curve_plot", "read_metrics_csv"]


def regression_metrics(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    p = np.asarray(pred, dtype=np.float64).ravel()
    r = np.asarray(ref, dtype=np.float64).ravel()
    if p.shape != r.shape or p.size == 0:
        raise ValueError(f"prediction and reference must be non-empty and equal in size, got {p.size} and {r.size}")
    d = p - r
    rmse = float(np.sqrt(np.mean(d * d)))
    ss_tot = float(np.sum((r - r.mean()) ** 2))
    mean_abs = float(np.mean(np.abs(r)))
    return {"mae": float(np.mean(np.abs(d))), "rmse": rmse,
            "r2": float(1.0 - np.sum(d * d) / ss_tot) if ss_tot > 0 else float("nan"),
            "cv": rmse / mean_abs if mean_abs > 0 else float("nan"), "n": int(p.size)}


@torch.no_grad()
def predict_frames(model, dataset: CGDataset, indices: np.ndarray, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Predictions of a :class:`~openmm_cgkd.training.model.TrainablePotential` on ``indices``:
    ``energy`` (F,), ``bead_energies`` (F, N), ``forces`` (F, N, 3), float64 numpy arrays."""
    device = next(model.parameters()).device
    types = torch.from_numpy(dataset.bead_types.astype(np.int64)).to(device)
    chunks: dict[str, list] = {"energy": [], "bead_energies": [], "forces": []}
    indices = np.asarray(indices)
    for start in range(0, len(indices), batch_size):
        idx = indices[start:start + batch_size]
        out = model(types, torch.from_numpy(dataset.positions[idx]).to(device),
                    torch.from_numpy(dataset.boxes[idx]).to(device))
        for k in chunks:
            chunks[k].append(out[k].detach().cpu().double().numpy())
    return {k: np.concatenate(v) for k, v in chunks.items()}


def compare_predictions(pred: dict[str, np.ndarray], dataset: CGDataset, indices: np.ndarray,
                        extra_force_refs: dict[str, np.ndarray] | None = None) -> dict[str, dict]:
    """Metrics of predictions ``pred`` (as from :func:`predict_frames`) on frames ``indices``."""
    indices = np.asarray(indices)
    out = {"forces_vs_aa": regression_metrics(pred["forces"], dataset.forces[indices])}
    if dataset.labels is not None:
        lab = dataset.labels
        n = dataset.n_beads
        out["forces_vs_teacher"] = regression_metrics(pred["forces"], lab.forces[indices])
        out["bead_energies_vs_teacher"] = regression_metrics(pred["bead_energies"], lab.bead_energies[indices])
        out["energy_per_bead_vs_teacher"] = regression_metrics(pred["energy"] / n, lab.energy[indices] / n)
    for name, ref in (extra_force_refs or {}).items():
        out[f"forces_vs_{name}"] = regression_metrics(pred["forces"], np.asarray(ref)[indices])
    return out


def evaluate_frames(model, dataset: CGDataset, indices: np.ndarray, batch_size: int = 16,
                    extra_force_refs: dict[str, np.ndarray] | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """(metrics, predictions) of ``model`` on frames ``indices`` of ``dataset``."""
    pred = predict_frames(model, dataset, indices, batch_size)
    return compare_predictions(pred, dataset, indices, extra_force_refs), pred


def parity_plot(pred: np.ndarray, ref: np.ndarray, path: str | Path, title: str, unit: str,
                max_points: int = 20000, seed: int = 0) -> Path:
    """Predicted vs reference scatter (a random subset of ``max_points``) with the y = x line."""
    from openmm_cgkd.figures import new_figure

    p, r = np.asarray(pred).ravel(), np.asarray(ref).ravel()
    if p.size > max_points:
        keep = np.random.default_rng(seed).choice(p.size, max_points, replace=False)
        p, r = p[keep], r[keep]
    m = regression_metrics(pred, ref)
    lo, hi = float(min(p.min(), r.min())), float(max(p.max(), r.max()))
    fig = new_figure(figsize=(4.2, 4.2), dpi=120)
    ax = fig.subplots()
    ax.scatter(r, p, s=2, alpha=0.3, lw=0)
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel(f"reference ({unit})")
    ax.set_ylabel(f"predicted ({unit})")
    ax.set_title(f"{title}\nRMSE {m['rmse']:.3g}  MAE {m['mae']:.3g}  R$^2$ {m['r2']:.3f}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def training_curve_plot(metrics_csvs: dict[str, str | Path], path: str | Path, title: str = "training") -> Path:
    """Train (dashed) and validation (solid) loss per epoch of one or more runs, log scale."""
    from openmm_cgkd.figures import new_figure

    fig = new_figure(figsize=(5.5, 3.8), dpi=120)
    ax = fig.subplots()
    for i, (name, csv_path) in enumerate(metrics_csvs.items()):
        curves = read_metrics_csv(csv_path)
        colour = f"C{i % 10}"
        for key, style in (("train_loss", "--"), ("val_loss", "-")):
            if curves.get(key):
                ep, val = zip(*sorted(curves[key].items()))
                ax.plot(ep, val, style, color=colour, lw=1, label=f"{name} {key.split('_')[0]}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (RMSE + MAE, weighted)")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    if len(metrics_csvs) <= 4:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def read_metrics_csv(csv_path: str | Path) -> dict[str, dict[int, float]]:
    """{column: {epoch: value}} of a Lightning CSV log (the last value per epoch wins)."""
    out: dict[str, dict[int, float]] = {}
    with open(csv_path, newline="") as fh:
        for row in csv.DictReader(fh):
            if not row.get("epoch"):
                continue
            ep = int(float(row["epoch"]))
            for key, value in row.items():
                if key in ("epoch", "step") or value in ("", None):
                    continue
                out.setdefault(key, {})[ep] = float(value)
    return out
