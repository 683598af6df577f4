"""A probe of bad input over every command and the Python API (issue 24): each case of the
TABLE runs ``cgkd`` in a fresh process and must end with ONE line ``cgkd COMMAND: error: ...``
on stderr (argparse's own errors may precede it with their usage lines), no traceback, and the
documented exit status (2 bad input, 1 a failed run). API cases must raise a package error
(:class:`~openmm_cgkd.errors.CGKDError`) with a one-line message.

Cases that stop before a model or torch is loaded run in CI; those that load a model, a
dataset or run MD are marked ``slow``.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from bad_pipeline_configs import CASES as PIPELINE_CASES
from bad_pipeline_configs import MODEL, save_datasets, sound_config, with_changes

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = ROOT / "systems" / "des" / "system.yaml"
BOX_NM = 1.5


# --------------------------------------------------------------------------- inputs
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every input the table refers to by name: a tiny bundle (and damaged copies), bead PDBs
    (good, coincident, Angstrom-scaled), a CG dataset (and a 41.84x too small copy), AA files,
    configs with one mistake each, a file where a directory is expected."""
    import shutil

    from openmm_cgkd.bundle import build_untrained_bundle, untrained_config
    from openmm_cgkd.bundle.manifest import MANIFEST_CHECKSUM, manifest_content_sha256
    from openmm_cgkd.topology import bead_topology_from_counts, write_bead_pdb

    d = tmp_path_factory.mktemp("probe")
    f: dict[str, Path] = {"dir": d}
    cfg = untrained_config(cutoff_nm=0.6, embedding_dim=8, num_layers=1, num_rbf=4, rbf_type="gauss",
                           max_num_neighbors=48)
    f["bundle"] = build_untrained_bundle(d / "bundle", cfg)

    def edited_bundle(name, fn, reseal):
        path = d / name
        shutil.copytree(f["bundle"], path)
        data = yaml.safe_load((path / "manifest.yaml").read_text())
        fn(data)
        if reseal:
            data["checksums"][MANIFEST_CHECKSUM] = manifest_content_sha256(data)
        (path / "manifest.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    f["edited_bundle"] = edited_bundle("edited", lambda m: m.update(description="hot"), reseal=False)
    f["light_bundle"] = edited_bundle("light", lambda m: m["bead_types"][0].update(mass_dalton=1e-6), reseal=True)

    g = (np.arange(3) + 0.5) * BOX_NM / 3
    pos = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    pos += np.random.default_rng(0).uniform(-0.05, 0.05, pos.shape)
    top = bead_topology_from_counts({"Cho": 7, "Cl": 7, "Urea": 13}, np.eye(3) * BOX_NM)
    f["pdb"] = write_bead_pdb(d / "start.pdb", top, pos)
    same = pos.copy()
    same[1] = same[0]
    f["coincident_pdb"] = write_bead_pdb(d / "coincident.pdb", top, same)
    f["angstrom_pdb"] = write_bead_pdb(d / "angstrom.pdb", top, pos * 10)

    f["dataset"], f["kcal_dataset"] = save_datasets(d)
    f["truncated_h5"] = d / "truncated.h5"
    f["truncated_h5"].write_bytes(f["dataset"].read_bytes()[:2000])

    f["a_file"] = d / "a_file"
    f["a_file"].write_text("not a directory\n")
    teachers = {"dataset": str(f["dataset"]), "out": str(d / "teachers"), "members": 1, "model": MODEL,
                "trainer": {"max_epochs": 1, "accelerator": "cpu", "num_threads": 1}}

    def config(name, base, **changes):
        data = yaml.safe_load(yaml.safe_dump(base))
        for key, value in changes.items():
            section, _, sub = key.partition(".")
            if sub:
                data[section] = {**data.get(section, {}), sub: value}
            else:
                data[section] = value
        path = d / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    f["t_precision"] = config("t_precision", teachers, **{"trainer.precision": "33"})
    f["t_threads"] = config("t_threads", teachers, **{"trainer.num_threads": 0})
    f["t_devices"] = config("t_devices", teachers, **{"trainer.devices": 0})
    f["t_strategy"] = config("t_strategy", teachers, **{"trainer.strategy": "dpp"})
    f["t_members"] = config("t_members", teachers, members="two")
    f["t_cutoff0"] = config("t_cutoff0", teachers, **{"model.cutoff_nm": 0})
    f["t_base"] = config("t_base", teachers, **{"model.base": "no-such-network"})
    f["t_wide_cutoff"] = config("t_wide_cutoff", teachers, **{"model.cutoff_nm": 1.2})
    f["t_kcal"] = config("t_kcal", teachers, dataset=str(f["kcal_dataset"]))
    f["t_out_file"] = config("t_out_file", teachers, out=str(f["a_file"]))
    student = {"dataset": str(f["dataset"]), "out": str(d / "student"), "variant": "ensemble-e-ft-faa",
               "trainer": {"max_epochs": 1, "accelerator": "cpu"}}
    f["s_precision"] = config("s_precision", student, **{"trainer.precision": "half"})
    f["s_unlabelled"] = config("s_unlabelled", student)
    pipeline = sound_config(d / "pipe", f["dataset"])
    paths = {"kcal": f["kcal_dataset"], "a_file": f["a_file"]}
    for case, changes, _, _ in PIPELINE_CASES:
        f[f"p_{case}"] = d / f"p_{case}.yaml"
        f[f"p_{case}"].write_text(yaml.safe_dump(with_changes(pipeline, changes, paths)))
    f["p_fresh"] = config("p_fresh", pipeline, out=str(d / "fresh"))

    text = SYSTEM.read_text().replace("opls-des.yaml", str(SYSTEM.parent / "opls-des.yaml")) \
        .replace("mapping.yaml", str(SYSTEM.parent / "mapping.yaml"))
    f["sys_typo"] = d / "sys_typo.yaml"
    f["sys_typo"].write_text(text.replace("temperature_K: 298.1", "temperture_K: 350"))
    f["sys_text"] = d / "sys_text.yaml"
    f["sys_text"].write_text(text.replace("box_nm: 4.484", "box_nm: wide"))
    f["trr_truncated"] = d / "t.trr"
    f["trr_truncated"].write_bytes(b"\x00\x00\x07\xc9" + b"\x00" * 40)
    return f


# --------------------------------------------------------------------------- the table
S = "slow"
SIM = ["simulate", "--bundle", "{bundle}", "--structure", "{pdb}", "--platform", "CPU", "--threads", "1",
       "--no-progress", "--steps", "20", "--report-interval", "5"]


def sim(*extra, out="sim_{case}"):
    return [*SIM, "--out", "{dir}/" + out, *extra]


# (case id, argv, exit code, text the error line holds, "slow" or "")
TABLE = [
    # ---- simulate / demo: options and files (checked before a model loads)
    ("sim-negative-steps", [*SIM[:-4], "--steps", "-1"], 2, "must be >= 0", ""),
    ("sim-inf-timestep", sim("--timestep", "inf"), 2, "finite number > 0", ""),
    ("sim-nan-temperature", sim("--temperature", "nan"), 2, "finite number > 0", ""),
    ("sim-missing-structure", [*SIM[:4], "{dir}/nope.pdb", *SIM[5:], "--out", "{dir}/o1"], 2, "not found", ""),
    ("sim-out-is-a-file", sim(out="a_file"), 2, "is a file, not a directory", ""),
    ("sim-interval-beyond-run", sim("--report-interval", "50"), 2, "longer than the run", ""),
    ("sim-resume-and-overwrite", sim("--resume", "--overwrite"), 2, "not both", ""),
    ("sim-unknown-platform", sim("--platform", "TPU"), 2, "unknown platform", ""),
    ("sim-cuda-graphs-on-cpu", sim("--cuda-graphs"), 2, "--cuda-graphs needs the CUDA platform", ""),
    ("demo-bad-steps", ["demo", "--steps", "many"], 2, "expected an integer", ""),
    ("start-structure-missing-dataset", ["start-structure", "--dataset", "{dir}/nope.h5", "--frame", "0", "--out",
                                         "{dir}/s.pdb"], 2, "not found", ""),
    ("start-structure-frame-out-of-range", ["start-structure", "--dataset", str(ROOT / "systems" / "des" / "reline_252_cg.h5"), "--frame",
                                            "99999", "--out", "{dir}/s.pdb"], 2, "the dataset has frames", ""),
    ("check-timestep-missing-structure", ["check-timestep", "--bundle", "{dir}/nobundle", "--structure",
                                          "{dir}/nope.pdb", "--timestep", "2"], 2, "not found", ""),
    # ---- simulate: what needs the model
    ("sim-missing-bundle", [*SIM[:2], "{dir}/nobundle", *SIM[3:], "--out", "{dir}/o2"], 2, "not found", S),
    ("sim-edited-manifest", [*SIM[:2], "{edited_bundle}", *SIM[3:], "--out", "{dir}/o3"], 2,
     "manifest.yaml was edited", S),
    ("sim-light-bead", [*SIM[:2], "{light_bundle}", *SIM[3:], "--out", "{dir}/o4"], 2, "at least 1 Da", S),
    ("sim-coincident-beads", [*SIM[:4], "{coincident_pdb}", *SIM[5:], "--out", "{dir}/o5"], 2,
     "0 nm apart", S),
    ("sim-coincident-minimize", [*SIM[:4], "{coincident_pdb}", *SIM[5:], "--out", "{dir}/o6", "--minimize"], 2,
     "0 nm apart", S),
    ("sim-angstrom", [*SIM[:4], "{angstrom_pdb}", *SIM[5:], "--out", "{dir}/o7"], 2, "Angstrom", S),
    # ---- training
    ("teachers-precision", ["train-teachers", "{t_precision}"], 2, "trainer.precision must be one of", ""),
    ("teachers-num-threads-0", ["train-teachers", "{t_threads}"], 2, "num_threads must be >= 1", ""),
    ("teachers-devices-0", ["train-teachers", "{t_devices}"], 2, "trainer.devices", ""),
    ("teachers-strategy", ["train-teachers", "{t_strategy}"], 2, "trainer.strategy must be one of", ""),
    ("teachers-members-two", ["train-teachers", "{t_members}"], 2, "members", ""),
    ("teachers-out-is-a-file", ["train-teachers", "{t_out_file}"], 2, "is a file, not a directory", ""),
    ("teachers-missing-config", ["train-teachers", "{dir}/none.yaml"], 2, "not found", ""),
    ("teachers-cutoff-0", ["train-teachers", "{t_cutoff0}"], 2, "cutoff", S),
    ("teachers-unknown-base", ["train-teachers", "{t_base}"], 2, "no model config 'no-such-network'", S),
    ("teachers-box-under-2-cutoffs", ["train-teachers", "{t_wide_cutoff}"], 2, "narrower than twice", S),
    ("teachers-kcal-forces", ["train-teachers", "{t_kcal}"], 2, "implausibly SMALL", S),
    ("teachers-truncated-h5", ["train-teachers", "{t_precision}", "--dataset", "{truncated_h5}"], 2,
     "trainer.precision", ""),
    ("student-precision", ["train-student", "{s_precision}"], 2, "trainer.precision must be one of", ""),
    ("student-unlabelled-dataset", ["train-student", "{s_unlabelled}"], 2, "no distillation labels", S),
    ("label-missing-teachers", ["label", "--dataset", "{dataset}", "--teachers", "{dir}/none"], 2, "not found", S),
    ("label-truncated-dataset", ["label", "--dataset", "{truncated_h5}", "--teachers", "{bundle}",
                                 "--out", "{dir}/l.h5"], 2, "", S),
    # ---- pipeline: one validation pass before any stage
    *[(f"pipeline-{case}", ["pipeline", "{p_" + case + "}"], 2, text, slow) for case, _, text, slow in PIPELINE_CASES],
    ("pipeline-only-md-fresh", ["pipeline", "{p_fresh}", "--only", "md"], 2, "have not run", S),
    ("pipeline-only-unknown", ["pipeline", "{p_fresh}", "--only", "mdd"], 2, "unknown stage", S),
    # ---- all-atom commands
    ("aa-run-system-typo", ["aa-run", "--system", "{sys_typo}", "--run-dir", "{dir}/aa1"], 2,
     "unknown key(s) ['temperture_K']", ""),
    ("aa-run-system-text", ["aa-run", "--system", "{sys_text}", "--run-dir", "{dir}/aa2"], 2,
     "box_nm must be a number", ""),
    ("aa-run-frame-not-whole-steps", ["aa-run", "--system", str(SYSTEM), "--run-dir", "{dir}/aa3", "--molecules",
                                      "100", "--frame-interval-ps", "0.0035", "--production-ps", "0.035"], 2,
     "not a whole number", ""),
    ("aa-run-dir-is-a-file", ["aa-run", "--system", str(SYSTEM), "--run-dir", "{a_file}"], 2, "is a file", ""),
    ("aa-build-system-typo", ["aa-build", "--system", "{sys_typo}", "--out", "{dir}/b.pdb"], 2, "unknown key", ""),
    ("map-truncated-trr", ["map", "--trajectory", "{trr_truncated}", "--topology", "{pdb}", "--out",
                           "{dir}/m.h5"], 2, "", S),
    # ---- analysis and benchmarks
    ("analyze-missing-trajectory", ["analyze", "--trajectory", "{dir}/none.dcd", "--topology", "{pdb}",
                                    "--reference", "{dataset}", "--out", "{dir}/an"], 2, "not found", S),
    ("benchmark-one-bead", ["benchmark", "--beads", "1", "--out", "{dir}/bench.json"], 2, "", ""),
]


def _run_cli(argv: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CGKD_DEBUG": ""}
    return subprocess.run([sys.executable, "-m", "openmm_cgkd.cli.main", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(ROOT))


def _run_in_process(argv: list[str], capsys) -> tuple[int, str]:
    """``cgkd argv`` in this process (argparse's errors exit through SystemExit): (status, stderr).
    A bug (any exception that is not a package error) propagates and fails the test."""
    from openmm_cgkd.cli.main import main

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return int(code), capsys.readouterr().err


@pytest.mark.parametrize("case,argv,code,text", [
    pytest.param(c, a, e, t, id=c, marks=[pytest.mark.slow] if s == S else []) for c, a, e, t, s in TABLE])
def test_bad_input_is_one_line_and_the_documented_exit_code(files, case, argv, code, text, capsys, request):
    """Fast cases run in this process; slow ones in a fresh process (a crash of OpenMM or torch,
    a segfault, shows there as a signal exit status)."""
    subs = {k: str(v) for k, v in files.items()} | {"case": case}
    argv = [a.format(**subs) for a in argv]
    if request.node.get_closest_marker("slow"):
        proc = _run_cli(argv)
        status, stderr = proc.returncode, proc.stderr
    else:
        status, stderr = _run_in_process(argv, capsys)
    err = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and "Segmentation" not in stderr, stderr[-3000:]
    assert status == code, (status, stderr[-2000:])
    assert err, "nothing on stderr"
    command = argv[0]
    last = err[-1]
    assert last.startswith(f"cgkd {command}: error: "), stderr[-2000:]
    assert text in last, last
    # the error is the one line, or argparse's usage lines then its line
    before = err[:-1]
    assert all(line.startswith(("usage:", " ")) for line in before), stderr[-2000:]


# --------------------------------------------------------------------------- the Python API
def _lattice():
    from openmm_cgkd.topology import bead_topology_from_counts

    g = (np.arange(3) + 0.5) * BOX_NM / 3
    pos = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    pos += np.random.default_rng(0).uniform(-0.05, 0.05, pos.shape)
    return bead_topology_from_counts({"Cho": 7, "Cl": 7, "Urea": 13}, np.eye(3) * BOX_NM), pos


def _api_positions_x10(ff):
    top, pos = _lattice()
    ff.create_simulation(top, pos * 10, platform="CPU", threads=1)


def _api_coincident(ff):
    top, pos = _lattice()
    pos[3] = pos[4]
    ff.create_simulation(top, pos, platform="CPU", threads=1)


def _api_inf_timestep(ff):
    top, pos = _lattice()
    ff.create_simulation(top, pos, platform="CPU", threads=1, timestep_fs=math.inf)


def _api_negative_friction(ff):
    top, pos = _lattice()
    ff.create_simulation(top, pos, platform="CPU", threads=1, friction_per_ps=-1.0)


def _api_length_as_timestep(ff):
    from openmm import unit

    top, pos = _lattice()
    ff.create_simulation(top, pos, platform="CPU", threads=1, timestep_fs=2 * unit.nanometer)


def _api_nan_positions(ff):
    top, pos = _lattice()
    pos[0, 0] = np.nan
    ff.create_simulation(top, pos, platform="CPU", threads=1)


def _api_wrong_count(ff):
    top, pos = _lattice()
    ff.create_simulation(top, pos[:-1], platform="CPU", threads=1)


def _api_small_box(ff):
    top, pos = _lattice()
    ff.create_simulation(top, pos, box_vectors=[0.5, 0.5, 0.5], platform="CPU", threads=1)


def _api_report_beyond_run(ff, tmp_path):
    from openmm_cgkd.md.simulation import run_simulation

    top, pos = _lattice()
    # the untrained bundle records no temperature: give one, so the report interval is what is refused
    run_simulation(ff.create_simulation(top, pos, temperature=298.1, platform="CPU", threads=1), 10,
                   tmp_path / "r", report_interval=50, progress=False)


API = [("positions-x10", _api_positions_x10, "Angstrom"), ("coincident", _api_coincident, "apart"),
       ("inf-timestep", _api_inf_timestep, "finite"), ("negative-friction", _api_negative_friction, "friction"),
       ("length-as-timestep", _api_length_as_timestep, "timestep must be in fs"),
       ("nan-positions", _api_nan_positions, "NaN"), ("wrong-count", _api_wrong_count, "mismatch"),
       ("small-box", _api_small_box, "twice the cutoff"),
       ("report-beyond-run", _api_report_beyond_run, "longer than the run")]


@pytest.mark.slow
@pytest.mark.parametrize("case,call,text", API, ids=[a[0] for a in API])
def test_api_bad_input_is_a_one_line_package_error(files, tmp_path, case, call, text):
    import inspect

    from openmm_cgkd.errors import CGKDError
    from openmm_cgkd.serving.forcefield import CGKDForceField

    ff = CGKDForceField(files["bundle"])
    with pytest.raises(CGKDError) as err:
        call(ff, tmp_path) if len(inspect.signature(call).parameters) == 2 else call(ff)
    assert text in str(err.value) and "\n" not in str(err.value).strip()


def test_the_probe_covers_every_command():
    from openmm_cgkd.cli.main import build_parser

    parser = build_parser()
    commands = set(next(a for a in parser._actions if a.dest == "command").choices)
    probed = {argv[0] for _, argv, _, _, _ in TABLE}
    assert commands - probed == set(), f"commands without a bad-input case: {sorted(commands - probed)}"
    assert len(TABLE) + len(API) >= 50
