"""``cgkd refine``: flags and YAML become one :class:`RefineConfig`; bad settings are one line, exit 2."""
import pytest

from openmm_cgkd.cli.main import build_parser, main
from openmm_cgkd.config import config_from_dict
from openmm_cgkd.training.config import RefineConfig


def test_flags_map_onto_the_config():
    from openmm_cgkd.cli.refine import _overrides

    args = build_parser().parse_args(["refine", "--student", "s", "--ensemble", "e", "--dataset", "d.h5", "--rounds",
                                      "2", "--replicas", "3", "--steps", "400", "--interval", "40", "--temperature",
                                      "298.1", "--epochs", "4", "--lr", "2e-4", "--platform", "cpu",
                                      "--spread-threshold", "50"])
    cfg = config_from_dict(RefineConfig, _overrides(args))
    assert (cfg.student, cfg.ensemble, cfg.dataset, cfg.rounds, cfg.spread_threshold) == ("s", "e", "d.h5", 2, 50.0)
    assert (cfg.md.replicas, cfg.md.steps, cfg.md.interval_steps, cfg.md.temperature_K, cfg.md.platform) == \
        (3, 400, 40, 298.1, "CPU")
    assert (cfg.fine_tune.epochs, cfg.fine_tune.lr) == (4, 2e-4)
    default = config_from_dict(RefineConfig, _overrides(build_parser().parse_args(["refine"])))
    assert default == RefineConfig()


@pytest.mark.parametrize("yaml_text,message", [
    ("rounds: 2\nmd: {stepz: 10}\n", "unknown key(s) ['stepz'] in md"),
    ("fine_tune: {lr: 0}\n", "fine_tune.lr > 0"),
    ("spread_quantile: 1.5\n", "spread_quantile"),
])
def test_bad_settings_are_one_line(tmp_path, capsys, yaml_text, message):
    path = tmp_path / "refine.yaml"
    path.write_text(yaml_text)
    assert main(["refine", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cgkd refine: error:") and message in err[0]
