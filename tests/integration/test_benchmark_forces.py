"""The benchmark's model variants compute the same physics: the naive ensemble (K TorchForces,
each scaled by 1/K) and the one-module ensemble give the same OpenMM forces, and both equal the
mean of the members' forces computed directly in torch (no OpenMM); the teacher is member 0."""
import math

import numpy as np
import pytest
import torch

openmm = pytest.importorskip("openmm")
from openmm import unit  # noqa: E402

from openmm_cgkd.benchmark import (RELINE_BEAD_DENSITY_PER_NM3, BenchmarkError, BenchmarkSettings,  # noqa: E402
                                   ScaledPotential, build_variant_system, des_box_nm, des_counts, des_lattice,
                                   ensemble_member_modules)
from openmm_cgkd.bundle import build_untrained_bundle, untrained_config  # noqa: E402
from openmm_cgkd.serving.forcefield import CGKDForceField  # noqa: E402
from openmm_cgkd.topology import bead_topology  # noqa: E402

K = 3
N = 30
CUTOFF = 0.6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = untrained_config("graph-network", cutoff_nm=CUTOFF)
    path = build_untrained_bundle(tmp_path_factory.mktemp("b") / "ens", cfg, model_kind="ensemble",
                                  num_members=K, seed=3)
    ff = CGKDForceField(path)
    names, _, box = des_lattice(N, seed=1)
    # a dense clump straddling the periodic boundary: untrained networks give sizeable forces only
    # at short range, and the images exercise the wrapping and the periodic pair search
    pos = np.random.default_rng(7).uniform(-0.35, 0.35, (N, 3))
    top = bead_topology(names, box)
    return ff, top, pos, box


def _forces(system, pos):
    integ = openmm.VerletIntegrator(0.001)
    ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName("CPU"))
    ctx.setPositions(pos * unit.nanometer)
    st = ctx.getState(getForces=True, getEnergy=True)
    f = st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    e = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    del ctx
    return np.asarray(f), e


def test_naive_and_one_module_ensemble_agree_in_openmm(setup):
    ff, top, pos, box = setup
    members = ensemble_member_modules(ff.bundle.module)
    assert len(members) == K
    one = build_variant_system(ff, top, box, None, wall=False)
    naive = build_variant_system(ff, top, box, [ScaledPotential(m, 1.0 / K) for m in members], wall=False)
    names = sorted(one.getForce(i).getName() for i in range(one.getNumForces()))
    assert names.count("cgkd_network") == 1 and "cgkd_wall" not in names
    assert [naive.getForce(i).getName() for i in range(naive.getNumForces())].count("cgkd_network") == K
    f_one, e_one = _forces(one, pos)
    f_naive, e_naive = _forces(naive, pos)

    # independent: each member called directly in torch, no OpenMM, then averaged in numpy
    types = torch.as_tensor(ff.bead_type_indices(top))
    p = torch.as_tensor(pos, dtype=torch.float32)
    b = torch.as_tensor(box, dtype=torch.float32)
    outs = [m(types, p, b) for m in members]
    f_ref = np.mean([o[2].detach().numpy().astype(np.float64) for o in outs], axis=0)
    e_ref = float(np.mean([float(o[0]) for o in outs]))

    scale = np.abs(f_ref).max()
    assert scale > 0.1  # the members really produce forces
    members_f = np.array([o[2].detach().numpy() for o in outs])
    assert np.abs(members_f[0] - members_f[1]).max() > 1e-2 * scale  # and they differ (distinct seeds)
    np.testing.assert_allclose(f_naive, f_one, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(f_one, f_ref, rtol=0, atol=1e-5 * scale)
    assert math.isclose(e_naive, e_one, rel_tol=1e-5, abs_tol=1e-4)
    assert math.isclose(e_one, e_ref, rel_tol=1e-5, abs_tol=1e-4)


def test_teacher_variant_is_member_zero_and_wall_is_kept(setup):
    ff, top, pos, box = setup
    member0 = ensemble_member_modules(ff.bundle.module)[0]
    teacher = build_variant_system(ff, top, box, [member0], wall=False)
    f_t, _ = _forces(teacher, pos)
    ref = member0(torch.as_tensor(ff.bead_type_indices(top)), torch.as_tensor(pos, dtype=torch.float32),
                  torch.as_tensor(box, dtype=torch.float32))[2].detach().numpy()
    np.testing.assert_allclose(f_t, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    with_wall = build_variant_system(ff, top, box, [member0], wall=True)
    names = [with_wall.getForce(i).getName() for i in range(with_wall.getNumForces())]
    assert "cgkd_wall" in names and names.count("cgkd_network") == 1


def test_des_lattice_composition_density_and_spacing():
    names, pos, box = des_lattice(250, seed=0)
    assert des_counts(250) == {"Cho": 62, "Cl": 62, "Urea": 126}
    assert sorted(set(names)) == ["Cho", "Cl", "Urea"] and names.count("Urea") == 126
    assert math.isclose(len(names) / np.linalg.det(box), RELINE_BEAD_DENSITY_PER_NM3, rel_tol=1e-12)
    assert math.isclose(des_box_nm(1000), 4.484, rel_tol=1e-12)
    assert np.all(pos >= 0) and np.all(pos <= box[0, 0])
    d = pos[:, None, :] - pos[None, :, :]
    d -= box[0, 0] * np.round(d / box[0, 0])
    r = np.sqrt((d ** 2).sum(-1)) + np.eye(len(pos)) * 10
    assert r.min() > 0.3  # lattice spacing 0.40 nm minus jitter


def test_box_too_small_and_bad_settings_are_clear_errors():
    from openmm_cgkd.benchmark import run_benchmark

    with pytest.raises(BenchmarkError, match="use at least 89 beads"):
        run_benchmark(BenchmarkSettings(n_beads=30, members=2, cutoff_nm=1.0, embedding_dim=8, num_layers=1,
                                        num_rbf=4, models=["student"]), progress=False, log=None)
    with pytest.raises(BenchmarkError, match="members"):
        BenchmarkSettings(members=1)
    with pytest.raises(BenchmarkError, match="CUDA graphs need the CUDA platform"):
        run_benchmark(BenchmarkSettings(platform="CPU", cuda_graphs="on"), progress=False, log=None)
