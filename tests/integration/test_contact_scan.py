"""systems/des/contact_scan.py: the pulled configurations and the energy split against
independent computations (minimum-image distances; the wall summed pair by pair in numpy; the
network energy of the bundle's torch module called directly)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _script():
    spec = importlib.util.spec_from_file_location("contact_scan", ROOT / "systems" / "des" / "contact_scan.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_scan_energies_match_the_wall_and_the_network_computed_apart():
    import torch

    from openmm_cgkd.bundle import load_bundle
    from openmm_cgkd.data.dataset import CGDataset

    cs = _script()
    ds = CGDataset.load(ROOT / "systems" / "des" / "reline_252_cg.h5")
    bundle = load_bundle("des-student")
    a, b = ds.type_names.index("Cho"), ds.type_names.index("Cl")
    frames, radii = [40], np.array([0.30, 0.36, 0.45])
    energies = cs.scan(bundle.path, ds, frames, a, b, radii)
    wall = bundle.manifest.wall
    for k, (f, (i, j, moved)) in enumerate(zip(frames, cs.pulled(ds, frames, a, b, radii))):
        box = np.diag(ds.boxes[f])
        assert ds.bead_types[i] == a and ds.bead_types[j] == b
        for m, pos in enumerate(moved):
            d = pos[:, None] - pos[None]
            d -= box * np.round(d / box)
            r = np.linalg.norm(d, axis=-1)
            assert r[i, j] == pytest.approx(radii[m], abs=1e-9)
            np.testing.assert_array_equal(np.delete(pos, j, 0), np.delete(ds.positions[f], j, 0))
            p, q = np.triu_indices(len(pos), 1)
            t = ds.bead_types
            e_wall = sum(float(wall.pair_energy(r[p, q][sel], ti, tj).sum())  # each pair of bead types
                         for ti in range(wall.n_types) for tj in range(wall.n_types)
                         if (sel := (t[p] == ti) & (t[q] == tj)).any())
            assert energies["wall"][k, m] == pytest.approx(e_wall, rel=1e-4, abs=1e-3)
            out = bundle.module(torch.as_tensor(t, dtype=torch.long), torch.as_tensor(pos, dtype=torch.float32),
                                torch.as_tensor(ds.boxes[f], dtype=torch.float32))
            assert energies["network"][k, m] == pytest.approx(float(out[0]), rel=1e-4, abs=0.05)
    assert energies["wall"][:, 0].min() > energies["wall"][:, 2].max()  # 0.30 nm is inside the Cho-Cl wall


def test_aa_contact_distance_is_where_the_pair_first_occurs():
    from openmm_cgkd.data.dataset import CGDataset

    cs = _script()
    ds = CGDataset.load(ROOT / "systems" / "des" / "reline_252_cg.h5")
    a, b = ds.type_names.index("Cho"), ds.type_names.index("Cl")
    frames = np.arange(0, ds.n_frames, max(1, ds.n_frames // 200))
    contact = cs.aa_contact_nm(ds, a, b, frames)
    closest = min(float(np.min(_pair_distances(ds, f, a, b))) for f in frames)
    assert closest <= contact + 0.002 and contact < closest + 0.03  # g(r) > 0.01 within a few bins of the minimum


def _pair_distances(ds, f, a, b):
    box = np.diag(ds.boxes[f])
    d = ds.positions[f][ds.bead_types == a][:, None] - ds.positions[f][ds.bead_types == b][None]
    d -= box * np.round(d / box)
    return np.linalg.norm(d, axis=-1)


def test_plot_only_draws_the_figure_from_scan_json(tmp_path):
    import json

    cs = _script()
    r = np.round(np.arange(0.26, 0.5, 0.01), 3)
    curve = (100.0 * (r - 0.37) ** 2).tolist()
    result = {"pair": ["Cho", "Cl"], "r_nm": r.tolist(), "r_ref_nm": 0.40, "aa_contact_nm": 0.35, "margin_nm": 0.02,
              "temperature_K": 298.1, "frames": [0, 5],
              "models": {name: {"network": curve, "wall": curve, "total": curve, "trap_kT": trap, "trap_r_nm": None}
                         for name, trap in (("a", [1.0, -2.0]), ("b", None))}}
    (tmp_path / "scan.json").write_text(json.dumps(result))
    assert cs.main(["--plot-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "scan.png").stat().st_size > 10000
    with pytest.raises(SystemExit):
        cs.main(["--out", str(tmp_path)])  # neither bundles nor --plot-only
