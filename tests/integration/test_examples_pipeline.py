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
