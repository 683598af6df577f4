"""WallParameters: the fitting rule against its analytic definition."""
import numpy as np
import pytest

from openmm_cgkd.model.wall import WallParameters


def test_fitting_rule_forces_at_taper_and_inside():
    t = np.array([[0.30, 0.35], [0.35, 0.40]])
    s = np.array([[100.0, 80.0], [80.0, 60.0]])
    w = WallParameters.from_taper(["A", "B"], t, s, width_nm=0.015, fraction=0.05)
    h = 1e-7
    for i in range(2):
        for j in range(2):
            for r, expect in ((t[i, j], 0.05 * s[i, j]), (t[i, j] - 0.015, s[i, j])):
                e = w.pair_energy(np.array([r - h, r + h]), i, j)
                force = -(e[1] - e[0]) / (2 * h)
                assert force == pytest.approx(expect, rel=1e-5)
    assert w.pair_energy(np.array([w.cutoff_nm + 1e-9]), 0, 0)[0] == 0.0
    assert abs(w.pair_energy(np.array([w.cutoff_nm - 1e-9]), 1, 1)[0]) < 1e-9


def test_round_trip_and_validation():
    w = WallParameters.from_taper(["A", "B"], np.full((2, 2), 0.3), np.full((2, 2), 50.0))
    assert WallParameters.from_dict(w.to_dict()).to_dict() == w.to_dict()
    with pytest.raises(ValueError, match="symmetric"):
        WallParameters(["A", "B"], [[1, 2], [3, 4]], np.ones((2, 2)), 0.5)
    with pytest.raises(ValueError, match="unknown keys"):
        WallParameters.from_dict({**w.to_dict(), "extra": 1})
