"""Bonded priors and wall exclusions: torch vs OpenMM's standard forces (energies and forces), torch
vs finite differences, the same in a periodic box and without one; priors in bundles; serving."""
import numpy as np
import pytest
import torch
import yaml

from openmm_cgkd.bundle import BundleError, BeadType, load_bundle, save_bundle, untrained_config
from openmm_cgkd.cgtopology import CGTopology
from openmm_cgkd.model.potential import CGPotential
from openmm_cgkd.model.priors import BondedPriors, PriorError
from openmm_cgkd.model.priors_torch import PriorPotential
from openmm_cgkd.model.wall import WallParameters
from openmm_cgkd.model.wall_torch import WallPotential
from openmm_cgkd.serving.prior_forces import make_prior_forces
from openmm_cgkd.serving.wall_force import make_wall_force

NAMES = ["A", "B"]


def priors(exclusions=2):
    return BondedPriors(NAMES, bonds={(0, 1): (0.25, 3000.0), (1, 1): (0.3, 2000.0)},
                        angles={(0, 1, 1): (np.radians(140.0), 40.0), (1, 1, 0): (np.radians(140.0), 40.0),
                                (1, 1, 1): (np.radians(120.0), 25.0)},
                        dihedrals={(0, 1, 1, 0): [(1, 2.0, 0.4), (3, 1.0, -1.2)], (0, 1, 1, 1): [(2, 0.7, 1.0)]},
                        exclusions=exclusions, temperature_k=300.0)


def chains(n_chains=3, seed=0, box=2.0):
    """n_chains molecules A-B-B-A (bonded in a row), random conformations; types, topology, positions."""
    rng = np.random.default_rng(seed)
    types, bonds, pos = [], [], []
    for c in range(n_chains):
        start = rng.uniform(0, box, 3)
        x = [start]
        for _ in range(3):
            d = rng.normal(size=3)
            x.append(x[-1] + 0.27 * d / np.linalg.norm(d))
        pos += x
        types += [0, 1, 1, 0]
        bonds += [(4 * c, 4 * c + 1), (4 * c + 1, 4 * c + 2), (4 * c + 2, 4 * c + 3)]
    return np.array(types), CGTopology(len(types), bonds), np.array(pos)


