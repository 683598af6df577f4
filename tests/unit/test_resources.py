"""Shipped models and systems are found one documented way (openmm_cgkd/resources.py), system data
lives with the system (systems/des/cg_system.yaml, openmm_cgkd/systems.py), and an installation
without the checkout says plainly that it needs it."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from openmm_cgkd.errors import MissingFileError, UsageError
from openmm_cgkd.resources import ResourceNotFoundError, checkout_root, models_dir, systems_dir
from openmm_cgkd.systems import find_system_file, get_system, system_names

ROOT = Path(__file__).resolve().parents[2]


def test_checkout_and_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("CGKD_MODELS_DIR", raising=False)
    monkeypatch.delenv("CGKD_SYSTEMS_DIR", raising=False)
    assert checkout_root() == ROOT
    assert models_dir() == ROOT / "models" and systems_dir() == ROOT / "systems"
    monkeypatch.setenv("CGKD_MODELS_DIR", str(tmp_path / "m"))
    monkeypatch.setenv("CGKD_SYSTEMS_DIR", str(tmp_path / "s"))
    assert models_dir() == tmp_path / "m" and systems_dir() == tmp_path / "s"
    assert system_names() == []
    with pytest.raises(UsageError, match="no system 'des'"):
        get_system("des")


def test_des_registry_matches_the_shipped_data():
    """The registry's bead types are those of the shipped dataset (masses summed from the AA
    atoms by the mapping) and of the shipped bundles; its files exist."""
    from openmm_cgkd.bundle import read_manifest
    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.topology import default_residue_name

    des = get_system("des")
    assert "des" in system_names() and des.directory == ROOT / "systems" / "des"
    ds = CGDataset.load(des.file("reference"))
    assert ds.type_names == des.type_names
    per_type = [float(ds.masses[ds.bead_types == t].mean()) for t in range(len(ds.type_names))]
    assert [b.mass_dalton for b in des.bead_types()] == pytest.approx(per_type, abs=1e-3)
    for name in ("des-student", "des-teachers"):
        shipped = read_manifest(ROOT / "models" / name).bead_types
        assert [(b.name, b.residue_name, b.atom_names) for b in shipped] == \
            [(b.name, b.residue_name, b.atom_names) for b in des.bead_types()]
        assert [b.mass_dalton for b in shipped] == pytest.approx([b.mass_dalton for b in des.bead_types()], abs=1e-9)
    assert des.bead_density_per_nm3 == pytest.approx(1000 / 4.484 ** 3)
    for role in ("aa_system", "mapping", "cg_start", "reference"):
        assert des.file(role).is_file()
    with pytest.raises(UsageError, match="names no 'lattice' file"):
        des.file("lattice")
    # residue codes of types that name none: the generic rule gives the DES ones
    assert [default_residue_name(t) for t in des.type_names] == [b.residue_name for b in des.bead_types()]
    assert find_system_file("opls-des.yaml") == des.directory / "opls-des.yaml"
    with pytest.raises(MissingFileError, match="in no registered system"):
        find_system_file("opls-des.yaml", sha256="0" * 64)


def _installed_copy(tmp_path: Path) -> Path:
    """The package as a wheel installs it: the code alone, no models/ or systems/ beside it."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "openmm_cgkd", site / "openmm_cgkd", ignore=shutil.ignore_patterns("__pycache__"))
    return site


