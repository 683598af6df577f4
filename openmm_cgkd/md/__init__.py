"""The CG MD runtime: running a bundle's system in OpenMM and judging the run.

Modules: ``simulation`` (MD with reporters, progress, resume), ``restart`` (restart state shared
with AA runs: atomic writes, checkpoints, refusal of changed settings), ``blowup`` (diagnosis of a
blow-up), ``timestep_check`` (NVT temperature and NVE drift at a time step), ``platforms`` (the
one OpenMM platform chooser).
"""
