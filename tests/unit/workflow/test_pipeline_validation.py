"""One validation pass of the whole pipeline config before any stage runs: a typo in the last
section, an impossible trainer/model setting or a dataset the model cannot use is refused at
once, in one line, before anything is trained."""
import numpy as np
import pytest

from openmm_cgkd.config import ConfigError
from openmm_cgkd.workflow.config import load_pipeline_config
from openmm_cgkd.workflow.validate import check_pipeline


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from openmm_cgkd.training.synthetic import make_synthetic_system

    syn = make_synthetic_system(n_beads=(6, 6), box_nm=1.9, n_frames=12, steps_per_frame=5,
                                equilibration_steps=20, seed=3)
    d = tmp_path_factory.mktemp("data")
    syn.dataset.save(d / "cg.h5")
    small = syn.dataset
    small.forces = small.forces / 41.84
    small.save(d / "kcal.h5")
    return d


def _config(tmp_path, data_dir, **changes):
    import yaml

    data = {"out": str(tmp_path / "out"), "dataset": str(data_dir / "cg.h5"),
            "model": {"architecture": "graph-network", "embedding_dim": 8, "num_layers": 1, "num_rbf": 4,
                      "rbf_type": "gauss", "cutoff_nm": 0.6},
            "trainer": {"max_epochs": 1, "accelerator": "cpu"}, "teachers": {"members": 2},
            "md": {"steps": 20, "report_interval": 5}}
    for key, value in changes.items():
        section, _, sub = key.partition(".")
        if sub:
            data[section] = {**data.get(section, {}), sub: value}
        else:
            data[section] = value
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_sound_config_passes(tmp_path, dataset):
    check_pipeline(load_pipeline_config(_config(tmp_path, dataset)))


@pytest.mark.parametrize("changes,expect", [
    ({"analysis": {"rdf_bin_nmm": 0.01}}, "analysis"),
    ({"trainer.num_threads": 0}, "num_threads must be >= 1"),
    ({"trainer.precision": "33"}, "trainer.precision must be one of"),
    ({"trainer.devices": 0}, "trainer.devices"),
    ({"trainer.strategy": "dpp"}, "trainer.strategy must be one of"),
    ({"model.cutoff_nm": 0}, "cutoff"),
    ({"model.base": "no-such-net"}, "no model config 'no-such-net'"),
    ({"model.cutoff_nm": 1.2}, "narrower than twice the model's cutoff"),
    ({"teachers.members": "two"}, "members must be an integer"),
    ({"md.timestep_fs": 10.0}, "beyond the 4 fs run without a check"),
    ({"md.report_interval": 50}, "longer than the run"),
    ({"dataset": "KCAL"}, "implausibly SMALL"),
])
def test_a_bad_setting_anywhere_is_refused_before_any_stage(tmp_path, dataset, changes, expect):
    if changes.get("dataset") == "KCAL":
        changes = {"dataset": str(dataset / "kcal.h5")}
    with pytest.raises(Exception) as err:
        check_pipeline(load_pipeline_config(_config(tmp_path, dataset, **changes)))
    from openmm_cgkd.errors import CGKDError

    assert isinstance(err.value, CGKDError), repr(err.value)
    assert expect in str(err.value) and "\n" not in str(err.value).strip()
    assert not (tmp_path / "out").exists()  # nothing written


def test_out_naming_a_file_and_only_on_a_fresh_directory(tmp_path, dataset):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        check_pipeline(load_pipeline_config(_config(tmp_path, dataset, out=str(tmp_path / "file"))))
    with pytest.raises(ConfigError, match=r"the earlier stage\(s\) \['teachers', 'labels', 'students'\] have not run"):
        check_pipeline(load_pipeline_config(_config(tmp_path, dataset)), only=["md"])


def test_the_cli_refuses_in_one_line_and_exit_2(tmp_path, dataset, capsys):
    from openmm_cgkd.cli.main import main

    assert main(["pipeline", str(_config(tmp_path, dataset, **{"trainer.num_threads": 0}))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cgkd pipeline: error:") and "\n" not in err
