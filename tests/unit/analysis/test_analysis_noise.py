"""The reference's noise floor (openmm_cgkd.analysis.noise): blocks of one half scored against the
other half. Checked against sampling statistics, not against its own code: the floor of i.i.d.
frames falls like 1/sqrt(frames), a reference whose halves differ has a high floor, a reference of
one repeated frame has none."""
import numpy as np
import pytest

from openmm_cgkd.analysis import AnalysisError, AnalysisSettings, make_trajectory
from openmm_cgkd.analysis.noise import NoiseFloor, noise_floor

BOX = 3.0
NAMES = ["A"] * 20 + ["B"] * 20
SETTINGS = AnalysisSettings(adf_cutoffs=(0.9,))


def _ideal_gas(n_frames: int, seed: int = 0, scale: float = 1.0):
    """Independent uniform frames (an ideal gas) in a 3 nm box; ``scale`` < 1 packs the beads into
    a corner (a denser, different structure)."""
    xyz = np.random.default_rng(seed).random((n_frames, len(NAMES), 3)) * BOX * scale
    return make_trajectory(xyz, NAMES, np.eye(3) * BOX)


def test_blocks_are_counted_and_the_floor_round_trips():
    floor = noise_floor(_ideal_gas(50), block_frames=10, settings=SETTINGS)
    assert floor.block_frames == 10 and floor.reference_frames == 50 and floor.n_blocks == 4  # 2 halves x 2 blocks
    assert {"rdf", "adf", "cdf"} <= set(floor.summary)
    assert all(len(floor.summary[k].values) == 4 for k in ("rdf", "adf", "cdf"))
    back = NoiseFloor.from_dict(floor.to_dict())
    assert back.summary["rdf"].mean == pytest.approx(floor.summary["rdf"].mean)
    assert back.n_blocks == floor.n_blocks


def test_the_floor_of_independent_frames_falls_like_one_over_sqrt_frames():
    gas = _ideal_gas(400, seed=1)
    short = noise_floor(gas, block_frames=10, settings=SETTINGS).summary["rdf"].mean
    long_ = noise_floor(gas, block_frames=160, settings=SETTINGS).summary["rdf"].mean
    assert short > 0 and long_ > 0
    # 16x the frames per block: the block's own noise falls 4x; the other half (200 frames) adds
    # a share that does not fall, so the ratio sits between 1/4 and 1/2.
    assert 0.2 < long_ / short < 0.6


def test_one_repeated_frame_has_no_floor():
    one = _ideal_gas(1, seed=2)
    same = make_trajectory(np.repeat(one.xyz, 20, axis=0), NAMES, np.eye(3) * BOX)
    floor = noise_floor(same, block_frames=5, settings=SETTINGS)
    for kind in ("rdf", "adf", "cdf"):
        assert floor.summary[kind].mean == pytest.approx(0.0, abs=1e-12)


def test_blocks_are_scored_against_the_other_half():
    # first half packed into a corner, second half spread out: against its own half a block would
    # score near the stationary floor; against the other half it scores far above it.
    mixed = _ideal_gas(40, seed=3, scale=0.5).join(_ideal_gas(40, seed=4))
    stationary = noise_floor(_ideal_gas(80, seed=5), block_frames=10, settings=SETTINGS).summary["rdf"].mean
    shifted = noise_floor(mixed, block_frames=10, settings=SETTINGS).summary["rdf"].mean
    assert shifted > 3 * stationary


def test_a_reference_too_short_for_one_block_per_half_is_refused():
    with pytest.raises(AnalysisError, match="needs at least 40"):
        noise_floor(_ideal_gas(30), block_frames=20, settings=SETTINGS)
    with pytest.raises(AnalysisError, match="block_frames"):
        noise_floor(_ideal_gas(30), block_frames=0, settings=SETTINGS)
