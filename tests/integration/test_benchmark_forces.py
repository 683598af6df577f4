"""The benchmark's model variants compute the same physics: the naive ensemble (K TorchForces,
each scaled by 1/K) and the one-module ensemble give the same OpenMM forces, and both equal the
mean of the members' forces computed directly in torch (no OpenMM); the teacher is member 0."""
import math

import numpy as np
import pytest
import torch

openmm = pytest.importorskip("openmm")
from openmm import unit  # noqa: E402

from openmm_cgkd.benchmark.md import (BenchmarkError, BenchmarkSettings, ScaledPotential,  # noqa: E402
                                   build_variant_system, ensemble_member_modules)
from openmm_cgkd.bundle import build_untrained_bundle, untrained_config  # noqa: E402
from openmm_cgkd.serving.forcefield import CGKDForceField  # noqa: E402
from openmm_cgkd.systems import get_system  # noqa: E402
from openmm_cgkd.topology import (bead_topology, composition_counts, cube_edge_nm,  # noqa: E402
                                  lattice_configuration)

K = 3
N = 30
CUTOFF = 0.6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = untrained_config("graph-network", cutoff_nm=CUTOFF)
    path = build_untrained_bundle(tmp_path_factory.mktemp("b") / "ens", cfg, model_kind="ensemble",
                                  num_members=K, seed=3)
    ff = CGKDForceField(path)
    names, _, box = get_system("des").lattice(N, seed=1)
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


def _min_image_distance(pos, edge):
    d = pos[:, None, :] - pos[None, :, :]
    d -= edge * np.round(d / edge)
    return (np.sqrt((d ** 2).sum(-1)) + np.eye(len(pos)) * 10).min()


def test_des_lattice_from_the_registry_composition_density_and_spacing():
    des = get_system("des")  # systems/des/cg_system.yaml: Cho:Cl:Urea 1:1:2, 1000 beads in a 4.484 nm cube
    names, pos, box = des.lattice(250, seed=0)
    assert des.counts(250) == {"Cho": 62, "Cl": 62, "Urea": 126}
    assert sorted(set(names)) == ["Cho", "Cl", "Urea"] and names.count("Urea") == 126
    assert math.isclose(len(names) / np.linalg.det(box), 1000 / 4.484 ** 3, rel_tol=1e-12)
    assert math.isclose(des.box_edge_nm(1000), 4.484, rel_tol=1e-12)
    assert np.all(pos >= 0) and np.all(pos <= box[0, 0])
    assert _min_image_distance(pos, box[0, 0]) > 0.3  # lattice spacing 0.40 nm minus jitter
    again = des.lattice(250, seed=0)
    assert again[0] == names and np.array_equal(again[1], pos)  # a seed gives one configuration
    assert des.lattice(250, seed=1)[0] != names


def test_generic_lattice_knows_no_system():
    # ratios split exactly (the last type takes the remainder), whatever the names
    assert composition_counts({"A": 1, "B": 3}, 10) == {"A": 2, "B": 8}
    assert composition_counts({"X": 0.5, "Y": 0.25, "Z": 0.25}, 7) == {"X": 3, "Y": 1, "Z": 3}
    assert composition_counts({"W": 2}, 5) == {"W": 5}
    with pytest.raises(ValueError, match="weights"):
        composition_counts({"A": -1, "B": 2}, 4)
    edge = cube_edge_nm(64, 8.0)  # 64 beads at 8 per nm^3: a 2 nm cube
    assert math.isclose(edge, 2.0, rel_tol=1e-12)
    names, pos, box = lattice_configuration({"P": 27, "Q": 37}, edge, seed=4)
    assert len(names) == 64 and names.count("P") == 27 and set(names) == {"P", "Q"}
    np.testing.assert_array_equal(box, np.eye(3) * 2.0)
    # a 4^3 lattice filled completely: spacing 0.5 nm, jitter at most 0.04 nm per axis
    sites = (pos / 0.5 - 0.5).round()
    assert len({tuple(s) for s in sites.astype(int)}) == 64 and np.abs(pos - (sites + 0.5) * 0.5).max() <= 0.04
    assert _min_image_distance(pos, 2.0) > 0.5 - 2 * 0.04 * math.sqrt(3)
    with pytest.raises(ValueError, match="box_edge_nm"):
        lattice_configuration({"P": 2}, 0.0)


def test_box_too_small_and_bad_settings_are_clear_errors():
    from openmm_cgkd.benchmark.md import run_benchmark

    with pytest.raises(BenchmarkError, match="use at least 89 beads"):
        run_benchmark(BenchmarkSettings(n_beads=30, members=2, cutoff_nm=1.0, embedding_dim=8, num_layers=1,
                                        num_rbf=4, models=["student"]), progress=False, log=None)
    with pytest.raises(BenchmarkError, match="members"):
        BenchmarkSettings(members=1)
    with pytest.raises(BenchmarkError, match="CUDA graphs need the CUDA platform"):
        run_benchmark(BenchmarkSettings(platform="CPU", cuda_graphs="on"), progress=False, log=None)
