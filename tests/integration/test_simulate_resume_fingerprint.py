"""`cgkd simulate --resume` continues only the run it was started as: another bundle, structure,
temperature, time step, seed or report interval is refused (nothing appended), a finished run is
not reported as done for other settings, and a truncated checkpoint is an error."""
import json

import numpy as np
import pytest

from openmm_cgkd.bundle import build_untrained_bundle, untrained_config
from openmm_cgkd.cli.main import main
from openmm_cgkd.md.simulation import read_log
from openmm_cgkd.topology import bead_topology_from_counts, write_bead_pdb

BOX_NM = 1.5
COUNTS = {"Cho": 7, "Cl": 7, "Urea": 13}


def _lattice(jitter_seed: int) -> np.ndarray:
    g = (np.arange(3) + 0.5) * BOX_NM / 3
    pos = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    return pos + np.random.default_rng(jitter_seed).uniform(-0.05, 0.05, pos.shape)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    cfg = untrained_config(cutoff_nm=0.6, embedding_dim=8, num_layers=1, num_rbf=4, rbf_type="gauss",
                           max_num_neighbors=48)
    top = bead_topology_from_counts(COUNTS, np.eye(3) * BOX_NM)
    return {"bundle": build_untrained_bundle(root / "tiny", cfg, seed=0),
            "other_bundle": build_untrained_bundle(root / "tiny2", cfg, seed=1),  # same shape, other weights
            "structure": write_bead_pdb(root / "start.pdb", top, _lattice(0)),
            "other_structure": write_bead_pdb(root / "start2.pdb", top, _lattice(1))}


def _simulate(files, out, *extra, bundle="bundle", structure="structure"):
    return main(["simulate", "--bundle", str(files[bundle]), "--structure", str(files[structure]),
                 "--out", str(out), "--platform", "CPU", "--threads", "1", "--seed", "11",
                 "--report-interval", "5", "--temperature", "298.1", "--no-progress", "--resume", *extra])


def _snapshot(out):
    return {name: (out / name).read_bytes() for name in ("trajectory.dcd", "log.csv", "checkpoint.chk", "run.json")}


@pytest.mark.parametrize("extra, inputs, key", [
    (["--temperature", "310"], {}, "temperature_K"),
    (["--timestep", "1.0"], {}, "timestep_ps"),
    (["--report-interval", "2"], {}, "report_interval"),
    (["--seed", "12"], {}, "seed"),
    ([], {"bundle": "other_bundle"}, "inputs.bundle"),
    ([], {"structure": "other_structure"}, "inputs.structure"),
])
def test_resume_with_other_settings_is_refused(files, tmp_path, capsys, extra, inputs, key):
    out = tmp_path / "run"
    assert _simulate(files, out, "--steps", "10") == 0
    before = _snapshot(out)
    capsys.readouterr()
    # more steps asked for: without the check this would append frames made with other settings;
    # the same steps: without the check the finished run would be reported as done
    for steps in ("20", "10"):
        assert _simulate(files, out, "--steps", steps, *extra, **inputs) != 0
        err = capsys.readouterr().err
        assert "cannot resume" in err and key in err and "new output directory" in err
        assert _snapshot(out) == before  # nothing appended, nothing rewritten


def test_same_settings_extend_and_fewer_steps_are_refused(files, tmp_path, capsys):
    out = tmp_path / "run"
    assert _simulate(files, out, "--steps", "10") == 0
    assert _simulate(files, out, "--steps", "20") == 0  # same settings: continued
    assert read_log(out / "log.csv")["step"] == [0, 5, 10, 15, 20]
    fp = json.loads((out / "fingerprint.json").read_text())
    assert fp["settings"]["temperature_K"] == pytest.approx(298.1) and fp["settings"]["report_interval"] == 5
    assert json.loads((out / "run.json").read_text())["fingerprint"] == fp["digest"]
    before = _snapshot(out)
    capsys.readouterr()
    assert _simulate(files, out, "--steps", "10") != 0
    assert "has run 20 steps already" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_truncated_checkpoint_is_an_error(files, tmp_path, capsys):
    out = tmp_path / "run"
    assert _simulate(files, out, "--steps", "10") == 0
    chk = out / "checkpoint.chk"
    data = chk.read_bytes()
    for cut in (len(data) - 16, len(data) // 2):  # both load without an OpenMM error, velocities lost
        chk.write_bytes(data[:cut])
        log_before = (out / "log.csv").read_bytes()
        capsys.readouterr()
        assert _simulate(files, out, "--steps", "20") != 0
        assert "truncated or damaged" in capsys.readouterr().err
        assert (out / "log.csv").read_bytes() == log_before
    chk.write_bytes(data)  # the intact checkpoint resumes
    assert _simulate(files, out, "--steps", "20") == 0
    assert read_log(out / "log.csv")["step"] == [0, 5, 10, 15, 20]
