"""AA run directories written before the MD engine was shared (openmm_cgkd/md/restart.py) resume
with today's code: the frozen run in tests/continuity/data/aa_run_v1, and the reference run in
systems/des/aa_reline_252 (read only: its restart set is copied under its lock, nothing is run there)."""
import fcntl
import json
import re
import shlex
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from openmm_cgkd.data.aamd import Protocol, RunError, check_resume, read_mapped, run_aa
from openmm_cgkd.data.mapping import MappingSpec
from openmm_cgkd.data.systemdef import SystemDefinition

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "continuity" / "data" / "aa_run_v1"
REAL = ROOT / "systems" / "des" / "aa_reline_252"
RESTART_SET = ("run.json", "progress.json", "state.xml", "checkpoint.chk")


def _fixture_inputs():
    """The system, protocol and mapping tests/continuity/data/aa_run_v1/README.md names."""
    sysdef = SystemDefinition.from_yaml(ROOT / "systems" / "des" / "system.yaml").resized(40)
    sysdef.cutoff_nm = 0.7
    proto = Protocol(timestep_fs=4.0, hydrogen_mass_da=3.0, anneal_ps=0.2, anneal_temperature_K=400.0,
                     equilibration_ps=0.4, production_ps=1.2, frame_interval_ps=0.08, checkpoint_every_frames=4,
                     equilibration_chunk_ps=0.2, seed=11)
    return sysdef, proto, MappingSpec.from_yaml(ROOT / "systems" / "des" / "mapping.yaml")


def _h5_layout(path):
    with h5py.File(path, "r") as h5:
        return {k: (h5[k].dtype.str, h5[k].shape[1:]) for k in h5}


def test_old_run_directory_resumes_to_the_uninterrupted_result(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run, ignore=shutil.ignore_patterns("*.npz", "*.md"))
    before = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    old_progress_keys = set(json.loads(before["progress.json"]))
    sysdef, proto, mapping = _fixture_inputs()
    lines = []
    summary = run_aa(run, sysdef, proto, None, platform="CPU", threads=1, progress=False, mapping=mapping,
                     log=lines.append)
    resumed = next(line for line in lines if line.startswith("resuming"))
    assert "at step 270 (6 frames written; from " in resumed
    assert summary["finished"] and summary["frames"] == 15 and summary["step"] == 450

    # what the old code wrote is kept as it was: run.json, start.pdb and the committed mapped parts
    for name in ("run.json", "start.pdb", "cg/part_0000000.h5", "cg/part_0000004.h5"):
        assert (run / name).read_bytes() == before[name], name
    # the new parts and records have the old layout
    assert _h5_layout(run / "cg" / "part_0000006.h5") == _h5_layout(run / "cg" / "part_0000000.h5")
    new_progress = json.loads((run / "progress.json").read_text())
    assert set(new_progress) == old_progress_keys and new_progress["step"] == 450 and new_progress["frames"] == 15
    assert sorted(p.name for p in (run / "cg").glob("part_*.h5")) == [
        f"part_{k:07d}.h5" for k in (0, 4, 6, 10, 14)]  # the 6-frame stop left a 2-frame part; then 4, 4, 1

    ds = read_mapped(run)
    ref = np.load(FIXTURE / "uninterrupted_cg.npz")
    assert ds.n_frames == 15 and len(np.unique(ds.times)) == 15
    np.testing.assert_allclose(ds.times, ref["times"], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(ds.positions[:6], read_mapped(FIXTURE).positions)
    if "from checkpoint.chk" in resumed:  # the exact continuation (same OpenMM, platform and hardware)
        np.testing.assert_allclose(ds.positions, ref["positions"], rtol=0, atol=1e-4)
    else:  # another machine: OpenMM's checkpoint is not portable, state.xml continued the run
        assert "from state.xml" in resumed


def test_old_run_directory_refuses_a_changed_protocol(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    sysdef, proto, mapping = _fixture_inputs()
    proto.temperature_K = 310.0
    with pytest.raises(RunError, match=r"different protocol \(temperature_K: 298\.1 -> 310\.0\)"):
        check_resume(run, sysdef, proto, mapping)
    proto.temperature_K, proto.production_ps = 298.1, 2.4  # a longer production is allowed
    assert check_resume(run, sysdef, proto, mapping)["protocol"]["seed"] == 11


def _copy_restart_set(dst: Path) -> None:
    """The reference run's restart set as one consistent snapshot: under a shared lock on its
    .lock (the writer holds it exclusively while it replaces the set)."""
    dst.mkdir()
    lock = REAL / ".lock"
    fh = open(lock) if lock.exists() else None
    try:
        if fh is not None:
            fcntl.flock(fh, fcntl.LOCK_SH)
        for name in RESTART_SET:
            shutil.copyfile(REAL / name, dst / name)
        if (REAL / "cg").is_dir():
            shutil.copytree(REAL / "cg", dst / "cg")
    finally:
        if fh is not None:
            fh.close()


def _script_arguments():
    """The `cgkd aa-run` arguments of systems/des/make_reline_252.sh, which resumes the run."""
    text = (ROOT / "systems" / "des" / "make_reline_252.sh").read_text()
    cmd = re.search(r"uv run (?:--quiet )?cgkd (aa-run .*?)>>", text, re.S).group(1)
    return shlex.split(cmd.replace("\\\n", " ").replace('"$RUN"', str(REAL.relative_to(ROOT))))


def test_reference_run_resumes_with_this_code(tmp_path, monkeypatch):
    """The script's command, parsed and checked as `cgkd aa-run` does, accepts the committed run;
    its restart state loads at the recorded step; read_mapped reads its committed frames."""
    import openmm as mm

    from openmm_cgkd.cli import aa as cli_aa
    from openmm_cgkd.cli.main import build_parser
    from openmm_cgkd.data import aamd
    from openmm_cgkd.data.opls import build_topology, create_system
    from openmm_cgkd.fileio import read_json

    snap = tmp_path / "snap"
    _copy_restart_set(snap)
    monkeypatch.chdir(ROOT)  # the script runs from the repository root
    args = build_parser().parse_args(_script_arguments())
    sysdef = cli_aa._load_system(args)
    protocol = cli_aa._protocol(args, sysdef)
    mapping = MappingSpec.from_yaml(sysdef.mapping_path)
    meta = check_resume(snap, sysdef, protocol, mapping)
    assert meta["system"]["composition"] == {"choline": 63, "cl": 63, "urea": 126}

    top = build_topology(sysdef.forcefield, sysdef.composition, sysdef.box_vectors())
    system = create_system(sysdef.forcefield, top, cutoff_nm=sysdef.cutoff_nm, constraints=sysdef.constraints)
    aamd.repartition_hydrogen_masses(system, top, protocol.hydrogen_mass_da)
    plat, props = aamd.select_platform(args.platform, 1)
    ctx = mm.Context(system, aamd._make_integrator(protocol, protocol.temperature_K), plat, props)
    prog = read_json(snap / "progress.json")
    source = aamd._restore(ctx, snap, prog, protocol)
    assert source in ("checkpoint.chk", "state.xml") and ctx.getStepCount() == prog["step"] > 0
    v = ctx.getState(getVelocities=True).getVelocities(asNumpy=True)._value
    assert np.all(np.isfinite(v)) and np.abs(v).max() > 0

    if prog["frames"] > 0:
        ds = read_mapped(snap)
        assert ds.n_frames == prog["frames"] and ds.n_beads == 252 and ds.type_names == ["Cho", "Cl", "Urea"]
    else:
        with pytest.raises(RunError, match="no committed mapped frames yet"):
            read_mapped(snap)
