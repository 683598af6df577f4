"""Eager weights in bundles (state_dict.pt): written by save_bundle, checksummed, rebuilt into
the eager model (CGPotential / EnsemblePotential) that gives the TorchScript module's outputs;
bundles without the file (older ones) rebuild it from the TorchScript module."""
import numpy as np
import pytest
import torch
import yaml

from openmm_cgkd.bundle import (EAGER_FILE, MANIFEST_NAME, BundleError, load_bundle, save_bundle,
                                untrained_config)
from openmm_cgkd.systems import get_system
from openmm_cgkd.model.ensemble import EnsemblePotential
from openmm_cgkd.model.potential import CGPotential
from openmm_cgkd.model.wall import WallParameters

DES_BEAD_TYPES = get_system("des").bead_types()

NAMES = ["Cho", "Cl", "Urea"]


def _config():
    return untrained_config(cutoff_nm=0.7, embedding_dim=8, num_layers=1, num_rbf=4, rbf_type="gauss",
                            max_num_neighbors=48)


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 3, (20,), generator=g), torch.rand(20, 3, generator=g) * 1.6, torch.eye(3) * 1.6


def _save(path, model, kind):
    return save_bundle(path, model, bead_types=DES_BEAD_TYPES, wall=WallParameters.zero(NAMES), model_kind=kind)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    model = CGPotential(_config())
    model.set_energy_affine(scale=[1.5, 0.5, 2.0], offset=[1.0, -2.0, 3.0])  # buffers travel too
    return model, _save(tmp_path_factory.mktemp("b") / "student", model, "student")


def _drop_eager_file(path):
    """Make ``path`` look like a bundle written before state_dict.pt existed."""
    (path / EAGER_FILE).unlink()
    data = yaml.safe_load((path / MANIFEST_NAME).read_text())
    del data["checksums"][EAGER_FILE]
    data["checksums"].pop("manifest", None)  # format 1: the manifest not covered either
    data["format_version"] = 1
    (path / MANIFEST_NAME).write_text(yaml.safe_dump(data, sort_keys=False))


def test_save_writes_checksummed_eager_weights(student):
    model, path = student
    bundle = load_bundle(path)
    assert (path / EAGER_FILE).is_file() and EAGER_FILE in bundle.manifest.checksums
    assert set(bundle.state_dict) == set(model.state_dict())
    eager = bundle.eager_model()
    assert isinstance(eager, CGPotential) and not isinstance(eager, torch.jit.ScriptModule)
    for a, b, c in zip(eager(*_inputs()), bundle.module(*_inputs()), model(*_inputs())):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, rtol=0, atol=0)
    assert float(eager(*_inputs())[2].abs().max()) > 0
    # a fresh copy each call: changing one does not change the next
    eager.set_energy_affine(offset=[100.0, 100.0, 100.0])
    torch.testing.assert_close(bundle.eager_model()(*_inputs())[0], model(*_inputs())[0], rtol=0, atol=0)


def test_ensemble_eager_model(tmp_path):
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(CGPotential(_config()))
    ens = EnsemblePotential(members)
    bundle = load_bundle(_save(tmp_path / "ens", ens, "ensemble"))
    eager = bundle.eager_model()
    assert isinstance(eager, EnsemblePotential) and eager.num_members == 3
    for a, b in zip(eager(*_inputs()), ens(*_inputs())):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_older_bundle_without_eager_file_rebuilds_from_torchscript(student, tmp_path):
    import shutil

    model, src = student
    path = tmp_path / "old"
    shutil.copytree(src, path)
    _drop_eager_file(path)
    bundle = load_bundle(path)
    assert bundle.state_dict is None
    for a, b in zip(bundle.eager_model()(*_inputs()), model(*_inputs())):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(BundleError, match=f"has no {EAGER_FILE}"):
        load_bundle(path, torchscript=False)


def test_load_without_torchscript(student):
    model, path = student
    bundle = load_bundle(path, torchscript=False)
    assert bundle.module is None
    for a, b in zip(bundle.eager_model()(*_inputs()), model(*_inputs())):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_tampered_or_mismatched_eager_weights_are_refused(student, tmp_path):
    import shutil

    _, src = student
    path = tmp_path / "tampered"
    shutil.copytree(src, path)
    with open(path / EAGER_FILE, "r+b") as fh:
        fh.seek(200)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(BundleError, match=f"corrupt file '{EAGER_FILE}'"):
        load_bundle(path)
    # weights of another architecture (consistent checksum): refused by name, not loaded silently
    path2 = tmp_path / "mismatch"
    shutil.copytree(src, path2)
    torch.manual_seed(0)
    other = CGPotential(untrained_config(cutoff_nm=0.7, embedding_dim=16, num_layers=1, num_rbf=4,
                                         max_num_neighbors=48))
    torch.save(other.state_dict(), path2 / EAGER_FILE)
    from openmm_cgkd.fileio import file_sha256 as sha256_file

    data = yaml.safe_load((path2 / MANIFEST_NAME).read_text())
    data["checksums"][EAGER_FILE] = sha256_file(path2 / EAGER_FILE)
    from openmm_cgkd.bundle.manifest import manifest_content_sha256

    data["checksums"]["manifest"] = manifest_content_sha256(data)
    (path2 / MANIFEST_NAME).write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(BundleError, match="do not fit the manifest's architecture"):
        load_bundle(path2).eager_model()
    assert np.isfinite(float(load_bundle(src).eager_model()(*_inputs())[0]))
