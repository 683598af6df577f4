"""Total absolute error (TAE) between distributions on a common grid (docs/METHOD.md section 4).

``TAE = sum_b |p(x_b) - q(x_b)| dx_b``.

* ADF and CDF curves are normalised densities, so their TAE lies in [0, 2]: 0 for identical
  curves, 2 for curves with disjoint support.
* An RDF g(r) is not a density (it tends to 1, not to 0, at large r). Two comparisons are offered
  (``rdf_mode``):

  - ``"g"`` (default): the TAE of g(r) itself, ``sum |g_CG - g_AA| dr`` over the RDF grid, in nm.
    Identical curves give 0; it is unbounded above, and grows with the grid length only where the
    curves differ.
  - ``"density"``: each g(r) is first divided by its integral over the grid, ``g / sum(g dr)``,
    and the TAE of these unit-area curves lies in [0, 2] like the ADF and CDF values.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from openmm_cgkd.analysis.distributions import AnalysisError, Distribution

__all__ = ["tae", "distribution_tae", "tae_table", "as_density", "RDF_MODES"]

RDF_MODES = ("g", "density")


def tae(p: np.ndarray, q: np.ndarray, dx) -> float:
    """``sum |p - q| dx`` for two curves on the same grid (``dx`` a bin width or an array of them)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise AnalysisError(f"TAE needs curves on one grid, got shapes {p.shape} and {q.shape}")
    return float(np.sum(np.abs(p - q) * np.asarray(dx, dtype=np.float64)))


def as_density(dist: Distribution) -> np.ndarray:
    """``dist.values`` divided by its integral over the grid (zeros stay zeros)."""
    area = dist.integral()
    return dist.values / area if area > 0 else np.zeros_like(dist.values)


def distribution_tae(a: Distribution, b: Distribution, rdf_mode: str = "g") -> float:
    """TAE of two :class:`Distribution` curves of one kind on one grid (see module docstring)."""
    if a.kind != b.kind:
        raise AnalysisError(f"TAE of a {a.kind} against a {b.kind}")
    if a.edges.shape != b.edges.shape or not np.allclose(a.edges, b.edges, rtol=0, atol=1e-9):
        raise AnalysisError(f"TAE of {a.kind} {a.key}: the two curves are on different grids")
    if rdf_mode not in RDF_MODES:
        raise AnalysisError(f"rdf_mode must be one of {RDF_MODES}, got {rdf_mode!r}")
    if a.kind == "rdf" and rdf_mode == "density":
        return tae(as_density(a), as_density(b), a.widths)
    return tae(a.values, b.values, a.widths)


def tae_table(model: Mapping[str, Distribution], reference: Mapping[str, Distribution],
              rdf_mode: str = "g") -> dict[str, float]:
    """TAE of every curve of ``reference`` against the curve of the same key in ``model``."""
    missing = sorted(set(reference) - set(model))
    if missing:
        raise AnalysisError(f"model lacks curves {missing} that the reference has")
    return {key: distribution_tae(model[key], ref, rdf_mode) for key, ref in reference.items()}
