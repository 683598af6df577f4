"""One base for the package's own errors (so `cgkd` reports them in one line), old bases kept."""
import pytest

from openmm_cgkd.errors import CGKDError, MissingFileError, PlatformError, UsageError


def _error_types():
    from openmm_cgkd.analysis.distributions import AnalysisError
    from openmm_cgkd.benchmark.md import BenchmarkError, BenchmarkFailed
    from openmm_cgkd.bundle import BundleError, BundleNotFoundError
    from openmm_cgkd.data.aamd import ProtocolError, RunError
    from openmm_cgkd.data.dataset import DatasetError
    from openmm_cgkd.data.external import InputError
    from openmm_cgkd.data.mapping import MappingError
    from openmm_cgkd.serving.forcefield import ServingError
    from openmm_cgkd.md.simulation import SimulationError
    from openmm_cgkd.training.config import ConfigError

    return {AnalysisError: ValueError, BenchmarkError: RuntimeError, BenchmarkFailed: RuntimeError, BundleError: ValueError,
            BundleNotFoundError: FileNotFoundError, ProtocolError: ValueError, RunError: RuntimeError,
            DatasetError: ValueError, InputError: ValueError, MappingError: ValueError, ServingError: ValueError,
            SimulationError: RuntimeError, ConfigError: ValueError, UsageError: ValueError,
            MissingFileError: FileNotFoundError, PlatformError: ValueError}


def test_every_error_type_derives_from_the_base_and_keeps_its_old_base():
    for cls, old in _error_types().items():
        assert issubclass(cls, CGKDError), cls
        assert issubclass(cls, old), cls  # old `except ValueError` callers still work


# 2: bad usage or bad input (arguments, settings, input files); 1: a run that failed
@pytest.mark.parametrize("name,code", [("ConfigError", 2), ("ProtocolError", 2), ("UsageError", 2),
                                       ("DatasetError", 2), ("ServingError", 2), ("BundleNotFoundError", 2),
                                       ("MissingFileError", 2), ("PlatformError", 2), ("InputError", 2), ("AnalysisError", 2),
                                       ("SimulationError", 1), ("RunError", 1), ("BenchmarkError", 2),
                                       ("BenchmarkFailed", 1)])
def test_exit_codes(name, code):
    cls = {c.__name__: c for c in _error_types()}[name]
    assert cls("x").exit_code == code


def test_plain_value_error_is_not_a_package_error():
    assert not isinstance(ValueError("a bug"), CGKDError)
    assert not isinstance(KeyError("a bug"), CGKDError)
