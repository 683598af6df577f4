"""`cgkd simulate` end to end: DCD + CSV that mdtraj and the csv module read; resume; clear errors."""
import csv
import json
import math
import shutil

import numpy as np
import pytest

from openmm_cgkd.bundle import build_untrained_bundle, untrained_config
from openmm_cgkd.cli.main import main
from openmm_cgkd.md.simulation import LOG_COLUMNS, read_log
from openmm_cgkd.topology import bead_topology_from_counts, write_bead_pdb

BOX_NM = 1.5


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    cfg = untrained_config(cutoff_nm=0.6, embedding_dim=8, num_layers=1, num_rbf=4, rbf_type="gauss",
                           max_num_neighbors=48)
    return build_untrained_bundle(tmp_path_factory.mktemp("b") / "tiny", cfg)


@pytest.fixture(scope="module")
def structure(tmp_path_factory):
    """27 beads on a jittered 3x3x3 lattice (0.5 nm spacing) in a 1.5 nm box."""
    g = (np.arange(3) + 0.5) * BOX_NM / 3
    pos = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    pos += np.random.default_rng(0).uniform(-0.05, 0.05, pos.shape)
    top = bead_topology_from_counts({"Cho": 7, "Cl": 7, "Urea": 13}, np.eye(3) * BOX_NM)
    return write_bead_pdb(tmp_path_factory.mktemp("s") / "start.pdb", top, pos)


def _simulate(bundle, structure, out, *extra):
    return main(["simulate", "--bundle", str(bundle), "--structure", str(structure), "--out", str(out),
                 "--platform", "CPU", "--threads", "1", "--seed", "11", "--report-interval", "5",
                 "--temperature", "298.1",
                 "--no-progress", *extra])


