"""docs/own_system.md, tried end to end on a system that is not the DES: a small box of TIP3P
water (OpenMM's force field XML) recorded with ForceReporter in a user's own OpenMM script, then
the guide's commands in order: map (a mapping written with GROMACS' residue name SOL), teachers
on a frame window, labels, student, start structure, simulate (at the data's temperature, taken
from the bundle), analyze (ADF cutoffs from the data's g(r), the thermal part of the verdict).
Tiny models and few epochs: it checks that the path works, not the model's quality."""
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from openmm_cgkd.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
TEMPERATURE_K = 300.0


def _record_water(tmp: Path, n_frames: int = 150, interval: int = 10) -> None:
    """The guide's "record with your own OpenMM script" step."""
    import openmm
    from openmm import app, unit

    from openmm_cgkd.data.reporter import ForceReporter

    ff = app.ForceField("tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(ff, boxSize=openmm.Vec3(1.8, 1.8, 1.8) * unit.nanometer)
    system = ff.createSystem(modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.8 * unit.nanometer,
                             constraints=app.HBonds)
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE_K * unit.kelvin, 1 / unit.picosecond,
                                                 0.002 * unit.picoseconds)
    sim = app.Simulation(modeller.topology, system, integrator, openmm.Platform.getPlatformByName("CPU"),
                         {"Threads": "1"})
    sim.context.setPositions(modeller.positions)
    sim.minimizeEnergy(maxIterations=200)
    sim.context.setVelocitiesToTemperature(TEMPERATURE_K * unit.kelvin, 1)
    sim.step(250)
    with open(tmp / "system.pdb", "w") as fh:
        state = sim.context.getState(getPositions=True)
        app.PDBFile.writeFile(sim.topology, state.getPositions(), fh)
    with ForceReporter(tmp / "aa.h5", interval) as reporter:
        sim.reporters.append(reporter)
        sim.step(n_frames * interval)


@pytest.fixture(scope="module")
def guide_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("own_system")
    _record_water(tmp)
    (tmp / "water.yaml").write_text(textwrap.dedent("""\
        type_names: [W]
        residues:
          SOL:                          # as written from a GROMACS .top; OpenMM reads water as HOH
            - {type: W, atoms: [OW, HW1, HW2]}
        bead_names: {W: {residue: SW, atom: W}}
        """))
    return tmp


def _run(*argv) -> int:
    return main([str(a) for a in argv])


def test_the_guide_runs_end_to_end_on_water(guide_run, capsys):
    tmp = guide_run
    quick = ROOT / "configs" / "training"
    assert _run("map", "--trajectory", tmp / "aa.h5", "--topology", tmp / "system.pdb", "--mapping",
                tmp / "water.yaml", "--out", tmp / "cg.h5") == 0
    mapped = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert mapped["temperature_K"] == pytest.approx(TEMPERATURE_K)  # from the integrator, via the reporter
    assert mapped["frames"] == 150 and mapped["types"] == {"W": mapped["beads"]}
    assert mapped["time_ps"][1] - mapped["time_ps"][0] == pytest.approx(149 * 0.02)  # the reporter's times

    assert _run("train-teachers", quick / "quick-teachers.yaml", "--dataset", tmp / "cg.h5", "--out",
                tmp / "teachers", "--frames", "30:", "--max-epochs", "1", "--no-progress") == 0
    setup = json.loads((tmp / "teachers" / "setup.json").read_text())
    assert setup["frame_window"] == [30, 150]
    assert _run("label", "--dataset", tmp / "cg.h5", "--teachers", tmp / "teachers" / "ensemble", "--out",
                tmp / "cg_labels.h5", "--frames", "30:") == 0
    assert _run("train-student", quick / "quick-student.yaml", "--dataset", tmp / "cg_labels.h5", "--out",
                tmp / "student", "--max-epochs", "1", "--no-progress") == 0
    from openmm_cgkd.bundle import load_bundle

    manifest = load_bundle(tmp / "student" / "bundle").manifest
    assert manifest.temperature_K == pytest.approx(TEMPERATURE_K)
    assert (manifest.bead_types[0].residue_name, manifest.bead_types[0].atom_name) == ("SW", "W")

    assert _run("start-structure", "--dataset", tmp / "cg.h5", "--frame", "-1", "--out", tmp / "start.pdb") == 0
    assert "CRYST1" in (tmp / "start.pdb").read_text()
    capsys.readouterr()
    assert _run("simulate", "--bundle", tmp / "student" / "bundle", "--structure", tmp / "start.pdb", "--steps",
                "100", "--timestep", "2", "--report-interval", "5", "--platform", "CPU", "--threads", "1",
                "--seed", "1", "--out", tmp / "md", "--no-progress") == 0
    out = capsys.readouterr()
    assert f"{TEMPERATURE_K:.1f} K" in out.out and "warning" not in out.err  # the data's temperature, no warning
    assert _run("analyze", "--trajectory", tmp / "md" / "trajectory.dcd", "--topology", tmp / "start.pdb",
                "--reference", tmp / "cg.h5", "--energies", tmp / "md" / "log.csv", "--out", tmp / "analysis",
                "--no-plots", "--no-progress") == 0
    report = json.loads((tmp / "analysis" / "report.json").read_text())
    cutoffs = report["settings"]["adf_cutoffs"]
    assert len(cutoffs) == 1 and 0.3 < cutoffs[0] < 0.4  # water's first O-O shell ends near 0.33 nm, not 0.60
    thermal = report["replicas"][0]["stability"]["thermal"]
    assert thermal["target_temperature_K"] == pytest.approx(TEMPERATURE_K) and thermal["n_samples"] > 10
    assert np.isfinite(thermal["mean_temperature_K"])
