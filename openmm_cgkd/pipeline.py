"""The whole method in one command: AA data -> mapping -> teachers -> labels -> students -> MD
replicas -> structural analysis -> a report comparing teachers, the ensemble and the students.

``cgkd pipeline config.yaml`` runs :func:`run_pipeline`. Every stage writes its outputs under
``<out>/<stage>/`` and a marker ``<out>/stages/<stage>.json`` holding its fingerprint
(:mod:`openmm_cgkd.fingerprint`): the settings it depends on and the sha256 of the CONTENT of
its inputs (the dataset, the teachers' and students' bundles, the labelled datasets, the MD
trajectories), never their paths. A rerun skips a stage whose fingerprint matches (and whose
outputs exist) and reruns one whose fingerprint changed, saying what changed; a rerun stage
writes new outputs, so every stage downstream of it is redone too. Hardware and logging
settings (trainer accelerator/devices/threads/progress bar, teachers.parallel, md.platform,
md.threads) are not part of a fingerprint. Inside a stage, training runs and MD replicas are
keyed the same way: they resume from their checkpoints (so a killed pipeline continues where it
stopped) only when their own fingerprint matches, and start afresh otherwise.

Configuration (YAML; relative paths are resolved against the file's directory)::

    out: runs/des-quick              # everything goes here
    dataset: cg.h5                   # mapped CG dataset; made by the `aa` stage if absent
    aa:                              # optional: make the dataset (skipped when `dataset` exists)
      system: system.yaml            #   system definition (openmm_cgkd.data.systemdef)
      molecules: 48                  #   resize at the same density (optional)
      mapping: mapping.yaml
      protocol: {equilibration_ps: 20, production_ps: 20, frame_interval_ps: 0.1}
    model: {architecture: graph-network, embedding_dim: 32, ...}   # teachers and students
    split: {train: 0.8, val: 0.1, test: 0.1}
    trainer: {max_epochs: 10, batch_size: 4}                     # teachers and students
    teachers: {members: 8}
    students: {variants: [ensemble-e-ft-faa], trainer: {}}       # trainer: student overrides
    md: {replicas: 2, steps: 2000, timestep_fs: 2.0, ...}        # see MDConfig
    analysis: {reference_stride: 1}                              # AnalysisSettings fields

Units: nm, ps, fs (time step), K, kJ/mol.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from openmm_cgkd.training.config import ConfigError, SplitConfig, config_from_dict

__all__ = ["PipelineConfig", "MDConfig", "AAConfig", "StudentsConfig", "load_pipeline_config", "run_pipeline",
           "STAGES"]

STAGES = ("aa", "teachers", "labels", "students", "md", "analysis", "report")


@dataclass
class AAConfig:
    """How to make the AA reference dataset when it does not exist yet."""

    system: str = ""
    mapping: str = ""
    molecules: int | None = None
    protocol: dict = field(default_factory=dict)  # openmm_cgkd.data.aamd.Protocol fields
    platform: str | None = None
    threads: int | None = None
    seed: int = 1


@dataclass
class StudentsConfig:
    variants: list[str] = field(default_factory=lambda: ["ensemble-e-ft-faa"])
    trainer: dict = field(default_factory=dict)  # overrides of the shared trainer settings


@dataclass
class MDConfig:
    """MD replicas of every model (docs/METHOD.md section 4: 8 replicas from training frames)."""

    replicas: int = 2
    steps: int = 2000
    timestep_fs: float = 2.0
    temperature_K: float = 298.1
    friction_per_ps: float = 1.0
    report_interval: int = 50
    platform: str | None = None  # None: CUDA when present, else CPU
    threads: int | None = None
    teacher_members: int = 2  # how many single teachers get MD (each costs as much as a student)
    include_ensemble: bool = True
    seed: int = 1000

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.steps < 1 or self.report_interval < 1:
            raise ConfigError("md.replicas, md.steps and md.report_interval must be >= 1")
        if not self.timestep_fs > 0 or not self.temperature_K > 0:
            raise ConfigError("md.timestep_fs and md.temperature_K must be positive")


@dataclass
class PipelineConfig:
    out: str = "runs/pipeline"
    dataset: str = ""
    dataset_max_frames: int | None = None  # use only the first frames of the dataset ...
    dataset_stride: int = 1  # ... and every stride-th of them (neighbouring frames are correlated)
    aa: AAConfig | None = None
    model: dict = field(default_factory=dict)
    split: SplitConfig = field(default_factory=SplitConfig)
    trainer: dict = field(default_factory=dict)
    teachers: dict = field(default_factory=lambda: {"members": 8})
    students: StudentsConfig = field(default_factory=StudentsConfig)
    md: MDConfig = field(default_factory=MDConfig)
    analysis: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.dataset:
            raise ConfigError("the pipeline needs `dataset:` (an existing CG dataset, or where the `aa` stage writes it)")
        if self.dataset_stride < 1 or (self.dataset_max_frames is not None and self.dataset_max_frames < 2):
            raise ConfigError("dataset_stride must be >= 1 and dataset_max_frames >= 2")
        unknown = set(self.teachers) - {"members", "seeds", "parallel", "wall"}
        if unknown:
            raise ConfigError(f"teachers: unknown keys {sorted(unknown)} (members, seeds, parallel, wall)")


def _resolve(base: Path, p: str | None) -> str | None:
    if not p:
        return p
    q = Path(p)
    return str(q if q.is_absolute() else (base / q))


def load_pipeline_config(path: str | Path, overrides: dict | None = None) -> PipelineConfig:
    """Read a pipeline YAML; unknown keys are errors naming their dotted path."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pipeline config not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a pipeline config must be a mapping")
    for k, v in (overrides or {}).items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    base = path.resolve().parent
    data["out"] = _resolve(base, data.get("out", "runs/pipeline"))
    data["dataset"] = _resolve(base, data.get("dataset", ""))
    if data.get("aa"):
        for key in ("system", "mapping"):
            data["aa"][key] = _resolve(base, data["aa"].get(key, ""))
    return config_from_dict(PipelineConfig, data)


