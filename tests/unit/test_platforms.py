"""Platform choice: CUDA when present, else CPU; overridable; options checked against the platform."""
import pytest

from openmm_cgkd.platforms import available_platforms, default_platform_name, select_platform


def test_default_and_override():
    names = available_platforms()
    assert "CPU" in names and "Reference" in names
    default = default_platform_name()
    assert default == ("CUDA" if "CUDA" in names and select_platform("auto").name == "CUDA" else "CPU")
    assert select_platform(None).name == default
    assert select_platform("reference").name == "Reference"  # case-insensitive
    assert select_platform("CPU", threads=2).properties == {"Threads": "2"}


def test_bad_platform_options():
    with pytest.raises(ValueError, match="not available here; available:"):
        select_platform("Bogus")
    with pytest.raises(ValueError, match="use_cuda_graphs needs the CUDA platform"):
        select_platform("CPU", use_cuda_graphs=True)
    with pytest.raises(ValueError, match="precision is a GPU-platform option"):
        select_platform("Reference", precision="mixed")
    with pytest.raises(ValueError, match="threads is a CPU-platform option"):
        select_platform("Reference", threads=2)


@pytest.mark.gpu
@pytest.mark.skipif(default_platform_name() != "CUDA", reason="no CUDA platform / GPU")
def test_cuda_options():
    choice = select_platform("CUDA", precision="mixed", use_cuda_graphs=True)
    assert choice.properties == {"Precision": "mixed"}
    assert choice.network_properties == {"useCUDAGraphs": "true"}
