"""`cgkd pipeline` end to end on a molecule without a periodic box (issue 22): one flexible 3-bead
molecule in vacuum mapped from OpenMM data (`cgkd map`), hipnn-ts teachers trained as one stacked run
with bonded priors, labels, a hipnn-ts student, MD from the dataset's frame (bonds, no box), the
time step check and the analysis (bond and angle distributions; RDF/ADF/CDF skipped: no box)."""
import gzip
import json

import numpy as np
import yaml

from molecule_system import TEMPERATURE_K, write_inputs
from openmm_cgkd.bundle import load_bundle
from openmm_cgkd.cli.main import main


def test_pipeline_of_a_molecule_without_a_box(tmp_path, capsys):
    inp = write_inputs(tmp_path / "aa", n_molecules=1, box_nm=None, frames=80, stride=25)
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
           "analysis": {"n_blocks": 2}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["pipeline", str(tmp_path / "p.yaml")]) == 0, capsys.readouterr().err
    out = tmp_path / "study"
    teachers = load_bundle(out / "teachers" / "ensemble")
    assert teachers.manifest.periodic is False and teachers.manifest.num_members == 2
    assert teachers.priors is not None and set(teachers.priors.to_dict()["bonds"]) == {"E-M"}
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
    assert "## Molecules" in summary and "| bond | E-M |" in summary and "| angle | E-M-E |" in summary
    assert "molecular" in json.loads(gzip.open(out / "md" / "reference.json.gz").read())
    report_md = (out / "report.md").read_text()
    assert "student-ensemble-e-ft-faa" in report_md
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
                 "--no-progress"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "RDF, ADF and CDF not computed" in printed and "TAE bond E-M" in printed
    report = json.loads((tmp_path / "an" / "report.json").read_text())
    assert report["skipped"]["kinds"] == ["rdf", "adf", "cdf"]
    mol = report["molecular"]
    assert set(mol["bond"]["tae"]) == {"E-M"} and set(mol["angle"]["tae"]) == {"E-M-E"}
    assert "rdf_intra" not in mol and np.isfinite(mol["bond"]["tae"]["E-M"]["mean"])
    assert report["replicas"][0]["stability"]["thermal"] is not None  # temperature and drift from the log
