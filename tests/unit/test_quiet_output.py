"""Quiet, honest output: the dependencies' start-up chatter (Warp's CUDA-driver warning, the
simtk.openmm deprecation record, mdtraj's dcdplugin lines) is dropped at its source, other
output passes; library code never switches the user's matplotlib backend."""
import os
import subprocess
import sys
from pathlib import Path

from openmm_cgkd.quiet import NATIVE_NOISE, filtered_native_output

ROOT = Path(__file__).resolve().parents[2]


def test_filter_drops_known_lines_and_keeps_the_rest(capfd):
    import ctypes

    libc = ctypes.CDLL(None)
    with filtered_native_output():
        os.write(2, b"Warp CUDA warning: Could not find or load the NVIDIA CUDA driver. GPU execution ...\n")
        os.write(2, b"a real error from C\n")
        libc.printf(b"dcdplugin) detected standard 32-bit DCD file of native endianness\n")
        libc.printf(b"real output from C\n")  # buffered by libc when stdout is no terminal: flushed first
        print("python output")
    out, err = capfd.readouterr()
    assert "a real error from C" in err and "real output from C" in out and "python output" in out
    for noise in NATIVE_NOISE:
        assert noise not in out + err


def test_filter_keeps_output_when_the_block_raises(capfd):
    try:
        with filtered_native_output():
            os.write(2, b"context for the failure\n")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert "context for the failure" in capfd.readouterr().err


def test_demo_imports_and_dcd_reads_are_quiet(tmp_path):
    """In a fresh process: torchmd-net (Warp), openmm-torch's TorchForce (simtk shim) and a DCD
    read (dcdplugin) print nothing."""
    code = f"""
import numpy as np
from openmm_cgkd.quiet import import_torchmdnet
from openmm_cgkd.quiet import import_torchforce
import_torchmdnet(); import_torchforce()
from openmm_cgkd.topology import bead_topology_from_counts, write_bead_pdb
from openmm_cgkd.analysis.report import load_trajectory
import mdtraj as md
top = bead_topology_from_counts({{"Cl": 4}}, np.eye(3) * 2.0)
pdb = write_bead_pdb(r"{tmp_path}/s.pdb", top, np.random.default_rng(0).uniform(0, 2, (4, 3)))
t = md.load(str(pdb)); t.save_dcd(r"{tmp_path}/t.dcd")
assert load_trajectory(r"{tmp_path}/t.dcd", pdb).n_frames == 1
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout + proc.stderr
    for noise in (*NATIVE_NOISE, "simtk.openmm", "dcdplugin)", "Warp"):
        assert noise not in text, text[-2000:]


def test_library_never_switches_the_matplotlib_backend(tmp_path):
    """Plots are drawn on Figure + Agg canvas: a user's backend stays, pyplot is never imported."""
    code = f"""
import sys
import matplotlib
matplotlib.use("svg")
import numpy as np
from openmm_cgkd.analysis.plots import plot_energies, plot_tae_bars
from openmm_cgkd.analysis.replicas import replica_stat
plot_energies([(np.arange(5.0), np.arange(5.0), 2, "r1")], r"{tmp_path}/e.png")
plot_tae_bars({{"rdf": {{"Cl-Cl": replica_stat([0.1, 0.2])}}}}, r"{tmp_path}/p.png")
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert "matplotlib.pyplot" not in sys.modules
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for png in ("e.png", "p.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_no_matplotlib_use_in_the_package():
    for path in (ROOT / "openmm_cgkd").rglob("*.py"):
        text = path.read_text()
        assert "matplotlib.use(" not in text and "import matplotlib.pyplot" not in text, path


def test_lightning_startup_chatter_is_dropped_and_its_errors_pass(caplog):
    """'GPU available', tips and deprecation notes are dropped at their loggers; other records pass."""
    import logging
    import warnings

    from openmm_cgkd.quiet import quiet_lightning

    quiet_lightning()
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        log.info("GPU available: False, used: False")
        log.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        log.info("a real message about the run")
    assert [r.getMessage() for r in caplog.records] == ["a real message about the run"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_lightning.__globals__["_LIGHTNING_QUIET"] = False  # re-install the filters under catch_warnings
        quiet_lightning()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and "
                      "treespec.is_leaf()` instead.", DeprecationWarning)
        warnings.warn("something the user must see", UserWarning)
    assert [str(w.message) for w in caught] == ["something the user must see"]
