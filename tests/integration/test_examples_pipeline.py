"""examples/run_quick_pipeline.py: the shipped quick config validates and the plan names every stage.
(The pipeline itself runs end to end in tests/integration/test_pipeline.py on a tiny system.)"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_pipeline_example_checks_the_shipped_config():
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "run_quick_pipeline.py"), "--check"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "reline_252_cg.h5" in res.stdout
    assert "teachers -> labels -> students -> md -> analysis -> report" in res.stdout
    assert "ensemble-e-ft-faa" in res.stdout


def test_paper_config_is_valid():
    from openmm_cgkd.workflow.config import load_pipeline_config

    cfg = load_pipeline_config(ROOT / "systems" / "des" / "paper.yaml")
    assert len(cfg.students.variants) == 9 and cfg.md.replicas == 8 and cfg.aa is not None


def test_dipeptide_study_config_is_valid(tmp_path):
    """systems/dipeptide/study.yaml validates in full against a dataset of the AA run's first frames."""
    from openmm_cgkd.data.aamd import read_mapped
    from openmm_cgkd.workflow.config import load_pipeline_config
    from openmm_cgkd.workflow.validate import check_pipeline

    ds = read_mapped(ROOT / "systems" / "dipeptide" / "aa")
    ds.select_frames(list(range(2000))).save(tmp_path / "ala2_cg.h5")
    cfg = load_pipeline_config(ROOT / "systems" / "dipeptide" / "study.yaml")
    assert cfg.model["architecture"] == "hipnn-ts" and cfg.md.temperature_K == 300.0
    cfg.dataset = str(tmp_path / "ala2_cg.h5")
    check_pipeline(cfg)
