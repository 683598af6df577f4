"""Statistics over independent replicas of one model (the paper used 8).

Standard deviations are sample standard deviations (``ddof=1``) over replicas; one replica gives
a standard deviation of 0.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from openmm_cgkd.analysis.distributions import AnalysisError, Distribution

__all__ = ["ReplicaStat", "replica_stat", "replica_mean", "replica_tae_stats"]


@dataclass
class ReplicaStat:
    """Mean and standard deviation of one number over replicas, with the values themselves."""

    mean: float
    std: float
    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "values": list(self.values), "n": self.n}


def _std(a: np.ndarray, axis=0):
    return np.std(a, axis=axis, ddof=1) if a.shape[axis] > 1 else np.zeros_like(np.mean(a, axis=axis))


def replica_stat(values: Sequence[float]) -> ReplicaStat:
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return ReplicaStat(float("nan"), float("nan"), [])
    return ReplicaStat(float(v.mean()), float(_std(v)), v.tolist())


def replica_mean(replicas: Sequence[Mapping[str, Distribution]]) -> dict[str, Distribution]:
    """Per key, the mean curve over replicas with its standard deviation in ``std``."""
    if not replicas:
        raise AnalysisError("no replicas to average")
    keys = list(replicas[0])
    for i, rep in enumerate(replicas[1:], start=1):
        if set(rep) != set(keys):
            raise AnalysisError(f"replica {i} has curves {sorted(rep)}, replica 0 has {sorted(keys)}")
    out = {}
    for key in keys:
        curves = [rep[key] for rep in replicas]
        first = curves[0]
        for c in curves[1:]:
            if c.edges.shape != first.edges.shape or not np.allclose(c.edges, first.edges, atol=1e-9, rtol=0):
                raise AnalysisError(f"{first.kind} {key}: replicas are on different grids")
        vals = np.stack([c.values for c in curves])
        out[key] = Distribution(first.kind, key, first.edges, vals.mean(axis=0), _std(vals),
                                n_samples=sum(c.n_samples for c in curves),
                                n_frames=sum(c.n_frames for c in curves),
                                meta={**first.meta, "n_replicas": len(curves)})
    return out


def replica_tae_stats(tables: Sequence[Mapping[str, float]]) -> dict[str, ReplicaStat]:
    """Per key, mean and standard deviation of per-replica TAE values."""
    if not tables:
        return {}
    return {key: replica_stat([t[key] for t in tables]) for key in tables[0]}
