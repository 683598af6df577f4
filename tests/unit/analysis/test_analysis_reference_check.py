"""The reference check (openmm_cgkd.analysis.reference_check) on constructed trajectories whose
answers are known: a frozen lattice, a box drifting as a whole, beads crossing the boundary, and
an ideal gas whose neighbours are redrawn every frame (chance level 4/3 pi rc^3 / V)."""
import math

import numpy as np
import pytest

from openmm_cgkd.analysis.distributions import AnalysisError, make_trajectory
from openmm_cgkd.analysis.reference_check import (check_reference, displacement_rms, neighbour_persistence,
                                                  reference_check_markdown, unwrap)

L = 3.0
BOX = np.diag([L, L, L])


def _lattice(n_side=6):
    g = (np.arange(n_side) + 0.5) * (L / n_side)
    return np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)


def test_unwrap_follows_a_bead_across_the_boundary():
    x = np.array([[[2.8, 1.0, 1.0]], [[2.95, 1.0, 1.0]], [[0.1, 1.0, 1.0]], [[0.25, 1.0, 1.0]]])  # +0.15 nm a frame
    u = unwrap(x, BOX)
    assert u[:, 0, 0] == pytest.approx([2.8, 2.95, 3.1, 3.25])


def test_displacement_removes_the_drift_of_the_box():
    rng = np.random.default_rng(0)
    x0 = rng.uniform(0, L, (50, 3))
    drift = np.array([0.07, -0.03, 0.11])
    frames = np.stack([(x0 + k * drift) % L for k in range(20)])  # the whole box moves, wrapped
    assert displacement_rms(frames, BOX) == pytest.approx(np.zeros(20), abs=1e-9)
    kick = rng.normal(0, 0.05, (50, 3))
    kick -= kick.mean(axis=0)
    moved = np.stack([x0, (x0 + kick + 5 * drift) % L])
    assert displacement_rms(moved, BOX)[-1] == pytest.approx(math.sqrt(np.mean(np.sum(kick ** 2, axis=1))))


def test_a_frozen_lattice_keeps_its_shells():
    x0 = _lattice()  # spacing 0.5 nm: 6 neighbours at 0.5 nm within 0.6 nm
    rng = np.random.default_rng(1)
    frames = np.stack([(x0 + rng.normal(0, 0.01, x0.shape)) % L for _ in range(30)])
    survival, still, dist, n_pairs = neighbour_persistence(frames, BOX, 0.6)
    assert n_pairs == len(x0) * 6 // 2
    assert dist == pytest.approx(0.5, abs=0.01)
    assert survival[-1] == 1.0 and still[-1] == 1.0
    check = check_reference(make_trajectory(frames, ["CL"] * len(x0), BOX))
    assert check.frozen and check.verdict.startswith("WARNING: the reference is one frozen packing")
    assert check.displacement_ratio < 0.1
    assert "Reference check" in reference_check_markdown(check)


def test_an_ideal_gas_loses_its_shells_to_chance_level():
    rng = np.random.default_rng(2)
    n, rc = 400, 0.6
    frames = rng.uniform(0, L, (40, n, 3))  # neighbours redrawn every frame
    survival, still, _, n_pairs = neighbour_persistence(frames, BOX, rc)
    chance = 4 / 3 * math.pi * rc ** 3 / L ** 3
    assert np.mean(still[1:]) == pytest.approx(chance, rel=0.1)
    assert survival[-1] == 0.0
    check = check_reference(make_trajectory(frames, ["CL"] * n, BOX))
    assert not check.frozen and check.verdict.startswith("the reference has rearranged")


def test_reference_check_needs_frames_and_neighbours():
    with pytest.raises(AnalysisError, match="at least 2 frames"):
        check_reference(make_trajectory(_lattice()[None], ["CL"] * 216, BOX))
    with pytest.raises(AnalysisError, match="no bead pair"):
        neighbour_persistence(_lattice()[None].repeat(2, axis=0), BOX, cutoff=0.1)
