"""The CG MD runtime: running a bundle's system in OpenMM and judging the run.

Modules: ``simulation`` (MD with reporters, progress, resume), ``restart`` (restart state shared
with AA runs: checkpoints, the restart set, refusal of changed settings), ``thermo`` (degrees of
freedom, temperature), ``blowup`` (diagnosis of a blow-up), ``timestep_check`` (NVT temperature
and NVE drift at a time step). The OpenMM platform chooser is :mod:`openmm_cgkd.platforms`.
"""
