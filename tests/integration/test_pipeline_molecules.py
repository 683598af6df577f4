"""`cgkd pipeline` end to end on a molecule without a periodic box (issue 22): one flexible 6-bead
molecule in vacuum (a bead per site of the hexane-like chain) mapped from OpenMM data (`cgkd map`),
hipnn-ts teachers trained as one stacked run with bonded priors, labels, a hipnn-ts student, MD from
the dataset's frame (bonds, no box), the time step check and the analysis (bond and angle
distributions; RDF/ADF/CDF skipped: no box), and its backbone-like dihedrals scored as a peptide's
phi/psi (``analysis.ramachandran``, issue 26): the record's series, the FES score against the AA
dataset (checked against a calculation of its own), the report's section and figure, and
`cgkd analyze --ramachandran`."""
import gzip
import json

import numpy as np
import pytest
import yaml

from molecule_system import TEMPERATURE_K, write_inputs
from openmm_cgkd.bundle import load_bundle
from openmm_cgkd.cli.main import main

# one bead per site: E C1, M C2 .. C5, E C6; "phi" and "psi" are the chain's first two torsions
SIX_BEADS = {"type_names": ["E", "M"],
             "residues": {"HEX": [{"type": t, "atoms": [a]} for t, a in
                                  zip("EMMMME", ["C1", "C2", "C3", "C4", "C5", "C6"])]}}
SPEC = {"description": "hexane-like chain, a bead per site", "phi": [0, 1, 2, 3], "psi": [1, 2, 3, 4],
        "bin_deg": 30.0,
        "basins": [{"key": "t", "name": "trans", "region": [{"phi": [120, -120], "psi": [-180, 180]}]},
                   {"key": "gp", "name": "gauche+", "region": [{"phi": [0, 120], "psi": [-180, 180]}]},
                   {"key": "gm", "name": "gauche-", "region": [{"phi": [-120, 0], "psi": [-180, 180]}]}]}


def _histogram(phi_deg, psi_deg, bin_deg):
    """An independent 2-D histogram (fraction per bin) of angles in degrees."""
    edges = np.arange(-180.0, 180.0 + bin_deg / 2, bin_deg)
    h, _, _ = np.histogram2d((phi_deg + 180) % 360 - 180, (psi_deg + 180) % 360 - 180, bins=[edges, edges])
    return h / h.sum()


def _js(p, q):
    m = 0.5 * (p + q)
    kl = lambda a: float(np.sum(a[a > 0] * np.log(a[a > 0] / m[a > 0])))  # noqa: E731
    return 0.5 * kl(p) + 0.5 * kl(q)


