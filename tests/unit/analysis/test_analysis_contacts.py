"""Coordination below the AA's closest contact (openmm_cgkd.analysis.contacts): from g(r) against a
direct count of pair distances, against the ideal-gas integral, and the gate."""
import math

import numpy as np
import pytest

from openmm_cgkd.analysis.contacts import contact_coordination, contact_gate, pairs_within
from openmm_cgkd.analysis.distributions import AnalysisError, Distribution, make_trajectory, pairwise_distances
from openmm_cgkd.analysis.rdf import compute_rdfs

L = 2.5
BOX = np.diag([L, L, L])


def test_pairs_within_equals_a_direct_count():
    rng = np.random.default_rng(0)
    names = ["CHO"] * 30 + ["CL"] * 30
    xyz = rng.uniform(0, L, (5, 60, 3))
    traj = make_trajectory(xyz, names, BOX)
    rdfs = compute_rdfs(traj)
    n_bins = 80  # r < 0.4 nm
    for key, (ia, ib) in {"CHO-CL": (slice(0, 30), slice(30, 60)), "CL-CL": (slice(30, 60), slice(30, 60))}.items():
        counted = 0
        for f in range(5):
            d = pairwise_distances(xyz[f, ia], xyz[f, ib], BOX)
            counted += np.count_nonzero(np.triu(d < 0.4, 1)) if key == "CL-CL" else np.count_nonzero(d < 0.4)
        assert pairs_within(rdfs[key], n_bins, L ** 3) == pytest.approx(counted / 5, rel=1e-4)


def _g(key, edges, values, n_pairs):
    return Distribution("rdf", key, edges, values, meta={"n_pairs": n_pairs})


def test_coordination_below_the_contact_analytic():
    edges = np.linspace(0, 1.0, 201)
    c = 0.5 * (edges[1:] + edges[:-1])
    ref = np.where(c < 0.30, 0.0, 1.0)  # the AA never closer than 0.30 nm
    model = np.where(c < 0.30, 0.5, 1.0)  # the model half as dense as bulk below it
    n_a, n_b, vol = 20, 40, 8.0
    refs = {"A-B": _g("A-B", edges, ref, n_a * n_b), "B-B": _g("B-B", edges, ref, n_b * (n_b - 1) // 2)}
    models = {"A-B": _g("A-B", edges, model, n_a * n_b), "B-B": _g("B-B", edges, model, n_b * (n_b - 1) // 2)}
    out = contact_coordination(models, refs, vol, counts={"A": n_a, "B": n_b})
    ab = out["A-B"]
    assert ab.contact_nm == pytest.approx(0.3025)
    # B around A: rho_B * 0.5 * 4/3 pi r^3 with r = 0.30 (the bins below the contact bin)
    assert ab.model_per_a == pytest.approx(n_b / vol * 0.5 * 4 / 3 * math.pi * 0.30 ** 3)
    assert ab.model_per_b == pytest.approx(n_a / vol * 0.5 * 4 / 3 * math.pi * 0.30 ** 3)
    assert ab.reference_per_a == 0.0 and ab.ratio == math.inf
    # a like pair: (N - 1) / V of density, each pair counted for both beads; counts derived from n_pairs
    bb = contact_coordination(models, refs, vol, counts={"A": n_a, "B": n_b})["B-B"]
    assert bb.model_per_a == pytest.approx((n_b - 1) / vol * 0.5 * 4 / 3 * math.pi * 0.30 ** 3)
    assert contact_coordination({"B-B": models["B-B"]}, {"B-B": refs["B-B"]}, vol)["B-B"].model_per_a == \
        pytest.approx(bb.model_per_a)
    gate = contact_gate(out)
    assert not gate.passed and any(f.startswith("A-B:") for f in gate.failed)
    assert contact_gate(contact_coordination(refs, refs, vol, counts={"A": n_a, "B": n_b})).passed
    assert contact_gate({k: v.to_dict() for k, v in out.items()}).failed == gate.failed


def test_gate_factor_and_floor():
    edges = np.linspace(0, 1.0, 201)
    c = 0.5 * (edges[1:] + edges[:-1])
    ref = np.where(c < 0.30, 0.01, 1.0)
    for scale, passes in ((1.9, True), (2.5, False)):
        model = np.where(c < 0.30, 0.01 * scale, 1.0)
        out = contact_coordination({"A-A": _g("A-A", edges, model, 190)}, {"A-A": _g("A-A", edges, ref, 190)}, 8.0)
        assert contact_gate(out, floor=0.0).passed is passes
        assert out["A-A"].ratio == pytest.approx(scale)


def test_needs_pair_counts_and_volume():
    edges = np.linspace(0, 1.0, 11)
    g = Distribution("rdf", "A-B", edges, np.ones(10))
    with pytest.raises(AnalysisError, match="volume"):
        contact_coordination({"A-B": g}, {"A-B": g}, 0.0)
    with pytest.raises(AnalysisError, match="n_pairs"):
        pairs_within(g, 3, 1.0)
