"""`cgkd simulate --backend python`: the same seeded Langevin run as with TorchForce (the eager
model through openmm.PythonForce), and --compile without the python backend is refused."""
import csv

import numpy as np
import pytest

from openmm_cgkd.bundle import build_untrained_bundle, untrained_config
from openmm_cgkd.cli.main import main
from openmm_cgkd.topology import bead_topology_from_counts, read_bead_pdb, write_bead_pdb

BOX_NM = 1.5


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    cfg = untrained_config(cutoff_nm=0.6, embedding_dim=8, num_layers=1, num_rbf=4, rbf_type="gauss",
                           max_num_neighbors=48)
    bundle = build_untrained_bundle(tmp_path_factory.mktemp("b") / "tiny", cfg)
    g = (np.arange(3) + 0.5) * BOX_NM / 3
    pos = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    pos += np.random.default_rng(0).uniform(-0.05, 0.05, pos.shape)
    top = bead_topology_from_counts({"Cho": 7, "Cl": 7, "Urea": 13}, np.eye(3) * BOX_NM)
    return bundle, write_bead_pdb(tmp_path_factory.mktemp("s") / "start.pdb", top, pos)


def _run(inputs, out, *extra):
    bundle, structure = inputs
    return main(["simulate", "--bundle", str(bundle), "--structure", str(structure), "--out", str(out),
                 "--platform", "Reference", "--seed", "5", "--steps", "10", "--report-interval", "5",
                 "--temperature", "298.1", "--no-progress", *extra])


def _energies(out):
    with open(out / "log.csv", newline="") as fh:
        return np.array([float(r["potential_kj_mol"]) for r in csv.DictReader(fh)])


def test_python_backend_run_equals_torchforce_run(inputs, tmp_path, capsys):
    assert _run(inputs, tmp_path / "tf") == 0
    assert "network via torchforce" in capsys.readouterr().out
    assert _run(inputs, tmp_path / "py", "--backend", "python") == 0
    assert "network via python" in capsys.readouterr().out
    e_tf, e_py = _energies(tmp_path / "tf"), _energies(tmp_path / "py")
    assert len(e_tf) == 3
    np.testing.assert_allclose(e_py, e_tf, rtol=1e-5, atol=1e-4)
    start = read_bead_pdb(inputs[1])[1]
    final_tf = read_bead_pdb(tmp_path / "tf" / "final.pdb")[1]
    final_py = read_bead_pdb(tmp_path / "py" / "final.pdb")[1]
    assert np.abs(final_tf - start).max() > 2e-3  # the beads moved
    np.testing.assert_allclose(final_py, final_tf, atol=2e-4)  # PDB precision (0.001 A = 1e-4 nm)


def test_compile_needs_the_python_backend(inputs, tmp_path, capsys):
    assert _run(inputs, tmp_path / "x", "--compile") == 2
    assert "--backend python" in capsys.readouterr().err
