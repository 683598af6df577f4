"""The package's structure holds: the import contracts of pyproject.toml ([tool.importlinter]:
layers, no cycles, nothing imports the root package) are kept, and the front door
(``openmm_cgkd``) exports lazily: every name in ``__all__`` resolves, and importing the package
loads neither torch nor OpenMM."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports (import-linter, dev dependency group) is not installed: run `uv sync`")
    proc = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout and "3 kept" in proc.stdout, proc.stdout[-2000:]


def test_a_broken_layer_is_reported(tmp_path):
    """The checker is not vacuous: a contract the code breaks (the model layer above the bundle
    layer, though bundles import models) is reported broken."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    config = tmp_path / "contracts.toml"
    config.write_text('[tool.importlinter]\nroot_package = "openmm_cgkd"\n\n[[tool.importlinter.contracts]]\n'
                      'name = "upside down"\ntype = "layers"\nlayers = ["openmm_cgkd.model", "openmm_cgkd.bundle"]\n')
    proc = subprocess.run([exe, "--no-cache", str(config)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "BROKEN" in proc.stdout, proc.stdout[-2000:]


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=ROOT).stdout.strip()


def test_import_openmm_cgkd_loads_neither_torch_nor_openmm():
    out = _run("import sys, openmm_cgkd; "
               "print([m for m in ('torch', 'openmm', 'mdtraj', 'matplotlib', 'h5py') if m in sys.modules])")
    assert out == "[]", out


def test_every_name_of_the_front_door_resolves():
    import openmm_cgkd

    assert len(openmm_cgkd.__all__) == len(set(openmm_cgkd.__all__)) >= 20
    for name in openmm_cgkd.__all__:
        assert getattr(openmm_cgkd, name) is not None, name
    assert set(openmm_cgkd.__all__) <= set(dir(openmm_cgkd))
    with pytest.raises(AttributeError):
        openmm_cgkd.no_such_name  # noqa: B018


def test_bundle_package_exports_no_private_names_and_no_system_data():
    import openmm_cgkd.bundle as bundle

    assert not [n for n in bundle.__all__ if n.startswith("_")]
    assert "DES_BEAD_TYPES" not in bundle.__all__ and not hasattr(bundle, "DES_BEAD_TYPES")
    for name in bundle.__all__:
        assert hasattr(bundle, name), name
