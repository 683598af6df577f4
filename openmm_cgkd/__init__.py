"""openmm_cgkd: knowledge-distilled coarse-grained force fields for OpenMM.

The front door: what a script needs, importable from here; each name is loaded when first used
(PEP 562), so ``import openmm_cgkd`` loads neither torch nor OpenMM. Units everywhere: nm, ps,
kJ/mol, kJ/mol/nm, K, dalton.

==========================  ================================================================
serving                     ``CGKDForceField`` (a bundle -> ``openmm.System`` / ``Simulation``)
bundles                     ``Bundle``, ``load_bundle``, ``save_bundle``, ``shipped_bundles``
systems and data            ``get_system``, ``CGDataset``, ``MappingSpec``, ``map_trajectory``
training stages             ``train_teachers``, ``make_labels``, ``train_student`` and their
                            ``TeachersConfig``, ``LabelsConfig``, ``StudentConfig``
MD                          ``run_simulation``, ``check_timestep``, ``run_aa`` (all-atom reference)
analysis                    ``analyze_model``, ``load_trajectory``, ``load_reference``,
                            ``write_report``, ``AnalysisSettings``
the pipeline                ``run_pipeline``, ``interim_report``, ``load_pipeline_config``,
                            ``PipelineConfig``, ``stage_outputs``
errors                      ``CGKDError`` (the base of every error the package raises on purpose)
==========================  ================================================================
"""
from __future__ import annotations

import importlib

from openmm_cgkd.version import __version__

# name -> the module that defines it
_EXPORTS = {
    "CGKDForceField": "openmm_cgkd.serving.forcefield",
    "Bundle": "openmm_cgkd.bundle",
    "load_bundle": "openmm_cgkd.bundle",
    "save_bundle": "openmm_cgkd.bundle",
    "shipped_bundles": "openmm_cgkd.bundle",
    "get_system": "openmm_cgkd.systems",
    "CGDataset": "openmm_cgkd.data.dataset",
    "MappingSpec": "openmm_cgkd.data.mapping",
    "map_trajectory": "openmm_cgkd.data.mapping",
    "train_teachers": "openmm_cgkd.training.teachers",
    "make_labels": "openmm_cgkd.training.labels",
    "train_student": "openmm_cgkd.training.students",
    "TeachersConfig": "openmm_cgkd.training.config",
    "LabelsConfig": "openmm_cgkd.training.config",
    "StudentConfig": "openmm_cgkd.training.config",
    "run_simulation": "openmm_cgkd.md.simulation",
    "check_timestep": "openmm_cgkd.md.timestep_check",
    "run_aa": "openmm_cgkd.data.aamd",
    "analyze_model": "openmm_cgkd.analysis.report",
    "load_trajectory": "openmm_cgkd.analysis.report",
    "load_reference": "openmm_cgkd.analysis.report",
    "write_report": "openmm_cgkd.analysis.report",
    "AnalysisSettings": "openmm_cgkd.analysis.report",
    "run_pipeline": "openmm_cgkd.workflow.run",
    "interim_report": "openmm_cgkd.workflow.run",
    "load_pipeline_config": "openmm_cgkd.workflow.config",
    "PipelineConfig": "openmm_cgkd.workflow.config",
    "stage_outputs": "openmm_cgkd.workflow.cache",
    "CGKDError": "openmm_cgkd.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'openmm_cgkd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
