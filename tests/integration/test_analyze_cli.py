"""`cgkd analyze` and `analyze_model` end to end on a tiny synthetic DES-like system."""
import json

import numpy as np
import pytest

from openmm_cgkd.analysis import AnalysisSettings, analyze_model, make_trajectory, write_report
from openmm_cgkd.analysis.report import summary_markdown
from openmm_cgkd.cli.main import main
from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.topology import bead_topology_from_counts, write_bead_pdb

L = 2.6
COUNTS = {"Cho": 10, "Cl": 10, "Urea": 20}
NAMES = [t for t, n in COUNTS.items() for _ in range(n)]
N = len(NAMES)


def _jittered_lattice(rng, frames):
    """Beads on a jittered cubic lattice: liquid-like spacing, no overlaps."""
    g = np.arange(4) * (L / 4)
    sites = np.array(np.meshgrid(g, g, g, indexing="ij")).reshape(3, -1).T[:N]
    return (sites[None] + rng.normal(0, 0.08, (frames, N, 3))) % L


def _energy_log(path, rng, n=200):
    e = 300 * np.exp(-np.arange(n) / 10.0) - 5000 + rng.normal(0, 5, n)
    rows = [f"{100 * (i + 1)},{0.2 * (i + 1):.1f},{v:.3f},298.0" for i, v in enumerate(e)]
    path.write_text('#"Step","Time (ps)","Potential Energy (kJ/mole)","Temperature (K)"\n' + "\n".join(rows) + "\n")
    return path


@pytest.fixture
def case(tmp_path):
    rng = np.random.default_rng(0)
    ref = CGDataset(positions=_jittered_lattice(rng, 8), forces=np.zeros((8, N, 3)),
                    boxes=np.tile(np.eye(3) * L, (8, 1, 1)), times=np.arange(8) * 5.0,
                    bead_types=[list(COUNTS).index(t) for t in NAMES], type_names=list(COUNTS),
                    masses=np.ones(N))
    ref.save(tmp_path / "ref.h5")
    top = bead_topology_from_counts(COUNTS, np.eye(3) * L)
    write_bead_pdb(tmp_path / "start.pdb", top, ref.positions[0])
    trajs, logs = [], []
    for i in range(2):
        t = make_trajectory(_jittered_lattice(rng, 12), NAMES, np.eye(3) * L)
        t.save_dcd(str(tmp_path / f"rep{i + 1}.dcd"))
        trajs.append(str(tmp_path / f"rep{i + 1}.dcd"))
        logs.append(str(_energy_log(tmp_path / f"rep{i + 1}.csv", rng)))
    return tmp_path, trajs, logs


