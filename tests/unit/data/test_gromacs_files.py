"""GROMACS files written by openmm_cgkd.data.gromacs, read back by independent readers: OpenMM's
GromacsTopFile builds from our .top a System with the energy and forces of opls.create_system,
mdtraj reads our .gro, and the .mdp writes forces with positions."""
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from openmm_cgkd.data.gromacs import write_gro, write_mdp, write_top
from openmm_cgkd.data.opls import build_topology, create_system, load_forcefield

ROOT = Path(__file__).resolve().parents[3]
COMPOSITION = {"choline": 2, "cl": 2, "urea": 3}
BOX_NM = 2.4


@pytest.fixture(scope="module")
def ff():
    return load_forcefield(ROOT / "systems" / "des" / "opls-des.yaml")


def _positions(ff):
    """Molecules' template geometries on a 2x2x2 grid, randomly rotated, a few straddling the box."""
    rng = np.random.default_rng(0)
    out, k = [], 0
    for key, n in COMPOSITION.items():
        for _ in range(n):
            c = ff.molecules[key].coordinates - ff.molecules[key].coordinates.mean(axis=0)
            q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
            site = (np.array([k // 4, (k // 2) % 2, k % 2]) + 0.5) * BOX_NM / 2 + (0.55 if k % 3 == 0 else 0.0)
            out.append(c @ q.T + site)
            k += 1
    return np.concatenate(out)


def _forces(system, pos):
    import openmm
    from openmm import unit

    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(pos * unit.nanometer)
    st = ctx.getState(getForces=True, getEnergy=True)
    return (st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def test_openmm_reads_our_top_as_our_system(ff, tmp_path):
    from openmm import app

    top_path = write_top(tmp_path / "des.top", ff, COMPOSITION, pairs=True, constraints=None)
    text = top_path.read_text()
    assert "[ pairs ]" in text and "[ constraints ]" not in text
    assert text.count("[ moleculetype ]") == 3 and "  1        3          yes        0.5      0.5" in text
    pos = _positions(ff)
    gro_system = app.GromacsTopFile(str(top_path)).createSystem(nonbondedMethod=app.NoCutoff)
    ours = create_system(ff, build_topology(ff, COMPOSITION), nonbonded="NoCutoff", constraints=None)
    e_gro, f_gro = _forces(gro_system, pos)
    e_ours, f_ours = _forces(ours, pos)
    assert np.abs(f_ours).max() > 100.0
    assert e_gro == pytest.approx(e_ours, rel=1e-6, abs=1e-4)
    np.testing.assert_allclose(f_gro, f_ours, rtol=1e-6, atol=1e-6 * np.abs(f_ours).max())
    masses = [gro_system.getParticleMass(i)._value for i in range(gro_system.getNumParticles())]
    np.testing.assert_allclose(masses, [ours.getParticleMass(i)._value for i in range(ours.getNumParticles())])
    # the 1-4 terms matter (the no-pairs variant, = scale_14 0 in GROMACS, is checked against GROMACS
    # itself in tests/integration/test_gromacs_loop.py: OpenMM's reader treats unlisted 1-4 pairs
    # differently from GROMACS, so it cannot check that file)
    no14 = create_system(dataclasses.replace(ff, fudge_lj=0.0, fudge_qq=0.0), build_topology(ff, COMPOSITION),
                         nonbonded="NoCutoff", constraints=None)
    assert abs(_forces(no14, pos)[0] - e_ours) > 10.0
    no_pairs = write_top(tmp_path / "nopairs.top", ff, COMPOSITION, pairs=False, constraints=None).read_text()
    assert "[ pairs ]" not in no_pairs and "NOT listed" in no_pairs
    # the same file less its [ pairs ] blocks
    strip = lambda t: [ln for ln in re.sub(r"\[ pairs \]\n(?:[^\n]+\n)*\n", "", t).splitlines()
                       if not ln.startswith(";")]  # noqa: E731
    assert strip(no_pairs) == strip(text)


def test_hbond_constraints_are_listed(ff, tmp_path):
    text = write_top(tmp_path / "c.top", ff, COMPOSITION).read_text()
    choline = text.split("[ moleculetype ]")[1]
    n_h_bonds = sum(1 for i, j, *_ in ff.molecules["choline"].bonds
                    if "H" in (ff.molecules["choline"].elements[i], ff.molecules["choline"].elements[j]))
    section = choline.split("[ constraints ]")[1].split("[")[0]
    assert sum(1 for ln in section.splitlines() if ln.strip() and not ln.startswith(";")) == n_h_bonds == 14
    with pytest.raises(ValueError, match="not in the force field"):
        write_top(tmp_path / "x.top", ff, {"water": 3})


def test_gro_round_trip_and_mdp(ff, tmp_path):
    import mdtraj as md

    pos = _positions(ff)
    gro = write_gro(tmp_path / "start.gro", ff, COMPOSITION, pos, BOX_NM)
    traj = md.load(str(gro))
    np.testing.assert_allclose(traj.xyz[0], pos, atol=6e-4)
    np.testing.assert_allclose(traj.unitcell_vectors[0], np.eye(3) * BOX_NM, atol=1e-5)
    assert [r.name for r in traj.topology.residues] == ["CHOL"] * 2 + ["Cl"] * 2 + ["UREA"] * 3
    with pytest.raises(ValueError, match="composition has"):
        write_gro(tmp_path / "bad.gro", ff, COMPOSITION, pos[:-1], BOX_NM)
    mdp = dict(line.split("=") for line in write_mdp(tmp_path / "md.mdp", steps=100, output_interval=25)
               .read_text().splitlines() if "=" in line)
    mdp = {k.strip(): v.strip() for k, v in mdp.items()}
    assert mdp["nstxout"] == mdp["nstfout"] == "25" and mdp["nsteps"] == "100" and mdp["constraints"] == "none"
