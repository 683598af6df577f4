"""Choice of the OpenMM platform: CUDA when present, else CPU; overridable by name.

:func:`select_platform` returns a :class:`PlatformChoice`: the ``openmm.Platform``, the
properties for the ``Context`` (e.g. CUDA precision) and the properties for the network force
(openmm-torch's ``useCUDAGraphs``, which needs static shapes: the bead count never changes in
a CG simulation, so it is safe for these models).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from openmm_cgkd.errors import PlatformError

__all__ = ["PlatformChoice", "available_platforms", "select_platform", "default_platform_name"]

# Preference order when the caller names none.
PREFERENCE = ("CUDA", "CPU", "Reference")


@dataclass
class PlatformChoice:
    platform: object  # openmm.Platform
    properties: dict[str, str] = field(default_factory=dict)
    network_properties: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.platform.getName()


def available_platforms() -> list[str]:
    """Names of the OpenMM platforms that loaded in this process (e.g. ['Reference', 'CPU'])."""
    import openmm

    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


def _cuda_usable() -> bool:
    """CUDA platform loaded AND torch sees a GPU (openmm-torch runs the network through torch)."""
    if "CUDA" not in available_platforms():
        return False
    try:
        import torch
        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - torch import problems surface elsewhere
        return False


def default_platform_name() -> str:
    """CUDA when present and usable, else CPU (else Reference)."""
    names = available_platforms()
    for name in PREFERENCE:
        if name == "CUDA":
            if _cuda_usable():
                return name
        elif name in names:
            return name
    raise PlatformError(f"no usable OpenMM platform; loaded: {names}")


def select_platform(name: str | None = None, *, precision: str | None = None,
                    use_cuda_graphs: bool = False, device_index: int | None = None,
                    threads: int | None = None) -> PlatformChoice:
    """The platform ``name`` (case-insensitive; None or 'auto' = :func:`default_platform_name`).

    ``precision`` ('single', 'mixed', 'double') and ``device_index`` apply to CUDA/OpenCL;
    ``threads`` to CPU; ``use_cuda_graphs`` to the network force on CUDA (an error elsewhere).
    """
    import openmm

    names = available_platforms()
    if name is None or str(name).lower() == "auto":
        name = default_platform_name()
    matches = [n for n in names if n.lower() == str(name).lower()]
    if not matches:
        hint = (" (the CUDA platform needs an NVIDIA GPU and driver; the openmm-cuda-13 package "
                "supplies the plugin)" if str(name).lower() == "cuda" else "")
        raise PlatformError(f"OpenMM platform {name!r} is not available here; available: {names}{hint}")
    name = matches[0]
    platform = openmm.Platform.getPlatformByName(name)
    props: dict[str, str] = {}
    if precision is not None:
        if precision not in ("single", "mixed", "double"):
            raise PlatformError(f"precision must be 'single', 'mixed' or 'double', got {precision!r}")
        if name not in ("CUDA", "OpenCL", "HIP"):
            raise PlatformError(f"precision is a GPU-platform option; platform {name} has none")
        props["Precision"] = precision
    if device_index is not None:
        if name not in ("CUDA", "OpenCL", "HIP"):
            raise PlatformError(f"device_index is a GPU-platform option; platform {name} has none")
        props["DeviceIndex"] = str(int(device_index))
    if threads is not None:
        if name != "CPU":
            raise PlatformError(f"threads is a CPU-platform option, not one of {name}")
        props["Threads"] = str(int(threads))
    network_props: dict[str, str] = {}
    if use_cuda_graphs:
        if name != "CUDA":
            raise PlatformError(f"use_cuda_graphs needs the CUDA platform, not {name}")
        network_props["useCUDAGraphs"] = "true"
    return PlatformChoice(platform, props, network_props)
