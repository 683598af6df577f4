"""`cgkd benchmark` times both serving backends (TorchForce and PythonForce) and writes OpenMM's
benchmark.py fields; the python-backend variants (eager members) compute the same forces as the
TorchForce ones."""
import json
import math

import numpy as np
import pytest
import torch

openmm = pytest.importorskip("openmm")
from openmm import unit  # noqa: E402

from openmm_cgkd.benchmark.md import BenchmarkError, BenchmarkSettings, ScaledPotential, build_variant_system  # noqa: E402
from openmm_cgkd.bundle import build_untrained_bundle, untrained_config  # noqa: E402
from openmm_cgkd.cli.main import main  # noqa: E402
from openmm_cgkd.serving.forcefield import CGKDForceField  # noqa: E402
from openmm_cgkd.systems import get_system  # noqa: E402
from openmm_cgkd.topology import bead_topology  # noqa: E402

OPENMM_FIELDS = ("test", "ensemble", "precision", "constraints", "hydrogen_mass", "timestep_in_fs", "platform",
                 "platform_properties", "steps", "elapsed_time", "ns_per_day")


def test_benchmark_cli_times_both_backends_in_openmm_fields(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["benchmark", "--beads", "30", "--cutoff", "0.6", "--members", "2", "--embedding-dim", "8",
               "--layers", "1", "--num-rbf", "4", "--steps", "2", "--warmup", "1", "--repeats", "2",
               "--models", "student", "naive-ensemble", "--platform", "CPU", "--threads", "1",
               "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "student [python]" in text and "naive-ensemble [python]" in text
    data = json.loads(out.read_text())
    rows = {(r["model"], r["backend"]): r for r in data["results"]}
    assert sorted(rows) == [("naive-ensemble", "python"), ("naive-ensemble", "torchforce"),
                            ("student", "python"), ("student", "torchforce")]
    assert rows[("naive-ensemble", "python")]["network_forces"] == 2
    for r in rows.values():
        assert r["openmm"]["median_ms"] > 0 and r["torch"]["median_ms"] > 0
    goals = [g for g in data["goals"] if g["backend"] == "python"]
    assert goals and all("[python]" in g["setting"] for g in goals)

    bench = data["benchmarks"]
    assert len(bench) == 4 and len({b["test"] for b in bench}) == 4
    for b in bench:
        assert all(k in b for k in OPENMM_FIELDS)
        r = rows[(b["model"], b["backend"])]
        assert b["platform"] == "CPU" and b["precision"] == "mixed" and b["ensemble"] == "NVT"
        assert b["timestep_in_fs"] == 2.0 and b["steps"] == 4  # 2 steps x 2 repeats
        # elapsed = the timed blocks; ns/day and ms/step follow from it as in OpenMM's benchmark.py
        assert math.isclose(b["elapsed_time"], sum(r["openmm"]["repeats_ms"]) * 2 / 1e3, rel_tol=1e-9)
        assert math.isclose(b["ns_per_day"], 2.0e-6 * b["steps"] / b["elapsed_time"] * 86400, rel_tol=1e-9)
        assert math.isclose(b["ms_per_step"], 1e3 * b["elapsed_time"] / b["steps"], rel_tol=1e-9)
        assert b["ms_per_step_median"] == r["openmm"]["median_ms"]
        assert b["torch_ms_per_call"] == r["torch"]["median_ms"] and b["n_beads"] == 30
    m = data["machine"]
    assert m["openmm_version"] == openmm.__version__ and "timestamp" in m and "system" in m


def test_benchmark_settings_check_backends():
    with pytest.raises(BenchmarkError, match="backends must be distinct names"):
        BenchmarkSettings(backends=["torchforce", "jax"])
    with pytest.raises(BenchmarkError, match="backends must be distinct names"):
        BenchmarkSettings(backends=[])


def test_python_backend_variants_equal_torchforce_variants(tmp_path):
    """Naive ensemble of eager members through PythonForces = the same through TorchForces."""
    torch.set_num_threads(1)
    cfg = untrained_config("graph-network", cutoff_nm=0.6)
    ff = CGKDForceField(build_untrained_bundle(tmp_path / "ens", cfg, model_kind="ensemble", num_members=2, seed=3))
    names, _, box = get_system("des").lattice(30, seed=1)
    pos = np.random.default_rng(7).uniform(-0.35, 0.35, (30, 3))
    top = bead_topology(names, box)
    eager = list(ff.bundle.eager_model().members)
    results = []
    for backend in ("torchforce", "python"):
        system = build_variant_system(ff, top, box, [ScaledPotential(m, 0.5) for m in eager], wall=False,
                                      backend=backend, device=None if backend == "torchforce" else "cpu")
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        ctx.setPositions(pos * unit.nanometer)
        st = ctx.getState(getForces=True, getEnergy=True)
        results.append((st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                        st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)))
        del ctx
    (e_tf, f_tf), (e_py, f_py) = results
    scale = np.abs(f_tf).max()
    assert scale > 0.1
    np.testing.assert_allclose(f_py, f_tf, rtol=0, atol=1e-5 * scale)
    assert math.isclose(e_py, e_tf, rel_tol=1e-5, abs_tol=1e-4)
