"""A user's own system of molecules through the documented commands (issue 22): a liquid of a flexible
3-bead molecule in a periodic box (`cgkd map`, `train-teachers`, `label`, `train-student`,
`simulate`, `analyze`), and one molecule in vacuum (no box) mapped, trained, served and run."""
import json

import numpy as np
import pytest
import yaml

from molecule_system import TEMPERATURE_K, write_inputs
from openmm_cgkd.bundle import load_bundle
from openmm_cgkd.cli.main import main
from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.model.priors import bond_geometry
from openmm_cgkd.topology import dataset_topology, write_bead_pdb

MODEL = ("model: {architecture: graph-network, cutoff_nm: 0.8, embedding_dim: 8, num_layers: 1, num_rbf: 8, "
         "rbf_type: gauss}\n")
TRAINER = "trainer: {max_epochs: 1, batch_size: 8, lr: 0.003, num_threads: 2, progress_bar: false}\n"


def _map(inp, out, capsys, frame_ps: float = 0.1):  # frame_ps: the stride (steps) x 2 fs
    rc = main(["map", "--trajectory", str(inp["dcd"]), "--topology", str(inp["pdb"]), "--forces", str(inp["forces"]),
               "--masses", str(inp["masses"]), "--mapping", str(inp["mapping"]), "--out", str(out),
               "--timestep-ps", str(frame_ps), "--temperature", str(TEMPERATURE_K), "--no-unit-check"])
    assert rc == 0, capsys.readouterr().err
    return CGDataset.load(out)


