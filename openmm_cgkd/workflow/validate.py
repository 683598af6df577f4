"""One check of the WHOLE pipeline configuration before any stage runs.

A mistake in the last section of a config (``analysis:``, ``md:``) must not surface after hours
of training: :func:`check_pipeline` builds every stage's settings from the config exactly as the
stage will (the teachers' and students' training configs, the network architecture, the analysis
settings, the AA system and protocol) and checks what the inputs allow before anything runs:

* ``out`` is a directory that can be written (not a file, not under one, not read-only);
* ``--only`` names stages whose predecessors are done (a marker in ``<out>/stages/``);
* the trainer, teachers, students, model (``base``, keys, ranges) and analysis settings;
* the AA stage's system definition, mapping and protocol when the dataset does not exist yet
  (for a system given by its structure: its System built, and the mapping compiled on it);
* with the dataset at hand: its forces (41.84x off, all zero), and boxes at least twice the
  model's cutoff wide.

Every problem is a :class:`~openmm_cgkd.config.ConfigError` (or the package error of its domain),
reported by ``cgkd`` as one line with exit code 2.
"""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from openmm_cgkd.config import ConfigError, config_from_dict
from openmm_cgkd.workflow.cache import STAGES
from openmm_cgkd.workflow.config import PipelineConfig, analysis_settings, trainer_settings
from openmm_cgkd.workflow.stages.data import aa_protocol

__all__ = ["check_pipeline"]


def _check_out(out: Path) -> None:
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            raise ConfigError(f"out: {out}: {p} is a file, not a directory; give a directory for the pipeline's outputs")
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"out: {out}: {existing} is not writable; give an output directory you can write to")


def _check_only(cfg: PipelineConfig, out: Path, only: list[str] | None) -> None:
    if not only:
        return
    unknown = sorted(set(only) - set(STAGES))
    if unknown:
        raise ConfigError(f"--only: unknown stage(s) {unknown}; stages: {list(STAGES)}")
    first = min(STAGES.index(s) for s in only)
    missing = [s for s in STAGES[:first]
               if not (s == "aa" and Path(cfg.dataset).is_file()) and not (out / "stages" / f"{s}.json").is_file()]
    if missing:
        raise ConfigError(f"--only {' '.join(only)}: the earlier stage(s) {missing} have not run in {out}; run the "
                          "pipeline without --only first (or with --only naming them too)")


def _check_training(cfg: PipelineConfig, out: Path) -> None:
    from openmm_cgkd.training.config import StudentConfig, TeachersConfig, TrainerConfig

    config_from_dict(TrainerConfig, trainer_settings(cfg), "trainer")
    config_from_dict(TrainerConfig, trainer_settings(cfg, cfg.students.trainer), "students.trainer")
    config_from_dict(TeachersConfig, {
        "dataset": cfg.dataset, "out": str(out / "teachers"), "model": cfg.model,
        "split": asdict(cfg.split), "trainer": trainer_settings(cfg), **cfg.teachers}, "teachers")
    config_from_dict(StudentConfig, {"dataset": cfg.dataset, "out": str(out / "students"),
                                     "trainer": trainer_settings(cfg, cfg.students.trainer)}, "students")


def _reaches_md(only: list[str] | None) -> bool:
    """Whether the run goes on to the md stage (and the analysis after it)."""
    return not only or max(STAGES.index(s) for s in only) >= STAGES.index("md")


def _check_aa(cfg: PipelineConfig) -> None:
    if Path(cfg.dataset).is_file():
        return
    if cfg.aa is None or not cfg.aa.system:
        raise ConfigError(f"dataset {cfg.dataset} does not exist and there is no `aa:` section (with `system:`) "
                          "to make it")
    from openmm_cgkd.data.systemdef import SystemDefinition
    from openmm_cgkd.errors import MissingFileError

    sysdef = SystemDefinition.from_yaml(cfg.aa.system)
    if cfg.aa.molecules is not None:
        if sysdef.kind != "opls":
            raise ConfigError(f"aa.molecules: {cfg.aa.system} is a {sysdef.kind} system given by its structure "
                              f"({sysdef.structure_path.name}, {sysdef.n_molecules} molecules); only a packed "
                              "system (an OPLS molecule file) is resized: remove aa.molecules")
        sysdef.resized(n_molecules=cfg.aa.molecules)
    aa_protocol(cfg.aa, sysdef)  # exactly as the stage builds it
    mapping = cfg.aa.mapping or sysdef.mapping_path
    if not mapping or not Path(mapping).is_file():
        raise MissingFileError(f"aa.mapping: mapping spec not found: {mapping or '(none given)'}")
    if sysdef.kind != "opls":  # a given structure: its System and its map are known now, not after the AA MD
        _check_structure_map(sysdef, Path(mapping))


def _check_structure_map(sysdef, mapping: Path) -> None:
    """Build the System of a structure system (a residue the force field lacks is refused) and
    compile the mapping on its topology (a residue the mapping lacks, a constraint across beads)."""
    import mdtraj as md
    import numpy as np

    from openmm_cgkd.data.mapping import CGMap, MappingSpec

    top, system = sysdef.create_openmm()
    masses = np.array([system.getParticleMass(i)._value for i in range(system.getNumParticles())])  # dalton
    CGMap.from_topology(MappingSpec.from_yaml(mapping), md.Topology.from_openmm(top), masses)


def _check_model_and_data(cfg: PipelineConfig) -> None:
    from openmm_cgkd.training.model import check_boxes_for_cutoff, potential_config_for

    if not Path(cfg.dataset).is_file():  # made by the aa stage: the architecture alone
        model = {k: v for k, v in cfg.model.items() if k != "num_types"}
        potential_config_for(model, ["A"], 30.0)
        return
    import numpy as np

    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.training.model import number_density

    ds = CGDataset.load(cfg.dataset)
    ds.check_forces(f"the forces (F_AA) of {cfg.dataset}")
    sample = np.unique(np.linspace(0, ds.n_frames - 1, min(ds.n_frames, 50)).astype(int))
    pcfg = potential_config_for(cfg.model, list(ds.type_names),
                                number_density(ds.positions[sample], ds.boxes[sample]))
    check_boxes_for_cutoff(ds.boxes, pcfg.cutoff_nm, f"model on {cfg.dataset}")


def check_pipeline(cfg: PipelineConfig, only: list[str] | None = None) -> None:
    """Check everything of ``cfg`` that can be checked before a stage runs (see the module doc);
    raises the first problem found."""
    out = Path(cfg.out).absolute()
    _check_out(out)
    _check_only(cfg, out, only)
    _check_training(cfg, out)
    to_md = _reaches_md(only)
    # the ADF cutoffs come from the dataset's g(r): only when it exists and the md stage is wanted
    analysis_settings(cfg, with_dataset=Path(cfg.dataset).is_file() and to_md)
    _check_aa(cfg)
    _check_model_and_data(cfg)
