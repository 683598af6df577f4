"""`cgkd demo` (the README's main command): builds the untrained default on first use, runs, prints ns/day."""
import json

import numpy as np
import pytest

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


def _dipeptide_bundle(path):
    """An untrained hipnn-ts network on the dipeptide's bead types with stiff bonded priors from the
    start structure's bonds and angles (a bundle that keeps the molecule whole; no study has run in
    a test), recording its 300 K."""
    import itertools

    import torch

    from openmm_cgkd.bundle.demo import placeholder_wall, untrained_config
    from openmm_cgkd.bundle.io import save_bundle
    from openmm_cgkd.model.potential import CGPotential
    from openmm_cgkd.model.priors import BondedPriors
    from openmm_cgkd.systems import get_system
    from openmm_cgkd.topology import read_bead_pdb

    system = get_system("dipeptide")
    top, pos, _ = read_bead_pdb(system.file("cg_start"))
    names = system.type_names
    types = [names.index(a.name) for a in top.atoms()]
    bonds = [(b[0].index, b[1].index) for b in top.bonds()]
    nbr = {i: {j for b in bonds for j in b if i in b and j != i} for i in range(len(types))}
    pb = {(types[i], types[j]): (float(np.linalg.norm(pos[i] - pos[j])), 2.0e5) for i, j in bonds}
    pa = {}
    for j in nbr:
        for i, k in itertools.combinations(sorted(nbr[j]), 2):
            u, v = pos[i] - pos[j], pos[k] - pos[j]
            pa[(types[i], types[j], types[k])] = (float(np.arccos(u @ v / np.linalg.norm(u) / np.linalg.norm(v))),
                                                  400.0)
    torch.manual_seed(0)
    cfg = untrained_config("hipnn-ts", system="dipeptide", embedding_dim=8, num_layers=1, num_rbf=6)
    return save_bundle(path, CGPotential(cfg), bead_types=system.bead_types(), wall=placeholder_wall(names),
                       model_kind="student", variant="untrained", training={"trained": False},
                       description="test: untrained network, bonded priors from cg_start", periodic=False,
                       priors=BondedPriors(names, bonds=pb, angles=pa, temperature_k=300.0), temperature_K=300.0,
                       timestep_fs=1.0)


def test_demo_of_the_dipeptide_prints_its_phi_psi_score_and_speed(tmp_path, monkeypatch, capsys):
    import mdtraj as md

    from openmm_cgkd.systems import get_system

    system = get_system("dipeptide")
    # not shipped: one line, exit 2
    monkeypatch.setenv("CGKD_MODELS_DIR", str(tmp_path / "no_models"))
    out = tmp_path / "demo"
    common = ["demo", "--system", "dipeptide", "--platform", "CPU", "--threads", "1", "--no-progress", "--seed", "1",
              "--out", str(out)]
    assert main(common) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cgkd demo: error: no shipped student for system dipeptide") and "\n" not in err
    assert "ship_from_pipeline.py RUN --prefix dipeptide" in err
    # a bundle of the system: the run, its phi/psi against the AA report, ns/day
    bundle = _dipeptide_bundle(tmp_path / "bundle")
    assert main(common + ["--bundle", str(bundle), "--steps", "400", "--report-interval", "10"]) == 0
    printed = capsys.readouterr().out
    assert "300.0 K" in printed and "phi/psi vs the AA (aa_report.json, 100 ns)" in printed
    assert "speed:" in printed and "ns/day" in printed and "400 steps of 1.0 fs" in printed  # the bundle's step
    rama = json.loads((out / "analysis" / "ramachandran.json").read_text())["model"]
    # the score, computed here from the DCD and the AA report's histogram
    traj = md.load(str(out / "trajectory.dcd"), top=str(system.file("cg_start")))
    assert traj.n_frames == 41
    start = int(41 * 0.1)
    ang = np.degrees(md.compute_dihedrals(traj[start:], [[0, 1, 2, 4], [1, 2, 4, 5]]))
    edges = np.arange(-180.0, 181.0, 10.0)
    p, _, _ = np.histogram2d((ang[:, 0] + 180) % 360 - 180, (ang[:, 1] + 180) % 360 - 180, bins=[edges, edges])
    p /= p.sum()
    q = np.asarray(json.loads(system.file("aa_report").read_text())["fes"]["counts"], dtype=float)
    q /= q.sum()
    assert rama["tae"]["mean"] == pytest.approx(np.abs(p - q).sum(), abs=1e-9)
    assert f"TAE {rama['tae']['mean']:.3f}" in printed and (out / "analysis" / "fes.png").is_file()
    # the default frame interval is 0.1 ps at the bundle's step (100 steps of 1 fs); --timestep overrides it
    assert main(common + ["--bundle", str(bundle), "--steps", "200", "--no-analysis", "--overwrite"]) == 0
    assert md.load(str(out / "trajectory.dcd"), top=str(system.file("cg_start"))).n_frames == 3
    assert main(common + ["--bundle", str(bundle), "--steps", "200", "--no-analysis", "--timestep", "0.5", "--overwrite"]) == 0
    assert md.load(str(out / "trajectory.dcd"), top=str(system.file("cg_start"))).n_frames == 2  # every 200 steps
    assert "200 steps of 0.5 fs" in capsys.readouterr().out
