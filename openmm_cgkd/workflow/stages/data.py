"""The pipeline's data: the ``aa`` stage (AA MD and its mapping, when the dataset does not exist),
the selected frames' copy of the dataset, and the dataset's content digest."""
from __future__ import annotations

from pathlib import Path

from openmm_cgkd.config import ConfigError, config_from_dict
from openmm_cgkd.data.aamd import Protocol, run_aa, select_platform
from openmm_cgkd.data.build import build_box
from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.data.external import load_run
from openmm_cgkd.data.frames import select_frames
from openmm_cgkd.data.mapping import MappingSpec, map_trajectory
from openmm_cgkd.data.systemdef import SystemDefinition
from openmm_cgkd.fileio import file_sha256, read_json, write_json
from openmm_cgkd.fingerprint import cg_dataset_digest
from openmm_cgkd.workflow.config import AAConfig, PipelineConfig
from openmm_cgkd.workflow.results import AAResult

__all__ = ["aa_stage", "aa_protocol", "frames_subset", "dataset_digest"]


def aa_protocol(aa: AAConfig, sysdef: SystemDefinition) -> Protocol:
    """The AA protocol of the ``aa`` section: temperature, time step and friction default to the
    system definition's (as for ``cgkd aa-run``), ``aa.protocol`` overrides them."""
    return config_from_dict(Protocol, {"temperature_K": sysdef.temperature_K, "timestep_fs": sysdef.timestep_fs,
                                       "friction_per_ps": sysdef.friction_per_ps, "seed": aa.seed, **aa.protocol},
                            "aa.protocol").validate()


def aa_stage(cfg: PipelineConfig, log) -> AAResult:
    """Run (or resume) the AA MD of ``cfg.aa`` in ``<out>/aa`` and map it to ``cfg.dataset``.

    A packed system (an OPLS molecule file) is packed and minimised first; a system given by
    its structure (OpenMM XML or GROMACS .top, :mod:`~openmm_cgkd.data.systemdef`) starts
    from its minimised structure. The mapping is ``aa.mapping``, else the system file's."""
    aa = cfg.aa
    if aa is None:
        raise ConfigError(f"dataset {cfg.dataset} does not exist and the config has no `aa:` section to make it")
    sysdef = SystemDefinition.from_yaml(aa.system)
    if aa.molecules:  # a packed (opls) system only; validation refuses it for a structure
        sysdef = sysdef.resized(n_molecules=aa.molecules)
    protocol = aa_protocol(aa, sysdef)
    run_dir = Path(cfg.out) / "aa"
    structure = run_dir / "built.pdb"
    if not (run_dir / "run.json").is_file() and not structure.is_file():
        build_box(sysdef, structure, seed=aa.seed, platform=select_platform(aa.platform), log=log)  # reproducible
    summary = run_aa(run_dir, sysdef, protocol, structure, platform=aa.platform, threads=aa.threads, log=log)
    if not summary.get("finished"):
        raise RuntimeError(f"AA run in {run_dir} did not finish; rerun the pipeline to resume it")
    ds = map_trajectory(load_run(run_dir), MappingSpec.from_yaml(aa.mapping or sysdef.mapping_path))
    ds.save(cfg.dataset)
    return AAResult(Path(cfg.dataset), ds.n_frames, ds.n_beads)


def frames_subset(cfg: PipelineConfig, out: Path, log) -> str:
    """Write the selected frames (:func:`select_frames`) to ``<out>/data/cg.h5`` (rewritten only
    when the source's content or the selection changed, or the copy is not the one written)."""

    src = Path(cfg.dataset)
    target = out / "data" / "cg.h5"
    key = {"source_sha256": file_sha256(src), "start_frame": cfg.dataset_start_frame,
           "window_ps": cfg.dataset_window_ps, "max_frames": cfg.dataset_max_frames, "stride": cfg.dataset_stride}
    stamp = target.with_suffix(".json")
    if target.is_file() and stamp.is_file():
        old = read_json(stamp) or {}
        if {k: old.get(k) for k in key} == key and old.get("target_sha256") == file_sha256(target):
            return str(target)
    ds = CGDataset.load(src)
    idx, desc = select_frames(ds.times, cfg.dataset_start_frame, cfg.dataset_window_ps, cfg.dataset_max_frames,
                              cfg.dataset_stride)
    sub = ds.select_frames(idx)
    sub.provenance = {**ds.provenance, "selected_from": str(src), "selection": desc}
    sub.save(target)
    write_json(stamp, {**key, "target_sha256": file_sha256(target), "selection": desc})
    log(f"[data] {desc} of {src.name} -> {target}")
    return str(target)


def dataset_digest(path: str) -> str:
    """Content digest of a CG dataset file (its arrays, not its bytes or provenance)."""

    return cg_dataset_digest(CGDataset.load(path))
