"""A small architecture sweep judged on BOTH the held-out force error and the structure in MD.

``cgkd pipeline --sweep sweep.yaml`` runs :func:`run_sweep`: for every point of a grid of model
settings (e.g. cutoff 0.7 / 0.9 / 1.1 nm x architecture x width) it trains ONE teacher on the same
frames (those of the base pipeline config, selected once) and runs a short MD of it, as a
pipeline of its own in ``<out>/<point>/`` (cached and resumable like every pipeline), then writes
one table, ``<out>/sweep.md`` and ``sweep.json`` (rewritten after every finished point): per point the validation-block and test-block
force RMSE (network + wall vs mapped AA forces, kJ/mol/nm), the epochs trained, the RDF/ADF/CDF
TAEs of the MD against the AA reference (mean +- std over replicas; failed replicas counted),
ns/day and the wall time of training and MD.

Configuration (YAML; paths relative to the file)::

    base: study.yaml            # pipeline config: dataset + frame selection, split, trainer, model defaults, md, analysis
    out: study/sweep            # default: <base out>/sweep
    grid:                       # model settings to vary, any PotentialConfig field
      cutoff_nm: [0.7, 0.9, 1.1]
      architecture: [graph-network, tensornet]
      embedding_dim: [32, 64]
    design: factorial           # every combination of the grid (here 12 points), or
                                # one-at-a-time: the center, then each grid value changed alone
                                # (here 1 + 2 + 1 + 1 = 5 points)
    center: {}                  # one-at-a-time: the model varied around (default: the base's model
                                # block, which then must set every grid key)
    trainer: {}                 # overrides of the base's trainer
    md: {length_ps: 50, discard_ps: 10, replicas: 2}   # overrides of the base's md (one teacher per point)

Units: nm, ps, kJ/mol/nm.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from openmm_cgkd.config import Config, ConfigError, config_from_dict, read_yaml_mapping
from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.fileio import write_json
from openmm_cgkd.training.config import config_to_dict
from openmm_cgkd.workflow.cache import stage_outputs
from openmm_cgkd.workflow.config import MDConfig, PipelineConfig, StudentsConfig, load_pipeline_config
from openmm_cgkd.workflow.run import run_pipeline
from openmm_cgkd.workflow.stages.data import frames_subset

DESIGNS = ("factorial", "one-at-a-time")

__all__ = ["SweepConfig", "load_sweep_config", "sweep_points", "point_config", "run_sweep"]


@dataclass
class SweepConfig(Config):
    base: str = ""
    out: str | None = None
    grid: dict = field(default_factory=dict)
    trainer: dict = field(default_factory=dict)
    md: dict = field(default_factory=dict)
    design: str = "factorial"
    center: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.design not in DESIGNS:
            raise ConfigError(f"design must be one of {', '.join(DESIGNS)}, got {self.design!r}")
        if not self.base:
            raise ConfigError("a sweep needs `base:` (the pipeline config whose data, split and trainer it uses)")
        if not self.grid:
            raise ConfigError("a sweep needs a `grid:` of model settings, e.g. {cutoff_nm: [0.7, 0.9, 1.1]}")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid.{key} must be a non-empty list of values, got {values!r}")


def load_sweep_config(path: str | Path) -> SweepConfig:
    path = Path(path)
    data = read_yaml_mapping(path, "sweep config")
    base = path.resolve().parent
    for key in ("base", "out"):
        if data.get(key) and not Path(data[key]).is_absolute():
            data[key] = str(base / data[key])
    return config_from_dict(SweepConfig, data)


def _tag(value) -> str:
    return str(value).replace("/", "-").replace(" ", "")


def sweep_points(grid: dict, design: str = "factorial", center: dict | None = None) -> list[tuple[str, dict]]:
    """[(name, {model key: value})] of the sweep's points.

    ``factorial``: the cartesian product of ``grid``, in grid order. ``one-at-a-time``: ``center``
    (the base model's values of the grid keys) first, then for each key in grid order each of its
    other values with the rest at the center. A point's name lists every grid key in alphabetical
    order, so the same model has the same name (and the same cached results) under either design
    and whatever the order of the grid (which sets the order the points run in).
    """
    keys = list(grid)
    if design == "factorial":
        combos = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    elif design == "one-at-a-time":
        missing = [k for k in keys if k not in (center or {})]
        if missing:
            raise ConfigError(f"a one-at-a-time sweep varies each grid key around the base model, which does not "
                              f"set {', '.join(missing)}: add it to the base config's model block")
        mid = {k: center[k] for k in keys}
        combos = [mid] + [{**mid, k: v} for k in keys for v in grid[k] if v != mid[k]]
    else:
        raise ConfigError(f"design must be one of {', '.join(DESIGNS)}, got {design!r}")
    return [("_".join(f"{k}-{_tag(point[k])}" for k in sorted(point)), point) for point in combos]


def point_config(base, out: Path, dataset: str, point: dict, cfg: SweepConfig):
    """The pipeline config of one grid point: the base's data (already selected), split and
    trainer; its model with ``point`` applied; one teacher, no students; MD of that teacher."""

    pc = copy.deepcopy(base)
    md = {k: v for k, v in config_to_dict(base.md).items()}
    md.update(cfg.md)
    for key in ("steps", "length_ps"):  # an override of one length replaces the other
        if key in cfg.md:
            md[{"steps": "length_ps", "length_ps": "steps"}[key]] = None
    for key in ("report_interval", "report_interval_ps"):
        if key in cfg.md:
            md[{"report_interval": "report_interval_ps", "report_interval_ps": "report_interval"}[key]] = None
    md.update(teacher_members=1, teacher_replicas=md.get("replicas", 1), include_ensemble=False,
              timestep_check={"nve_ps": 0.0, "nvt_ps": 0.0})
    return PipelineConfig(
        out=str(out), dataset=dataset, model={**pc.model, **point}, split=pc.split,
        trainer={**pc.trainer, **cfg.trainer}, teachers={**{k: v for k, v in pc.teachers.items()
                                                            if k in ("wall",)}, "members": 1},
        students=StudentsConfig(variants=[], single_teacher_members=[]),
        md=config_from_dict(MDConfig, md, "md"), analysis=dict(pc.analysis))


def _check_models(base, dataset: str, points: list, cfg: SweepConfig) -> None:
    """Every point's pipeline config and architecture are valid before anything runs."""
    from openmm_cgkd.training.model import number_density, potential_config_for

    ds = CGDataset.load(dataset)
    density = number_density(ds.positions[:1], ds.boxes[:1])
    for name, point in points:
        pc = point_config(base, Path(base.out) / name, dataset, point, cfg)
        try:
            potential_config_for(pc.model, list(ds.type_names), density)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"sweep point {name}: invalid model settings {pc.model}: {exc}") from None


