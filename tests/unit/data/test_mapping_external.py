"""External AA inputs: GROMACS TRR with forces (written here with mdtraj), force arrays, clear errors."""
from pathlib import Path

import numpy as np
import pytest

from openmm_cgkd.data.external import AATrajectory, InputError, load_trajectory
from openmm_cgkd.data.mapping import MappingSpec, map_trajectory
from openmm_cgkd.data.opls import build_topology, load_forcefield
from openmm_cgkd.data.build import write_pdb

ROOT = Path(__file__).resolve().parents[3]
COMP = {"choline": 2, "cl": 2, "urea": 4}
L = 2.0


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """A PDB topology, and float32 positions/forces/boxes/times of 5 frames."""
    import mdtraj as md

    ff = load_forcefield(ROOT / "systems" / "des" / "opls-des.yaml")
    top = build_topology(ff, COMP, box_nm=L)
    rng = np.random.default_rng(7)
    mols = []
    for k, n in COMP.items():
        for _ in range(n):
            x = ff.molecules[k].coordinates
            mols.append(x - x.mean(0) + rng.uniform(0, L, 3))
    x0 = np.vstack(mols)
    F, n = 5, x0.shape[0]
    pos = (x0[None] + rng.normal(0, 0.02, (F, n, 3))) % L  # wrapped: molecules split over faces
    frc = rng.normal(0, 800.0, (F, n, 3))
    boxes = np.repeat((np.eye(3) * L)[None], F, 0)
    times = np.arange(F) * 0.5 + 100.0
    d = tmp_path_factory.mktemp("ext")
    pdb = write_pdb(d / "top.pdb", top, x0)
    masses = np.concatenate([np.tile(ff.molecules[k].masses, c) for k, c in COMP.items()])
    arrays = dict(pos=pos.astype(np.float32), frc=frc.astype(np.float32), boxes=boxes.astype(np.float32),
                  times=times.astype(np.float32))
    return dict(dir=d, pdb=pdb, mdtop=md.load_topology(str(pdb)), masses=masses, **arrays)


def _write_trr(path, s, forces=True):
    from mdtraj.formats import TRRTrajectoryFile

    F = s["pos"].shape[0]
    with TRRTrajectoryFile(str(path), "w") as fh:
        c = np.ascontiguousarray
        fh._write(c(s["pos"]), c(s["times"]), np.arange(F, dtype=np.int32), c(s["boxes"]), np.zeros(F, np.float32),
                  None, c(s["frc"]) if forces else None)
    return path


def test_trr_gives_same_mapped_data_as_arrays(system):
    spec = MappingSpec.from_yaml(ROOT / "systems" / "des" / "mapping.yaml")
    trr = _write_trr(system["dir"] / "traj.trr", system)
    from_trr = map_trajectory(load_trajectory(trr, system["pdb"], masses=system["masses"]), spec)
    mem = AATrajectory(system["mdtop"], system["masses"], system["pos"], system["frc"], system["boxes"],
                       system["times"]).validate()
    from_mem = map_trajectory(mem, spec)
    assert from_trr.n_frames == 5 and from_trr.n_beads == 8
    assert from_trr.type_counts() == {"Cho": 2, "Cl": 2, "Urea": 4}
    np.testing.assert_allclose(from_trr.positions, from_mem.positions, atol=1e-5)
    np.testing.assert_allclose(from_trr.forces, from_mem.forces, rtol=1e-5, atol=1e-2)
    np.testing.assert_allclose(from_trr.times, from_mem.times)
    np.testing.assert_allclose(from_trr.masses, from_mem.masses, rtol=1e-12)  # the masses given, not elements
    with pytest.raises(InputError, match="no atom masses.*never taken from elements"):  # a PDB carries none
        load_trajectory(trr, system["pdb"])


def test_trr_without_forces_is_a_clear_error(system):
    trr = _write_trr(system["dir"] / "noforce.trr", system, forces=False)
    with pytest.raises(InputError, match="holds no forces"):
        load_trajectory(trr, system["pdb"])


def test_trajectory_without_force_array_is_a_clear_error(system):
    import mdtraj as md

    traj = md.Trajectory(system["pos"], system["mdtop"], time=system["times"],
                         unitcell_lengths=np.full((5, 3), L), unitcell_angles=np.full((5, 3), 90.0))
    dcd = system["dir"] / "t.dcd"
    traj.save_dcd(str(dcd))
    with pytest.raises(InputError, match="carries no forces"):
        load_trajectory(dcd, system["pdb"])
    np.save(system["dir"] / "f.npy", system["frc"])
    aa = load_trajectory(dcd, system["pdb"], forces=system["dir"] / "f.npy", timestep_ps=0.5, masses=system["masses"])
    np.testing.assert_allclose(aa.forces, system["frc"], rtol=1e-6)
    # forces in kcal/mol/A are converted (x 41.84)
    np.save(system["dir"] / "f_kcal.npy", system["frc"] / 41.84)
    aa2 = load_trajectory(dcd, system["pdb"], forces=system["dir"] / "f_kcal.npy", force_unit="kcal/mol/A",
                          timestep_ps=0.5, masses=system["masses"])
    np.testing.assert_allclose(aa2.forces, system["frc"], rtol=1e-5)


