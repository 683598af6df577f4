"""`cgkd aa-build`, `cgkd aa-run`, `cgkd map`: registered, with helpful --help."""
import pytest

from openmm_cgkd.cli.main import main


@pytest.mark.parametrize("cmd,words", [
    ("aa-build", ["packmol", "--molecules", "--out"]),
    ("aa-run", ["resume", "--run-dir", "--production-ps", "--frame-interval-ps", "forces"]),
    ("map", ["centre of mass", "--run-dir", "--trajectory", "--topology", "--forces", "--mapping", "TRR"]),
])
def test_help(cmd, words, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for w in words:
        assert w.lower() in text.lower(), w


def test_map_needs_one_input(tmp_path, capsys):
    assert main(["map", "--out", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err
    assert "cgkd map: error: give exactly one of --run-dir or --trajectory" in err and "Traceback" not in err
