"""One validation pass of the whole pipeline config before any stage runs: a typo in the last
section, an impossible trainer/model setting or a dataset the model cannot use is refused at
once, in one line, before anything is trained."""
import pytest
from bad_pipeline_configs import CASES, save_datasets, sound_config, with_changes

from openmm_cgkd.config import ConfigError
from openmm_cgkd.workflow.config import load_pipeline_config
from openmm_cgkd.workflow.validate import check_pipeline


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    save_datasets(d)
    return d


def _config(tmp_path, data_dir, **changes):
    import yaml

    (tmp_path / "a_file").write_text("x")
    data = with_changes(sound_config(tmp_path / "out", data_dir / "cg.h5"), changes,
                        {"kcal": data_dir / "kcal.h5", "a_file": tmp_path / "a_file"})
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_sound_config_passes(tmp_path, dataset):
    check_pipeline(load_pipeline_config(_config(tmp_path, dataset)))


@pytest.mark.parametrize("changes,expect", [pytest.param(c, e, id=i) for i, c, e, _ in CASES])
def test_a_bad_setting_anywhere_is_refused_before_any_stage(tmp_path, dataset, changes, expect):
    with pytest.raises(Exception) as err:
        check_pipeline(load_pipeline_config(_config(tmp_path, dataset, **changes)))
    from openmm_cgkd.errors import CGKDError

    assert isinstance(err.value, CGKDError), repr(err.value)
    assert expect in str(err.value) and "\n" not in str(err.value).strip()
    assert not (tmp_path / "out").exists()  # nothing written


def test_out_naming_a_file_and_only_on_a_fresh_directory(tmp_path, dataset):
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        check_pipeline(load_pipeline_config(_config(tmp_path, dataset, out="{a_file}")))
    with pytest.raises(ConfigError, match=r"the earlier stage\(s\) \['teachers', 'labels', 'students'\] have not run"):
        check_pipeline(load_pipeline_config(_config(tmp_path, dataset)), only=["md"])


def test_the_cli_refuses_in_one_line_and_exit_2(tmp_path, dataset, capsys):
    from openmm_cgkd.cli.main import main

    assert main(["pipeline", str(_config(tmp_path, dataset, **{"trainer.num_threads": 0}))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cgkd pipeline: error:") and "\n" not in err
