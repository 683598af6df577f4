"""The pipeline's ``aa`` stage with a system given by OpenMM force field XML files and a structure
(the shipped dipeptide): no packing, no resizing; a few ps of AA MD mapped to the dataset
(``--only aa``); a system without a box is valid through md and analysis (they score its bonded
distributions; tests/integration/test_pipeline_molecules.py runs such a pipeline end to end)."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from openmm_cgkd.config import ConfigError
from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.errors import CGKDError
from openmm_cgkd.workflow.config import load_pipeline_config
from openmm_cgkd.workflow.run import run_pipeline

DIPEPTIDE = Path(__file__).resolve().parents[2] / "systems" / "dipeptide"


def _config(root: Path, **aa_changes) -> Path:
    aa = {"system": str(DIPEPTIDE / "system.yaml"), "platform": "CPU", "threads": 2, "seed": 3,
          "protocol": {"equilibration_ps": 0.2, "production_ps": 0.8, "frame_interval_ps": 0.1,
                       "checkpoint_every_frames": 4}, **aa_changes}
    cfg = {"out": "run", "dataset": "cg.h5", "aa": aa,
           "model": {"architecture": "graph-network", "embedding_dim": 8, "num_layers": 1, "num_rbf": 8,
                     "cutoff_nm": 0.6},
           "trainer": {"max_epochs": 1, "batch_size": 4, "progress_bar": False, "num_threads": 1}}
    path = root / "pipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_aa_stage_runs_an_xml_system_and_maps_it(tmp_path):
    logs = []
    results = run_pipeline(load_pipeline_config(_config(tmp_path)), only=["aa"], log=logs.append)
    assert results["aa"].frames == 8 and results["aa"].beads == 6
    assert any("minimised ala2.pdb" in str(line) for line in logs)  # its structure, not a packed box
    ds = CGDataset.load(tmp_path / "cg.h5")
    assert ds.n_frames == 8 and not ds.periodic and np.all(ds.boxes == 0.0)
    assert ds.temperature_K == pytest.approx(300.0)
    assert sorted(map(sorted, ds.topology.bonds.tolist())) == [[0, 1], [1, 2], [2, 3], [2, 4], [4, 5]]
    assert ds.provenance["system"]["kind"] == "openmm"
    # a second call finds the stage done and the dataset there
    again = []
    run_pipeline(load_pipeline_config(_config(tmp_path)), only=["aa"], log=again.append)
    assert not any("AA MD" in str(line) or "minimised" in str(line) for line in again)
    assert CGDataset.load(tmp_path / "cg.h5").n_frames == 8


def test_molecules_for_a_structure_system_is_refused_before_any_stage(tmp_path):
    with pytest.raises(ConfigError) as err:
        run_pipeline(load_pipeline_config(_config(tmp_path, molecules=10)), log=lambda *a: None)
    msg = str(err.value)
    assert msg.startswith("aa.molecules: ") and "only a packed system" in msg and "\n" not in msg
    assert not (tmp_path / "run").exists()


def test_a_system_without_a_box_is_valid_through_md_and_analysis(tmp_path):
    """No box: the md and analysis stages score the bonded distributions (no g(r)/ADF/CDF), so the
    whole config validates before any stage; nothing is run or written by the check."""
    from openmm_cgkd.workflow.validate import check_pipeline

    check_pipeline(load_pipeline_config(_config(tmp_path)))
    assert not (tmp_path / "run").exists() and not (tmp_path / "cg.h5").exists()


def test_cli_refuses_molecules_for_a_structure_system_in_one_line(tmp_path, capsys):
    from openmm_cgkd.cli.main import main

    rc = main(["pipeline", str(_config(tmp_path, molecules=10)), "--only", "aa"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "aa.molecules:" in err, err


@pytest.mark.parametrize("mapping,forcefield,error,expect", [
    # the mapping lacks a residue of the structure: known from the structure, before the AA MD
    ("type_names: [C]\nresidues:\n  ALA:\n    - {type: C, atoms: all}\n", None, "MappingError",
     "residue 'ACE' is not in the mapping spec"),
    # a force field without a template for a residue of the structure
    (None, ["amber14/tip3p.xml"], "UsageError", "the force field cannot build the system of ala2.pdb"),
])
def test_a_structure_system_is_built_and_mapped_before_any_stage(tmp_path, mapping, forcefield, error, expect):
    from openmm_cgkd.workflow.validate import check_pipeline

    aa = {}
    if mapping is not None:
        (tmp_path / "bad_map.yaml").write_text(mapping)
        aa["mapping"] = str(tmp_path / "bad_map.yaml")
    if forcefield is not None:
        for f in ("ala2.pdb", "mapping.yaml"):
            (tmp_path / f).write_text((DIPEPTIDE / f).read_text())
        d = yaml.safe_load((DIPEPTIDE / "system.yaml").read_text())
        (tmp_path / "system.yaml").write_text(yaml.safe_dump({**d, "forcefield": forcefield}))
        aa["system"] = str(tmp_path / "system.yaml")
    with pytest.raises(CGKDError) as err:  # reported by cgkd as one line, exit 2
        check_pipeline(load_pipeline_config(_config(tmp_path, **aa)), only=["aa"])
    assert type(err.value).__name__ == error and expect in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()
