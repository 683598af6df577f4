"""Model bundles: round trip, validation, tampering, lookup by name."""
import shutil

import numpy as np
import pytest
import torch
import yaml

from openmm_cgkd.bundle import (MANIFEST_NAME, MODULE_FILE, BundleError, BundleNotFoundError,
                                build_untrained_bundle, load_bundle, resolve_bundle_path, save_bundle,
                                shipped_bundles, untrained_config)
from openmm_cgkd.systems import get_system
from openmm_cgkd.model.ensemble import EnsemblePotential
from openmm_cgkd.model.potential import CGPotential
from openmm_cgkd.model.wall import WallParameters

DES_BEAD_TYPES = get_system("des").bead_types()

NAMES = ["Cho", "Cl", "Urea"]


def tiny_config():
    return untrained_config(cutoff_nm=0.7, embedding_dim=8, num_layers=1, num_rbf=4, max_num_neighbors=48)


def system():
    g = torch.Generator().manual_seed(0)
    pos = torch.rand(20, 3, generator=g) * 1.6
    return torch.randint(0, 3, (20,), generator=g), pos, torch.eye(3) * 1.6


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    model = CGPotential(tiny_config())
    model.set_energy_affine(offset=[1.0, 2.0, 3.0])
    wall = WallParameters.from_taper(NAMES, np.full((3, 3), 0.3), np.full((3, 3), 250.0))
    path = save_bundle(tmp_path_factory.mktemp("b") / "student", model, bead_types=DES_BEAD_TYPES, wall=wall,
                       model_kind="student", variant="ensemble; e,F_T,F_AA",
                       training={"dataset": "des.h5", "epochs": 3, "losses": [1.0, 0.5]})
    return model, path


