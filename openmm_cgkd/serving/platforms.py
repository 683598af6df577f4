"""The platform chooser as seen from serving: :mod:`openmm_cgkd.md.platforms` (one chooser for AA
runs, CG runs, the benchmark and the CLI)."""
from openmm_cgkd.md.platforms import (PlatformChoice, available_platforms, cuda_usable,  # noqa: F401
                                   default_platform_name, select_platform)

__all__ = ["PlatformChoice", "available_platforms", "select_platform", "default_platform_name", "cuda_usable"]