def test_simulate_writes_dcd_and_csv(bundle, structure, tmp_path, capsys):
    import mdtraj as md

    out = tmp_path / "run"
    assert _simulate(bundle, structure, out, "--steps", "20", "--temperature", "310", "--timestep", "1.5",
                     "--friction", "2") == 0
    printed = capsys.readouterr().out
    assert "ns/day" in printed and "UNTRAINED" in printed

    traj = md.load(str(out / "trajectory.dcd"), top=str(structure))
    assert traj.n_frames == 5 and traj.n_atoms == 27  # steps 0, 5, 10, 15, 20
    np.testing.assert_allclose(traj.unitcell_lengths, BOX_NM, rtol=1e-5)
    assert np.all(np.isfinite(traj.xyz))

    with open(out / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == LOG_COLUMNS
    assert [int(r["step"]) for r in rows] == [0, 5, 10, 15, 20]
    assert [float(r["time_ps"]) for r in rows] == pytest.approx([0, 0.0075, 0.015, 0.0225, 0.03])
    for r in rows:
        pot, kin, tot = float(r["potential_kj_mol"]), float(r["kinetic_kj_mol"]), float(r["total_kj_mol"])
        assert tot == pytest.approx(pot + kin, abs=1e-4)
        assert 50 < float(r["temperature_k"]) < 1000
    assert math.isnan(float(rows[0]["speed_ns_day"])) and float(rows[-1]["speed_ns_day"]) > 0

    meta = json.loads((out / "run.json").read_text())
    assert meta["steps_run"] == 20 and meta["platform"] == "CPU" and meta["ns_per_day"] > 0
    assert md.load(str(out / "final.pdb")).n_atoms == 27
    # run.json names its files relative to the run (no machine path), and a rerun of the finished
    # run reports them where they are
    assert out.is_absolute() and str(tmp_path) not in (out / "run.json").read_text()
    assert (meta["out_dir"], meta["trajectory"], meta["final_structure"]) == (".", "trajectory.dcd", "final.pdb")
    assert _simulate(bundle, structure, out, "--steps", "20", "--temperature", "310", "--timestep", "1.5",
                     "--friction", "2", "--resume") == 0
    assert f"wrote {out / 'trajectory.dcd'}, {out / 'log.csv'}, {out / 'final.pdb'}" in capsys.readouterr().out


def test_resume_appends_and_drops_rows_after_the_checkpoint(bundle, structure, tmp_path):
    out = tmp_path / "run"
    assert _simulate(bundle, structure, out, "--steps", "10", "--resume") == 0
    ckpt10 = tmp_path / "step10.chk"
    shutil.copy(out / "checkpoint.chk", ckpt10)
    assert _simulate(bundle, structure, out, "--steps", "20", "--resume") == 0
    first = read_log(out / "log.csv")
    assert first["step"] == [0, 5, 10, 15, 20]
    # a crash after step 20 with the last checkpoint at step 10: rows/frames 15, 20 are dropped, then rerun
    shutil.copy(ckpt10, out / "checkpoint.chk")
    (out / "run.json").unlink()
    assert _simulate(bundle, structure, out, "--steps", "20", "--resume") == 0
    again = read_log(out / "log.csv")
    assert again["step"] == [0, 5, 10, 15, 20]
    np.testing.assert_allclose(again["potential_kj_mol"], first["potential_kj_mol"], rtol=1e-4)
    import mdtraj as md

    assert md.load(str(out / "trajectory.dcd"), top=str(structure)).n_frames == 5
    # a finished run is not rerun
    assert _simulate(bundle, structure, out, "--steps", "20", "--resume") == 0
    assert read_log(out / "log.csv")["step"] == [0, 5, 10, 15, 20]


def test_simulate_bad_input_is_one_clear_line(bundle, structure, tmp_path, capsys):
    assert _simulate(tmp_path / "missing", structure, tmp_path / "o", "--steps", "5") == 2  # bad usage
    assert "cgkd simulate: error: model bundle not found" in capsys.readouterr().err
    assert _simulate(bundle, tmp_path / "nope.pdb", tmp_path / "o", "--steps", "5") == 2
    assert "cgkd simulate: error: structure file not found" in capsys.readouterr().err
    small = write_bead_pdb(tmp_path / "small.pdb", bead_topology_from_counts({"Cl": 2}, np.eye(3) * 1.0),
                           np.array([[0.1, 0.1, 0.1], [0.6, 0.6, 0.6]]))
    assert _simulate(bundle, small, tmp_path / "o", "--steps", "5") == 2
    assert "at least twice the cutoff" in capsys.readouterr().err


def test_two_concurrent_resumes_on_one_out_one_refused_no_frame_duplicated(bundle, structure, tmp_path):
    """Two `cgkd simulate --resume` started together on one --out: one runs, the other is refused
    with one line naming the holder; the DCD and the log hold each frame exactly once."""
    import os
    import subprocess
    import sys

    import mdtraj as md

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "openmm_cgkd.cli.main", "simulate", "--bundle", str(bundle), "--structure",
           str(structure), "--out", str(out), "--platform", "CPU", "--threads", "1", "--seed", "11",
           "--report-interval", "5", "--no-progress", "--steps", "200", "--resume", "--temperature", "298.1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 1], results
    refused = next(err for rc, err in results if rc == 1)
    lines = [line for line in refused.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cgkd simulate: error: ") and "in use by another" in lines[0]
    winner = next(p.pid for p, (rc, _) in zip(procs, results) if rc == 0)
    assert f"pid {winner} " in lines[0] and "simulate" in lines[0]
    assert read_log(out / "log.csv")["step"] == list(range(0, 201, 5))
    traj = md.load(str(out / "trajectory.dcd"), top=str(structure))
    assert traj.n_frames == 41


def test_a_fresh_run_does_not_overwrite_an_earlier_one_without_overwrite(bundle, structure, tmp_path, capsys):
    out = tmp_path / "run"
    assert _simulate(bundle, structure, out, "--steps", "20") == 0
    before = (out / "trajectory.dcd").read_bytes()
    capsys.readouterr()
    assert _simulate(bundle, structure, out, "--steps", "10") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "holds a finished run of 20 steps" in err and "--overwrite" in err
    assert (out / "trajectory.dcd").read_bytes() == before
    assert _simulate(bundle, structure, out, "--steps", "10", "--overwrite") == 0
    assert read_log(out / "log.csv")["step"] == [0, 5, 10]
    # run.json is strict JSON (no bare NaN) even where a figure is undefined
    json.loads((out / "run.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in run.json"))


def test_a_resumed_run_is_bit_identical_to_an_uninterrupted_one(bundle, structure, tmp_path, capsys):
    """Resumed without --threads, a run continues with the thread counts it started with (the
    order of floating-point sums depends on them), so the trajectory after the resume point is
    bit-identical to an uninterrupted run's."""
    import mdtraj as md

    def run(out, steps, *threads):
        return main(["simulate", "--bundle", str(bundle), "--structure", str(structure), "--out", str(out),
                     "--platform", "CPU", "--seed", "11", "--report-interval", "10", "--checkpoint-interval", "10",
                     "--no-progress", "--steps", str(steps), "--resume", "--temperature", "298.1", *threads])

    assert run(tmp_path / "whole", 60, "--threads", "2") == 0
    assert run(tmp_path / "parts", 30, "--threads", "2") == 0
    assert run(tmp_path / "parts", 60) == 0  # no --threads: those of the run
    assert "not bit-identical" not in capsys.readouterr().err
    whole = md.load(str(tmp_path / "whole" / "trajectory.dcd"), top=str(structure)).xyz
    parts = md.load(str(tmp_path / "parts" / "trajectory.dcd"), top=str(structure)).xyz
    assert whole.shape == parts.shape == (7, 27, 3)
    assert np.array_equal(whole, parts)
    # other threads asked for explicitly: allowed, and said
    assert run(tmp_path / "parts", 80, "--threads", "1") == 0
    assert "not bit-identical" in capsys.readouterr().err