def test_atom_count_and_unit_errors(system):
    mem = dict(topology=system["mdtop"], masses=system["masses"], positions=system["pos"], boxes=system["boxes"],
               times=system["times"])
    with pytest.raises(InputError, match="forces have shape"):
        AATrajectory(forces=system["frc"][:, :-1], **mem).validate()
    with pytest.raises(InputError, match="RMS atomic force .* kJ/mol/nm .* implausible"):
        AATrajectory(forces=system["frc"] * 1e-3, **mem).validate()
    with pytest.raises(InputError, match="Angstrom"):
        AATrajectory(**{**mem, "boxes": system["boxes"] * 10}, forces=system["frc"]).validate()
    bad = dict(system, pos=system["pos"][:, :-3], frc=system["frc"][:, :-3])
    trr = _write_trr(system["dir"] / "short.trr", bad)
    with pytest.raises(InputError, match="atoms"):
        load_trajectory(trr, system["pdb"])


def test_kcal_per_angstrom_declared_as_kj_per_nm_is_refused(system, tmp_path):
    """Forces of liquid-like size (RMS 800 kJ/mol/nm) given in kcal/mol/A but declared kJ/mol/nm
    are 41.84x too small: refused; declared correctly they load and convert back."""
    dcd = tmp_path / "t.dcd"
    import mdtraj as md

    md.Trajectory(system["pos"], system["mdtop"], unitcell_lengths=np.full((5, 3), L),
                  unitcell_angles=np.full((5, 3), 90.0)).save_dcd(str(dcd))
    np.save(tmp_path / "f_kcal.npy", system["frc"] / 41.84)
    with pytest.raises(InputError, match="41.84x too small"):
        load_trajectory(dcd, system["pdb"], forces=tmp_path / "f_kcal.npy", timestep_ps=0.5, masses=system["masses"])
    aa = load_trajectory(dcd, system["pdb"], forces=tmp_path / "f_kcal.npy", force_unit="kcal/mol/A", timestep_ps=0.5,
                         masses=system["masses"])
    np.testing.assert_allclose(aa.forces, system["frc"], rtol=1e-5)
    # measured reline forces (RMS 590 kJ/mol/nm) pass; the same in kcal/mol/A (~14) and kJ/mol/A (~59) do not
    for rms, ok in ((590.0, True), (590.0 / 41.84, False), (590.0 / 10.0, False), (590.0 * 41.84, False)):
        frc = np.random.default_rng(1).normal(0.0, rms, system["frc"].shape)
        traj = AATrajectory(system["mdtop"], system["masses"], system["pos"], frc, system["boxes"], system["times"])
        if ok:
            traj.validate()
        else:
            with pytest.raises(InputError, match="implausible"):
                traj.validate()


TOP = """[ defaults ]
1 3 yes 0.5 0.5

[ atomtypes ]
Cl  17  35.45  0.0  A  0.377  0.619232
NA   7  14.007 0.0  A  0.325  0.71128

[ moleculetype ]
CL 1
[ atoms ]
1 Cl 1 CL Cl 1 -0.8 35.45

[ moleculetype ]
NX 1
[ atoms ]
1 NA 1 NX NA 1 0.8 14.007

[ system ]
test
[ molecules ]
CL 2
NX 2
"""


def test_gromacs_top_gives_masses(tmp_path):
    """A .top topology: masses from its atom records (an atom named NA is nitrogen here, not sodium)."""
    from mdtraj.formats import TRRTrajectoryFile

    (tmp_path / "t.top").write_text(TOP)
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 3, (3, 4, 3)).astype(np.float32)
    frc = rng.normal(0, 500, (3, 4, 3)).astype(np.float32)
    box = np.repeat((np.eye(3) * 3.0)[None], 3, 0).astype(np.float32)
    with TRRTrajectoryFile(str(tmp_path / "t.trr"), "w") as fh:
        fh._write(pos, np.arange(3, dtype=np.float32), np.arange(3, dtype=np.int32), box, np.zeros(3, np.float32),
                  None, frc)
    aa = load_trajectory(tmp_path / "t.trr", tmp_path / "t.top", check_units=False)
    np.testing.assert_allclose(aa.masses, [35.45, 35.45, 14.007, 14.007])
    spec = MappingSpec.from_dict({"type_names": ["X", "Y"], "residues": {"CL": [{"type": "X"}], "NX": [{"type": "Y"}]}})
    ds = map_trajectory(aa, spec)
    np.testing.assert_allclose(ds.forces, frc, rtol=1e-6)
    assert list(ds.bead_types) == [0, 0, 1, 1]
