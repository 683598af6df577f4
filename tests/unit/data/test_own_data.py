"""Bringing one's own AA data (issue 22, points 4 and 6): the ForceReporter, the data's temperature
(recorded by `cgkd map`, carried into bundles, the default of MD), frame times of formats without
them, GROMACS water names, bead names checked at map time, frame windows, start structures."""
import json
import textwrap
import warnings

import numpy as np
import pytest

from openmm_cgkd.cli.main import main
from openmm_cgkd.data.dataset import CGDataset, DatasetError
from openmm_cgkd.data.external import InputError, read_mdp_temperature
from openmm_cgkd.data.mapping import CGMap, MappingError, MappingSpec

WATER_MAP = textwrap.dedent("""\
    type_names: [W]
    residues:
      SOL:
        - {type: W, atoms: [OW, HW1, HW2]}
    """)


@pytest.fixture(scope="module")
def water(tmp_path_factory):
    """A 1.6 nm box of TIP3P water (OpenMM's XML), 20 frames recorded every 5 steps of 2 fs at 310 K."""
    import openmm
    from openmm import app, unit

    from openmm_cgkd.data.reporter import ForceReporter

    tmp = tmp_path_factory.mktemp("water")
    ff = app.ForceField("tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(ff, boxSize=openmm.Vec3(1.6, 1.6, 1.6) * unit.nanometer)
    system = ff.createSystem(modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.7 * unit.nanometer,
                             constraints=app.HBonds)
    integ = openmm.LangevinMiddleIntegrator(310 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds)
    sim = app.Simulation(modeller.topology, system, integ, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(modeller.positions)
    sim.minimizeEnergy(maxIterations=50)
    with open(tmp / "system.pdb", "w") as fh:
        app.PDBFile.writeFile(sim.topology, sim.context.getState(getPositions=True).getPositions(), fh)
    (tmp / "water.yaml").write_text(WATER_MAP)
    rep = ForceReporter(tmp / "aa.h5", 5)
    sim.reporters.append(rep)
    sim.step(100)
    rep.close()
    return {"dir": tmp, "system": system, "sim": sim}


def test_the_reporter_writes_what_openmm_computes(water):
    """Forces and energy of a recorded frame equal a fresh OpenMM evaluation at its positions."""
    import h5py
    import openmm
    from openmm import unit

    with h5py.File(water["dir"] / "aa.h5", "r") as h5:
        pos, frc, pe = h5["positions"][7], h5["forces"][7], h5["potential_energy"][7]
        times, steps = h5["times"][()], h5["steps"][()]
        assert h5.attrs["temperature_K"] == pytest.approx(310.0) and bool(h5.attrs["periodic"])
        box = h5["boxes"][7]
    assert len(times) == 20 and np.array_equal(steps, np.arange(5, 101, 5))
    assert np.allclose(times, steps * 0.002)
    ctx = openmm.Context(water["system"], openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPeriodicBoxVectors(*(openmm.Vec3(*row) for row in box.astype(float)))
    ctx.setPositions(pos.astype(float) * unit.nanometer)
    st = ctx.getState(getForces=True, getEnergy=True)
    ref = st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    rms = np.sqrt(np.mean(ref**2))
    assert np.sqrt(np.mean((frc - ref) ** 2)) < 1e-3 * rms  # float32 positions and forces
    assert pe == pytest.approx(st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), rel=1e-4)


def test_the_reporter_refuses_to_overwrite(water):
    from openmm_cgkd.data.reporter import ForceReporter, ReporterError

    with pytest.raises(ReporterError, match="exists: pass append=True"):
        ForceReporter(water["dir"] / "aa.h5", 5)


def test_map_reads_the_reporter_file_and_records_its_temperature(water, capsys):
    d = water["dir"]
    assert main(["map", "--trajectory", str(d / "aa.h5"), "--topology", str(d / "system.pdb"), "--mapping",
                 str(d / "water.yaml"), "--out", str(d / "cg.h5")]) == 0
    ds = CGDataset.load(d / "cg.h5")
    assert ds.temperature_K == pytest.approx(310.0)
    assert np.allclose(ds.times, np.arange(5, 101, 5) * 0.002)
    # a bead is a whole water: its force is the sum of the molecule's atomic forces (checked independently)
    import h5py

    with h5py.File(d / "aa.h5", "r") as h5:
        f0 = h5["forces"][0].astype(np.float64)
        masses = h5["masses"][()]  # the System's masses, recorded by the reporter
    assert np.allclose(ds.forces[0], f0.reshape(-1, 3, 3).sum(axis=1), atol=1e-3)
    assert masses.shape == (f0.shape[0],) and np.allclose(ds.masses, masses.reshape(-1, 3).sum(axis=1))
    # --temperature contradicting the file's is an error; agreeing is fine
    assert main(["map", "--trajectory", str(d / "aa.h5"), "--topology", str(d / "system.pdb"), "--mapping",
                 str(d / "water.yaml"), "--out", str(d / "cg2.h5"), "--temperature", "300"]) == 2
    assert "contradicts the data's own 310 K" in capsys.readouterr().err


def test_water_under_gromacs_names_maps_an_openmm_topology():
    """A mapping written from a GROMACS .top (SOL, OW/HW1/HW2) maps OpenMM's HOH (O/H1/H2)."""
    spec = MappingSpec.from_dict({"type_names": ["W"], "residues": {"SOL": [{"type": "W", "atoms": ["OW", "HW1",
                                                                                                  "HW2"]}]}})
    cgmap = CGMap.build(spec, [("HOH", [(0, "O"), (1, "H1"), (2, "H2")]), ("HOH", [(3, "H1"), (4, "O"), (5, "H2")])],
                        np.array([16.0, 1.0, 1.0, 1.0, 16.0, 1.0]))
    assert cgmap.atom_bead.tolist() == [0, 0, 0, 1, 1, 1]
    other = MappingSpec.from_dict({"type_names": ["A"], "residues": {"UREA": [{"type": "A", "atoms": "all"}]}})
    with pytest.raises(MappingError, match="residue 'HOH' is not in the mapping spec"):
        CGMap.build(other, [("HOH", [(0, "O")])], np.array([16.0]))


@pytest.mark.parametrize("names, match", [
    (None, "bead types 'Bead1' and 'Bead2' would both be residue 'BEA'"),
    ({"Bead1": "B1", "Bead2": "B1"}, "would both be residue 'B1'"),
    ({"Bead1": "LONG", "Bead2": "B2"}, "do not fit a PDB file"),
    ({"Bead1": {"residue": "B1", "atom": "ATOMX"}, "Bead2": "B2"}, "do not fit a PDB file"),
    ({"Bead1": "SOL", "Bead2": "B2"}, "read back as HOH"),
    ({"Other": "B1"}, "names \\['Other'\\], not bead types"),
])
def test_bead_names_are_checked_when_the_mapping_is_read(names, match):
    d = {"type_names": ["Bead1", "Bead2"], "residues": {"X": [{"type": "Bead1", "atoms": [1]},
                                                            {"type": "Bead2", "atoms": [2]}]}}
    if names is not None:
        d["bead_names"] = names
    with pytest.raises(MappingError, match=match):
        MappingSpec.from_dict(d)


def test_bead_names_reach_the_dataset_and_the_bundle(tmp_path):
    from openmm_cgkd.training.common import dataset_bead_types

    spec = MappingSpec.from_dict({"type_names": ["Bead1", "Bead2"],
                                  "residues": {"X": [{"type": "Bead1", "atoms": [1]}, {"type": "Bead2", "atoms": [2]}]},
                                  "bead_names": {"Bead1": "B1", "Bead2": {"residue": "B2", "atom": "C"}}})
    assert spec.bead_names == {"Bead1": ("B1", "B1"), "Bead2": ("B2", "C")}
    ds = CGDataset(np.random.default_rng(0).random((2, 4, 3)) * 2, np.zeros((2, 4, 3)), np.tile(np.eye(3) * 2, (2, 1, 1)),
                   [0.0, 1.0], [0, 1, 0, 1], ["Bead1", "Bead2"], [10.0, 20.0, 10.0, 20.0], bead_names=spec.bead_names,
                   temperature_K=280.0)
    ds.save(tmp_path / "d.h5")
    back = CGDataset.load(tmp_path / "d.h5")
    assert back.bead_names == spec.bead_names and back.temperature_K == 280.0
    assert [(b.residue_name, b.atom_name) for b in dataset_bead_types(back)] == [("B1", "B1"), ("B2", "C")]


def test_old_datasets_have_an_unknown_temperature(tmp_path):
    import h5py

    ds = CGDataset(np.random.default_rng(0).random((2, 4, 3)) * 2, np.zeros((2, 4, 3)), np.tile(np.eye(3) * 2, (2, 1, 1)),
                   [0.0, 1.0], [0, 0, 0, 0], ["A"], [10.0] * 4)
    ds.save(tmp_path / "old.h5")
    with h5py.File(tmp_path / "old.h5", "r") as h5:
        assert "temperature_K" not in h5.attrs
    assert CGDataset.load(tmp_path / "old.h5").temperature_K is None


def test_mdp_ref_t(tmp_path):
    mdp = tmp_path / "md.mdp"
    mdp.write_text("integrator = sd\ntc-grps = Protein SOL ; two groups\nref-t = 310 310\n")
    assert read_mdp_temperature(mdp) == 310.0
    mdp.write_text("ref_t = 300 310\n")
    with pytest.raises(InputError, match="differs between coupling groups"):
        read_mdp_temperature(mdp)
    from openmm_cgkd.data.gromacs import write_mdp

    write_mdp(tmp_path / "ours.mdp", steps=10, output_interval=5, timestep_fs=1.0, temperature_k=305.0)
    assert read_mdp_temperature(tmp_path / "ours.mdp") == 305.0  # what GROMACS gets from our writer
    mdp.write_text("integrator = md\n")
    with pytest.raises(InputError, match="sets no ref_t"):
        read_mdp_temperature(mdp)


def test_dcd_frame_times_come_from_timestep_ps(water, capsys):
    """DCD stores no times: --timestep-ps is the time between frames (a 100 ps run saved every 0.5 ps
    used to come out as 0-199 ps) and is required."""
    import h5py
    import mdtraj as md

    d = water["dir"]
    with h5py.File(d / "aa.h5", "r") as h5:
        xyz, frc, box, masses = h5["positions"][()], h5["forces"][()], h5["boxes"][()], h5["masses"][()]
    top = md.load_topology(str(d / "system.pdb"))
    traj = md.Trajectory(xyz, top)
    traj.unitcell_vectors = box
    traj.save_dcd(str(d / "aa.dcd"))
    np.save(d / "f.npy", frc)
    np.save(d / "m.npy", masses)  # the System's masses, as the ForceReporter recorded them
    argv = ["map", "--trajectory", str(d / "aa.dcd"), "--topology", str(d / "system.pdb"), "--forces",
            str(d / "f.npy"), "--masses", str(d / "m.npy"), "--mapping", str(d / "water.yaml"), "--out", str(d / "dcd.h5"), "--temperature", "310"]
    assert main(argv) == 2
    assert "store no frame times: give --timestep-ps" in capsys.readouterr().err
    assert main(argv + ["--timestep-ps", "0.5"]) == 0
    ds = CGDataset.load(d / "dcd.h5")
    assert np.allclose(ds.times, np.arange(20) * 0.5) and ds.temperature_K == 310.0


def test_map_needs_a_mapping(tmp_path, capsys):
    assert main(["map", "--trajectory", "x.trr", "--topology", "x.gro", "--out", str(tmp_path / "o.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "give the mapping spec (--mapping" in err


def test_start_structure_writes_a_bead_pdb_of_a_frame(water, capsys):
    from openmm_cgkd.topology import read_bead_pdb

    d = water["dir"]
    assert main(["start-structure", "--dataset", str(d / "cg.h5"), "--frame", "-1", "--out", str(d / "s.pdb")]) == 0
    ds = CGDataset.load(d / "cg.h5")
    top, pos, box = read_bead_pdb(d / "s.pdb")
    assert top.getNumAtoms() == ds.n_beads and np.allclose(box, ds.boxes[-1], atol=1e-3)
    assert np.allclose(pos, ds.positions[-1], atol=1e-3)  # PDB: 3 decimals in Angstrom
    assert main(["start-structure", "--dataset", str(d / "cg.h5"), "--frame", "20", "--out", str(d / "t.pdb")]) == 2
    assert "the dataset has frames 0..19" in capsys.readouterr().err


def test_frame_windows(water):
    ds = CGDataset.load(water["dir"] / "cg.h5")
    w = ds.window(frames=(5, None))
    assert w.n_frames == 15 and w.source_window == (5, 20) and w.provenance["frame_window"] == [5, 20]
    t = ds.window(time_ps=(0.05, 0.1))  # times 0.01 .. 0.2 ps
    assert np.all((t.times >= 0.05) & (t.times < 0.1)) and t.n_frames == 5
    with pytest.raises(DatasetError, match="holds no frame"):
        ds.window(time_ps=(50.0, None))


def test_label_a_window_needs_out(water, capsys):
    d = water["dir"]
    assert main(["label", "--dataset", str(d / "cg.h5"), "--teachers", str(d), "--frames", "2:5"]) == 2
    assert "give --out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse's own error: usage + one line, exit 2
        main(["train-teachers", "x.yaml", "--frames", "5:2"])
    assert exc.value.code == 2 and "STOP must be above START" in capsys.readouterr().err


# ------------------------------------------------------------------ the temperature in bundles and MD
@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from openmm_cgkd.bundle import save_bundle, untrained_config
    from openmm_cgkd.bundle.demo import placeholder_wall as _placeholder_wall
    from openmm_cgkd.topology import BeadType
    from openmm_cgkd.model.potential import CGPotential

    tmp = tmp_path_factory.mktemp("bundles")
    cfg = untrained_config(cutoff_nm=0.6, embedding_dim=8, num_layers=1, num_rbf=4, max_num_neighbors=32, num_types=1)
    bts = [BeadType("W", "W", ["W"], 18.0)]
    out = {}
    for name, t in (("warm", 310.0), ("unknown", None)):
        out[name] = save_bundle(tmp / name, CGPotential(cfg), bead_types=bts, wall=_placeholder_wall(["W"]),
                                model_kind="teacher", temperature_K=t)
    return out


def _beads(n=8, box=1.5):
    from openmm_cgkd.topology import bead_topology

    return bead_topology(["W"] * n, np.eye(3) * box), np.random.default_rng(1).uniform(0, box, (n, 3))


def test_md_defaults_to_the_data_temperature(bundles):
    from openmm import unit

    from openmm_cgkd.bundle import load_bundle
    from openmm_cgkd.errors import CGKDWarning
    from openmm_cgkd.serving.forcefield import CGKDForceField, ServingError

    assert load_bundle(bundles["warm"]).manifest.temperature_K == 310.0
    top, pos = _beads()
    ff = CGKDForceField(bundles["warm"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", CGKDWarning)
        sim = ff.create_simulation(top, pos, platform="Reference")
    assert sim.integrator.getTemperature().value_in_unit(unit.kelvin) == pytest.approx(310.0)
    with pytest.warns(CGKDWarning, match="MD at 350 K, but the model was trained on data at 310 K"):
        sim = ff.create_simulation(top, pos, temperature=350, platform="Reference")
    assert sim.integrator.getTemperature().value_in_unit(unit.kelvin) == pytest.approx(350.0)
    with pytest.raises(ServingError, match="does not record its training data's temperature"):
        CGKDForceField(bundles["unknown"]).create_simulation(top, pos, platform="Reference")


def test_old_manifests_without_a_temperature_still_load(bundles):
    import yaml

    from openmm_cgkd.bundle.manifest import BundleManifest

    d = yaml.safe_load((bundles["warm"] / "manifest.yaml").read_text())
    del d["temperature_K"]
    assert BundleManifest.from_dict(d).temperature_K is None
    d["temperature_K"] = -3
    with pytest.raises(ValueError, match="not a temperature in K"):
        BundleManifest.from_dict(d)


def test_md_defaults_to_the_bundles_checked_timestep(bundles, tmp_path):
    """A bundle that records the MD step it was checked at (``timestep_fs``, written when a study
    ships it) runs at that step unless told otherwise; one that records none at 2 fs; a manifest
    without the key reads as before and one with a nonsense step is refused."""
    import yaml
    from openmm import unit

    from openmm_cgkd.bundle import save_bundle, untrained_config
    from openmm_cgkd.bundle.demo import placeholder_wall
    from openmm_cgkd.bundle.manifest import BundleManifest
    from openmm_cgkd.model.potential import CGPotential
    from openmm_cgkd.serving.forcefield import CGKDForceField
    from openmm_cgkd.topology import BeadType, write_bead_pdb

    cfg = untrained_config(cutoff_nm=0.6, embedding_dim=8, num_layers=1, num_rbf=4, max_num_neighbors=32, num_types=1)
    checked = save_bundle(tmp_path / "checked", CGPotential(cfg), bead_types=[BeadType("W", "W", ["W"], 18.0)],
                          wall=placeholder_wall(["W"]), model_kind="teacher", temperature_K=310.0, timestep_fs=0.5)
    top, pos = _beads()

    def step_fs(bundle, **kw):
        sim = CGKDForceField(bundle).create_simulation(top, pos, platform="Reference", **kw)
        return sim.integrator.getStepSize().value_in_unit(unit.femtosecond)

    assert step_fs(checked) == pytest.approx(0.5) and step_fs(bundles["warm"]) == pytest.approx(2.0)
    assert step_fs(checked, timestep_fs=1.5) == pytest.approx(1.5)
    assert step_fs(checked, timestep_fs=3 * unit.femtosecond) == pytest.approx(3.0)
    # the CLI: no --timestep runs at the bundle's step (recorded in run.json)
    write_bead_pdb(tmp_path / "s.pdb", top, pos, np.eye(3) * 1.5)
    assert main(["simulate", "--bundle", str(checked), "--structure", str(tmp_path / "s.pdb"), "--steps", "2",
                 "--report-interval", "1", "--platform", "Reference", "--no-progress", "--out",
                 str(tmp_path / "md")]) == 0
    assert json.loads((tmp_path / "md" / "run.json").read_text())["timestep_ps"] == pytest.approx(0.0005)
    d = yaml.safe_load((bundles["warm"] / "manifest.yaml").read_text())
    assert "timestep_fs" not in d and BundleManifest.from_dict(d).timestep_fs is None
    for bad in (-1, 0, "fast", 1000):
        with pytest.raises(ValueError, match="timestep_fs"):
            BundleManifest.from_dict({**d, "timestep_fs": bad})


def test_simulate_warns_in_one_line_at_another_temperature(bundles, tmp_path, capsys):
    from openmm_cgkd.cli.main import _one_line_warnings
    from openmm_cgkd.errors import CGKDWarning
    from openmm_cgkd.topology import write_bead_pdb

    top, pos = _beads()
    write_bead_pdb(tmp_path / "s.pdb", top, pos, np.eye(3) * 1.5)
    argv = ["simulate", "--bundle", str(bundles["warm"]), "--structure", str(tmp_path / "s.pdb"), "--steps", "2",
            "--report-interval", "1", "--platform", "Reference", "--no-progress"]
    with pytest.warns(CGKDWarning, match="MD at 330 K, but the model was trained on data at 310 K"):
        assert main(argv + ["--out", str(tmp_path / "a"), "--temperature", "330"]) == 0
    # how cgkd prints it (pytest records warnings instead of printing them): one line, then restored
    default = warnings.formatwarning
    with _one_line_warnings("simulate"):
        assert warnings.formatwarning("MD at 330 K", CGKDWarning, "x.py", 1) == "cgkd simulate: warning: MD at 330 K\n"
        assert warnings.formatwarning("other", UserWarning, "x.py", 1) == default("other", UserWarning, "x.py", 1)
    assert warnings.formatwarning is default
    argv[2] = str(bundles["unknown"])
    assert main(argv + ["--out", str(tmp_path / "b")]) == 2
    assert "give the temperature (--temperature K" in capsys.readouterr().err


def test_check_timestep_command(bundles, tmp_path, capsys):
    """`cgkd check-timestep`: one verdict line per step, at the data's temperature by default; its
    JSON agrees with the exit status."""
    from openmm_cgkd.topology import write_bead_pdb

    top, pos = _beads(n=27, box=1.5)
    pos = (np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) * 0.5
    write_bead_pdb(tmp_path / "s.pdb", top, pos, np.eye(3) * 1.5)
    argv = ["check-timestep", "--bundle", str(bundles["warm"]), "--structure", str(tmp_path / "s.pdb"), "--timestep",
            "2", "4", "--nvt-ps", "0.02", "--nve-ps", "0.12", "--platform", "CPU", "--threads", "1", "--json",
            str(tmp_path / "t.json")]
    rc = main(argv)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if " fs: " in ln]
    results = json.loads((tmp_path / "t.json").read_text())
    assert [ln.split(":")[0] for ln in lines] == ["2 fs", "4 fs"]
    assert all(r["target_temperature_K"] == 310.0 for r in results)
    assert rc == (0 if all(r["safe"] for r in results) else 3)
    argv[2] = str(bundles["unknown"])
    assert main(argv) == 2


def test_labels_warn_when_teachers_and_data_temperatures_differ(bundles, tmp_path):
    from openmm_cgkd.errors import CGKDWarning
    from openmm_cgkd.training.config import LabelsConfig, config_from_dict
    from openmm_cgkd.training.labels import make_labels

    grid = (np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) * 0.4
    pos = grid[None] + np.random.default_rng(0).normal(0, 0.02, (3, 64, 3))
    ds = CGDataset(pos, np.zeros_like(pos), np.tile(np.eye(3) * 1.6, (3, 1, 1)), [0.0, 1.0, 2.0], [0] * 64, ["W"],
                   [18.0] * 64, temperature_K=310.0)
    ds.save(tmp_path / "same.h5")
    ds.temperature_K = 280.0
    ds.save(tmp_path / "cold.h5")
    cfg = config_from_dict(LabelsConfig, {"dataset": str(tmp_path / "same.h5"), "teachers": str(bundles["warm"]),
                                          "device": "cpu"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", CGKDWarning)
        make_labels(cfg, progress=False)
    cfg.dataset = str(tmp_path / "cold.h5")
    with pytest.warns(CGKDWarning, match="trained on data at 310 K; this dataset is at 280 K"):
        make_labels(cfg, progress=False)
    assert CGDataset.load(tmp_path / "cold.h5").labels is not None