# ------------------------------------------------------------------------------ stage cache
class _Stages:
    """Markers ``<out>/stages/<name>.json``: {fingerprint digest, key (the settings and input
    checksums it was computed from), outputs, files, seconds, finished}."""

    def __init__(self, out: Path, log):
        self.dir = out / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = log

    def done(self, name: str, key: dict) -> dict | None:
        from openmm_cgkd.fingerprint import describe_changes, digest

        p = self.dir / f"{name}.json"
        if not p.is_file():
            return None
        marker = json.loads(p.read_text())
        if marker.get("fingerprint") != digest(key):
            changes = describe_changes(marker.get("key"), key)
            self.log(f"[{name}] changed since the last run ({'; '.join(changes[:5])}"
                     f"{'; ...' if len(changes) > 5 else ''}): running it again")
            return None
        missing = [o for o in marker.get("files", []) if not Path(o).exists()]
        if missing:
            self.log(f"[{name}] outputs missing ({missing[0]} ...): running it again")
            return None
        return marker

    def mark(self, name: str, key: dict, outputs: dict, files: list, seconds: float) -> dict:
        from openmm_cgkd.fingerprint import digest

        marker = {"stage": name, "fingerprint": digest(key), "key": key, "outputs": outputs,
                  "files": [str(f) for f in files], "seconds": round(seconds, 2),
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp = self.dir / f"{name}.json.part"
        tmp.write_text(json.dumps(marker, indent=1, default=str))
        tmp.replace(self.dir / f"{name}.json")
        return marker


# ------------------------------------------------------------------------------ stages
def _stage_aa(cfg: PipelineConfig, log) -> dict:
    from openmm_cgkd.data.aamd import Protocol, run_aa, select_platform
    from openmm_cgkd.data.build import build_box
    from openmm_cgkd.data.external import load_run
    from openmm_cgkd.data.mapping import MappingSpec, map_trajectory
    from openmm_cgkd.data.systemdef import SystemDefinition

    aa = cfg.aa
    if aa is None:
        raise ConfigError(f"dataset {cfg.dataset} does not exist and the config has no `aa:` section to make it")
    sysdef = SystemDefinition.from_yaml(aa.system)
    if aa.molecules:
        sysdef = sysdef.resized(n_molecules=aa.molecules)
    protocol = config_from_dict(Protocol, {"seed": aa.seed, **aa.protocol}, "aa.protocol")
    run_dir = Path(cfg.out) / "aa"
    structure = run_dir / "built.pdb"
    if not (run_dir / "run.json").is_file() and not structure.is_file():
        plat, _ = select_platform(aa.platform, aa.threads)
        build_box(sysdef, structure, seed=aa.seed, platform=plat, log=log)
    summary = run_aa(run_dir, sysdef, protocol, structure, platform=aa.platform, threads=aa.threads, log=log)
    if not summary.get("finished"):
        raise RuntimeError(f"AA run in {run_dir} did not finish; rerun the pipeline to resume it")
    ds = map_trajectory(load_run(run_dir), MappingSpec.from_yaml(aa.mapping))
    ds.save(cfg.dataset)
    return {"dataset": cfg.dataset, "frames": ds.n_frames, "beads": ds.n_beads}


def _frames_subset(cfg: PipelineConfig, out: Path, log) -> str:
    """Write the selected frames (first ``dataset_max_frames``, every ``dataset_stride``-th) to
    ``<out>/data/cg.h5`` (rewritten only when the source's content or the selection changed, or
    the copy is not the one written)."""
    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.fingerprint import file_sha256

    src = Path(cfg.dataset)
    target = out / "data" / "cg.h5"
    key = {"source_sha256": file_sha256(src), "max_frames": cfg.dataset_max_frames, "stride": cfg.dataset_stride}
    stamp = target.with_suffix(".json")
    if target.is_file() and stamp.is_file():
        old = json.loads(stamp.read_text())
        if {k: old.get(k) for k in key} == key and old.get("target_sha256") == file_sha256(target):
            return str(target)
    ds = CGDataset.load(src)
    if cfg.dataset_max_frames is not None and ds.n_frames < cfg.dataset_max_frames:
        raise ConfigError(f"dataset_max_frames = {cfg.dataset_max_frames} but {src} holds only {ds.n_frames} frames")
    sub = ds.select_frames(slice(0, cfg.dataset_max_frames, cfg.dataset_stride))
    sub.provenance = {**ds.provenance, "selected_from": str(src), "selection":
                      f"first {cfg.dataset_max_frames or ds.n_frames} frames, every {cfg.dataset_stride}"}
    sub.save(target)
    stamp.write_text(json.dumps({**key, "target_sha256": file_sha256(target)}))
    log(f"[data] {sub.n_frames} of {ds.n_frames} frames of {src} -> {target}")
    return str(target)


def _trainer(cfg: PipelineConfig, extra: dict | None = None) -> dict:
    return {**cfg.trainer, **(extra or {})}


def _stage_teachers(cfg: PipelineConfig, out: Path, log) -> dict:
    from openmm_cgkd.training.config import TeachersConfig, config_to_dict
    from openmm_cgkd.training.teachers import train_teachers

    tcfg = config_from_dict(TeachersConfig, {
        "dataset": cfg.dataset, "out": str(out / "teachers"), "model": cfg.model,
        "split": asdict(cfg.split), "trainer": _trainer(cfg), **cfg.teachers}, "teachers")
    log(f"[teachers] training {tcfg.members} members -> {tcfg.out}")
    res = train_teachers(tcfg)
    return {"ensemble": str(res.ensemble_bundle), "members": [str(p) for p in res.member_bundles],
            "metrics": res.metrics.get("ensemble", {}), "config": config_to_dict(tcfg)}


def _needs_single_labels(cfg: PipelineConfig) -> bool:
    from openmm_cgkd.training.students import VARIANTS

    return any(VARIANTS[v].source == "single" for v in cfg.students.variants if v in VARIANTS)


def _stage_labels(cfg: PipelineConfig, out: Path, teachers: dict, log) -> dict:
    from openmm_cgkd.training.config import LabelsConfig
    from openmm_cgkd.training.labels import make_labels

    labelled = {"ensemble": str(make_labels(LabelsConfig(
        dataset=cfg.dataset, teachers=teachers["ensemble"], out=str(out / "labels" / "ensemble.h5"))))}
    log(f"[labels] ensemble labels -> {labelled['ensemble']}")
    if _needs_single_labels(cfg):
        labelled["single"] = str(make_labels(LabelsConfig(
            dataset=cfg.dataset, teachers=teachers["ensemble"], member=0, out=str(out / "labels" / "member_00.h5"))))
        log(f"[labels] single-teacher labels (member 0) -> {labelled['single']}")
    return labelled


def _stage_students(cfg: PipelineConfig, out: Path, labelled: dict, log) -> dict:
    from openmm_cgkd.training.config import StudentConfig
    from openmm_cgkd.training.students import VARIANTS, train_student

    bundles = {}
    for variant in cfg.students.variants:
        if variant not in VARIANTS:
            raise ConfigError(f"students.variants: unknown variant {variant!r}; choose from {sorted(VARIANTS)}")
        source = VARIANTS[variant].source
        scfg = config_from_dict(StudentConfig, {
            "dataset": labelled[source], "out": str(out / "students" / variant), "variant": variant,
            "model": cfg.model or None, "split": asdict(cfg.split),
            "trainer": _trainer(cfg, cfg.students.trainer)}, f"students.{variant}")
        log(f"[students] {variant} (labels from {source}) -> {scfg.out}")
        res = train_student(scfg)
        bundles[variant] = {"bundle": str(res.bundle), "metrics": res.metrics}
    return bundles


def _models_for_md(cfg: PipelineConfig, teachers: dict, students: dict) -> dict[str, str]:
    models = {}
    for k, path in enumerate(teachers["members"][: cfg.md.teacher_members]):
        models[f"teacher-{k:02d}"] = path
    if cfg.md.include_ensemble:
        models[f"ensemble-{len(teachers['members'])}"] = teachers["ensemble"]
    for variant, info in students.items():
        models[f"student-{variant}"] = info["bundle"]
    return models


def start_frames(n_frames: int, train_fraction: float, replicas: int) -> list[int]:
    """Evenly spaced start frames from the training block (the first ``train_fraction``)."""
    n_train = max(1, int(n_frames * train_fraction))
    return [int(i) for i in np.linspace(0, n_train - 1, replicas).round()]


def _stage_md(cfg: PipelineConfig, out: Path, models: dict[str, str], data_sha: str, log) -> dict:
    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.fingerprint import bundle_checksum
    from openmm_cgkd.serving import CGKDForceField
    from openmm_cgkd.simulation import StaleRunError, run_simulation
    from openmm_cgkd.topology import bead_topology, write_bead_pdb

    ds = CGDataset.load(cfg.dataset)
    names = [ds.type_names[t] for t in ds.bead_types]
    frames = start_frames(ds.n_frames, cfg.split.train, cfg.md.replicas)
    if cfg.md.threads is not None:  # the network runs in torch: its threads too, not only OpenMM's
        import torch

        torch.set_num_threads(int(cfg.md.threads))
    md = cfg.md
    runs: dict[str, list[dict]] = {}
    for name, bundle in models.items():
        ff = CGKDForceField(bundle)
        checksum = bundle_checksum(bundle)
        runs[name] = []
        for r, frame in enumerate(frames):
            rep_dir = out / "md" / name / f"replica_{r:02d}"
            topology = bead_topology(names, ds.boxes[frame])

            def replica():
                pdb = write_bead_pdb(rep_dir / "start.pdb", topology, ds.positions[frame], ds.boxes[frame])
                sim = ff.create_simulation(topology, ds.positions[frame], box_vectors=ds.boxes[frame],
                                           temperature=md.temperature_K, friction_per_ps=md.friction_per_ps,
                                           timestep_fs=md.timestep_fs, platform=md.platform, threads=md.threads,
                                           seed=md.seed + r)
                return pdb, run_simulation(sim, md.steps, rep_dir, report_interval=md.report_interval, resume=True,
                                           description=f"MD {name} #{r}",
                                           inputs={"bundle": checksum, "dataset": data_sha, "start_frame": frame})

            try:
                start, res = replica()
            except StaleRunError as exc:  # a replica of other settings (or longer): start it afresh
                log(f"[md] {name} replica {r}: made with other settings ({'; '.join(exc.changes[:5])}): "
                    "starting it afresh")
                shutil.rmtree(rep_dir)
                start, res = replica()
            runs[name].append({"dir": str(rep_dir), "trajectory": res.trajectory, "log": res.log,
                               "topology": str(start), "start_frame": frame, "ns_per_day": res.ns_per_day,
                               "platform": res.platform})
            log(f"[md] {name} replica {r}: {res.ns_per_day:.2f} ns/day on {res.platform}")
    return runs


def _stage_analysis(cfg: PipelineConfig, out: Path, runs: dict, log) -> dict:
    from openmm_cgkd.analysis.report import AnalysisSettings, analyze_model, write_report

    settings = config_from_dict(AnalysisSettings, dict(cfg.analysis), "analysis")
    results = {}
    for name, reps in runs.items():
        report = analyze_model([r["trajectory"] for r in reps], cfg.dataset, topology=reps[0]["topology"],
                               energies=[r["log"] for r in reps], settings=settings, name=name)
        write_report(report, out / "analysis" / name)
        results[name] = {"summary": {k: v.to_dict() for k, v in report.summary.items()}, "stable": report.stable,
                         "dir": str(out / "analysis" / name)}
        log(f"[analysis] {name}: " + ", ".join(f"{k} TAE {v.mean:.3f}" for k, v in report.summary.items()
                                               if k in ("rdf", "adf", "cdf")))
    return results


# ------------------------------------------------------------------------------ report
def comparison_markdown(analysis: dict, runs: dict) -> str:
    """Tables comparing the models: structural TAEs (mean +- std over replicas) and MD speed."""
    kinds = sorted({k for a in analysis.values() for k in a["summary"]})
    lines = ["## Structural error (TAE vs AA, mean +- std over replicas; lower is better)", "",
             "| model | " + " | ".join(kinds) + " | stable |", "|---|" + "---|" * (len(kinds) + 1)]
    for name, a in analysis.items():
        cells = []
        for k in kinds:
            s = a["summary"].get(k)
            cells.append("-" if s is None else f"{s['mean']:.3f} +- {s['std']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'yes' if a['stable'] else 'NO'} |")
    lines += ["", "## Inference speed in OpenMM (MD replicas; mean over replicas)", "",
              "| model | ns/day | platform |", "|---|---|---|"]
    for name, reps in runs.items():
        speeds = [r["ns_per_day"] for r in reps]
        lines.append(f"| {name} | {np.mean(speeds):.3g} | {reps[0]['platform']} |")
    return "\n".join(lines) + "\n"


def comparison_plot(analysis: dict, path: Path) -> Path:
    """Grouped bar chart of summary TAEs with error bars, one group per kind (rdf, adf, cdf)."""
    from openmm_cgkd.figures import colormap, new_figure

    kinds = [k for k in ("rdf", "adf", "cdf") if any(k in a["summary"] for a in analysis.values())]
    names = list(analysis)
    fig = new_figure(figsize=(4.5 * max(1, len(kinds)), 4))
    axes = fig.subplots(1, max(1, len(kinds)), squeeze=False)
    colours = colormap("tab10")(np.arange(len(names)) % 10)
    for ax, kind in zip(axes[0], kinds):
        means = [analysis[n]["summary"].get(kind, {}).get("mean", np.nan) for n in names]
        stds = [analysis[n]["summary"].get(kind, {}).get("std", 0.0) for n in names]
        ax.bar(range(len(names)), means, yerr=stds, color=colours, capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{kind.upper()} TAE")
        ax.set_ylabel("TAE (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


# ------------------------------------------------------------------------------ driver
def run_pipeline(cfg: PipelineConfig, only: list[str] | None = None, log=print) -> dict:
    """Run (or resume) every stage; returns the outputs of each stage. ``only`` limits to stages."""
    from openmm_cgkd.training.config import config_to_dict

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    import yaml

    (out / "pipeline.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))  # as resolved
    from openmm_cgkd.fingerprint import bundle_checksum, digest, file_sha256
    from openmm_cgkd.training.trainer import HARDWARE_KEYS

    stages = _Stages(out, log)
    wanted = set(only or STAGES)
    unknown = wanted - set(STAGES)
    if unknown:
        raise ConfigError(f"unknown stage(s) {sorted(unknown)}; stages: {list(STAGES)}")
    results: dict[str, dict] = {}

    def stage(name, key, fn, files_of):
        marker = stages.done(name, key)
        if marker is not None:
            log(f"[{name}] done earlier ({marker['finished']}): skipped")
            results[name] = marker["outputs"]
            return results[name]
        if name not in wanted:
            raise RuntimeError(f"stage {name!r} has not run yet but was not asked for (only={sorted(wanted)})")
        t0 = time.time()
        outputs = fn()
        stages.mark(name, key, outputs, files_of(outputs), time.time() - t0)
        results[name] = outputs
        return outputs

    # Stage keys: settings that change results (hardware and logging left out) + content checksums
    # of the inputs; a stage that reruns writes new outputs, whose checksums key the stages after it.
    def results_only(trainer: dict) -> dict:
        return {k: v for k, v in trainer.items() if k not in HARDWARE_KEYS}

    common = {"model": cfg.model, "split": asdict(cfg.split), "trainer": results_only(cfg.trainer)}
    if not Path(cfg.dataset).is_file():
        aa_inputs = {k: file_sha256(getattr(cfg.aa, k)) for k in ("system", "mapping")
                     if cfg.aa and getattr(cfg.aa, k) and Path(getattr(cfg.aa, k)).is_file()}
        aa_settings = {k: v for k, v in asdict(cfg.aa).items() if k not in ("platform", "threads")} if cfg.aa else None
        stage("aa", {"aa": aa_settings, "inputs": aa_inputs}, lambda: _stage_aa(cfg, log), lambda o: [o["dataset"]])
    if cfg.dataset_stride > 1 or cfg.dataset_max_frames is not None:
        cfg.dataset = _frames_subset(cfg, out, log)
    data_sha = file_sha256(cfg.dataset)  # a dataset of other content retrains everything downstream
    teachers = stage("teachers", {**common, "dataset": data_sha,
                                  "teachers": {k: v for k, v in cfg.teachers.items() if k != "parallel"}},
                     lambda: _stage_teachers(cfg, out, log), lambda o: [o["ensemble"], *o["members"]])
    labelled = stage("labels", {"teachers": bundle_checksum(teachers["ensemble"]), "dataset": data_sha,
                                "single": _needs_single_labels(cfg)},
                     lambda: _stage_labels(cfg, out, teachers, log), lambda o: list(o.values()))
    students = stage("students", {**common, "students": {"variants": list(cfg.students.variants),
                                                         "trainer": results_only(cfg.students.trainer)},
                                  "labels": {k: file_sha256(v) for k, v in labelled.items()}},
                     lambda: _stage_students(cfg, out, labelled, log), lambda o: [v["bundle"] for v in o.values()])
    models = _models_for_md(cfg, teachers, students)
    md_settings = {k: v for k, v in asdict(cfg.md).items() if k not in ("platform", "threads")}
    runs = stage("md", {"md": md_settings, "models": {n: bundle_checksum(p) for n, p in models.items()},
                        "dataset": data_sha, "start_block": cfg.split.train},
                 lambda: _stage_md(cfg, out, models, data_sha, log),
                 lambda o: [r[k] for reps in o.values() for r in reps for k in ("trajectory", "log", "topology")])
    traj_sums = {name: [[file_sha256(r[k]) for k in ("trajectory", "log", "topology")] for r in reps]
                 for name, reps in runs.items()}
    analysis = stage("analysis", {"analysis": cfg.analysis, "dataset": data_sha, "runs": traj_sums},
                     lambda: _stage_analysis(cfg, out, runs, log), lambda o: [v["dir"] for v in o.values()])

    def report():
        md = "# openmm_cgkd pipeline report\n\n" + comparison_markdown(analysis, runs)
        md += "\n![TAE comparison](tae_comparison.png)\n"
        (out / "report.md").write_text(md)
        comparison_plot(analysis, out / "tae_comparison.png")
        (out / "report.json").write_text(json.dumps({"analysis": analysis, "md": runs}, indent=1, default=str))
        log(md)
        return {"report": str(out / "report.md"), "plot": str(out / "tae_comparison.png")}

    stage("report", {"analysis": digest(analysis), "md": digest(runs)}, report, lambda o: [o["report"], o["plot"]])
    return results