def test_pipeline_of_a_molecule_without_a_box(tmp_path, capsys, monkeypatch):
    inp = write_inputs(tmp_path / "aa", n_molecules=1, box_nm=None, frames=80, stride=25)
    inp["mapping"].write_text(yaml.safe_dump(SIX_BEADS))
    (tmp_path / "rama.yaml").write_text(yaml.safe_dump(SPEC))
    assert main(["map", "--trajectory", str(inp["dcd"]), "--topology", str(inp["pdb"]), "--forces",
                 str(inp["forces"]), "--masses", str(inp["masses"]), "--mapping", str(inp["mapping"]), "--out",
                 str(tmp_path / "cg.h5"), "--timestep-ps", "0.05", "--temperature", str(TEMPERATURE_K),
                 "--no-unit-check"]) == 0, capsys.readouterr().err
    cfg = {"out": "study", "dataset": "cg.h5",
           "model": {"architecture": "hipnn-ts", "embedding_dim": 8, "num_layers": 1, "num_rbf": 6,
                     "cutoff_nm": 0.6},
           "split": {"train": 0.6, "val": 0.2, "test": 0.2, "gap_frames": 1},
           "trainer": {"max_epochs": 2, "batch_size": 8, "progress_bar": False, "num_threads": 1},
           "teachers": {"members": 2},
           "students": {"variants": ["ensemble-e-ft-faa"]},
           "md": {"replicas": 1, "teacher_members": 0, "teacher_replicas": 1, "length_ps": 0.4,
                  "timestep_fs": 2.0, "report_interval_ps": 0.02, "discard_ps": 0.04, "platform": "CPU",
                  "threads": 1, "timestep_check": {"nvt_ps": 0.1, "nve_ps": 0.1, "stop_if_unsafe": False}},
           "analysis": {"n_blocks": 2, "ramachandran": "rama.yaml"}, "cluster": {"kind": "serial"}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["pipeline", str(tmp_path / "p.yaml")]) == 0, capsys.readouterr().err
    out = tmp_path / "study"
    teachers = load_bundle(out / "teachers" / "ensemble")
    assert teachers.manifest.periodic is False and teachers.manifest.num_members == 2
    assert teachers.priors is not None and set(teachers.priors.to_dict()["bonds"]) == {"E-M", "M-M"}
    assert json.loads((out / "teachers" / "stacked" / "result.json").read_text())["num_members"] == 2
    student = load_bundle(out / "students" / "ensemble-e-ft-faa" / "bundle")
    assert student.priors.to_dict() == teachers.priors.to_dict() and student.manifest.periodic is False
    assert student.manifest.architecture["architecture"] == "hipnn-ts"

    rep = out / "md" / "student-ensemble-e-ft-faa" / "replica_00"
    start = (rep / "start.pdb").read_text()
    assert "CONECT" in start and "CRYST1" not in start  # the dataset frame's bonds, no box
    record = json.loads(gzip.open(rep / "replica.json.gz").read())
    assert record["failure"] is None
    checks = list((out / "md" / "timestep_check").glob("*.json"))
    assert checks and json.loads(checks[0].read_text())["result"]["blew_up"] is None

    summary = (out / "analysis" / "student-ensemble-e-ft-faa" / "summary.md").read_text()
    assert "RDF, ADF and CDF not computed" in summary and "no periodic box" in summary
    assert "## Molecules" in summary and "| bond | E-M |" in summary and "| angle | E-M-M |" in summary
    assert "molecular" in json.loads(gzip.open(out / "md" / "reference.json.gz").read())
    report_md = (out / "report.md").read_text()
    assert "student-ensemble-e-ft-faa" in report_md

    # phi/psi: the record keeps the series after the discard (tenths of a degree), the analysis scores it
    import mdtraj as md

    series = record["phi_psi"]
    traj = md.load(str(rep / "trajectory.dcd"), top=str(rep / "start.pdb"))
    start = record["analysis"]["start_frame"]
    assert len(series["phi_decideg"]) == traj.n_frames - start == 19
    own = np.degrees(md.compute_dihedrals(traj[start:], [[0, 1, 2, 3], [1, 2, 3, 4]], periodic=False))
    diff = ((np.asarray(series["phi_decideg"]) + 0.5) / 10.0 - own[:, 0] + 180) % 360 - 180
    assert np.abs(diff).max() <= 0.051
    rama = json.loads((out / "analysis" / "ramachandran.json").read_text())
    model = rama["models"]["student-ensemble-e-ft-faa"]
    import h5py

    with h5py.File(tmp_path / "cg.h5", "r") as h5:
        ref_x = np.asarray(h5["positions"])
    ref_traj = md.Trajectory(ref_x, traj.topology)
    ref_angles = np.degrees(md.compute_dihedrals(ref_traj, [[0, 1, 2, 3], [1, 2, 3, 4]], periodic=False))
    js = _js(_histogram(own[:, 0], own[:, 1], 30.0), _histogram(ref_angles[:, 0], ref_angles[:, 1], 30.0))
    assert abs(model["js"]["mean"] - js) < 1e-6 and model["js"]["n"] == 1
    counts = np.asarray(rama["reference"]["fes"]["counts"])
    assert np.array_equal(counts, _histogram(ref_angles[:, 0], ref_angles[:, 1], 30.0) * len(ref_x))
    trans = rama["reference"]["populations"]["t"]  # over the full blocks of the reference
    assert abs(trans["fraction"] - np.mean(np.abs(ref_angles[:, 0]) >= 120)) <= trans["se"]
    assert rama["reference"]["noise_floor"]["halves"]["js"] >= 0
    assert "## Backbone dihedrals" in report_md and "| AA reference |" in report_md and "fes.png" in report_md
    # --status: no RDF/ADF/CDF columns for a molecule without a box
    from openmm_cgkd.workflow.config import load_pipeline_config
    from openmm_cgkd.workflow.status import pipeline_status

    status = pipeline_status(load_pipeline_config(tmp_path / "p.yaml"))
    assert "| model | replicas finished | failed | under way | ns/day |" in status and "RDF TAE" not in status
    assert "| student-ensemble-e-ft-faa | 1 of 1 | 0 | - | " in status
    # the findings test each model's per-replica phi/psi JS (one replica each here: n/a)
    assert "| finding | compared | phi/psi JS | verdicts |" in report_md
    assert "phi/psi JS n/a (fewer than 2 replicas)" in report_md
    assert (out / "analysis" / "fes.png").is_file()
    data = json.loads((out / "report.json").read_text())
    assert data["analysis"]["models"]["student-ensemble-e-ft-faa"]["ramachandran"]["tae"]["mean"] >= 0
    # `cgkd start-structure` and `cgkd check-timestep` by hand: bonds, no box
    capsys.readouterr()
    assert main(["start-structure", "--dataset", str(tmp_path / "cg.h5"), "--frame", "-1", "--out",
                 str(tmp_path / "start.pdb")]) == 0
    text = (tmp_path / "start.pdb").read_text()
    assert "CONECT" in text and "CRYST1" not in text and "no periodic box" in capsys.readouterr().out
    assert main(["check-timestep", "--bundle", str(out / "students" / "ensemble-e-ft-faa" / "bundle"), "--structure",
                 str(tmp_path / "start.pdb"), "--timestep", "2", "--nvt-ps", "0.04", "--nve-ps", "0.1",
                 "--platform", "CPU", "--threads", "1"]) in (0, 3)
    assert "2 fs" in capsys.readouterr().out
    # `cgkd analyze` of the replica: the bonded distributions, no RDFs (stated)
    capsys.readouterr()
    assert main(["analyze", "-t", str(rep / "trajectory.dcd"), "-p", str(rep / "start.pdb"), "-r",
                 str(tmp_path / "cg.h5"), "-e", str(rep / "log.csv"), "-o", str(tmp_path / "an"), "--no-plots",
                 "--no-progress", "--discard-frames", "2", "--ramachandran", str(tmp_path / "rama.yaml"),
                 "--name", "student-ensemble-e-ft-faa"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    # the same phi/psi numbers as the pipeline's (same frames, same reference)
    assert "| AA reference |" in printed and "| student-ensemble-e-ft-faa | 1 |" in printed
    by_cli = json.loads((tmp_path / "an" / "ramachandran.json").read_text())["models"]["student-ensemble-e-ft-faa"]
    assert by_cli["js"]["mean"] == pytest.approx(model["js"]["mean"], abs=1e-9)
    for k, v in model["populations"].items():
        assert by_cli["populations"][k]["fraction"] == pytest.approx(v["fraction"], abs=1e-12)
    assert "RDF, ADF and CDF not computed" in printed and "TAE bond E-M" in printed
    report = json.loads((tmp_path / "an" / "report.json").read_text())
    assert report["skipped"]["kinds"] == ["rdf", "adf", "cdf"]
    mol = report["molecular"]
    assert set(mol["bond"]["tae"]) == {"E-M", "M-M"} and set(mol["angle"]["tae"]) == {"E-M-M", "M-M-M"}
    assert "rdf_intra" not in mol and np.isfinite(mol["bond"]["tae"]["E-M"]["mean"])
    assert report["replicas"][0]["stability"]["thermal"] is not None  # temperature and drift from the log

    # models/ship_from_pipeline.py ships a study of another system under its own names (into a scratch folder)
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("ship_from_pipeline", root / "models" / "ship_from_pipeline.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    monkeypatch.setattr(ship, "HERE", tmp_path / "models")
    written = ship.ship(out, "ensemble-e-ft-faa", "hexane", allow_failing_gate=True)
    assert written == [tmp_path / "models" / "hexane-teachers", tmp_path / "models" / "hexane-student"]
    card = (tmp_path / "models" / "hexane-student" / "MODEL_CARD.md").read_text()
    assert "## Backbone dihedrals" in card and "| AA reference |" in card and "no periodic box" in card
    assert f"| student-ensemble-e-ft-faa | 1 | {model['js']['mean']:.4f} |" in card and "| ensemble-2 |" in card
    assert (tmp_path / "models" / "hexane-student" / "fes.png").is_file() and "paper.yaml" not in card
