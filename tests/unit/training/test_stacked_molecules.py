"""Molecules in the stacked hipnn-ts path: stacked teachers, the single student (``train_single``) and
stacked students train with the bonded priors (network + wall without the bonded pairs + priors),
periodic or without a box; their labels include the priors as the student is trained; the served
OpenMM forces (TorchForce and PythonForce, FastHipnn + Verlet list) equal the torch sum."""
import numpy as np
import pytest
import torch

from openmm_cgkd.cgtopology import CGTopology
from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.model.priors import BondedPriors
from openmm_cgkd.model.priors_torch import PriorPotential
from openmm_cgkd.model.wall_torch import WallPotential
from openmm_cgkd.training.config import SplitConfig, StudentConfig, TeachersConfig, TrainerConfig

NAMES = ["A", "B"]
MODEL = dict(architecture="hipnn-ts", cutoff_nm=0.6, embedding_dim=8, num_layers=1, num_rbf=6,
             activation="softplus")
TRAINER = dict(max_epochs=2, batch_size=6, lr=3e-3, progress_bar=False, num_threads=1, seed=3)
TRUE_PRIORS = BondedPriors(NAMES, bonds={(0, 1): (0.27, 4000.0), (1, 1): (0.3, 3000.0)},
                           angles={(0, 1, 1): (np.radians(130.0), 60.0)}, exclusions=2)


