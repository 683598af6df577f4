"""A system definition is read strictly: a misspelt key or a non-number is an error, never a default."""
from pathlib import Path

import pytest

from openmm_cgkd.data.systemdef import SystemDefinition
from openmm_cgkd.errors import UsageError

DES = Path(__file__).resolve().parents[3] / "systems" / "des" / "system.yaml"


def _variant(tmp_path, old, new):
    text = DES.read_text().replace("opls-des.yaml", str(DES.parent / "opls-des.yaml")) \
        .replace("mapping.yaml", str(DES.parent / "mapping.yaml"))
    assert old in text
    path = tmp_path / "system.yaml"
    path.write_text(text.replace(old, new))
    return path


def test_the_shipped_definition_loads():
    assert SystemDefinition.from_yaml(DES).temperature_K == pytest.approx(298.1)


@pytest.mark.parametrize("old,new,expect", [
    ("temperature_K: 298.1", "temperture_K: 350", "unknown key(s) ['temperture_K']"),
    ("temperature_K: 298.1", "temperature_K: hot", "temperature_K must be a number"),
    ("timestep_fs: 2.0", "timestep_fs: .inf", "timestep_fs must be finite"),
    ("cutoff_nm: 1.0 ", "cutoff_nm: 0 ", "cutoff_nm > 0"),
    ("constraints: HBonds", "constraints: Hbonds", "constraints must be one of"),
    ("  urea: 500", "  urea: many", "composition.urea must be an integer"),
])
def test_a_bad_key_or_value_is_one_clear_error(tmp_path, old, new, expect):
    with pytest.raises(UsageError) as err:
        SystemDefinition.from_yaml(_variant(tmp_path, old, new))
    assert expect in str(err.value) and "\n" not in str(err.value)
