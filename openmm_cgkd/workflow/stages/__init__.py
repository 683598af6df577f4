"""The pipeline's stages, one module each, in the order they run: ``data`` (the AA stage and the
frame selection), ``teachers``, ``labels``, ``students``, ``md`` (replicas, time step check,
worker processes), ``analysis``. The report stage is :mod:`openmm_cgkd.workflow.report`; the
sequencing and caching is :mod:`openmm_cgkd.workflow.run`.

Each stage driver takes the :class:`~openmm_cgkd.workflow.config.PipelineConfig`, the output
directory and a ``log`` callable, and returns the stage's typed result
(:mod:`openmm_cgkd.workflow.results`).
"""
