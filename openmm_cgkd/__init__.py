"""openmm_cgkd: knowledge-distilled coarse-grained force fields for OpenMM."""
__version__ = "0.1.0"
