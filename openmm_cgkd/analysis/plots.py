"""PNG plots of the structural analysis (matplotlib figures on the Agg canvas, no pyplot: no
display needed, and the user's matplotlib backend is left alone)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from openmm_cgkd.analysis.distributions import Distribution
from openmm_cgkd.analysis.ramachandran import AngleBox, Basin, FreeEnergySurface, committed_cores
from openmm_cgkd.analysis.replicas import ReplicaStat
from openmm_cgkd.figures import colormap, new_figure

__all__ = ["plot_overlays", "plot_time_resolved_cdfs", "plot_tae_bars", "plot_energies", "plot_fes_panels",
           "plot_dihedral_timeline"]

XLABELS = {"rdf": "r (nm)", "adf": "angle (degree)", "cdf": "merge distance (nm)"}
YLABELS = {"rdf": "g(r)", "adf": "P(angle) (1/degree)", "cdf": "P(d) (1/nm)"}


def _grid(n: int, ncols: int = 3, size=(3.6, 2.6)):
    """A figure of ``n`` panels sharing the x axis; labels go on the outer panels only."""
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig = new_figure(figsize=(size[0] * ncols + 0.6, size[1] * nrows + 1.0))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    for i, ax in enumerate(axes.ravel()[:n]):
        if i + ncols < n:  # a panel below is visible: no x tick labels here
            ax.tick_params(labelbottom=False)
        else:
            ax.xaxis.set_tick_params(labelbottom=True)
    width, height = fig.get_size_inches()  # margins in inches, whatever the number of panels
    fig.subplots_adjust(left=0.95 / width, right=1 - 0.15 / width, bottom=0.55 / height, top=1 - 0.75 / height,
                        wspace=0.35, hspace=0.35)
    return fig, axes.ravel()


def _label(axes, n: int, ncols: int, kind: str) -> None:
    ncols = max(1, min(ncols, n))
    for i, ax in enumerate(axes[:n]):
        if i % ncols == 0:
            ax.set_ylabel(YLABELS.get(kind, ""))
        if i + ncols >= n:
            ax.set_xlabel(XLABELS.get(kind, ""))


def _save(fig, path: str | Path, tight: bool = False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_overlays(model: Mapping[str, Distribution], reference: Mapping[str, Distribution], path: str | Path,
                  title: str = "", model_label: str = "CG", reference_label: str = "AA",
                  tae: Mapping[str, ReplicaStat] | None = None) -> Path:
    """One panel per key: the model curve (mean, +-1 std band over replicas) over the reference."""
    keys = [k for k in reference if k in model]
    fig, axes = _grid(len(keys))
    for ax, key in zip(axes, keys):
        m, r = model[key], reference[key]
        ax.plot(r.centers, r.values, "k--", lw=1.2, label=reference_label)
        ax.plot(m.centers, m.values, color="C0", lw=1.2, label=model_label)
        if m.std is not None and np.any(m.std > 0):
            ax.fill_between(m.centers, m.values - m.std, m.values + m.std, color="C0", alpha=0.3, lw=0)
        label = key if tae is None or key not in tae else f"{key}  TAE {tae[key].mean:.3g}"
        ax.set_title(label, fontsize=9)
    if keys:
        _label(axes, len(keys), 3, model[keys[0]].kind)
        axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_time_resolved_cdfs(blocks: Sequence[Mapping[str, Distribution]], reference: Mapping[str, Distribution],
                            path: str | Path, block_labels: Sequence[str] | None = None, title: str = "") -> Path:
    """Per species, the CDF of each block of frames (early = dark, late = light) over the reference."""
    species = [s for s in reference if blocks and s in blocks[0]]
    fig, axes = _grid(len(species))
    colors = colormap("viridis")(np.linspace(0.0, 0.9, max(1, len(blocks))))
    for ax, s in zip(axes, species):
        for i, block in enumerate(blocks):
            lab = block_labels[i] if block_labels else f"block {i + 1}"
            ax.plot(block[s].centers, block[s].values, color=colors[i], lw=1.1, label=lab)
        ax.plot(reference[s].centers, reference[s].values, "k--", lw=1.2, label="AA")
        ax.set_title(s, fontsize=9)
    _label(axes, len(species), 3, "cdf")
    if species:
        axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_tae_bars(tae: Mapping[str, Mapping[str, ReplicaStat]], path: str | Path, title: str = "") -> Path:
    """One panel per kind: TAE per curve, bars = mean over replicas, error bars = 1 std."""
    kinds = [k for k in tae if tae[k]]
    widths = [max(4.0, 0.35 * len(tae[k])) for k in kinds]
    fig = new_figure(figsize=(max(widths + [4.0]), 3.2 * max(1, len(kinds))))
    axes = fig.subplots(max(1, len(kinds)), 1, squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds):
        keys = list(tae[kind])
        mean = [tae[kind][k].mean for k in keys]
        std = [tae[kind][k].std for k in keys]
        ax.bar(range(len(keys)), mean, yerr=std, capsize=3, color="C0")
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels(keys, rotation=90 if len(keys) > 8 else 0, fontsize=7)
        ax.set_ylabel(f"{kind.upper()} TAE")
    if title:
        fig.suptitle(title)
    return _save(fig, path, tight=True)


def plot_energies(series: Sequence[tuple[np.ndarray, np.ndarray, int | None, str]], path: str | Path,
                  title: str = "") -> Path:
    """Potential energy against sample index/time per replica; a dotted line at detected t0.

    ``series`` items: (x, energy, t0 index or None, label)."""
    fig = new_figure(figsize=(7, 3.5))
    ax = fig.subplots()
    for i, (x, e, t0, label) in enumerate(series):
        ax.plot(x, e, color=f"C{i % 10}", lw=0.8, label=label)
        if t0 is not None and 0 <= t0 < len(x):
            ax.axvline(x[t0], color=f"C{i % 10}", ls=":", lw=1)
    ax.set_xlabel("time (ps)" if series and series[0][0].dtype.kind == "f" else "sample")
    ax.set_ylabel("potential energy (kJ/mol)")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    return _save(fig, path, tight=True)


# --------------------------------------------------------------------------- phi/psi

def _box_segments(box: AngleBox) -> list[tuple[float, float, float, float]]:
    """A basin box as plain rectangles ``(phi0, phi1, psi0, psi1)`` (degrees), split where it
    wraps through 180."""
    def spans(lo, hi):
        return [(lo, hi)] if lo < hi else [(lo, 180.0), (-180.0, hi)]

    return [(a, b, c, d) for a, b in spans(*box.phi) for c, d in spans(*box.psi)]


def _draw_boxes(ax, boxes: Sequence[AngleBox], **style) -> None:
    from matplotlib.patches import Rectangle

    for box in boxes:
        for a, b, c, d in _box_segments(box):
            ax.add_patch(Rectangle((a, c), b - a, d - c, fill=False, **style))


def plot_fes_panels(surfaces: Mapping[str, FreeEnergySurface], path: str | Path, vmax_kT: float = 8.0,
                    basins: Sequence[Basin] | None = None, scores: Mapping[str, str] | None = None,
                    title: str = "") -> Path:
    """The (phi, psi) free energies side by side (e.g. AA | model 1 | model 2), one colour scale.

    Parameters
    ----------
    surfaces : {label: FreeEnergySurface}
        Panels in this order, each ``F = -ln p`` in kT, minimum 0 (bins without frames blank).
    vmax_kT : float
        Top of the common colour scale (kT); higher F is drawn in its colour.
    basins : sequence of Basin, optional
        Basins whose regions (grey) and cores (red, dashed) are outlined.
    scores : {label: text}, optional
        Text under a panel's title (e.g. its JS and TAE against the AA).
    """
    labels = list(surfaces)
    n = max(1, len(labels))
    fig = new_figure(figsize=(3.3 * n + 1.0, 3.6))
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    mesh = None
    for ax, label in zip(axes, labels):
        fes = surfaces[label]
        f = np.ma.masked_invalid(np.where(np.isinf(fes.free_energy_kT), np.nan, fes.free_energy_kT))
        mesh = ax.pcolormesh(fes.phi_edges, fes.psi_edges, f.T, cmap=colormap("viridis"), vmin=0.0, vmax=vmax_kT,
                             shading="flat")
        for b in basins or ():
            _draw_boxes(ax, b.region, edgecolor="0.45", lw=0.8)
            _draw_boxes(ax, b.core, edgecolor="C3", lw=0.7, ls="--")
        ax.set_xlim(-180, 180)
        ax.set_ylim(-180, 180)
        ax.set_xticks(range(-180, 181, 90))
        ax.set_yticks(range(-180, 181, 90))
        ax.set_aspect("equal")
        ax.set_xlabel("phi (degree)")
        sub = f"\n{scores[label]}" if scores and label in scores else ""
        ax.set_title(f"{label} ({fes.n_samples} frames){sub}", fontsize=9)
    axes[0].set_ylabel("psi (degree)")
    fig.subplots_adjust(left=0.7 / fig.get_size_inches()[0], right=0.88, bottom=0.15, top=0.82, wspace=0.08)
    if mesh is not None:
        cax = fig.add_axes([0.9, 0.15, 0.015, 0.67])
        fig.colorbar(mesh, cax=cax, label="F (kT)", extend="max")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_dihedral_timeline(times_ps: np.ndarray, phi: np.ndarray, psi: np.ndarray, path: str | Path,
                           basins: Sequence[Basin] | None = None, title: str = "") -> Path:
    """phi(t) and psi(t) (degrees) against time (ns), and, with ``basins``, the core last visited
    (transition-based assignment, :func:`~openmm_cgkd.analysis.ramachandran.committed_cores`):
    each step of that line is one counted transition."""
    t = np.asarray(times_ps, dtype=np.float64) / 1000.0
    rows = 3 if basins else 2
    fig = new_figure(figsize=(9.0, 1.9 * rows + 0.6))
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    size = 0.3 if t.size > 20000 else 1.0
    for ax, values, name in ((axes[0], phi, "phi"), (axes[1], psi, "psi")):
        ax.scatter(t, values, s=size, lw=0, color="C0", rasterized=True)
        ax.set_ylim(-180, 180)
        ax.set_yticks(range(-180, 181, 90))
        ax.set_ylabel(f"{name} (degree)")
    if basins:
        state = committed_cores(phi, psi, basins)
        axes[2].step(t, state, where="post", color="k", lw=0.6)
        axes[2].set_yticks(range(-1, len(basins)))
        axes[2].set_yticklabels(["none"] + [b.key for b in basins], fontsize=8)
        axes[2].set_ylim(-1.5, len(basins) - 0.5)
        axes[2].set_ylabel("last core")
    axes[-1].set_xlabel("time (ns)")
    if title:
        fig.suptitle(title)
    return _save(fig, path, tight=True)