def test_cli_writes_json_png_and_markdown(case, capsys):
    tmp, trajs, logs = case
    out = tmp / "analysis"
    rc = main(["analyze", "--trajectory", *trajs, "--topology", str(tmp / "start.pdb"),
               "--reference", str(tmp / "ref.h5"), "--energies", *logs, "--out", str(out),
               "--adf-cutoffs", "0.6", "--blocks", "3", "--name", "toy", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "TAE rdf" in printed and "equilibrated from sample" in printed
    assert "reference check: " in printed and "contact gate: " in printed
    check = json.loads((out / "reference_check.json").read_text())
    assert check["n_pairs"] > 0 and 0 <= check["still"] <= 1 and check["verdict"] in printed

    for name in ("rdf.png", "adf_0.60.png", "cdf.png", "cdf_time.png", "tae.png", "energy.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name

    report = json.loads((out / "report.json").read_text())
    assert report["name"] == "toy" and report["n_replicas"] == 2
    assert set(report["tae"]) == {"rdf", "adf", "cdf"}
    assert set(report["tae"]["rdf"]) == {"CHO-CHO", "CHO-CL", "CHO-URE", "CL-CL", "CL-URE", "URE-URE"}
    assert set(report["tae"]["cdf"]) == {"CHO", "CL", "URE"}
    assert len(report["tae"]["adf"]) == 3 * 6  # central types x unordered neighbour-type pairs
    for kind in ("rdf", "adf", "cdf", "adf@0.60"):
        s = report["summary"][kind]
        assert s["n"] == 2 and s["mean"] >= 0 and s["std"] >= 0
    assert 0 <= report["summary"]["cdf"]["mean"] <= 2
    rep = report["replicas"][0]
    # The log relaxes in ~20 of its 200 samples: pymbar sees it, the fixed discard (0 frames
    # here) is kept for every replica, and the replica is flagged as not equilibrated within it.
    assert rep["equilibration"]["t0_index"] > 0 and rep["start_frame"] == 0
    assert rep["equilibrated_within_discard"] is False and rep["name"] in report["not_equilibrated_within_discard"]
    assert rep["stability"]["coordinates"]["ok"] and "drift" in rep["stability"]
    curves = report["curves"]["rdf"]["CHO-CL"]
    assert len(curves["model"]["edges"]) == len(curves["reference"]["edges"])
    assert curves["model"]["edges"][-1] == pytest.approx(1.3)  # capped at half the 2.6 nm box

    md = (out / "summary.md").read_text()
    assert "| RDF | 6 |" in md and "| CHO-CL |" in md and "## Stability" in md and "![tae](tae.png)" in md


def test_cli_reports_bad_input_clearly(case, capsys):
    tmp, trajs, _ = case
    rc = main(["analyze", "-t", *trajs, "-p", str(tmp / "start.pdb"), "-r", str(tmp / "missing.h5"),
               "-o", str(tmp / "x")])
    assert rc == 2 and "cgkd analyze: error: reference not found" in capsys.readouterr().err
    rc = main(["analyze", "-t", trajs[0], "-r", str(tmp / "ref.h5"), "-o", str(tmp / "x")])
    assert rc == 2 and "topology" in capsys.readouterr().err
    rc = main(["analyze", "-t", *trajs, "-p", str(tmp / "start.pdb"), "-r", str(tmp / "ref.h5"),
               "-e", str(tmp / "rep1.csv"), "-o", str(tmp / "x")])
    assert rc == 2 and "1 energy series for 2 trajectories" in capsys.readouterr().err


def test_python_api_flags_a_broken_replica_and_skips_plots(case):
    tmp, trajs, _ = case
    rng = np.random.default_rng(1)
    good = make_trajectory(_jittered_lattice(rng, 10), NAMES, np.eye(3) * L)
    broken = make_trajectory(_jittered_lattice(rng, 10), NAMES, np.eye(3) * L)
    broken.xyz[6:, 3] = np.nan
    reference = make_trajectory(_jittered_lattice(rng, 6), NAMES, np.eye(3) * L)
    report = analyze_model([good, broken], reference, name="api",
                           settings=AnalysisSettings(adf_cutoffs=(0.6,), n_blocks=2, discard_frames=2))
    assert [r.start_frame for r in report.replicas] == [2, 2]
    assert report.replicas[1].stop_frame == 6 and report.replicas[1].failed
    assert "frame 6" in report.replicas[1].failure
    assert not report.stable and report.replicas[0].stability.stable
    assert report.n_failed == 1 and report.summary["rdf"].n == 1  # the broken replica is counted, not scored
    assert "1 of 2 replicas failed" in summary_markdown(report)
    assert report.replicas[1].stability.coordinates.nonfinite_frames == [6, 7, 8, 9]
    assert report.tae["cdf"]["CL"].n == 1
    written = write_report(report, tmp / "api", plots=False)
    assert set(written) == {"json", "markdown"}
    assert "NOT stable" in written["markdown"].read_text()
    assert main(["analyze", "-t", *trajs, "-p", str(tmp / "start.pdb"), "-r", str(tmp / "ref.h5"),
                 "-o", str(tmp / "strict"), "--no-plots", "--adf-cutoffs", "0.6", "--strict"]) in (0, 3)


def test_fixed_discard_is_the_same_for_every_replica_and_recorded_failures_count(case):
    """The discard does not follow pymbar (models are scored on the same window); an MD failure
    recorded by the caller is counted even when the frames written before it look fine."""
    tmp, trajs, logs = case
    rng = np.random.default_rng(3)
    a = make_trajectory(_jittered_lattice(rng, 12), NAMES, np.eye(3) * L)
    b = make_trajectory(_jittered_lattice(rng, 12), NAMES, np.eye(3) * L)
    reference = make_trajectory(_jittered_lattice(rng, 6), NAMES, np.eye(3) * L)
    relaxing = np.r_[np.linspace(50.0, 0.0, 8), rng.normal(0.0, 0.3, 4)]  # equilibrates at ~frame 8
    flat = rng.normal(0.0, 0.3, 12)
    report = analyze_model([a, b], reference, energies=[relaxing, flat], failures=[None, "NaN at step 900"],
                           settings=AnalysisSettings(adf_cutoffs=(0.6,), n_blocks=2, discard_frames=3))
    assert [r.start_frame for r in report.replicas] == [3, 3]
    assert report.replicas[0].equilibrated_within_discard is False
    assert report.replicas[1].failed and report.replicas[1].failure == "NaN at step 900"
    assert report.n_failed == 1 and report.not_equilibrated == [report.replicas[0].name]
