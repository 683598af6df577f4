"""The Verlet list of the fast serving path (openmm_cgkd/model/neighbors.py) against brute force:
the pairs within the cutoff are exactly those of an O(N^2) minimum-image search, at the build,
after moves below half the skin (no rebuild), after moves beyond it (rebuilt), after wrapping
beads into the box (no rebuild) and after a box change (rebuilt); periodic (orthorhombic and
triclinic) and not; dynamic and static (CUDA-graph) layouts."""
import pytest
import torch

from openmm_cgkd.model.neighbors import VerletList, brute_force_pairs, minimum_image

CUTOFF = 0.6

BOXES = {
    "cube": torch.eye(3, dtype=torch.float64) * 2.0,
    "triclinic": torch.tensor([[2.0, 0.0, 0.0], [0.5, 1.8, 0.0], [-0.6, 0.7, 1.9]], dtype=torch.float64),
    "none": None,
}


def _setup(box_name, n=120, seed=0):
    gen = torch.Generator().manual_seed(seed)
    box = BOXES[box_name]
    if box is None:
        pos = torch.rand((n, 3), generator=gen, dtype=torch.float64) * 2.0
    else:
        pos = torch.rand((n, 3), generator=gen, dtype=torch.float64) @ box
    z = torch.randint(0, 3, (n,), generator=gen)
    return gen, box, pos, z


def _check(vl, pos, box, z):
    pos_u = vl.update(pos, box, z)
    got = vl.pairs_within(pos_u, box, CUTOFF)
    want = brute_force_pairs(pos, box, CUTOFF)
    assert got.shape == want.shape and torch.equal(got, want)
    # every slot vector is the minimum-image vector of its pair
    vec = pos_u.index_select(0, vl.slot_i) - pos_u.index_select(0, vl.slot_j)
    if box is not None:
        vec = vec + vl.slot_shift @ box
        mi = minimum_image(pos.index_select(0, vl.slot_i) - pos.index_select(0, vl.slot_j), box)
        ok = vl.slot_valid & ((vec * vec).sum(-1) < CUTOFF ** 2)
        assert torch.allclose(vec[ok], mi[ok], atol=1e-9)


@pytest.mark.parametrize("box_name", list(BOXES))
@pytest.mark.parametrize("static", [False, True])
def test_verlet_list_equals_brute_force(box_name, static):
    gen, box, pos, z = _setup(box_name)
    vl = VerletList(CUTOFF, 3, max_num_neighbors=80, skin_nm=0.1, slot_width=8, static_shapes=static,
                    dtype=torch.float64)
    _check(vl, pos, box, z)
    assert int(vl.num_builds) == 1
    if not static:
        assert float(vl.skin_used) == pytest.approx(0.1)
    # small moves (< half the skin): no rebuild, still exact
    for _ in range(3):
        step = torch.randn(pos.shape, generator=gen, dtype=torch.float64)
        step = 0.012 * step / step.norm(dim=1, keepdim=True)
        pos = pos + step
        _check(vl, pos, box, z)
    assert int(vl.num_builds) == (4 if static else 1)
    # a move beyond half the skin: rebuilt
    pos = pos + 0.3 * torch.randn(pos.shape, generator=gen, dtype=torch.float64)
    _check(vl, pos, box, z)
    assert int(vl.num_builds) == (5 if static else 2)
    if box is not None:
        # wrapping the beads into the box (as the served module does) is no move
        frac = torch.linalg.solve(box.t(), pos.t()).t()
        wrapped = (frac - torch.floor(frac)) @ box
        assert not torch.allclose(wrapped, pos)
        _check(vl, wrapped, box, z)
        assert int(vl.num_builds) == (6 if static else 2)
        # a box change (barostat): rebuilt
        box2 = box * 1.01
        _check(vl, pos * 1.01, box2, z)
        assert int(vl.num_builds) == (7 if static else 3)


def test_skin_limited_by_the_box():
    """cutoff + skin stays within half the narrowest box width (the minimum image is then the only
    image in reach); a box just twice the cutoff wide gets no skin (rebuilt at every call)."""
    gen, _, _, z = _setup("cube", n=40)
    box = torch.eye(3, dtype=torch.float64) * 1.25
    pos = torch.rand((40, 3), generator=gen, dtype=torch.float64) * 1.25
    vl = VerletList(CUTOFF, 3, max_num_neighbors=80, skin_nm=0.1, dtype=torch.float64)
    _check(vl, pos, box, z)
    assert float(vl.skin_used) == pytest.approx(0.025)
    box = torch.eye(3, dtype=torch.float64) * 1.2
    vl2 = VerletList(CUTOFF, 3, max_num_neighbors=80, skin_nm=0.1, dtype=torch.float64)
    _check(vl2, pos * 1.2 / 1.25, box, z)
    _check(vl2, pos * 1.2 / 1.25 + 1e-4, box, z)
    assert float(vl2.skin_used) == 0.0 and int(vl2.num_builds) == 2


def test_overflow_is_an_error():
    _, box, pos, z = _setup("cube")
    vl = VerletList(CUTOFF, 3, max_num_neighbors=2, skin_nm=0.1)
    with pytest.raises(RuntimeError, match="NeighborOverflowError"):
        vl.update(pos.float(), box.float(), z)


def test_scriptable():
    _, box, pos, z = _setup("triclinic")
    vl = torch.jit.script(VerletList(CUTOFF, 3, max_num_neighbors=80, dtype=torch.float64))
    _check(vl, pos, box, z)
