"""The fast serving path of HIP-NN-TS (openmm_cgkd/model/fast_hipnn.py) against autograd.

Energies, per-bead energies and forces of :class:`FastHipnn` (hand-written gradient, Verlet list)
equal the autograd path (``CGPotential.forward`` / ``StackedEnsemblePotential.forward_mean``) to
float32 round-off on the shipped bundles (student K = 1, teachers K = 8), to float64 round-off in
double precision, for every activation, after moves (with and without a rebuild of the list), with
and without periodic boundaries, eager, TorchScript and frozen TorchScript (what openmm-torch runs)."""
import numpy as np
import pytest
import torch

from openmm_cgkd.bundle import load_bundle, models_dir
from openmm_cgkd.model.fast_hipnn import FastHipnn, is_hipnn_model
from openmm_cgkd.model.potential import CGPotential, PotentialConfig
from openmm_cgkd.model.stacked import StackedEnsemblePotential
from openmm_cgkd.serving.network_force import served_model

SHIPPED = ["des-student", "des-teachers"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _frame(name):
    ref = np.load(models_dir() / name / "continuity.npz")
    return (torch.as_tensor(ref["bead_types"], dtype=torch.long),
            torch.as_tensor(ref["positions_nm"], dtype=torch.float32),
            torch.as_tensor(ref["box_nm"], dtype=torch.float32))


def _autograd(model, z, pos, box):
    """The autograd reference: member means of energy, bead energies and forces."""
    if isinstance(model, StackedEnsemblePotential) or hasattr(model, "forward_mean"):
        return model.forward_mean(z, pos, box)
    return model(z, pos, box)[:3]


def _assert_close(out, ref, rtol):
    e, be, f = out
    e0, be0, f0 = ref
    assert abs(float(e) - float(e0)) <= rtol * abs(float(e0))
    scale_e = float(be0.abs().max())
    assert float((be - be0).abs().max()) <= rtol * scale_e * 10  # per-bead sums of O(100) terms
    scale = float(f0.abs().max())
    assert float((f - f0).abs().max()) <= rtol * scale, float((f - f0).abs().max()) / scale


@pytest.fixture(scope="module", params=SHIPPED)
def shipped(request):
    return request.param, load_bundle(models_dir() / request.param)


def test_shipped_bundles_are_served_fast(shipped):
    _, b = shipped
    assert is_hipnn_model(b.module) and is_hipnn_model(b.eager_model())
    assert isinstance(served_model(b.module), FastHipnn)
    assert not isinstance(served_model(b.module, fast=False), FastHipnn)


@pytest.mark.parametrize("source", ["eager", "script"])
def test_shipped_equal_autograd_float32(shipped, source):
    name, b = shipped
    z, pos, box = _frame(name)
    eager = b.eager_model()
    fast = FastHipnn.from_model(eager if source == "eager" else b.module)
    assert fast.num_members == (1 if name == "des-student" else 8)
    _assert_close(fast(z, pos, box), _autograd(eager, z, pos, box), 1e-5)
    # float64 positions in, float64 out (what OpenMM's CPU platform hands over)
    e, be, f = fast(z, pos.double(), box.double())
    assert e.dtype == torch.float64 and f.dtype == torch.float64


def test_shipped_equal_autograd_float64(shipped):
    """In double precision the two agree to double round-off: the same mathematics."""
    name, b = shipped
    z, pos, box = _frame(name)
    eager = b.eager_model().double()
    fast = FastHipnn.from_model(eager)
    assert fast.model_dtype() == torch.float64
    _assert_close(fast(z, pos.double(), box.double()), _autograd(eager, z, pos.double(), box.double()), 1e-11)


def test_shipped_after_moves_and_wrapping_scripted_frozen(shipped):
    """A frozen TorchScript copy (as openmm-torch runs it) keeps its Verlet list between calls,
    rebuilds it when needed, and stays equal to autograd; beads wrapped into the box do not count
    as moved."""
    name, b = shipped
    z, pos, box = _frame(name)
    eager = b.eager_model()
    fast = torch.jit.freeze(torch.jit.script(FastHipnn.from_model(b.module)).eval(),
                            preserved_attrs=["set_check_errors"])
    gen = torch.Generator().manual_seed(0)
    p = pos.clone()
    builds = []
    for step in range(6):
        out = fast(z, p, box)
        _assert_close(out, _autograd(eager, z, p, box), 1e-5)
        builds.append(int(fast.neighbors.num_builds))
        p = p + 0.01 * torch.randn(p.shape, generator=gen)  # 0.017 nm rms: < half the skin mostly
        if step == 3:
            p = p + 0.2 * torch.randn(p.shape, generator=gen)  # beyond the skin: a rebuild
    assert builds[0] == 1 and builds[-1] >= 2
    # wrapping into the box changes no result and triggers no rebuild
    fast(z, p, box)
    before = int(fast.neighbors.num_builds)
    wrapped = p - torch.floor(p / box.diagonal()) * box.diagonal()
    assert bool((wrapped != p).any())
    _assert_close(fast(z, wrapped, box), _autograd(eager, z, p, box), 1e-5)
    assert int(fast.neighbors.num_builds) == before
    # openmm-torch hands positions that require grad (and freezing drops detach()): same values, no graph
    out = fast(z, wrapped.double().requires_grad_(True), box.double())
    assert not any(t.requires_grad for t in out)
    _assert_close([t.float() for t in out], _autograd(eager, z, p, box), 1e-5)


@pytest.mark.parametrize("activation", ["silu", "softplus", "tanh"])
@pytest.mark.parametrize("members", [1, 3])
def test_random_networks_every_activation(activation, members):
    cfg = PotentialConfig(architecture="hipnn-ts", num_types=3, cutoff_nm=0.7, embedding_dim=12, num_layers=2,
                          num_rbf=10, activation=activation, max_num_neighbors=64, dtype="float64")
    torch.manual_seed(3)
    model = StackedEnsemblePotential(cfg, members) if members > 1 else CGPotential(cfg)
    with torch.no_grad():  # non-trivial per-type energy affine
        model.energy_scale.uniform_(0.5, 2.0)
        model.energy_offset.uniform_(-1.0, 1.0)
    gen = torch.Generator().manual_seed(1)
    n = 60
    box = torch.tensor([[2.0, 0.0, 0.0], [0.4, 1.9, 0.0], [-0.5, 0.6, 2.1]], dtype=torch.float64)
    frac = torch.rand((n, 3), generator=gen, dtype=torch.float64)
    pos = frac @ box
    z = torch.randint(0, 3, (n,), generator=gen)
    fast = FastHipnn.from_model(model)
    _assert_close(fast(z, pos, box), _autograd(model, z, pos, box), 1e-10)
    # no periodic boundaries
    fast_np = FastHipnn.from_model(model)
    _assert_close(fast_np(z, pos, None), _autograd(model, z, pos, None), 1e-10)
    # beads moved by more than the skin: the list is rebuilt, results still exact
    pos2 = pos + 0.3 * torch.randn(pos.shape, generator=gen, dtype=torch.float64)
    _assert_close(fast(z, pos2, box), _autograd(model, z, pos2, box), 1e-10)
    assert int(fast.neighbors.num_builds) == 2


def test_checks_kept():
    name, b = "des-student", load_bundle(models_dir() / "des-student")
    z, pos, box = _frame(name)
    fast = FastHipnn.from_model(b.module)
    with pytest.raises(ValueError, match="twice the cutoff"):
        fast(z, pos, box * 0.6)
    bad = pos.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fast(z, bad, box)
    with pytest.raises(ValueError, match="bead_types"):
        fast(z + 5, pos, box)
    small = FastHipnn.from_model(b.module)
    small.max_num_neighbors = 4
    small.neighbors.max_num_neighbors = 4
    with pytest.raises(RuntimeError, match="NeighborOverflowError"):
        small(z, pos, box)
    # without the host-side checks an overflow is still an (immediate, on the CPU) device assert
    small2 = FastHipnn.from_model(b.module)
    small2.set_check_errors(False)
    small2.max_num_neighbors = 20
    with pytest.raises(RuntimeError, match="NeighborOverflowError"):
        small2(z, pos, box)


def test_static_shapes_equal_autograd():
    """The fixed-size layout (CUDA graphs): same results, tables of a size fixed by N alone."""
    name, b = "des-teachers", load_bundle(models_dir() / "des-teachers")
    z, pos, box = _frame(name)
    eager = b.eager_model()
    fast = FastHipnn.from_model(eager)
    static = FastHipnn(
        {k: v for k, v in ((n, getattr(eager.net, n)) for n in (
            "int_w", "vec_scale", "quad_scale", "self_w", "self_b", "res_w", "res_b", "adjust_w", "atom_w", "atom_b",
            "atom_res_w", "atom_res_b", "e0_w", "e1_w", "e1_b", "inv_mu", "sens_width"))},
        eager.energy_scale, eager.energy_offset, cutoff_nm=eager.cutoff_nm, activation=eager.net.activation,
        max_num_neighbors=eager.max_num_neighbors, static_shapes=True, check_errors=False)
    ref = _autograd(eager, z, pos, box)
    _assert_close(static(z, pos, box), ref, 1e-5)
    sizes = (static.neighbors.slot_i.shape, static.neighbors.line_row.shape)
    p2 = pos + 0.05
    _assert_close(static(z, p2, box), _autograd(eager, z, p2, box), 1e-5)
    assert (static.neighbors.slot_i.shape, static.neighbors.line_row.shape) == sizes
    _assert_close(fast(z, pos, box), ref, 1e-5)