@pytest.mark.slow  # about 3 minutes on a busy 2-core CPU
def test_liquid_of_three_bead_molecules_through_the_cli(tmp_path, capsys):
    inp = write_inputs(tmp_path / "aa", n_molecules=27, box_nm=3.0, frames=40, stride=25)
    ds = _map(inp, tmp_path / "cg.h5", capsys)
    assert ds.periodic and ds.n_beads == 81
    assert ds.topology.n_bonds == 54 and ds.topology.n_molecules == 27 and len(ds.topology.angles) == 27
    assert np.allclose(ds.masses[:3], [15.035 + 14.027, 2 * 14.027, 15.035 + 14.027])  # from --masses, not elements

    (tmp_path / "teachers.yaml").write_text("dataset: cg.h5\nout: teachers\nmembers: 2\n"
                                            f"priors: {{temperature_K: {TEMPERATURE_K}}}\n" + MODEL + TRAINER)
    (tmp_path / "student.yaml").write_text("dataset: labelled.h5\nout: student\nvariant: ensemble-e-ft-faa\n"
                                           + TRAINER)
    assert main(["train-teachers", str(tmp_path / "teachers.yaml")]) == 0
    setup = json.loads((tmp_path / "teachers" / "setup.json").read_text())
    # the wall is fitted from intermolecular pairs: its taper lies at contact (~0.35 nm), not at the 0.25 nm bond
    assert min(min(row) for row in setup["wall_fit"]["taper_nm"]) > 0.3
    teachers = load_bundle(tmp_path / "teachers" / "ensemble")
    pr = teachers.priors
    assert set(pr.to_dict()["bonds"]) == {"E-M"} and set(pr.to_dict()["angles"]) == {"E-M-E"}
    bonds = np.concatenate([bond_geometry(x.astype(float), ds.topology.bonds, b.astype(float))
                            for x, b in zip(ds.positions, ds.boxes)])
    assert pr.bonds[(0, 1)][0] == pytest.approx(bonds.mean(), abs=0.01)
    assert pr.exclusions == 2 and pr.temperature_k == TEMPERATURE_K

    assert main(["label", "--dataset", str(tmp_path / "cg.h5"), "--teachers", str(tmp_path / "teachers" / "ensemble"),
                 "--out", str(tmp_path / "labelled.h5")]) == 0
    assert CGDataset.load(tmp_path / "labelled.h5").labels.provenance["priors"] == pr.to_dict()
    assert main(["train-student", str(tmp_path / "student.yaml")]) == 0
    student = load_bundle(tmp_path / "student" / "bundle")
    assert student.priors.to_dict() == pr.to_dict() and student.manifest.periodic

    write_bead_pdb(tmp_path / "start.pdb", dataset_topology(ds, -1), ds.positions[-1])
    assert "CONECT" in (tmp_path / "start.pdb").read_text()
    capsys.readouterr()
    assert main(["simulate", "--bundle", str(tmp_path / "student" / "bundle"), "--structure",
                 str(tmp_path / "start.pdb"), "--steps", "100", "--temperature", str(TEMPERATURE_K),
                 "--report-interval", "10", "--out", str(tmp_path / "md"), "--platform", "CPU",
                 "--no-progress"]) == 0
    assert "CONECT" in (tmp_path / "md" / "final.pdb").read_text()
    assert main(["analyze", "-t", str(tmp_path / "md" / "trajectory.dcd"), "-p", str(tmp_path / "md" / "final.pdb"),
                 "-r", str(tmp_path / "cg.h5"), "-o", str(tmp_path / "an"), "--no-plots", "--no-progress"]) == 0
    report = json.loads((tmp_path / "an" / "report.json").read_text())
    mol = report["molecular"]
    assert set(mol["bond"]["tae"]) == {"E-M"} and set(mol["angle"]["tae"]) == {"E-M-E"}
    assert set(mol["rdf_intra"]["tae"]) == {"E-E", "E-M"}
    assert 0 <= mol["angle"]["tae"]["E-M-E"]["mean"] <= 2
    assert 120 < mol["angle"]["mean_value"]["E-M-E"]["reference"] < 170
    assert "## Molecules" in (tmp_path / "an" / "summary.md").read_text()
    # a start structure without the bonds is refused with one line
    names = [ds.type_names[t] for t in ds.bead_types]
    from openmm_cgkd.topology import bead_topology

    write_bead_pdb(tmp_path / "nobonds.pdb", bead_topology(names, ds.boxes[-1]), ds.positions[-1])
    capsys.readouterr()
    assert main(["simulate", "--bundle", str(tmp_path / "student" / "bundle"), "--structure",
                 str(tmp_path / "nobonds.pdb"), "--steps", "10", "--report-interval", "5", "--out", str(tmp_path / "md2"),
                 "--platform", "CPU", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cgkd simulate: error:" in err and "no bonds" in err and "Traceback" not in err


def test_molecule_in_vacuum_maps_trains_serves_and_runs(tmp_path, capsys):
    from openmm import unit

    from openmm_cgkd.analysis.molecules import bonded_distributions
    from openmm_cgkd.analysis.report import load_trajectory
    from openmm_cgkd.serving.forcefield import CGKDForceField, ServingError

    inp = write_inputs(tmp_path / "aa", n_molecules=1, box_nm=None, frames=60, stride=25)
    ds = _map(inp, tmp_path / "cg.h5", capsys, frame_ps=0.05)  # no box: no longer refused
    assert not ds.periodic and ds.topology.n_bonds == 2
    (tmp_path / "teachers.yaml").write_text("dataset: cg.h5\nout: teachers\nmembers: 1\n"
                                            f"priors: {{temperature_K: {TEMPERATURE_K}}}\n" + MODEL + TRAINER)
    assert main(["train-teachers", str(tmp_path / "teachers.yaml")]) == 0
    bundle = tmp_path / "teachers" / "ensemble"
    b = load_bundle(bundle)
    assert b.manifest.periodic is False and b.priors is not None
    assert not np.any(b.manifest.wall.prefactor_kj_mol)  # one 3-bead molecule: no non-bonded pair, no wall
    write_bead_pdb(tmp_path / "start.pdb", dataset_topology(ds, -1), ds.positions[-1])
    assert "CRYST1" not in (tmp_path / "start.pdb").read_text()
    assert main(["simulate", "--bundle", str(bundle), "--structure", str(tmp_path / "start.pdb"), "--steps", "100",
                 "--temperature", str(TEMPERATURE_K), "--report-interval", "10", "--out", str(tmp_path / "md"),
                 "--platform", "CPU", "--no-progress"]) == 0
    traj = load_trajectory(tmp_path / "md" / "trajectory.dcd", tmp_path / "md" / "final.pdb")
    dists = bonded_distributions(traj)
    assert set(dists["bond"]) == {"E-M"} and set(dists["angle"]) == {"E-M-E"}
    assert 0.15 < float(np.mean(np.linalg.norm(traj.xyz[:, 1] - traj.xyz[:, 0], axis=1))) < 0.4
    ff = CGKDForceField(bundle)
    with pytest.raises(ServingError, match="non-periodic"):
        ff.create_system(dataset_topology(ds), box_vectors=np.eye(3) * 3.0 * unit.nanometer)
    # the same map of an AA run with every bond constrained loses constraint forces: one clear line
    spec = yaml.safe_load(inp["mapping"].read_text())
    (tmp_path / "rigid.yaml").write_text(yaml.safe_dump({**spec, "constraints": "all-bonds"}))
    capsys.readouterr()
    assert main(["map", "--trajectory", str(inp["dcd"]), "--topology", str(inp["pdb"]), "--forces",
                 str(inp["forces"]), "--masses", str(inp["masses"]), "--mapping", str(tmp_path / "rigid.yaml"),
                 "--out", str(tmp_path / "rigid.h5"), "--timestep-ps", "0.1", "--no-unit-check"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cgkd map: error:") and "C2" in err and "two beads" in err and len(err.splitlines()) == 1
