"""openmm_cgkd: knowledge-distilled coarse-grained force fields for OpenMM."""
__version__ = "0.1.0"

__all__ = ["CGKDForceField", "__version__"]


def __getattr__(name: str):
    # Lazy: `import openmm_cgkd` stays light (no torch / OpenMM) until the force field is used.
    if name == "CGKDForceField":
        from openmm_cgkd.serving.forcefield import CGKDForceField
        return CGKDForceField
    raise AttributeError(f"module 'openmm_cgkd' has no attribute {name!r}")