def _fmt(s: dict | None) -> str:
    if not s or not s.get("n") or s.get("mean") is None or not math.isfinite(s["mean"]):
        return "n/a"
    return f"{s['mean']:.3f} +- {s['std']:.3f}" if s["n"] > 1 else f"{s['mean']:.3f}"


def run_sweep(cfg: SweepConfig, log=print) -> list[dict]:
    """Run (or resume) every grid point and write ``sweep.md`` / ``sweep.json``; the table rows."""

    base = load_pipeline_config(cfg.base)
    out = Path(cfg.out or Path(base.out) / "sweep").resolve()
    out.mkdir(parents=True, exist_ok=True)
    dataset = frames_subset(base, out, log) if base.selects_frames else base.dataset
    points = sweep_points(cfg.grid, cfg.design, {**base.model, **cfg.center})
    _check_models(base, dataset, points, cfg)
    rows = []
    for name, point in points:
        pdir = out / name
        log(f"[sweep] {name}: {point}")
        run_pipeline(point_config(base, pdir, dataset, point, cfg), log=lambda s, n=name: log(f"[{n}] {s}"))
        teachers = stage_outputs(pdir, "teachers")  # TeachersResult, MDResult, AnalysisResult
        md = stage_outputs(pdir, "md").models["teacher-00"]
        analysis = stage_outputs(pdir, "analysis").models["teacher-00"]
        times = {s: (json.loads((pdir / "stages" / f"{s}.json").read_text()).get("seconds"))
                 for s in ("teachers", "md")}
        speeds = [r.ns_per_day for r in md if r.ns_per_day]
        rows.append({
            "point": name, "model": point, "epochs": teachers.runs[0].epochs,
            "stopped_early": teachers.runs[0].stopped_early,
            "val_force_rmse": teachers.validation_forces[0]["rmse"] if teachers.validation_forces else None,
            "test_force_rmse": teachers.metrics.get("forces_vs_aa", {}).get("rmse"),
            "tae": {k: analysis.summary.get(k) for k in ("rdf", "adf", "cdf")},
            "n_failed": analysis.n_failed, "n_replicas": analysis.n_replicas,
            "ns_per_day": sum(speeds) / len(speeds) if speeds else None,
            "train_seconds": times["teachers"], "md_seconds": times["md"]})
        _write_table(out, cfg, dataset, rows, len(points))
    log(_write_table(out, cfg, dataset, rows, len(points)))
    return rows


def _write_table(out: Path, cfg: SweepConfig, dataset: str, rows: list[dict], n_points: int) -> str:
    """Write ``sweep.md`` / ``sweep.json`` for the points finished so far; the table's text."""
    keys = list(cfg.grid)
    done = "" if len(rows) == n_points else f" ({len(rows)} of {n_points} points done so far)"
    lines = [f"# Architecture sweep: one teacher per point, same frames; short MD of each{done}", "",
             f"Design: {cfg.design}. Base config: `{Path(cfg.base).name}`; data: `{Path(dataset).name}`; MD per point: "
             f"{'; '.join(f'{k} {v}' for k, v in cfg.md.items()) or 'as the base'}; trainer overrides: "
             f"{'; '.join(f'{k} {v}' for k, v in cfg.trainer.items()) or 'none'}. Force RMSE: network + wall vs "
             "mapped AA forces (kJ/mol/nm), on the validation and the test block; TAEs vs the AA reference, mean +- "
             "std over the scored replicas.", "",
             "| " + " | ".join(keys) + " | epochs | val force RMSE | test force RMSE | RDF TAE | ADF TAE | CDF TAE | "
             "failed | ns/day | training (s) | MD (s) |",
             "|" + "---|" * (len(keys) + 10)]
    for r in rows:
        lines.append("| " + " | ".join(str(r["model"][k]) for k in keys) + f" | {r['epochs']} | "
                     + " | ".join("n/a" if r[k] is None else f"{r[k]:.2f}" for k in ("val_force_rmse",
                                                                                       "test_force_rmse"))
                     + " | " + " | ".join(_fmt(r["tae"][k]) for k in ("rdf", "adf", "cdf"))
                     + f" | {r['n_failed']} of {r['n_replicas']} | "
                     + ("n/a" if r["ns_per_day"] is None else f"{r['ns_per_day']:.3g}")
                     + f" | {r['train_seconds']:.0f} | {r['md_seconds']:.0f} |")
    text = "\n".join(lines) + "\n"
    (out / "sweep.md").write_text(text)
    write_json(out / "sweep.json", {"grid": cfg.grid, "design": cfg.design, "md": cfg.md, "trainer": cfg.trainer,
                                    "points_total": n_points, "rows": rows}, newline=False)
    return text
