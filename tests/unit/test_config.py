"""One config mechanism (openmm_cgkd/config.py) for the training configs, the potential
architecture, the analysis settings and the benchmark settings."""
import numpy as np
import pytest

from openmm_cgkd.analysis.report import AnalysisSettings
from openmm_cgkd.benchmark.md import BenchmarkSettings
from openmm_cgkd.config import Config, ConfigError, ConfigFileNotFoundError, config_from_dict
from openmm_cgkd.errors import CGKDError, MissingFileError
from openmm_cgkd.model.potential import PotentialConfig
from openmm_cgkd.training.config import TeachersConfig, TrainerConfig

# (class, a valid key with a value of the wrong type, the type named in the error)
CASES = [(TrainerConfig, ("max_epochs", "ten"), "an integer"),
         (PotentialConfig, ("cutoff_nm", "1 nm"), "a number"),
         (AnalysisSettings, ("adf_cutoffs", 0.5), "a list"),
         (BenchmarkSettings, ("wall", "yes"), "true or false")]


@pytest.mark.parametrize("cls,bad,kind", CASES, ids=[c[0].__name__ for c in CASES])
def test_unknown_keys_and_wrong_types_are_config_errors(cls, bad, kind):
    assert issubclass(cls, Config) and issubclass(ConfigError, CGKDError) and ConfigError.exit_code == 2
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['typo_key'\] in here; known: \[") as err:
        cls.from_dict({"typo_key": 1}, "here")
    assert bad[0] in str(err.value)  # the known keys are listed
    with pytest.raises(ConfigError, match=rf"here\.{bad[0]} must be {kind}, got"):
        cls.from_dict({bad[0]: bad[1]}, "here")


def test_values_are_converted_and_round_trip(tmp_path):
    s = AnalysisSettings.from_dict({"adf_cutoffs": [0.5, 1], "n_blocks": np.int64(3)})
    assert s.adf_cutoffs == (0.5, 1.0) and s.n_blocks == 3 and isinstance(s.n_blocks, int)
    assert AnalysisSettings.from_dict(s.to_dict()) == s
    b = BenchmarkSettings.from_dict({"n_beads": 90, "architectures": ["tensornet"], "cutoff_nm": 1})
    assert b.cutoff_nm == 1.0 and isinstance(b.cutoff_nm, float) and b.architectures == ["tensornet"]
    assert BenchmarkSettings.from_dict(b.to_dict()) == b
    p = PotentialConfig.from_dict({"architecture": "graph-network", "num_types": 3, "cutoff_nm": 0.8})
    path = tmp_path / "p.yaml"
    p.to_yaml(path)
    assert PotentialConfig.from_yaml(path) == p
    (tmp_path / "t.yaml").write_text("members: 3\ntrainer: {max_epochs: 2}\n")
    t = TeachersConfig.from_yaml(tmp_path / "t.yaml")
    assert t.members == 3 and t.trainer.max_epochs == 2 and t.trainer.batch_size == TrainerConfig().batch_size


def test_nested_paths_values_and_files():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['max_epoch'\] in trainer"):
        TeachersConfig.from_dict({"trainer": {"max_epoch": 3}})
    with pytest.raises(ConfigError, match="must be true or false"):  # a bool is never a number, nor vice versa
        TrainerConfig.from_dict({"deterministic": 1})
    with pytest.raises(ConfigError, match="must be an integer"):
        TrainerConfig.from_dict({"max_epochs": True})
    # impossible values: the class's own checks, still the package's errors
    with pytest.raises(ConfigError, match="unknown architecture"):
        PotentialConfig.from_dict({"architecture": "transformer-xl"})
    with pytest.raises(CGKDError, match="adf_cutoffs must be positive"):
        AnalysisSettings.from_dict({"adf_cutoffs": [-1.0]})
    with pytest.raises(CGKDError, match="members"):
        BenchmarkSettings.from_dict({"members": 1})
    with pytest.raises(ConfigFileNotFoundError, match="not found") as err:
        BenchmarkSettings.from_yaml("no/such/file.yaml")
    assert isinstance(err.value, MissingFileError) and isinstance(err.value, FileNotFoundError)


def test_yaml_that_is_not_a_mapping(tmp_path):
    (tmp_path / "l.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        AnalysisSettings.from_yaml(tmp_path / "l.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        TrainerConfig.from_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        config_from_dict(TeachersConfig, {"trainer": [1]})