def _run(site: Path, code: str, env_extra: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CGKD_")}
    env.update(PYTHONPATH=str(site), **env_extra)
    return subprocess.run([sys.executable, "-c", code], cwd=site.parent, env=env, capture_output=True, text=True,
                          timeout=300)


def test_an_installation_without_the_checkout_says_it_needs_it(tmp_path):
    site = _installed_copy(tmp_path)
    code = """
import openmm_cgkd, sys
from pathlib import Path
assert Path(openmm_cgkd.__file__).parent == Path(sys.argv[0] if False else r'%s') / 'openmm_cgkd', openmm_cgkd.__file__
from openmm_cgkd.resources import ResourceNotFoundError, checkout_root, models_dir
from openmm_cgkd.bundle import shipped_bundles
assert checkout_root() is None and shipped_bundles() == []
try:
    models_dir()
except ResourceNotFoundError as exc:
    print("MODELS:", exc)
from openmm_cgkd.cli.main import main
sys.exit(main(["demo", "--steps", "10", "--report-interval", "5"]))
""" % site
    done = _run(site, code, {})
    assert "MODELS: the shipped models are not installed with the package" in done.stdout, done.stderr[-2000:]
    assert "Run from a checkout" in done.stdout and "CGKD_MODELS_DIR" in done.stdout
    assert done.returncode == 2, done.stderr[-2000:]
    err = done.stderr.strip().splitlines()
    assert err[-1].startswith("cgkd demo: error: ") and "checkout" in err[-1], done.stderr[-2000:]
    assert "Traceback" not in done.stderr

    # pointed at the data, the same installation finds it
    code = """
from openmm_cgkd.bundle import shipped_bundles
from openmm_cgkd.systems import get_system
print(shipped_bundles(), get_system("des").type_names)
"""
    done = _run(site, code, {"CGKD_MODELS_DIR": str(ROOT / "models"), "CGKD_SYSTEMS_DIR": str(ROOT / "systems")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'des-student'" in done.stdout and "['Cho', 'Cl', 'Urea']" in done.stdout


def test_resource_error_is_a_missing_file_error():
    assert issubclass(ResourceNotFoundError, MissingFileError) and ResourceNotFoundError.exit_code == 2


def test_dipeptide_registry_is_not_periodic_and_its_masses_are_the_mapped_atoms():
    """The dipeptide is registered without a box; its bead masses are those the mapping gives the
    amber14 atoms of its structure (OpenMM's force field masses, not element tables)."""
    import openmm.app as app
    from openmm import unit

    from openmm_cgkd.config import ConfigError
    from openmm_cgkd.data.mapping import CGMap, MappingSpec
    from openmm_cgkd.systems import SystemSpec

    dip = get_system("dipeptide")
    assert "dipeptide" in system_names() and not dip.periodic and get_system("des").periodic
    with pytest.raises(UsageError, match="not periodic"):
        dip.bead_density_per_nm3
    with pytest.raises(UsageError, match="not periodic"):
        dip.lattice(6)
    for role in ("aa_system", "mapping", "ramachandran", "cg_start"):
        assert dip.file(role).is_file()
    spec = MappingSpec.from_yaml(dip.file("mapping"))
    assert spec.type_names == dip.type_names
    assert {t: (b.residue_name, b.atom_name) for t, b in zip(dip.type_names, dip.bead_types())} == spec.bead_names
    pdb = app.PDBFile(str(dip.directory / "ala2.pdb"))
    omm = app.ForceField("amber14-all.xml", "implicit/gbn2.xml").createSystem(pdb.topology)
    masses = [omm.getParticleMass(i).value_in_unit(unit.dalton) for i in range(omm.getNumParticles())]
    residues = [(r.name, [(a.index, a.name) for a in r.atoms()]) for r in pdb.topology.residues()]
    cgmap = CGMap.build(spec, residues, np.asarray(masses))
    assert cgmap.n_beads == 6
    per_type = [float(cgmap.bead_masses[cgmap.bead_types == t].mean()) for t in range(len(dip.type_names))]
    assert [b.mass_dalton for b in dip.bead_types()] == pytest.approx(per_type, abs=1e-6)
    assert dip.counts(6) == {n: int(np.sum(cgmap.bead_types == t)) for t, n in enumerate(dip.type_names)}
    # a box needs both numbers
    with pytest.raises(ConfigError, match="both molecules and box_nm"):
        SystemSpec.from_dict({"name": "x", "bead_types": [{"name": "A", "residue_name": "A", "mass_dalton": 10.0}],
                              "box_nm": 3.0})


def test_dipeptide_start_structure_is_its_six_bonded_beads():
    from openmm_cgkd.analysis.ramachandran import RamachandranSpec, phi_psi
    from openmm_cgkd.topology import read_bead_pdb, topology_bonds, topology_bead_names

    dip = get_system("dipeptide")
    top, pos, box = read_bead_pdb(dip.file("cg_start"))
    assert box is None and pos.shape == (6, 3)
    assert [a for _, a in topology_bead_names(top)] == ["C", "N", "CA", "CB", "C", "N"]
    assert sorted(map(tuple, np.sort(topology_bonds(top), axis=1).tolist())) == [(0, 1), (1, 2), (2, 3), (2, 4), (4, 5)]
    d = np.linalg.norm(pos[[0, 1, 2, 2, 4]] - pos[[1, 2, 3, 4, 5]], axis=1)
    assert np.all((d > 0.1) & (d < 0.2))  # backbone bonds, nm
    phi, psi = phi_psi(pos[None], RamachandranSpec.from_yaml(dip.file("ramachandran")))
    assert -180.0 <= phi[0] < 180.0 and -180.0 <= psi[0] < 180.0
