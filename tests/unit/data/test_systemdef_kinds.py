"""System definitions of the ``openmm`` (force field XML + structure) and ``gromacs`` (.top + .gro)
kinds: good files give the right kind, box, composition and sizes; every bad input is one clear
line (a UsageError or MissingFileError), before any MD."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from openmm_cgkd.cli.main import main
from openmm_cgkd.data.systemdef import SystemDefinition
from openmm_cgkd.errors import CGKDError, MissingFileError, UsageError
from water_system import write_inputs

ROOT = Path(__file__).resolve().parents[3]
DIPEPTIDE = ROOT / "systems" / "dipeptide"
EDGE_NM = 1.3  # a small water box (~70 waters): reading and building are fast


@pytest.fixture(scope="module")
def water(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("water"), edge_nm=EDGE_NM, cutoff_nm=0.6)


def _definition(folder: Path, base: str | Path, **changes) -> Path:
    """A copy of definition ``base`` (in ``folder``) with ``changes`` (None: the key removed)."""
    d = yaml.safe_load(Path(base).read_text())
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    out = folder / f"variant_{abs(hash(str(sorted(changes.items()))))}.yaml"
    out.write_text(yaml.safe_dump(d))
    return out


def _dipeptide(tmp_path, **changes) -> Path:
    """The shipped dipeptide definition moved into ``tmp_path`` (its PDB and mapping copied)."""
    for f in ("ala2.pdb", "mapping.yaml"):
        (tmp_path / f).write_text((DIPEPTIDE / f).read_text())
    base = tmp_path / "system.yaml"
    base.write_text((DIPEPTIDE / "system.yaml").read_text())
    return _definition(tmp_path, base, **changes) if changes else base


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


# ---- good inputs --------------------------------------------------------------------------------

def test_the_dipeptide_is_an_openmm_system_without_a_box():
    s = SystemDefinition.from_yaml(DIPEPTIDE / "system.yaml")
    assert s.kind == "openmm" and s.forcefield_files == ("amber14-all.xml", "implicit/gbn2.xml")
    assert not s.periodic and s.box is None and s.box_vectors() is None and s.box_nm == 0.0
    assert s.nonbonded == "NoCutoff" and s.density_g_cm3 is None
    assert s.composition == {"ACE": 1, "ALA": 1, "NME": 1}
    assert s.n_atoms == 22 and s.n_molecules == 1
    assert s.start_positions().shape == (22, 3)
    top, system = s.create_openmm()
    assert top.getNumAtoms() == system.getNumParticles() == 22
    assert not system.usesPeriodicBoundaryConditions()
    assert system.getNumConstraints() == 12  # HBonds: the 12 hydrogens of ACE-ALA-NME
    # masses are the force field's (physical), not the hydrogen-repartitioned ones
    masses = np.array([system.getParticleMass(i)._value for i in range(22)])
    assert masses.sum() == pytest.approx(144.17, abs=0.05)


@pytest.mark.parametrize("kind", ["xml", "gmx"])
def test_a_water_box_of_either_kind(water, kind):
    s = SystemDefinition.from_yaml(water[kind])
    n = water["n_waters"]
    assert s.kind == {"xml": "openmm", "gmx": "gromacs"}[kind]
    assert s.periodic and s.nonbonded == "PME" and s.cutoff_nm == 0.6
    np.testing.assert_allclose(s.box_vectors(), np.eye(3) * EDGE_NM, atol=1e-6)
    assert s.box_nm == pytest.approx(EDGE_NM)
    assert s.composition == {"HOH": n}  # OpenMM reads the .top's SOL as HOH
    assert s.n_atoms == 3 * n and s.n_molecules == n  # a settled water (no bonds) is one molecule
    top, system = s.create_openmm()
    assert system.usesPeriodicBoundaryConditions() and system.getNumConstraints() == 3 * n  # rigid waters
    d = s.to_dict(relative_to=water["xml"].parent)
    assert d["kind"] == s.kind and d["composition"] == {"HOH": n} and d["n_atoms"] == 3 * n
    assert not any(str(v).startswith("/") for v in d.values())


def test_a_structure_box_is_ignored_without_a_periodic_method(water, tmp_path):
    s = SystemDefinition.from_yaml(_definition(water["xml"].parent, water["xml"], nonbonded="CutoffNonPeriodic"))
    assert not s.periodic and s.box_vectors() is None
    _, system = s.create_openmm()
    assert not system.usesPeriodicBoundaryConditions()


# ---- bad inputs ---------------------------------------------------------------------------------

def test_an_xml_file_neither_local_nor_shipped(tmp_path):
    with pytest.raises(MissingFileError) as err:
        SystemDefinition.from_yaml(_dipeptide(tmp_path, forcefield=["amber14-all.xml", "no_such_ff.xml"]))
    assert "no_such_ff.xml is neither next to it nor one that OpenMM ships" in _one_line(err)


def test_a_local_xml_file_is_used(tmp_path):
    import openmm.app

    shipped = Path(openmm.app.__file__).parent / "data" / "implicit" / "gbn2.xml"
    (tmp_path / "my_gbn2.xml").write_text(shipped.read_text())
    s = SystemDefinition.from_yaml(_dipeptide(tmp_path, forcefield=["amber14-all.xml", "my_gbn2.xml"]))
    assert s.forcefield_files[0] == "amber14-all.xml" and Path(s.forcefield_files[1]).is_absolute()
    d = s.to_dict(relative_to=tmp_path)
    assert d["forcefield"] == ["amber14-all.xml", "my_gbn2.xml"] and list(d["forcefield_sha256"]) == ["my_gbn2.xml"]


@pytest.mark.parametrize("changes,error,expect", [
    ({"structure": "missing.pdb"}, MissingFileError, "structure missing.pdb not found"),
    ({"structure": "ala2.xyz"}, UsageError, "structure must be a .pdb or .cif or .pdbx file"),
    ({"structure": None}, UsageError, "missing key(s) ['structure']"),
    ({"composition": {"ALA": 1}}, UsageError, "['composition'] go with an OPLS molecule file"),
    ({"box_nm": 3.0}, UsageError, "['box_nm'] go with an OPLS molecule file"),
    ({"scale_14": 0.5}, UsageError, "['scale_14'] go with an OPLS molecule file"),
    ({"gromacs_include_dir": "top"}, UsageError, "gromacs_include_dir goes with a GROMACS .top"),
    ({"nonbonded": "PME"}, UsageError, "nonbonded PME needs a periodic box, and ala2.pdb has none"),
    ({"nonbonded": "CutoffPeriodic"}, UsageError, "nonbonded CutoffPeriodic needs a periodic box"),
    ({"nonbonded": "Ewald"}, UsageError, "nonbonded must be one of ['PME', 'CutoffPeriodic'"),
    ({"constraints": "AllBonds"}, UsageError, "constraints must be one of [None, 'HBonds']"),
    ({"forcefield": ["amber14-all.xml", "topol.top"]}, UsageError, "forcefield must be one OPLS molecule file"),
    ({"forcefield": []}, UsageError, "forcefield must be an OPLS molecule file"),
    ({"cutoff_nm": "far"}, UsageError, "cutoff_nm must be a finite number"),
])
def test_a_bad_openmm_definition_is_one_line(tmp_path, changes, error, expect):
    with pytest.raises(error) as err:
        SystemDefinition.from_yaml(_dipeptide(tmp_path, **changes))
    assert expect in _one_line(err)


def test_a_cutoff_of_half_the_box_is_refused(water):
    with pytest.raises(UsageError) as err:
        SystemDefinition.from_yaml(_definition(water["xml"].parent, water["xml"], cutoff_nm=0.65))
    assert "cutoff_nm 0.65 must be below half the shortest box edge (1.300 nm)" in _one_line(err)


def test_a_force_field_without_a_template_for_a_residue(tmp_path):
    """Water parameters only, for a peptide: OpenMM finds no template for ACE; one line, at create_openmm."""
    s = SystemDefinition.from_yaml(_dipeptide(tmp_path, forcefield=["amber14/tip3p.xml"]))
    with pytest.raises(UsageError) as err:
        s.create_openmm()
    msg = _one_line(err)
    assert "the force field cannot build the system of ala2.pdb" in msg and "ACE" in msg


def test_gromacs_atom_count_mismatch(water, tmp_path):
    top = water["top"].read_text()
    n = water["n_waters"]
    (tmp_path / "water.top").write_text(top.replace(f"SOL {n}", f"SOL {n - 1}"))
    (tmp_path / "water.gro").write_text(water["gro"].read_text())
    path = _definition(tmp_path, water["gmx"], mapping=None)
    with pytest.raises(UsageError) as err:
        SystemDefinition.from_yaml(path)
    assert f"the topology has {3 * (n - 1)} atoms and water.gro {3 * n}" in _one_line(err)


@pytest.mark.parametrize("old,new,expect", [
    ("[ defaults ]", "#include \"amber99sb.ff/forcefield.itp\"\n[ defaults ]", "cannot read water.top"),  # not there
    ("SOL {n}", "WAT {n}", "cannot read water.top: Unknown molecule type: WAT"),
])
def test_an_unreadable_top_is_one_line(water, tmp_path, old, new, expect):
    n = water["n_waters"]
    (tmp_path / "water.top").write_text(water["top"].read_text().replace(old.format(n=n), new.format(n=n)))
    (tmp_path / "water.gro").write_text(water["gro"].read_text())
    inc = tmp_path / "empty_include"
    inc.mkdir()
    with pytest.raises(UsageError) as err:
        SystemDefinition.from_yaml(_definition(tmp_path, water["gmx"], mapping=None, gromacs_include_dir="empty_include"))
    assert expect in _one_line(err)


@pytest.mark.parametrize("changes,error,expect", [
    ({"forcefield": "other.top"}, MissingFileError, "GROMACS topology other.top not found"),
    ({"structure": "water.cif"}, UsageError, "structure must be a .gro or .pdb file for a gromacs system"),
    ({"gromacs_include_dir": 3}, UsageError, "gromacs_include_dir must be a directory name"),
])
def test_a_bad_gromacs_definition_is_one_line(water, changes, error, expect):
    with pytest.raises(error) as err:
        SystemDefinition.from_yaml(_definition(water["gmx"].parent, water["gmx"], **changes))
    assert expect in _one_line(err)


def test_a_structure_system_is_not_resized(water):
    s = SystemDefinition.from_yaml(water["xml"])
    for kw in ({"n_molecules": 10}, {"scale": 0.5}):
        with pytest.raises(UsageError) as err:
            s.resized(**kw)
        assert "--molecules / --scale resize a packed (OPLS molecule file) system" in _one_line(err)


@pytest.mark.parametrize("args,expect", [
    (["--molecules", "10"], "--molecules / --scale resize a packed"),
    (["--scale", "2"], "--molecules / --scale resize a packed"),
    (["--structure", "{gro}"], "give a PDB (a .gro or PDBx structure goes in the system definition"),
])
def test_aa_run_refuses_resizing_and_a_gro_structure(water, tmp_path, capsys, args, expect):
    args = [a.format(gro=water["gro"]) for a in args]
    rc = main(["aa-run", "--system", str(water["gmx"]), "--run-dir", str(tmp_path / "run"), "--no-progress", *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("cgkd aa-run: error: ") and expect in err, err
    assert not (tmp_path / "run" / "run.json").exists()


def test_aa_build_refuses_resizing(water, tmp_path, capsys):
    rc = main(["aa-build", "--system", str(water["xml"]), "--molecules", "5", "--out", str(tmp_path / "b.pdb")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("cgkd aa-build: error: ") and "--molecules / --scale" in err
    assert not (tmp_path / "b.pdb").exists()


def test_errors_are_package_errors():
    assert issubclass(UsageError, CGKDError) and issubclass(MissingFileError, CGKDError)