def openmm_energy_forces(forces, n, pos, box=None):
    import openmm
    from openmm import unit

    system = openmm.System()
    for _ in range(n):
        system.addParticle(10.0)
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*r) for r in box))
    for f in forces:
        system.addForce(f)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(pos * unit.nanometer)
    st = ctx.getState(getEnergy=True, getForces=True)
    return (st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


@pytest.mark.parametrize("periodic", [False, True])
def test_priors_torch_vs_openmm_vs_numpy_vs_finite_differences(periodic):
    types, topo, pos = chains()
    box = np.eye(3) * 2.0 if periodic else None
    if periodic:
        pos = pos % 2.0  # bonds now cross the box edge: minimum image everywhere
    pr = priors()
    assert len(topo.angles) == 6 and len(topo.dihedrals) == 3
    mod = PriorPotential(pr, topo, types, dtype=torch.float64)
    tbox = None if box is None else torch.as_tensor(box)
    e_t, bead_t, f_t = mod(torch.as_tensor(types), torch.as_tensor(pos), tbox)
    e_o, f_o = openmm_energy_forces(make_prior_forces(pr, topo, types, periodic), len(types), pos, box)
    e_np = pr.energy(pos, topo, types, box)
    assert float(e_t) == pytest.approx(e_o, rel=1e-6, abs=1e-6)
    assert float(e_t) == pytest.approx(e_np, rel=1e-9)
    assert float(bead_t.sum()) == pytest.approx(float(e_t), rel=1e-12)
    assert abs(e_o) > 10.0  # the conformations are far from the minima: every term counts
    np.testing.assert_allclose(f_t.numpy(), f_o, rtol=1e-5, atol=1e-4)
    # central finite differences of the torch energy
    h = 1e-6
    fd = np.zeros_like(pos)
    for i in range(len(pos)):
        for d in range(3):
            p, m = pos.copy(), pos.copy()
            p[i, d] += h
            m[i, d] -= h
            fd[i, d] = -(pr.energy(p, topo, types, box) - pr.energy(m, topo, types, box)) / (2 * h)
    np.testing.assert_allclose(f_t.numpy(), fd, rtol=1e-5, atol=1e-4)
    assert np.abs(f_t.numpy()).max() > 10.0


def test_missing_prior_is_named():
    types, topo, pos = chains(1)
    with pytest.raises(PriorError, match="no bond prior for bead types A-B"):
        BondedPriors(NAMES, bonds={(1, 1): (0.3, 1.0)}).bond_parameters(topo.bonds, types)
    pr = priors()
    assert BondedPriors.from_dict(yaml.safe_load(yaml.safe_dump(pr.to_dict()))).to_dict() == pr.to_dict()
    with pytest.raises(PriorError, match="joined by"):
        BondedPriors.from_dict({**pr.to_dict(), "bonds": {"A-C": {"r0_nm": 0.2, "k_kj_mol_nm2": 1.0}}})


@pytest.mark.parametrize("periodic", [False, True])
def test_wall_leaves_bonded_pairs_out_in_torch_and_openmm(periodic):
    types, topo, pos = chains(4, seed=5, box=1.6)
    box = np.eye(3) * 1.6 if periodic else None
    if periodic:
        pos = pos % 1.6
    wall = WallParameters.from_taper(NAMES, np.full((2, 2), 0.33), np.full((2, 2), 300.0), cutoff_nm=0.5)
    excl = topo.excluded_pairs(2)
    tw = WallPotential(wall, max_num_neighbors=32, dtype=torch.float64)
    tbox = None if box is None else torch.as_tensor(box)
    e_all = float(tw(torch.as_tensor(types), torch.as_tensor(pos), tbox)[0])
    tw.set_exclusions(excl, len(types))
    e_t, _, f_t = tw(torch.as_tensor(types), torch.as_tensor(pos), tbox)
    e_o, f_o = openmm_energy_forces([make_wall_force(wall, types, periodic, exclusions=excl)], len(types), pos, box)
    assert float(e_t) == pytest.approx(e_o, rel=1e-6, abs=1e-8)
    np.testing.assert_allclose(f_t.numpy(), f_o, rtol=1e-5, atol=1e-6)
    # the bonded pairs at 0.27 nm sit deep in the wall: excluding them removes almost all of its energy
    assert e_all > 100 * max(float(e_t), 1e-3)


def test_bundle_carries_priors_and_old_bundles_have_none(tmp_path):
    cfg = untrained_config(cutoff_nm=0.6, embedding_dim=8, num_layers=1, num_rbf=4, max_num_neighbors=32)
    cfg = type(cfg).from_dict({**cfg.to_dict(), "num_types": 2})
    model = CGPotential(cfg)
    bts = [BeadType("A", "A", ["A"], 20.0), BeadType("B", "B", ["B"], 30.0)]
    wall = WallParameters.from_taper(NAMES, np.full((2, 2), 0.33), np.full((2, 2), 300.0))
    with_priors = save_bundle(tmp_path / "mol", model, bead_types=bts, wall=wall, model_kind="student",
                              periodic=False, priors=priors())
    old = save_bundle(tmp_path / "old", model, bead_types=bts, wall=wall, model_kind="student")
    b = load_bundle(with_priors)
    assert b.priors.to_dict() == priors().to_dict() and "priors.yaml" in b.manifest.checksums
    assert load_bundle(old).priors is None
    (with_priors / "priors.yaml").write_text((with_priors / "priors.yaml").read_text().replace("3000.0", "3001.0"))
    with pytest.raises(BundleError, match="corrupt file 'priors.yaml'"):
        load_bundle(with_priors)


def test_served_model_of_molecules_matches_torch(tmp_path):
    """CGKDForceField: network + wall (bonded pairs excluded) + priors in OpenMM equal the torch sum."""
    from openmm import unit

    from openmm_cgkd.serving.forcefield import CGKDForceField, ServingError
    from openmm_cgkd.topology import bead_topology

    cfg = untrained_config(cutoff_nm=0.6, embedding_dim=8, num_layers=1, num_rbf=4, max_num_neighbors=32)
    cfg = type(cfg).from_dict({**cfg.to_dict(), "num_types": 2})
    torch.manual_seed(0)
    model = CGPotential(cfg)
    bts = [BeadType("A", "A", ["A"], 20.0), BeadType("B", "B", ["B"], 30.0)]
    wall = WallParameters.from_taper(NAMES, np.full((2, 2), 0.33), np.full((2, 2), 300.0), cutoff_nm=0.45)
    path = save_bundle(tmp_path / "mol", model, bead_types=bts, wall=wall, model_kind="student", periodic=False,
                       priors=priors())
    types, topo, pos = chains(3, seed=2)
    top = bead_topology([NAMES[t] for t in types], bonds=topo.bonds)
    ff = CGKDForceField(path)
    sim = ff.create_simulation(top, pos, temperature=300.0, platform="Reference", seed=1)
    st = sim.context.getState(getEnergy=True, getForces=True)
    e_o = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    f_o = st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    tt, tp = torch.as_tensor(types), torch.as_tensor(pos, dtype=torch.float32)
    e_n, _, f_n = model.eval()(tt, tp, None)
    tw = WallPotential(wall, dtype=torch.float64)
    tw.set_exclusions(topo.excluded_pairs(2), len(types))
    e_w, _, f_w = tw(tt, tp.double(), None)
    e_p, _, f_p = PriorPotential(priors(), topo, types, dtype=torch.float64)(tt, tp.double(), None)
    assert e_o == pytest.approx(float(e_n) + float(e_w) + float(e_p), rel=1e-4, abs=1e-3)
    np.testing.assert_allclose(f_o, f_n.detach().double().numpy() + f_w.numpy() + f_p.numpy(), rtol=1e-3, atol=1e-2)
    # the model needs the bonds; a model of one-bead molecules refuses them
    with pytest.raises(ServingError, match="no bonds"):
        ff.create_system(bead_topology([NAMES[t] for t in types]))
    plain = save_bundle(tmp_path / "plain", model, bead_types=bts, wall=wall, model_kind="student", periodic=False)
    with pytest.raises(ServingError, match="one-bead molecules"):
        CGKDForceField(plain).create_system(top)


@pytest.mark.parametrize("periodic", [False, True])
def test_training_model_batches_equal_the_single_frame_terms(periodic):
    """TrainablePotential on a batch of frames (joined pair lists, exclusions by index modulo N) equals
    network + wall with exclusions + priors evaluated frame by frame."""
    from openmm_cgkd.training.model import TrainablePotential

    cfg = untrained_config(cutoff_nm=0.6, embedding_dim=8, num_layers=1, num_rbf=4, max_num_neighbors=32)
    cfg = type(cfg).from_dict({**cfg.to_dict(), "num_types": 2, "dtype": "float64"})
    wall = WallParameters.from_taper(NAMES, np.full((2, 2), 0.33), np.full((2, 2), 300.0), cutoff_nm=0.45)
    frames = [chains(4, seed=s, box=1.6) for s in (1, 2, 3)]
    types, topo = frames[0][0], frames[0][1]
    pos = np.stack([f[2] % 1.6 if periodic else f[2] for f in frames])
    boxes = np.tile(np.eye(3) * 1.6, (3, 1, 1)) if periodic else np.zeros((3, 3, 3))
    torch.manual_seed(0)
    tp = TrainablePotential(cfg, wall, 1.0, priors(), topo, types).double()
    out = tp(torch.as_tensor(types), torch.as_tensor(pos), torch.as_tensor(boxes))
    tw = WallPotential(wall, dtype=torch.float64)
    tw.set_exclusions(topo.excluded_pairs(2), len(types))
    pp = PriorPotential(priors(), topo, types, dtype=torch.float64)
    net = tp.network.eval()
    for k in range(3):
        box = torch.as_tensor(boxes[k]) if periodic else None
        tt, x = torch.as_tensor(types), torch.as_tensor(pos[k])
        e = sum(float(m(tt, x, box)[0]) for m in (net, tw, pp))
        f = sum(m(tt, x, box)[2].detach().numpy() for m in (net, tw, pp))
        assert float(out["energy"][k]) == pytest.approx(e, rel=1e-9, abs=1e-9)
        np.testing.assert_allclose(out["forces"][k].detach().numpy(), f, rtol=1e-8, atol=1e-8)
    assert tp.wall.exclusion_n == len(types) and tp.prior is not None
