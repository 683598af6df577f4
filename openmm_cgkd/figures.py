"""Matplotlib figures without pyplot: :func:`new_figure` gives a ``Figure`` drawn by the Agg
canvas, so the package never calls ``matplotlib.use`` and never changes the backend (or the
open figures) of a user's session or notebook."""
from __future__ import annotations

__all__ = ["new_figure", "colormap"]


def new_figure(**kwargs):
    """A ``matplotlib.figure.Figure(**kwargs)`` (e.g. ``figsize`` inches, ``dpi``) with its own
    Agg canvas; ``fig.savefig(path)`` writes PNG files. Nothing to close afterwards."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def colormap(name: str):
    """The registered matplotlib colormap ``name`` (e.g. 'viridis', 'tab10')."""
    import matplotlib

    return matplotlib.colormaps[name]
