"""`cgkd demo` (the README's main command): builds the untrained default on first use, runs, prints ns/day."""
import json

import numpy as np

from openmm_cgkd.cli.demo import UNTRAINED_DEFAULT, default_structure
from openmm_cgkd.cli.main import main


def test_demo_builds_untrained_default_and_reports_speed(tmp_path, monkeypatch, capsys):
    import mdtraj as md

    monkeypatch.setenv("CGKD_MODELS_DIR", str(tmp_path / "models"))
    out = tmp_path / "demo"
    args = ["demo", "--steps", "4", "--report-interval", "2", "--platform", "CPU", "--threads", "1",
            "--no-progress", "--seed", "1", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "building the UNTRAINED demo bundle" in printed
    assert "NOTE: this model is UNTRAINED" in printed
    assert "speed:" in printed and "ns/day" in printed
    assert (tmp_path / "models" / UNTRAINED_DEFAULT / "manifest.yaml").is_file()
    meta = json.loads((out / "run.json").read_text())
    assert meta["steps_run"] == 4 and meta["ns_per_day"] > 0
    traj = md.load(str(out / "trajectory.dcd"), top=str(default_structure()))
    assert traj.n_atoms == 1000 and traj.n_frames == 3
    # second run: the bundle exists and is reused (an earlier run outside runs/demo is replaced only on request)
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert "building" not in capsys.readouterr().out


def test_demo_structure_is_the_des_system():
    from openmm_cgkd.topology import read_bead_pdb

    top, pos, box = read_bead_pdb(default_structure())
    names = [a.residue.name for a in top.atoms()]
    assert (names.count("CHO"), names.count("CL"), names.count("URE")) == (250, 250, 500)
    np.testing.assert_allclose(box, np.eye(3) * 4.484, atol=1e-6)
    d = pos[:, None] - pos[None]
    d -= 4.484 * np.round(d / 4.484)
    r = np.linalg.norm(d, axis=-1) + np.eye(len(pos)) * 10
    assert r.min() > 0.35  # no overlaps


def test_demo_with_the_shipped_student_reports_taes_against_the_aa_reference(tmp_path, capsys):
    from openmm_cgkd.cli.demo import default_reference

    out = tmp_path / "demo"
    args = ["demo", "--steps", "40", "--report-interval", "2", "--platform", "CPU", "--threads", "1",
            "--no-progress", "--seed", "1", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "models/des-student" in printed and "UNTRAINED" not in printed
    assert "RDF TAE" in printed and "ADF TAE" in printed and "CDF TAE" in printed
    report = json.loads((out / "analysis" / "report.json").read_text())
    for kind in ("rdf", "adf", "cdf"):
        assert 0 <= report["summary"][kind]["mean"] < 2.5
    # the run started from the first equilibrated frame of the shipped AA dataset (pymbar itself on
    # its AA potential energy) and was scored against its equilibrated frames (every 4th) only
    from pymbar import timeseries

    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.topology import read_bead_pdb

    ds = CGDataset.load(default_reference())
    t0 = int(timeseries.detect_equilibration(np.asarray(ds.potential_energy, dtype=np.float64), fast=True)[0])
    assert t0 > 0  # the shipped production is not equilibrated from its first frame
    assert f"start: frame {t0} of {default_reference().name}" in printed
    _, pos, _ = read_bead_pdb(out / "start.pdb")
    np.testing.assert_allclose(pos, ds.positions[t0], atol=1e-3)
    ref_rdf = next(iter(report["curves"]["rdf"].values()))["reference"]
    assert ref_rdf["n_frames"] == sum(1 for i in range(0, ds.n_frames, 4) if i >= t0)
