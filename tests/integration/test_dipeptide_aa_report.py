"""systems/dipeptide/aa_report.py --independent: a second AA run scored against the first, checked
against an independent calculation (mdtraj's dihedrals of the committed mapped frames, numpy's
histogram, scipy's Jensen-Shannon distance). Uses the committed runs aa (100 ns) and aa_b."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DIP = ROOT / "systems" / "dipeptide"


def _mapped_phi_psi(run_dir):
    import mdtraj as md
    from openmm.app import PDBFile

    from openmm_cgkd.data.aamd import read_mapped

    ds = read_mapped(run_dir)
    traj = md.Trajectory(ds.positions, md.Topology.from_openmm(PDBFile(str(DIP / "cg_start.pdb")).topology))
    ang = np.degrees(md.compute_dihedrals(traj, [[0, 1, 2, 4], [1, 2, 4, 5]]))
    return (ang + 180.0) % 360.0 - 180.0


def _probability(ang):
    edges = np.arange(-180.0, 181.0, 10.0)
    h, _, _ = np.histogram2d(ang[:, 0], ang[:, 1], bins=[edges, edges])
    return h / h.sum()


def test_independent_run_is_scored_against_the_first(tmp_path):
    from scipy.spatial.distance import jensenshannon

    spec = importlib.util.spec_from_file_location("aa_report", DIP / "aa_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "report.json"
    assert mod.main(["--independent", str(DIP / "aa_b"), "--out-json", str(out), "--figures", str(tmp_path)]) == 0
    rep = json.loads(out.read_text())["independent_run"]
    ang = _mapped_phi_psi(DIP / "aa_b")
    p, q = _probability(ang), _probability(_mapped_phi_psi(DIP / "aa"))
    assert rep["frames"] == len(ang)
    assert rep["fes_score_vs_first"]["tae"] == pytest.approx(np.abs(p - q).sum(), abs=1e-6)
    assert rep["fes_score_vs_first"]["js"] == pytest.approx(jensenshannon(p.ravel(), q.ravel()) ** 2, rel=1e-6)
    alpha_r = np.mean((ang[:, 0] < 0) & (ang[:, 1] >= -120) & (ang[:, 1] < 50))
    assert rep["populations"]["alpha_R"]["fraction"] == pytest.approx(alpha_r, abs=1e-9)
    assert rep["run_dir"] == "systems/dipeptide/aa_b" and (tmp_path / "dipeptide_aa_fes_independent.png").is_file()
