"""Checks of the hardware a training or labelling run asks for, before any work starts: a GPU
asked for (``trainer.accelerator: gpu``, ``--device cuda``) on a machine where torch sees none
is a :class:`~openmm_cgkd.errors.PlatformError`, not a traceback from deep inside Lightning or
torch. ``auto`` means the same as everywhere else: the GPU when one is usable, else the CPU."""
from __future__ import annotations

from openmm_cgkd.errors import PlatformError

__all__ = ["ACCELERATORS", "check_accelerator", "torch_device"]

ACCELERATORS = ("auto", "cpu", "gpu", "cuda")


def _cuda_count() -> int:
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def check_accelerator(accelerator: str, devices=1) -> None:
    """Raise :class:`PlatformError` when ``accelerator`` (Lightning's: auto, cpu, gpu, cuda) is
    unknown or asks for more GPUs (``devices``: a count, a list of indices, or 'auto') than torch sees."""
    name = str(accelerator).lower()
    if name not in ACCELERATORS:
        raise PlatformError(f"trainer.accelerator {accelerator!r} is not one of {list(ACCELERATORS)}")
    if name in ("gpu", "cuda"):
        count = _cuda_count()
        if count == 0:
            raise PlatformError(f"trainer.accelerator is {accelerator!r} but torch sees no CUDA GPU on this machine; "
                                "use --accelerator cpu (or auto: the GPU when one is usable, else the CPU)")
        wanted = len(devices) if isinstance(devices, (list, tuple)) else (devices if isinstance(devices, int) else 1)
        if isinstance(wanted, int) and wanted > count:
            raise PlatformError(f"trainer.devices asks for {wanted} GPUs; torch sees {count}")


def torch_device(name: str | None):
    """``torch.device`` for 'auto' (None), 'cpu', 'cuda' or 'cuda:N'; :class:`PlatformError` when
    the name is not a device or asks for a GPU torch does not see."""
    import torch

    if name is None or str(name).lower() == "auto":
        return torch.device("cuda" if _cuda_count() else "cpu")
    try:
        dev = torch.device(str(name))
    except (RuntimeError, ValueError):
        raise PlatformError(f"device {name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = _cuda_count()
        if count == 0:
            raise PlatformError(f"device {name!r} asks for a CUDA GPU but torch sees none on this machine; "
                                "use --device cpu (or auto)")
        if dev.index is not None and dev.index >= count:
            raise PlatformError(f"device {name!r}: torch sees {count} GPU(s) (cuda:0..cuda:{count - 1})")
    elif dev.type != "cpu":
        raise PlatformError(f"device {name!r}: only cpu and cuda devices are supported")
    return dev
