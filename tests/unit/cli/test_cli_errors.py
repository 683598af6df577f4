"""One error style for every `cgkd` command: `cgkd COMMAND: error: ...` on stderr, exit 2 for bad
usage / input, 1 for a failed run, no traceback (unless --debug), checked before expensive work;
a fast, torch-free parser; `--platform auto` everywhere."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from openmm_cgkd.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[3]
SYSTEM = str(ROOT / "systems" / "des" / "system.yaml")
MAPPING = str(ROOT / "systems" / "des" / "mapping.yaml")


def _fails(capsys, argv, code, *words):
    """`cgkd argv` exits with ``code`` (argparse's SystemExit or main's return value) and prints
    one `cgkd COMMAND: error:` line naming ``words``, without a traceback."""
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse: bad option values
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == code, err
    assert f"cgkd {argv[0]}: error:" in err, err
    assert "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)
    return err


# ------------------------------------------------------------------------------ the handler

def test_package_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys):
    import openmm_cgkd.cli.pipeline as cli_pipeline
    from openmm_cgkd.training.config import ConfigError

    def bad_config(args):
        raise ConfigError("unknown key 'membrs'; did you mean 'members'?")

    monkeypatch.setattr(cli_pipeline, "_run", bad_config)
    _fails(capsys, ["pipeline", "x.yaml"], 2, "unknown key 'membrs'")
    # --debug (before or after the command) adds the traceback, same exit code
    for argv in (["--debug", "pipeline", "x.yaml"], ["pipeline", "x.yaml", "--debug"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and "cgkd pipeline: error: unknown key" in err

    def bug(args):
        raise ValueError("a bug, not a user error")

    monkeypatch.setattr(cli_pipeline, "_run", bug)
    with pytest.raises(ValueError, match="a bug"):  # never swallowed as a user error
        main(["pipeline", "x.yaml"])


def test_parser_imports_nothing_heavy():
    """`cgkd --help` builds every sub-parser without torch, numpy or OpenMM (so it answers at once;
    no timing here: a loaded machine would fail a time limit, and speed belongs in benchmarks)."""
    code = ("import sys; from openmm_cgkd.cli.main import build_parser; build_parser(); "
            "print([m for m in ('torch', 'numpy', 'openmm', 'mdtraj', 'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out


def test_platform_option_accepts_auto_everywhere():
    parser = build_parser()
    for argv in (["simulate", "--bundle", "b", "--structure", "s.pdb"], ["demo"], ["benchmark"],
                 ["aa-build", "--out", "x.pdb"], ["aa-run", "--run-dir", "r"]):
        for given, want in (("auto", "auto"), ("AUTO", "auto"), ("cpu", "CPU"), ("Reference", "Reference")):
            assert parser.parse_args([*argv, "--platform", given]).platform == want, argv


def test_one_platform_chooser_for_aa_cg_benchmark_and_cli():
    """AA runs (data.aamd), CG runs and the CLI share one chooser (openmm_cgkd/platforms.py); auto = CUDA when usable, else CPU."""
    import openmm_cgkd.data.aamd as aamd
    from openmm_cgkd.errors import PlatformError
    from openmm_cgkd.platforms import available_platforms, cuda_usable, default_platform_name, select_platform

    assert aamd.select_platform is select_platform
    assert default_platform_name() == ("CUDA" if cuda_usable() else "CPU")
    plat, props = select_platform("auto", 2)  # unpacks as (platform, context properties)
    assert plat.getName() == default_platform_name()
    assert props == ({"Threads": "2"} if plat.getName() == "CPU" else {})  # threads only mean something on CPU
    assert select_platform("cpu").name == "CPU"
    if "CUDA" not in available_platforms():
        with pytest.raises(PlatformError, match="not available here"):
            select_platform("CUDA")


# ------------------------------------------------------------------------------ simulate / demo

@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from openmm_cgkd.bundle import build_untrained_bundle, untrained_config

    cfg = untrained_config(cutoff_nm=0.6, embedding_dim=8, num_layers=1, num_rbf=4, rbf_type="gauss",
                           max_num_neighbors=48)
    return build_untrained_bundle(tmp_path_factory.mktemp("b") / "tiny", cfg)


def _lattice(box_nm=1.5):
    g = (np.arange(3) + 0.5) * box_nm / 3
    pos = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    return pos + np.random.default_rng(0).uniform(-0.05, 0.05, pos.shape)


@pytest.fixture(scope="module")
def structures(tmp_path_factory):
    from openmm_cgkd.topology import bead_topology_from_counts, write_bead_pdb

    d = tmp_path_factory.mktemp("s")
    counts = {"Cho": 7, "Cl": 7, "Urea": 13}
    pos = _lattice()
    good = write_bead_pdb(d / "start.pdb", bead_topology_from_counts(counts, np.eye(3) * 1.5), pos)
    ang = write_bead_pdb(d / "angstrom.pdb", bead_topology_from_counts(counts, np.eye(3) * 15.0), pos * 10)
    (d / "empty.pdb").write_text("")
    (d / "noatoms.pdb").write_text("REMARK nothing\nEND\n")
    (d / "afile").write_text("x")
    lines = good.read_text().splitlines(True)

    def cryst(a, b, c, alpha, beta, gamma, name):
        rec = f"CRYST1{a:9.3f}{b:9.3f}{c:9.3f}{alpha:7.2f}{beta:7.2f}{gamma:7.2f} P 1           1\n"
        (d / name).write_text("".join(rec if ln.startswith("CRYST1") else ln for ln in lines))
        return d / name

    return {"good": good, "angstrom": ang, "empty": d / "empty.pdb", "noatoms": d / "noatoms.pdb",
            "afile": d / "afile", "triclinic": cryst(15, 15, 15, 70, 80, 60, "tric.pdb"),
            "thin": cryst(15, 15, 15, 30, 90, 90, "thin.pdb"), "dir": d}


def _sim(bundle, structure, out, *extra):
    return ["simulate", "--bundle", str(bundle), "--structure", str(structure), "--out", str(out),
            "--platform", "CPU", "--steps", "2", "--report-interval", "1", "--temperature", "298.1", "--no-progress",
            *extra]


@pytest.mark.parametrize("extra,words", [
    (["--threads", "0"], ["argument --threads: must be >= 1, got 0"]),
    (["--checkpoint-interval", "-5"], ["argument --checkpoint-interval: must be >= 1, got -5"]),
    (["--steps", "-1"], ["argument --steps: must be >= 0"]),
    (["--report-interval", "0"], ["argument --report-interval"]),
    (["--timestep", "0"], ["argument --timestep"]),
    (["--temperature", "nan"], ["argument --temperature"]),
    (["--platform", "bogus"], ["unknown platform 'bogus'"]),
])
def test_simulate_bad_options_are_refused_while_parsing(bundle, structures, tmp_path, capsys, extra, words):
    _fails(capsys, _sim(bundle, structures["good"], tmp_path / "o", *extra), 2, *words)
    assert not (tmp_path / "o").exists()  # refused before anything ran


def test_simulate_bad_files(bundle, structures, tmp_path, capsys):
    s = structures
    _fails(capsys, _sim(bundle, s["good"], s["afile"]), 2, "is a file, not a directory")
    _fails(capsys, _sim(bundle, s["empty"], tmp_path / "o"), 2, "holds no atoms")
    _fails(capsys, _sim(bundle, s["noatoms"], tmp_path / "o"), 2, "holds no atoms")
    _fails(capsys, _sim(bundle, tmp_path / "nope.pdb", tmp_path / "o"), 2, "structure file not found")
    _fails(capsys, _sim(tmp_path / "no-bundle", s["good"], tmp_path / "o"), 2, "model bundle not found")
    # a triclinic CRYST1 box runs; one too thin for the cutoff is a clear error
    assert main(_sim(bundle, s["triclinic"], tmp_path / "tric")) == 0
    capsys.readouterr()
    _fails(capsys, _sim(bundle, s["thin"], tmp_path / "o"), 2, "at least twice the cutoff")


def test_positions_in_angstrom_are_refused(bundle, structures, tmp_path, capsys):
    """Angstrom values read as nm (box x10): the beads would run as isolated particles."""
    from openmm_cgkd.serving.forcefield import CGKDForceField, ServingError
    from openmm_cgkd.topology import read_bead_pdb

    _fails(capsys, _sim(bundle, structures["angstrom"], tmp_path / "o"), 2, "Angstrom", "4.5")
    ff = CGKDForceField(bundle)
    top, pos, box = read_bead_pdb(structures["angstrom"])
    with pytest.raises(ServingError, match="Angstrom"):
        ff.create_simulation(top, pos, box_vectors=box, temperature=298.1, platform="Reference")
    top, pos, box = read_bead_pdb(structures["good"])  # the same beads in nm run
    assert ff.create_simulation(top, pos, box_vectors=box, temperature=298.1, platform="Reference").context is not None


@pytest.mark.skipif(__import__("openmm_cgkd.platforms", fromlist=["x"]).available_platforms().count("CUDA"),
                    reason="this machine has the CUDA platform")
def test_cuda_without_a_gpu(bundle, structures, tmp_path, capsys):
    _fails(capsys, _sim(bundle, structures["good"], tmp_path / "o", "--platform", "cuda"), 2,
           "platform 'CUDA' is not available here")


def test_simulate_option_combinations(bundle, structures, tmp_path, capsys):
    _fails(capsys, _sim(bundle, structures["good"], tmp_path / "o", "--compile"), 2, "--backend python")
    _fails(capsys, _sim(bundle, structures["good"], tmp_path / "o", "--cuda-graphs"), 2, "needs the CUDA platform")


# ------------------------------------------------------------------------------ aa-build / aa-run

def test_aa_build_molecule_counts(tmp_path, capsys):
    from openmm_cgkd.data.systemdef import SystemDefinition
    from openmm_cgkd.errors import UsageError

    out = tmp_path / "b.pdb"
    _fails(capsys, ["aa-build", "--molecules", "0", "--out", str(out)], 2, "must be >= 1, got 0")
    _fails(capsys, ["aa-build", "--molecules", "3", "--out", str(out)], 2,
           "3 molecules cannot keep the composition", "nearest sizes that keep it: 4")
    _fails(capsys, ["aa-build", "--molecules", "250", "--out", str(out)], 2, "248, 252")
    assert not out.exists()
    sysdef = SystemDefinition.from_yaml(SYSTEM)
    assert sysdef.resized(n_molecules=252).composition == {"choline": 63, "cl": 63, "urea": 126}
    assert sum(sysdef.resized(n_molecules=4).composition.values()) == 4
    with pytest.raises(UsageError, match="nearest sizes"):
        sysdef.resized(n_molecules=3)


def test_aa_build_bad_files(tmp_path, capsys):
    _fails(capsys, ["aa-build", "--system", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "b.pdb")], 2,
           "system definition (--system) not found")
    _fails(capsys, ["aa-build", "--molecules", "40", "--out", str(tmp_path)], 2, "is a directory")
    _fails(capsys, ["aa-build", "--molecules", "40", "--out", str(tmp_path / "b.txt")], 2, "expected a .pdb")
    bad = tmp_path / "bad.yaml"
    bad.write_text("forcefield: opls-des.yaml\ncomposition: {water: 10}\nbox_nm: 2\n")
    _fails(capsys, ["aa-build", "--system", str(bad), "--out", str(tmp_path / "b.pdb")], 2,
           "missing key(s) ['temperature_K']")
    bad.write_text("forcefield: opls-des.yaml\ncomposition: {water: 10}\nbox_nm: 2\ntemperature_K: 300\n")
    (tmp_path / "opls-des.yaml").write_text((ROOT / "systems" / "des" / "opls-des.yaml").read_text())
    _fails(capsys, ["aa-build", "--system", str(bad), "--out", str(tmp_path / "b.pdb")], 2,
           "molecule(s) ['water']")


@pytest.mark.parametrize("extra,words", [
    (["--temperature", "0"], ["argument --temperature"]),
    (["--friction", "0"], ["argument --friction"]),
    (["--frame-interval-ps", "0"], ["argument --frame-interval-ps"]),
    (["--frame-interval-ps", "0.0001"], ["frame interval must be at least one time step"]),
    (["--hydrogen-mass", "9"], ["hydrogen mass must lie in [1, 4.5]"]),
    (["--checkpoint-every", "0"], ["argument --checkpoint-every"]),
    (["--threads", "0"], ["argument --threads"]),
])
def test_aa_run_bad_protocol(tmp_path, capsys, extra, words):
    run = tmp_path / "run"
    _fails(capsys, ["aa-run", "--molecules", "40", "--run-dir", str(run), "--no-mapping", *extra], 2, *words)
    assert not run.exists()


def test_aa_run_mismatched_structure_and_changed_protocol(structures, tmp_path, capsys):
    from dataclasses import asdict

    from openmm_cgkd.data.aamd import Protocol

    run = tmp_path / "run"
    _fails(capsys, ["aa-run", "--molecules", "40", "--run-dir", str(run), "--structure", str(structures["good"]),
                    "--no-mapping"], 2, "has 27 atoms", "aa-build")
    assert not (run / "run.json").exists()  # nothing written: a corrected rerun starts cleanly
    _fails(capsys, ["aa-run", "--molecules", "40", "--run-dir", str(run), "--structure", str(tmp_path / "x.pdb")], 2,
           "not found")
    _fails(capsys, ["aa-run", "--molecules", "40", "--run-dir", str(structures["afile"])], 2, "is a file")
    # a run directory started with another protocol: refused before any MD
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"protocol": asdict(Protocol(temperature_K=350.0)),
                                              "system": {"composition": {}, "box_nm": 1.0}, "masses": []}))
    _fails(capsys, ["aa-run", "--molecules", "40", "--run-dir", str(run), "--no-mapping", "--cutoff", "0.7",
                    "--platform", "CPU", "--threads", "1"], 1, "different protocol", "temperature_K")


# ------------------------------------------------------------------------------ map

@pytest.fixture(scope="module")
def aa_files(tmp_path_factory):
    """A small reline topology (PDB), a DCD of 3 frames, liquid-sized forces (kJ/mol/nm)."""
    import mdtraj as md

    from openmm_cgkd.data.build import write_pdb
    from openmm_cgkd.data.opls import build_topology, load_forcefield

    d = tmp_path_factory.mktemp("aa")
    ff = load_forcefield(ROOT / "systems" / "des" / "opls-des.yaml")
    comp, L = {"choline": 2, "cl": 2, "urea": 4}, 1.4
    top = build_topology(ff, comp, box_nm=L)
    rng = np.random.default_rng(3)
    x0 = np.vstack([ff.molecules[k].coordinates - ff.molecules[k].coordinates.mean(0) + rng.uniform(0, L, 3)
                    for k, n in comp.items() for _ in range(n)])
    pdb = write_pdb(d / "top.pdb", top, x0)
    xyz = np.repeat(x0[None], 3, 0) + rng.normal(0, 0.01, (3, len(x0), 3))
    md.Trajectory(xyz, md.load_topology(str(pdb)), unitcell_lengths=np.full((3, 3), L),
                  unitcell_angles=np.full((3, 3), 90.0)).save_dcd(str(d / "t.dcd"))
    forces = rng.normal(0, 700.0, xyz.shape)
    np.save(d / "f.npy", forces)
    np.save(d / "f_kcal.npy", forces / 41.84)  # kcal/mol/A
    np.save(d / "f_2d.npy", forces[:, :, 0])
    (d / "garbage.npy").write_text("not numpy")
    (d / "garbage.pdb").write_text("nothing to read\n")
    (d / "masses.txt").write_text("1 2 x\n")
    np.save(d / "m.npy", [a.element.mass for a in md.load_topology(str(pdb)).atoms])  # test data: all-atom
    (d / "bad_mapping.yaml").write_text("type_names: [A]\nresidues: {CHOL: [{type: B, atoms: all}]}\n")
    (d / "notyaml.yaml").write_text("type_names: [A\n")
    (d / "rundir").mkdir()
    (d / "rundir2").mkdir()
    (d / "rundir2" / "run.json").write_text("{not json")
    return d


def _map(d, *extra, out=None):
    times = ["--timestep-ps", "0.5"] if "--trajectory" in extra else []
    masses = ["--masses", "m.npy"] if "--trajectory" in extra and "--masses" not in extra else []
    return ["map", "--out", str(out or d / "o.h5"), *times, *masses, "--mapping", MAPPING, *extra]


@pytest.mark.parametrize("extra,code,words", [
    ([], 2, ["exactly one of --run-dir or --trajectory"]),
    (["--run-dir", "R", "--trajectory", "T"], 2, ["exactly one"]),
    (["--trajectory", "t.dcd"], 2, ["needs --topology"]),
    (["--trajectory", "missing.dcd", "--topology", "top.pdb"], 2, ["trajectory (--trajectory) not found"]),
    (["--trajectory", "t.dcd", "--topology", "missing.pdb"], 2, ["topology (--topology) not found"]),
    (["--trajectory", "t.dcd", "--topology", "top.pdb", "--forces", "missing.npy"], 2, ["not found"]),
    (["--trajectory", "t.dcd", "--topology", "top.pdb", "--forces", "f.npy", "--masses", "missing.txt"], 2,
     ["not found"]),
    (["--trajectory", "t.dcd", "--topology", "top.pdb"], 2, ["carries no forces"]),
    (["--trajectory", "t.dcd", "--topology", "top.pdb", "--forces", "garbage.npy"], 2, ["could not read forces"]),
    (["--trajectory", "t.dcd", "--topology", "top.pdb", "--forces", "f_2d.npy"], 2, ["(frames, atoms, 3)"]),
    (["--trajectory", "t.dcd", "--topology", "garbage.pdb", "--forces", "f.npy"], 2, ["could not read"]),
    (["--trajectory", "garbage.pdb", "--topology", "top.pdb", "--forces", "f.npy"], 2, ["could not read"]),
    (["--trajectory", "t.dcd", "--topology", "top.pdb", "--forces", "f.npy", "--masses", "masses.txt"], 2,
     ["could not read masses"]),
    (["--trajectory", "t.dcd", "--topology", "top.pdb", "--forces", "f_kcal.npy"], 2, ["41.84x too small"]),
    (["--trajectory", "t.dcd", "--topology", "top.pdb", "--force-unit", "kcal/mol/A"], 2, ["--forces"]),
    (["--run-dir", "missing-dir"], 2, ["no such directory"]),
    (["--run-dir", "rundir"], 2, ["not an aa-run directory"]),
    (["--run-dir", "rundir2"], 2, ["is not the run.json"]),
    (["--run-dir", "rundir", "--topology", "top.pdb"], 2, ["--topology goes with --trajectory"]),
    (["--trajectory", "t.dcd", "--topology", "top.pdb", "--forces", "f.npy", "--mapping", "bad_mapping.yaml"], 2,
     ["bead type 'B'"]),
    (["--trajectory", "t.dcd", "--topology", "top.pdb", "--forces", "f.npy", "--mapping", "notyaml.yaml"], 2,
     ["not valid YAML"]),
    (["--trajectory", "t.dcd", "--topology", "top.pdb", "--forces", "f.npy", "--stride", "0"], 2, ["--stride"]),
])
def test_map_bad_input(aa_files, capsys, monkeypatch, extra, code, words):
    monkeypatch.chdir(aa_files)
    argv = _map(aa_files, *extra)
    if "--mapping" in extra:  # the case's own mapping replaces the default
        i = argv.index("--mapping")
        del argv[i:i + 2]
    _fails(capsys, argv, code, *words)
    assert not (aa_files / "o.h5").exists()


def test_map_output_names_and_a_good_run(aa_files, capsys, monkeypatch):
    from openmm_cgkd.data.dataset import CGDataset

    monkeypatch.chdir(aa_files)
    good = ["--trajectory", "t.dcd", "--topology", "top.pdb", "--forces", "f.npy"]
    _fails(capsys, _map(aa_files, *good, out=aa_files), 2, "is a directory")
    _fails(capsys, _map(aa_files, *good, out=aa_files / "o.txt"), 2, "expected a .h5")
    assert main(_map(aa_files, *good)) == 0  # the same inputs, corrected, map
    ds = CGDataset.load(aa_files / "o.h5")
    assert ds.n_frames == 3 and ds.n_beads == 8
    # the kcal/mol/A forces declared as such give the same dataset
    assert main(_map(aa_files, "--trajectory", "t.dcd", "--topology", "top.pdb", "--forces", "f_kcal.npy",
                     "--force-unit", "kcal/mol/A", out=aa_files / "o2.h5")) == 0
    np.testing.assert_allclose(CGDataset.load(aa_files / "o2.h5").forces, ds.forces, rtol=1e-4, atol=1e-3)


def test_map_never_takes_masses_from_elements(aa_files, capsys, monkeypatch):
    """A .pdb topology carries no masses: without --masses (or a .top, or a ForceReporter file) one line."""
    monkeypatch.chdir(aa_files)
    argv = ["map", "--out", str(aa_files / "o3.h5"), "--timestep-ps", "0.5", "--mapping", MAPPING,
            "--trajectory", "t.dcd", "--topology", "top.pdb", "--forces", "f.npy"]
    _fails(capsys, argv, 2, "no atom masses", "never taken from elements", "--masses")
    assert not (aa_files / "o3.h5").exists()


# ------------------------------------------------------------------------------ training

def test_gpu_asked_for_without_one(capsys):
    import torch

    from openmm_cgkd.errors import PlatformError
    from openmm_cgkd.training.devices import check_accelerator, torch_device

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(PlatformError, match="torch sees no CUDA GPU"):
        check_accelerator("gpu")
    with pytest.raises(PlatformError, match="asks for a CUDA GPU but torch sees none"):
        torch_device("cuda")
    with pytest.raises(PlatformError, match="not a torch device"):
        torch_device("gpu0")
    check_accelerator("auto")
    assert torch_device("auto").type == "cpu" and torch_device("cpu").type == "cpu"
    _fails(capsys, ["label", "--dataset", "x.h5", "--teachers", "t", "--device", "cuda"], 2,
           "asks for a CUDA GPU but torch sees none")
    _fails(capsys, ["train-teachers", str(Path(__file__).parent / "nonexistent.yaml")], 2, "config file not found")


def test_train_with_a_gpu_accelerator_without_a_gpu(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg = tmp_path / "t.yaml"
    cfg.write_text("dataset: x.h5\ntrainer: {accelerator: gpu}\n")
    _fails(capsys, ["train-teachers", str(cfg)], 2, "trainer.accelerator is 'gpu' but torch sees no CUDA GPU")
    _fails(capsys, ["train-student", str(cfg), "--accelerator", "cuda"], 2, "torch sees no CUDA GPU")


def test_train_config_errors(tmp_path, capsys):
    _fails(capsys, ["train-teachers", str(tmp_path / "none.yaml")], 2, "config file not found")
    cfg = tmp_path / "t.yaml"
    cfg.write_text("dataset: x.h5\nmembrs: 2\n")
    _fails(capsys, ["train-teachers", str(cfg)], 2, "membrs")
    cfg.write_text("dataset: x.h5\n")
    _fails(capsys, ["train-teachers", str(cfg), "--members", "0"], 2, "argument --members")
    _fails(capsys, ["train-student", str(cfg), "--accelerator", "tpu"], 2, "argument --accelerator")


def test_pipeline_modes_are_exclusive(capsys):
    """--status, --interim, --sweep and --only: one at a time (checked before the config is read)."""
    for extra in (["--status", "--interim"], ["--sweep", "--only", "md"], ["--interim", "--only", "report"]):
        _fails(capsys, ["pipeline", "no-such.yaml", *extra], 2, "give at most one of --status, --interim")


def test_commands_taking_a_system_name_accept_the_dipeptide(capsys, tmp_path):
    """`--system dipeptide` is a registered system: `cgkd map` takes its mapping (and then wants
    the run directory); `cgkd benchmark` says that a system without a box needs a structure."""
    _fails(capsys, ["map", "--system", "dipeptide", "--run-dir", str(tmp_path / "none"), "--out",
                    str(tmp_path / "d.h5")], 2, "--run-dir", "no such directory")
    _fails(capsys, ["benchmark", "--system", "dipeptide", "--beads", "6", "--models", "student"], 2,
           "system dipeptide is not periodic", "structure")
    _fails(capsys, ["benchmark", "--system", "nosuch"], 2, "no system 'nosuch'", "dipeptide")