def bonded_dataset(periodic: bool, n_frames: int = 30, seed: int = 0) -> CGDataset:
    """Chains A-B-B-A fluctuating around a zig-zag conformation (6 in a 2.4 nm box, or 3 without a
    box); forces: those of known priors plus noise (kJ/mol/nm); 300 K."""
    rng = np.random.default_rng(seed)
    n_chains = 6 if periodic else 3
    types = np.tile([0, 1, 1, 0], n_chains)
    bonds = [(4 * c + i, 4 * c + i + 1) for c in range(n_chains) for i in range(3)]
    topo = CGTopology(len(types), bonds)
    base = []
    for c in range(n_chains):
        site = np.array([c % 3, c // 3, 0.5]) * 0.8 + 0.3
        base += [site + [0.0, 0.0, 0.0], site + [0.2, 0.18, 0.0], site + [0.4, 0.0, 0.05], site + [0.6, 0.18, 0.1]]
    base = np.asarray(base)
    pos = base[None] + rng.normal(0, 0.02, (n_frames, len(types), 3))
    pp = PriorPotential(TRUE_PRIORS, topo, types, dtype=torch.float64)
    forces = np.stack([pp(torch.as_tensor(types), torch.as_tensor(x), None)[2].numpy() for x in pos])
    forces += rng.normal(0, 20.0, forces.shape)
    boxes = np.tile(np.eye(3) * 2.4, (n_frames, 1, 1)) if periodic else np.zeros((n_frames, 3, 3))
    return CGDataset(pos, forces, boxes, np.arange(n_frames) * 0.1, types, NAMES,
                     [20.0 if t == 0 else 30.0 for t in types], topology=topo, temperature_K=300.0)


def torch_total(network, wall, priors, ds, frame):
    """Network (autograd) + wall without the excluded bonded pairs + priors, all evaluated apart
    (kJ/mol, kJ/mol/nm; float64)."""
    types = torch.as_tensor(ds.bead_types.astype(np.int64))
    x = torch.as_tensor(ds.positions[frame])
    box = torch.as_tensor(ds.boxes[frame]) if ds.periodic else None
    out = network.eval()(types, x, box)
    e, f = float(out[0]), out[2].detach().double().numpy()
    tw = WallPotential(wall, dtype=torch.float64)
    tw.set_exclusions(ds.topology.excluded_pairs(priors.exclusions), ds.n_beads)
    we, _, wf = tw(types, x.double(), None if box is None else box.double())
    pe, _, pf = PriorPotential(priors, ds.topology, ds.bead_types, dtype=torch.float64)(
        types, x.double(), None if box is None else box.double())
    return e + float(we) + float(pe), f + wf.numpy() + pf.numpy()


def served(bundle, ds, frame, backend):
    from openmm import unit

    from openmm_cgkd.serving.forcefield import CGKDForceField
    from openmm_cgkd.topology import dataset_topology

    ff = CGKDForceField(bundle)
    sim = ff.create_simulation(dataset_topology(ds, frame), ds.positions[frame].astype(np.float64),
                               platform="Reference", seed=1, backend=backend)
    names = {type(f).__name__ for f in sim.system.getForces()}
    assert {"HarmonicBondForce", "HarmonicAngleForce", "CustomNonbondedForce"} <= names
    st = sim.context.getState(getEnergy=True, getForces=True)
    return (st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def assert_forces_close(got, want):
    scale = float(np.abs(want).max())
    assert scale > 10.0  # the priors act: a comparison that could fail
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * scale)


@pytest.mark.parametrize("periodic", [True, False])
def test_stacked_teachers_and_students_of_molecules_train_label_and_serve(periodic, tmp_path):
    from openmm_cgkd.bundle import load_bundle
    from openmm_cgkd.training.labels import predict_labels
    from openmm_cgkd.training.students import train_student, train_students_stacked
    from openmm_cgkd.training.teachers import train_teachers

    ds = bonded_dataset(periodic)
    data = ds.save(tmp_path / "d.h5")
    split = SplitConfig(train=0.6, val=0.2, test=0.2)
    cfg = TeachersConfig(dataset=str(data), out=str(tmp_path / "t"), model=MODEL, members=2, split=split,
                         trainer=TrainerConfig(**TRAINER))
    res = train_teachers(cfg)
    teachers = load_bundle(res.ensemble_bundle)
    pr = teachers.priors
    assert pr is not None and set(pr.to_dict()["bonds"]) == {"A-B", "B-B"} and pr.exclusions == 2
    assert pr.bonds[(0, 1)][0] == pytest.approx(0.27, abs=0.02)  # Boltzmann inversion of the A-B bonds
    assert teachers.manifest.periodic is periodic and teachers.manifest.num_members == 2
    assert teachers.manifest.training["stacked"] is True
    for path in res.member_bundles:  # the member bundles carry the same priors
        member = load_bundle(path)
        assert member.priors.to_dict() == pr.to_dict() and member.manifest.periodic is periodic

    # the stacked trainer's members (network + wall + priors) equal the terms evaluated apart
    frame = int(res.blocks["test"][0])
    for m, tp in enumerate(res.members):
        assert tp.prior is not None
        assert tp.wall is None or tp.wall.exclusion_n == ds.n_beads
        e, f = torch_total(tp.network, teachers.manifest.wall, pr, ds, frame)
        out = tp(torch.as_tensor(ds.bead_types.astype(np.int64)), torch.as_tensor(ds.positions[frame:frame + 1]),
                 torch.as_tensor(ds.boxes[frame:frame + 1]))
        assert float(out["energy"][0]) == pytest.approx(e, rel=1e-4, abs=1e-3)
        np.testing.assert_allclose(out["forces"][0].detach().double().numpy(), f, rtol=1e-4, atol=1e-3)

    # labels: ensemble mean of the networks + wall + priors, what the students are trained against
    labels = predict_labels(teachers, ds, device="cpu")
    eager = teachers.eager_model()
    types = torch.as_tensor(ds.bead_types.astype(np.int64))
    box = torch.as_tensor(ds.boxes[frame]) if periodic else None
    e_net, _, f_net = eager.forward_mean(types, torch.as_tensor(ds.positions[frame]), box)
    tw = WallPotential(teachers.manifest.wall, dtype=torch.float64)
    tw.set_exclusions(ds.topology.excluded_pairs(2), ds.n_beads)
    x64 = torch.as_tensor(ds.positions[frame]).double()
    _, _, f_w = tw(types, x64, None if box is None else box.double())
    _, _, f_p = PriorPotential(pr, ds.topology, ds.bead_types, dtype=torch.float64)(
        types, x64, None if box is None else box.double())
    want = f_net.double().numpy() + f_w.numpy() + f_p.numpy()
    assert_forces_close(labels.forces[frame], want)
    # every frame, batched (3 batches) against frame by frame through the bundle's module
    import openmm_cgkd.training.labels as labels_mod

    batched = predict_labels(teachers, ds, device="cpu", batch_size=12)
    real = labels_mod._stacked_network
    labels_mod._stacked_network = lambda bundle: None
    try:
        slow = predict_labels(teachers, ds, device="cpu")
    finally:
        labels_mod._stacked_network = real
    assert np.abs(batched.forces - slow.forces).max() <= 1e-5 * np.abs(slow.forces).max()
    np.testing.assert_allclose(batched.energy, slow.energy, rtol=1e-5, atol=1e-4)
    assert np.abs(batched.force_std - slow.force_std).max() <= 1e-5 * np.abs(slow.forces).max()
    ds.labels = labels
    ds.save(tmp_path / "labelled.h5")

    # the single student (train_single) and two stacked students, with the teachers' priors
    student_cfg = dict(dataset=str(tmp_path / "labelled.h5"), split=split, trainer=TrainerConfig(**TRAINER))
    one = train_student(StudentConfig(out=str(tmp_path / "s"), variant="ensemble-e-ft-faa", **student_cfg))
    assert one.model.prior is not None
    two = train_students_stacked([StudentConfig(out=str(tmp_path / f"s{k}"), variant=v, **student_cfg)
                                  for k, v in enumerate(("ensemble-e-ft-faa", "ensemble-ft-faa"))],
                                 tmp_path / "students_run")
    for r in [one, *two]:
        b = load_bundle(r.bundle)
        assert b.priors.to_dict() == pr.to_dict() and b.manifest.periodic is periodic
    # the single student equals member 0 of the stacked students (same seed, same targets)
    for name, v in one.model.network.state_dict().items():
        torch.testing.assert_close(two[0].model.network.state_dict()[name], v, rtol=1e-5, atol=1e-6)

    # served in OpenMM (FastHipnn + Verlet list; TorchForce and PythonForce): the torch sum
    e_t, f_t = torch_total(one.model.network, one.model.wall_parameters, pr, ds, frame)
    for backend in ("torchforce", "python"):
        e_o, f_o = served(one.bundle, ds, frame, backend)
        assert e_o == pytest.approx(e_t, rel=1e-4, abs=1e-3)
        assert_forces_close(f_o, f_t)
    e_o, f_o = served(res.ensemble_bundle, ds, frame, "torchforce")
    assert_forces_close(f_o, want)


def test_fast_served_forces_without_a_box_are_the_energy_gradient():
    """FastHipnn (hand-written forces, Verlet list) on a non-periodic bonded configuration: forces equal
    minus the central finite differences of its energy and the autograd forces (float64)."""
    from openmm_cgkd.model.fast_hipnn import FastHipnn
    from openmm_cgkd.model.potential import PotentialConfig
    from openmm_cgkd.model.stacked import StackedEnsemblePotential

    ds = bonded_dataset(periodic=False, n_frames=2)
    cfg = PotentialConfig(**{**MODEL, "num_types": 2, "max_num_neighbors": 16, "dtype": "float64"})
    torch.manual_seed(0)
    model = StackedEnsemblePotential(cfg, 3)
    fast = FastHipnn.from_model(model)
    z = torch.as_tensor(ds.bead_types.astype(np.int64))
    x = torch.as_tensor(ds.positions[0]).double()
    e, _, f = fast(z, x, None)
    e_a, _, f_a = model.forward_mean(z, x, None)
    assert float(e) == pytest.approx(float(e_a), rel=1e-10)
    torch.testing.assert_close(f, f_a, rtol=1e-9, atol=1e-9)
    h = 1e-5
    fd = torch.zeros_like(x)
    for i in range(x.shape[0]):
        for d in range(3):
            xp, xm = x.clone(), x.clone()
            xp[i, d] += h
            xm[i, d] -= h
            fd[i, d] = -(float(fast(z, xp, None)[0]) - float(fast(z, xm, None)[0])) / (2 * h)
    assert float(f.abs().max()) > 1e-2
    torch.testing.assert_close(f, fd, rtol=1e-5, atol=1e-6)
    # beads moved far (no box to wrap into): the list is rebuilt and still exact
    x2 = x + torch.as_tensor(np.random.default_rng(1).normal(0, 0.2, x.shape))
    torch.testing.assert_close(fast(z, x2, None)[2], model.forward_mean(z, x2, None)[2], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("periodic", [True, False])
def test_stacked_training_model_is_each_member_plus_wall_without_bonded_pairs_plus_priors(periodic):
    """What stacked training fits (StackedTrainable on a batch: training_forward + wall + priors) equals,
    member by member, the autograd TrainablePotential of that member with the same wall and priors."""
    from openmm_cgkd.model.potential import PotentialConfig
    from openmm_cgkd.model.wall import WallParameters
    from openmm_cgkd.training.model import TrainablePotential
    from openmm_cgkd.training.stacked import StackedTrainable

    ds = bonded_dataset(periodic, n_frames=3)
    cfg = PotentialConfig(**{**MODEL, "num_types": 2, "max_num_neighbors": 24, "dtype": "float64"})
    wall = WallParameters.from_taper(NAMES, np.full((2, 2), 0.3), np.full((2, 2), 300.0), cutoff_nm=0.45)
    torch.manual_seed(0)
    st = StackedTrainable(cfg, 2, [1, 2], wall, 5.0, TRUE_PRIORS, ds.topology, ds.bead_types).double()
    assert st.prior is not None and st.wall.exclusion_n == ds.n_beads
    types = torch.as_tensor(ds.bead_types.astype(np.int64))
    out = st(types, torch.as_tensor(ds.positions), torch.as_tensor(ds.boxes))
    assert out["forces"].shape == (2, 3, ds.n_beads, 3)
    for m in range(2):
        tp = TrainablePotential(cfg, wall, 5.0, TRUE_PRIORS, ds.topology, ds.bead_types).double()
        tp.network.load_state_dict(st.network.member(m).state_dict())
        ref = tp(types, torch.as_tensor(ds.positions), torch.as_tensor(ds.boxes))
        torch.testing.assert_close(out["energy"][m].detach(), ref["energy"].detach(), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(out["forces"][m].detach(), ref["forces"], rtol=1e-9, atol=1e-9)
    # the fixed terms are there: without them the outputs differ by the prior + wall forces
    bare = StackedTrainable(cfg, 2, [1, 2], None, 5.0).double()
    bare.network.load_state_dict(st.network.state_dict())
    diff = out["forces"] - bare(types, torch.as_tensor(ds.positions), torch.as_tensor(ds.boxes))["forces"]
    assert float(diff.abs().max()) > 10.0