def test_student_round_trip(student):
    model, path = student
    assert (path / MODULE_FILE).is_file() and (path / MANIFEST_NAME).is_file()
    bundle = load_bundle(path)
    m = bundle.manifest
    assert m.type_names == NAMES and m.model_kind == "student" and m.variant == "ensemble; e,F_T,F_AA"
    assert m.cutoff_nm == 0.7 and m.periodic and m.num_members == 1
    assert m.training["epochs"] == 3 and m.potential_config == model.config
    np.testing.assert_allclose(m.masses_dalton, [104.173, 35.45, 60.056])
    assert m.bead_types[0].residue_name == "CHO" and m.bead_types[2].atom_name == "URE"
    np.testing.assert_array_equal(m.wall.prefactor_kj_mol, bundle.wall.prefactor_kj_mol)
    assert isinstance(bundle.module, torch.jit.ScriptModule)
    types, pos, box = system()
    for a, b in zip(bundle.module(types, pos, box), model(types, pos, box)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # checks can be switched off on the loaded module (CUDA graphs)
    bundle.module.set_check_errors(False)
    assert bundle.module.check_errors is False and bundle.module.neighbors.check_errors is False
    # the caller's module was not changed by saving
    assert model.create_graph is False and model.check_errors is True


def test_ensemble_round_trip(tmp_path):
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(CGPotential(tiny_config()))
    ens = EnsemblePotential(members)
    path = save_bundle(tmp_path / "ens", ens, bead_types=DES_BEAD_TYPES, wall=WallParameters.zero(NAMES),
                       model_kind="ensemble", variant="8 teachers")
    bundle = load_bundle(path)
    assert bundle.manifest.num_members == 3 and bundle.manifest.outputs[-1] == "force_std"
    types, pos, box = system()
    for a, b in zip(bundle.module(types, pos, box), ens(types, pos, box)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="does not match the module"):
        save_bundle(tmp_path / "bad", ens, bead_types=DES_BEAD_TYPES, wall=WallParameters.zero(NAMES),
                    model_kind="teacher")


def test_double_model_records_float64(tmp_path):
    torch.manual_seed(0)
    model = CGPotential(tiny_config()).double()
    path = save_bundle(tmp_path / "d", model, bead_types=DES_BEAD_TYPES, wall=WallParameters.zero(NAMES),
                       model_kind="teacher")
    bundle = load_bundle(path)
    assert bundle.manifest.architecture["dtype"] == "float64"
    types, pos, box = system()
    assert bundle.module(types, pos, box)[2].dtype == torch.float32  # outputs follow the input dtype
    torch.testing.assert_close(bundle.module(types, pos.double(), box.double())[2],
                               model(types, pos.double(), box.double())[2])


def test_untrained_bundle_and_overwrite(tmp_path):
    path = build_untrained_bundle(tmp_path / "u", tiny_config())
    bundle = load_bundle(path)
    assert "UNTRAINED" in bundle.manifest.description and bundle.manifest.training["trained"] is False
    assert bundle.wall.cutoff_nm > 0.3 and bundle.wall.prefactor_kj_mol.min() > 0
    with pytest.raises(FileExistsError):
        build_untrained_bundle(tmp_path / "u", tiny_config())
    build_untrained_bundle(tmp_path / "u", tiny_config(), overwrite=True, seed=5)


def copy_bundle(src, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def edit_manifest(path, fn, reseal=False):
    """Edit ``path``'s manifest with ``fn``; ``reseal``: checksum the edited content as a writer
    of bundles would (a self-consistent manifest that says something else)."""
    from openmm_cgkd.bundle.manifest import MANIFEST_CHECKSUM, manifest_content_sha256

    mpath = path / MANIFEST_NAME
    data = yaml.safe_load(mpath.read_text())
    fn(data)
    if reseal:
        data["checksums"][MANIFEST_CHECKSUM] = manifest_content_sha256(data)
    mpath.write_text(yaml.safe_dump(data, sort_keys=False))


def test_an_edited_manifest_fails_to_load_in_one_line(student, tmp_path):
    """The manifest's content is covered by its own checksum (format 2): a hand edit that keeps it
    valid (a higher temperature in the description, a changed wall) is refused; a format-1 bundle
    (written before) still loads."""
    from openmm_cgkd.bundle.manifest import MANIFEST_CHECKSUM

    path = copy_bundle(student[1], tmp_path)
    assert load_bundle(path).manifest.format_version == 2
    edit_manifest(path, lambda d: d["wall"].update(prefactor_kj_mol=[[p * 2 for p in row] for row in d["wall"]["prefactor_kj_mol"]]))
    with pytest.raises(BundleError) as err:
        load_bundle(path)
    assert "manifest.yaml was edited after the bundle was written" in str(err.value) and "\n" not in str(err.value)
    edit_manifest(path, lambda d: d["checksums"].pop(MANIFEST_CHECKSUM))
    with pytest.raises(BundleError, match="has no checksum of its own"):
        load_bundle(path)
    edit_manifest(path, lambda d: d.update(format_version=1))  # the layout before: no manifest checksum
    assert load_bundle(path).manifest.format_version == 1


def test_tampered_weights_are_refused(student, tmp_path):
    path = copy_bundle(student[1], tmp_path)
    with open(path / MODULE_FILE, "r+b") as fh:
        fh.seek(100)
        b = fh.read(1)
        fh.seek(100)
        fh.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(BundleError, match=r"corrupt file 'model.pt': sha256 .* does not match"):
        load_bundle(path)


def test_missing_bundle_and_files(student, tmp_path):
    with pytest.raises(BundleNotFoundError, match="not found"):
        load_bundle(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError):
        load_bundle("no-such-shipped-model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleNotFoundError, match="has no manifest.yaml"):
        load_bundle(empty)
    path = copy_bundle(student[1], tmp_path)
    (path / MODULE_FILE).unlink()
    with pytest.raises(BundleError, match="missing file 'model.pt'"):
        load_bundle(path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("wall"), r"missing keys \['wall'\]"),
    (lambda d: d.update(extra=1), r"unknown keys \['extra'\]"),
    (lambda d: d.update(format_version=99), "incompatible bundle format_version 99"),
    (lambda d: d.pop("format_version"), "no format_version"),
    (lambda d: d.update(package_version="9.0.0"), "newer than the installed"),
    (lambda d: d["units"].update(length="angstrom"), "incompatible units"),
    (lambda d: d.update(cutoff_nm=0.9), "disagrees with architecture.cutoff_nm"),
    (lambda d: d["wall"].update(type_names=["Cl", "Cho", "Urea"]), "wall types"),
    (lambda d: d["bead_types"][0].update(mass_dalton=0.0), "must weigh at least 1 Da"),
    (lambda d: d["bead_types"].pop(), "num_types 3 != number of bead types 2"),
    (lambda d: d.update(model_kind="professor"), "model_kind 'professor'"),
    (lambda d: d["architecture"].update(architecture="schnet"), "unknown architecture"),
    (lambda d: d["checksums"].update({"model.pt": "abc"}), "not a sha256"),
])
def test_invalid_manifests_are_refused(student, tmp_path, edit, message):
    path = copy_bundle(student[1], tmp_path)
    edit_manifest(path, edit)
    with pytest.raises(BundleError, match=message):
        load_bundle(path)


def test_corrupt_manifest_yaml(student, tmp_path):
    path = copy_bundle(student[1], tmp_path)
    (path / MANIFEST_NAME).write_text("bead_types: [unclosed\n")
    with pytest.raises(BundleError, match="not valid YAML"):
        load_bundle(path)


def test_module_manifest_mismatch(student, tmp_path):
    """A manifest that is self-consistent but describes another model than model.pt."""
    path = copy_bundle(student[1], tmp_path)

    def edit(d):
        d["cutoff_nm"] = 0.8
        d["architecture"]["cutoff_nm"] = 0.8
    edit_manifest(path, edit, reseal=True)
    with pytest.raises(BundleError, match="module cutoff_nm = 0.7 disagrees with the manifest"):
        load_bundle(path)


def test_resolve_shipped_names(student, tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    copy_bundle(student[1], models, "des-student")
    monkeypatch.setenv("CGKD_MODELS_DIR", str(models))
    assert shipped_bundles() == ["des-student"]
    assert resolve_bundle_path("des-student") == models / "des-student"
    assert load_bundle("des-student").manifest.model_kind == "student"
    with pytest.raises(BundleNotFoundError, match=r"shipped: \['des-student'\]"):
        resolve_bundle_path("des-teacher")
