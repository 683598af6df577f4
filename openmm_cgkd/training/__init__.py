"""Training: teacher ensembles, distillation labels and students (docs/METHOD.md section 2).

Stages (each resumable, each writing a bundle that ``CGKDForceField`` loads):

* :func:`openmm_cgkd.training.teachers.train_teachers` - K members on the mapped AA forces,
* :func:`openmm_cgkd.training.labels.make_labels` - F_T, e_T, E_T and the force spread per frame,
* :func:`openmm_cgkd.training.students.train_student` - one network from a paper variant or free weights.

Configs are YAML-driven dataclasses (:mod:`.config`); the Lightning trainer is in :mod:`.trainer`;
:mod:`.synthetic` makes a CG system with a known mean force for tests and examples.
"""
