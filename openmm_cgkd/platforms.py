"""The one choice of an OpenMM platform, for every run: AA MD, CG MD, benchmark and CLI.

``auto`` (or None) means CUDA when it is usable, else CPU (else Reference), the same for
every caller. CUDA is usable when its plugin loaded, a one-particle ``Context`` can be made on
it (a GPU and driver really exist) and torch sees a GPU (the network force runs through torch).
The answer is computed once per process.

:func:`select_platform` returns a :class:`PlatformChoice`: the ``openmm.Platform``, the
properties for the ``Context`` (CUDA precision, device, CPU threads) and those for the network
force (openmm-torch's ``useCUDAGraphs``, which needs static shapes: the bead count never
changes in a CG simulation, so it is safe for these models). ``platform, properties = choice``
unpacks the first two.

Options are checked against the platform: a GPU option (``precision``, ``device_index``,
``use_cuda_graphs``) with an explicitly named CPU/Reference platform, or ``threads`` with a
named GPU platform, is a :class:`~openmm_cgkd.errors.PlatformError`. With ``auto`` an option
of the platform that was not chosen is dropped (``--threads 2`` means "2 threads if on CPU").

This module imports OpenMM only when a function is called.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

from openmm_cgkd.errors import PlatformError

__all__ = ["PlatformChoice", "available_platforms", "select_platform", "default_platform_name", "cuda_usable",
           "GPU_PLATFORMS"]

PREFERENCE = ("CUDA", "CPU", "Reference")  # order tried by auto
GPU_PLATFORMS = ("CUDA", "OpenCL", "HIP")
PRECISIONS = ("single", "mixed", "double")


@dataclass
class PlatformChoice:
    """An OpenMM platform and the properties to build a ``Context`` (``properties``) and the
    network force (``network_properties``) on it."""

    platform: object  # openmm.Platform
    properties: dict[str, str] = field(default_factory=dict)
    network_properties: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.platform.getName()

    def __iter__(self):
        """``platform, properties = choice``."""
        return iter((self.platform, self.properties))


def available_platforms() -> list[str]:
    """Names of the OpenMM platforms that loaded in this process (e.g. ['Reference', 'CPU'])."""
    import openmm

    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


@functools.lru_cache(maxsize=1)
def cuda_usable() -> bool:
    """CUDA plugin loaded, a Context on it works (a device exists) and torch sees a GPU."""
    if "CUDA" not in available_platforms():
        return False
    import openmm

    try:
        system = openmm.System()
        system.addParticle(1.0)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CUDA"))
        del context
    except Exception:  # noqa: BLE001 - OpenMMException (no device, driver too old, ...)
        return False
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def default_platform_name() -> str:
    """What ``auto`` means here: CUDA when usable, else CPU (else Reference)."""
    names = available_platforms()
    for name in PREFERENCE:
        if name == "CUDA":
            if cuda_usable():
                return name
        elif name in names:
            return name
    raise PlatformError(f"no usable OpenMM platform; loaded: {names}")


def select_platform(name: str | None = None, threads: int | None = None, *, precision: str | None = None,
                    use_cuda_graphs: bool = False, device_index: int | None = None) -> PlatformChoice:
    """The platform ``name`` (case-insensitive; None or 'auto' = :func:`default_platform_name`).

    ``precision`` ('single', 'mixed', 'double') and ``device_index`` apply to GPU platforms;
    ``threads`` (>= 1) to CPU; ``use_cuda_graphs`` to the network force on CUDA. See the module
    docstring for options that do not fit the platform. :class:`PlatformError` when the platform
    is not available here.
    """
    import openmm

    names = available_platforms()
    auto = name is None or str(name).lower() == "auto"
    if auto:
        name = default_platform_name()
    matches = [n for n in names if n.lower() == str(name).lower()]
    if not matches:
        hint = (" (the CUDA platform needs an NVIDIA GPU and driver; the openmm-cuda-13 package "
                "supplies the plugin)" if str(name).lower() == "cuda" else "")
        raise PlatformError(f"OpenMM platform {name!r} is not available here; available: {names}{hint}; "
                            "use --platform auto")
    name = matches[0]
    if name == "CUDA" and not auto and not cuda_usable():
        raise PlatformError("the CUDA platform is loaded but no GPU is usable here (no device, or torch sees none); "
                            "use --platform auto or CPU")
    gpu = name in GPU_PLATFORMS
    if precision is not None and precision not in PRECISIONS:
        raise PlatformError(f"precision must be 'single', 'mixed' or 'double', got {precision!r}")
    if threads is not None and int(threads) < 1:
        raise PlatformError(f"threads must be >= 1, got {threads}")
    if not auto:
        if precision is not None and not gpu:
            raise PlatformError(f"precision is a GPU-platform option; platform {name} has none")
        if device_index is not None and not gpu:
            raise PlatformError(f"device_index is a GPU-platform option; platform {name} has none")
        if threads is not None and name != "CPU":
            raise PlatformError(f"threads is a CPU-platform option, not one of {name}")
        if use_cuda_graphs and name != "CUDA":
            raise PlatformError(f"use_cuda_graphs needs the CUDA platform, not {name}")
    props: dict[str, str] = {}
    if precision is not None and gpu:
        props["Precision"] = precision
    if device_index is not None and gpu:
        props["DeviceIndex"] = str(int(device_index))
    if threads is not None and name == "CPU":
        props["Threads"] = str(int(threads))
    network_props = {"useCUDAGraphs": "true"} if use_cuda_graphs and name == "CUDA" else {}
    return PlatformChoice(openmm.Platform.getPlatformByName(name), props, network_props)
