"""Teachers: K members of one architecture that differ only in their seed, trained on the mapped
AA forces alone (loss Err(F, F_AA); docs/METHOD.md section 2.3).

:func:`train_teachers` runs the whole stage for a :class:`TeachersConfig`:

1. split the dataset into contiguous train / val / test blocks;
2. fit the repulsive wall on the training block (:mod:`.wall_fit`) and, where beads are bonded,
   the bonded priors (:mod:`.prior_fit`), shared by every member;
3. train the members, each a task of the pipeline's executor (:mod:`openmm_cgkd.executor`:
   a Dask cluster; ``cgkd train-teachers`` starts a local one of ``parallel`` workers, by default
   one per GPU, else sized to the machine), each resumable in its own directory; a stacked
   architecture (``hipnn-ts``) trains all members in one run instead (:mod:`openmm_cgkd.training.stacked`);
4. write one teacher bundle per member and the ensemble bundle (member means and force std);
5. evaluate members and ensemble on the test block (``metrics.json``, parity and training-curve PNGs).

Output directory::

    setup.json                  split, wall (+ fit report), architecture: shared by all members
    members/member_KK/          the member's run (checkpoints/, logs/, result.json) and bundle/
    ensemble/                   the ensemble bundle (what `cgkd label` and CGKDForceField load)
    metrics.json, *.png         test-block metrics of each member and of the ensemble

Rerunning the stage skips finished members and resumes a killed one from its last epoch, as
long as their fingerprints match (:mod:`openmm_cgkd.fingerprint`): ``setup.json`` is computed
again when the dataset content, split, wall fit, architecture or seeds changed; a member whose
run fingerprint changed is trained again from scratch, and its bundle is re-saved whenever it
does not hold that run's weights. Adding members keeps the trained ones.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from openmm_cgkd.bundle import BundleError, read_manifest, save_bundle
from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.fileio import write_json
from openmm_cgkd.fingerprint import cg_dataset_digest, describe_changes, digest
from openmm_cgkd.model.ensemble import EnsemblePotential
from openmm_cgkd.model.potential import CGPotential, PotentialConfig
from openmm_cgkd.model.uncertainty import force_std_threshold
from openmm_cgkd.model.wall import WallParameters
from openmm_cgkd.training.common import code_provenance, dataset_bead_types, dataset_provenance, write_test_report
from openmm_cgkd.training.config import ConfigError, LossWeights, TeachersConfig, config_from_dict, config_to_dict
from openmm_cgkd.training.data import split_blocks
from openmm_cgkd.training.metrics import compare_predictions, predict_frames, training_curve_plot
from openmm_cgkd.training.model import check_boxes_for_cutoff, number_density, potential_config_for
from openmm_cgkd.training.stacked import is_stacked_architecture, predict_members, train_stacked
from openmm_cgkd.training.rundir import is_global_zero
from openmm_cgkd.training.trainer import train_potential
from openmm_cgkd.training.prior_fit import fit_priors
from openmm_cgkd.training.wall_fit import WALL_FIT_PAIRS, fit_wall
from openmm_cgkd.executor import ClusterConfig, Executor, Need, task_threads

__all__ = ["TeachersResult", "train_teachers", "prepare_teachers", "setup_fingerprint", "train_member", "member_dir"]

TEACHER_WEIGHTS = LossWeights(w_aa=1.0)


@dataclass
class TeachersResult:
    out: Path
    ensemble_bundle: Path
    member_bundles: list[Path]
    members: list = field(default_factory=list)  # TrainablePotential per member (best weights, CPU)
    blocks: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def member_dir(out: str | Path, k: int) -> Path:
    return Path(out) / "members" / f"member_{k:02d}"


def setup_fingerprint(cfg: TeachersConfig, dataset: CGDataset) -> dict:
    """What the shared set-up depends on: dataset content, split, wall fit, architecture, seeds."""

    key = {"dataset": cg_dataset_digest(dataset), "split": config_to_dict(cfg.split),
           "wall": config_to_dict(cfg.wall), "model": dict(cfg.model), "seeds": cfg.member_seeds()}
    if dataset.topology.has_bonds:  # unbonded datasets keep the fingerprint they always had
        priors = config_to_dict(cfg.priors)
        priors["temperature_k"] = priors.pop("temperature_K")  # the name set-ups were keyed on before the rename
        key["priors"] = priors
        key["wall_fit"] = WALL_FIT_PAIRS  # set-ups made before the wall was fitted on its own pairs differ
    return key


def prepare_teachers(cfg: TeachersConfig, dataset: CGDataset, log=print) -> dict:
    """The set-up every member shares (split, wall, architecture), computed once and stored in
    ``<out>/setup.json`` with its fingerprint (:func:`setup_fingerprint`); read back from there
    on later calls with the same fingerprint, computed again when it differs."""

    out = Path(cfg.out)
    path = out / "setup.json"
    key = setup_fingerprint(cfg, dataset)
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("fingerprint", {}).get("digest") == digest(key):
            return old
        changes = describe_changes(old.get("fingerprint", {}).get("settings"), key)
        log(f"teachers: {path} was made with other settings ({'; '.join(changes[:6])}): computing it again")
    blocks = split_blocks(dataset.n_frames, cfg.split)
    train = blocks["train"]
    priors, prior_report = fit_priors(dataset, train, cfg.priors)
    if cfg.wall.enabled:  # fitted on the pairs it acts on: beyond the priors' exclusions
        wall, report = fit_wall(dataset, train, cfg.wall, exclusions=0 if priors is None else priors.exclusions)
    else:
        wall, report = WallParameters.zero(list(dataset.type_names)), {"method": "disabled"}
    density = number_density(dataset.positions[train], dataset.boxes[train])
    pcfg = potential_config_for(cfg.model, list(dataset.type_names), density)
    check_boxes_for_cutoff(dataset.boxes, pcfg.cutoff_nm, f"teachers on {cfg.dataset}")
    setup = {"blocks": {k: v.tolist() for k, v in blocks.items()}, "wall": wall.to_dict(), "wall_fit": report,
             "priors": None if priors is None else priors.to_dict(), "prior_fit": prior_report,
             "architecture": pcfg.to_dict(), "seeds": cfg.member_seeds(),
             "frame_window": getattr(dataset, "source_window", None),  # frames of cfg.dataset used (None: all)
             "fingerprint": {"digest": digest(key), "settings": key}}
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(setup, indent=1))
    tmp.replace(path)
    return setup


def _blocks(setup: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.int64) for k, v in setup["blocks"].items()}


def train_member(cfg: TeachersConfig, dataset: CGDataset, setup: dict, k: int, trainer_overrides: dict | None = None):
    """Train (or resume, or reload) member ``k``; writes its teacher bundle. Returns a TrainResult."""

    seed = setup["seeds"][k]
    tcfg = replace(cfg.trainer, seed=seed, **(trainer_overrides or {}))
    run = member_dir(cfg.out, k)
    wall = WallParameters.from_dict(setup["wall"])
    blocks = _blocks(setup)
    priors = setup_priors(setup)
    result = train_potential(dataset, blocks, PotentialConfig.from_dict(setup["architecture"]), wall,
                             TEACHER_WEIGHTS, tcfg, run, priors=priors)
    bundle = run / "bundle"
    if result.info and _member_bundle_stale(bundle, result.info.get("fingerprint")):
        training = {"stage": "teacher", "member": k, "seed": seed, "loss_weights": TEACHER_WEIGHTS.as_dict(),
                    "dataset": dataset_provenance(cfg.dataset, dataset, blocks), "trainer": config_to_dict(tcfg),
                    "result": result.info, "wall_fit": setup["wall_fit"], **code_provenance()}
        save_bundle(bundle, result.model.network, bead_types=dataset_bead_types(dataset), wall=wall,
                    model_kind="teacher", variant=f"teacher member {k} (seed {seed})", training=training,
                    description=f"CG teacher {k} of {cfg.members}: trained on mapped AA forces only",
                    overwrite=True, periodic=dataset.periodic, priors=priors, temperature_K=dataset.temperature_K)
    return result


def setup_priors(setup: dict):
    """The bonded priors of a teachers' set-up (None: none; set-ups before priors existed)."""
    from openmm_cgkd.model.priors import BondedPriors

    return BondedPriors.from_dict(setup["priors"]) if setup.get("priors") else None


def _member_bundle_stale(bundle: Path, fingerprint: str | None) -> bool:
    """True unless ``bundle`` holds the weights of the training run with ``fingerprint``."""

    if not (bundle / "manifest.yaml").is_file():
        return True
    try:
        recorded = read_manifest(bundle).training.get("result", {}).get("fingerprint")
    except BundleError:
        return True
    return fingerprint is None or recorded != fingerprint


def _member_task(job: tuple[dict, int, dict]) -> int:
    """Executor task: train (or resume) member ``k`` of the config ``cfg_dict`` in this worker
    with the trainer ``overrides`` (hardware only); re-reads the dataset and the shared set-up."""
    cfg_dict, k, overrides = job
    cfg = config_from_dict(TeachersConfig, cfg_dict)
    if overrides.get("accelerator") == "cpu" and overrides.get("num_threads") is None:
        overrides = {**overrides, "num_threads": task_threads()}
    setup = json.loads((Path(cfg.out) / "setup.json").read_text())
    dataset = CGDataset.load(cfg.dataset)
    if setup.get("frame_window"):  # the frames the set-up was made on (cgkd train-teachers --frames)
        dataset = dataset.window(frames=tuple(setup["frame_window"]))
    train_member(cfg, dataset, setup, k, overrides)
    return k


def _trains_on_several_devices(cfg: TeachersConfig) -> bool:
    """True when one member's trainer itself spans several devices (DDP): Lightning starts its
    own processes, so the members train one after another in this process."""
    tc = cfg.trainer
    devices = tc.devices
    n = len(devices) if isinstance(devices, (list, tuple)) else (int(devices) if str(devices).isdigit() else 1)
    return n > 1 or "ddp" in str(tc.strategy)


def local_parallel(cfg: TeachersConfig) -> int | None:
    """Worker processes of the local cluster ``cgkd train-teachers`` starts: ``parallel`` (an
    int), one (``none``), or with ``auto`` one per GPU (None: sized to the machine)."""
    if cfg.parallel == "auto":
        return None
    if cfg.parallel in ("none", "off", 1, "1"):
        return 1
    try:
        n = int(cfg.parallel)
    except ValueError:
        raise ConfigError(f"parallel must be 'auto', 'none' or a number of processes, got {cfg.parallel!r}") from None
    if n < 1:
        raise ConfigError(f"parallel must be >= 1 process, got {n}")
    return min(n, cfg.members)


def _train_members(cfg: TeachersConfig, executor: Executor) -> None:
    """Every member as one task of ``executor``; a GPU task when the trainer asks for a GPU (or
    ``auto`` and the workers have GPUs), else a CPU task of the worker's cores."""
    tc = cfg.trainer
    gpu = tc.accelerator in ("gpu", "cuda") or (tc.accelerator == "auto" and executor.has_gpus)
    over = {"accelerator": "gpu", "devices": 1} if gpu else {"accelerator": "cpu", "devices": 1,
                                                             "num_threads": tc.num_threads}
    jobs = [(config_to_dict(cfg), k, over) for k in range(cfg.members)]
    for _ in executor.map(_member_task, jobs, [f"member{k:02d}" for k in range(cfg.members)],
                          Need(threads=tc.num_threads, gpu=gpu), what="teachers"):
        pass


def train_teachers(cfg: TeachersConfig, dataset: CGDataset | None = None,
                   extra_force_refs: dict[str, np.ndarray] | None = None,
                   executor: Executor | None = None) -> TeachersResult:
    """Run the teacher stage (see the module docstring). ``dataset`` defaults to ``cfg.dataset``
    loaded from disk; ``extra_force_refs`` adds force references to the test metrics (e.g. the
    true forces of a synthetic system). The members train as tasks of ``executor``
    (:mod:`openmm_cgkd.executor`; default: a local cluster of ``parallel`` workers,
    stopped on return), then are read back here from their finished runs."""

    if not cfg.dataset:
        raise ConfigError("teachers need a dataset (the `dataset:` key)")
    dataset = dataset if dataset is not None else CGDataset.load(cfg.dataset)
    dataset.check_forces(f"the forces (F_AA) of {cfg.dataset}")
    out = Path(cfg.out)
    start = time.time()
    setup = prepare_teachers(cfg, dataset)
    if is_stacked_architecture(setup["architecture"]):  # hipnn-ts: all K members in one stacked run
        return _train_teachers_stacked(cfg, dataset, setup, extra_force_refs)
    blocks = _blocks(setup)
    if not _trains_on_several_devices(cfg):
        if executor is None:
            n = local_parallel(cfg)  # one: the members one after another in this process (no worker to start)
            cluster = ClusterConfig(kind="serial") if n == 1 else None
            with Executor(cluster, workers=n, threads=cfg.trainer.num_threads, shared_dir=out) as own:
                _train_members(cfg, own)
        else:
            _train_members(cfg, executor)
    results = [train_member(cfg, dataset, setup, k) for k in range(cfg.members)]  # read back (DDP: trained here)
    members = [r.model for r in results]
    ensemble_bundle = out / "ensemble"
    member_bundles = [member_dir(out, k) / "bundle" for k in range(cfg.members)]
    if not is_global_zero():  # a DDP helper process: rank 0 writes the results
        return TeachersResult(out, ensemble_bundle, member_bundles, members, blocks, {})
    wall = WallParameters.from_dict(setup["wall"])

    # test-block metrics: each member, and the ensemble mean of their predictions
    test = blocks["test"] if len(blocks["test"]) else blocks["val"]
    preds = [predict_frames(m, dataset, test, cfg.trainer.batch_size) for m in members]
    ens = {k: np.mean([p[k] for p in preds], axis=0) for k in preds[0]}
    metrics = {"test_frames": [int(test[0]), int(test[-1]) + 1],
               "members": [compare_predictions(p, dataset, test, extra_force_refs) for p in preds],
               "ensemble": compare_predictions(ens, dataset, test, extra_force_refs)}
    metrics["ensemble"]["force_std_mean"] = float(np.mean(np.std([p["forces"] for p in preds], axis=0)))
    write_test_report(out, f"ensemble of {cfg.members}", metrics, ens, dataset, test)
    training_curve_plot({f"member {k}": r.out / "logs" / "metrics.csv" for k, r in enumerate(results)},
                        out / "training_curves.png", "teachers")

    training = {"stage": "teachers", "seeds": setup["seeds"], "loss_weights": TEACHER_WEIGHTS.as_dict(),
                "dataset": dataset_provenance(cfg.dataset, dataset, blocks), "trainer": config_to_dict(cfg.trainer),
                "wall_fit": setup["wall_fit"], "prior_fit": setup.get("prior_fit"),
                "members": [r.info for r in results],
                "member_bundles": [str(p.resolve()) for p in member_bundles],
                "test_metrics": {"ensemble_forces_vs_aa": metrics["ensemble"]["forces_vs_aa"]},
                "seconds": round(time.time() - start, 1), **code_provenance()}
    networks = [m.network for m in members]
    model = EnsemblePotential(networks) if len(networks) > 1 else networks[0]
    save_bundle(ensemble_bundle, model, bead_types=dataset_bead_types(dataset), wall=wall,
                model_kind="ensemble" if len(networks) > 1 else "teacher",
                variant=f"ensemble of {len(networks)} teachers" if len(networks) > 1 else "single teacher",
                periodic=dataset.periodic, priors=setup_priors(setup), training=training, description=f"CG teacher ensemble ({len(networks)} members, seeds "
                                               f"{setup['seeds']}): member means of energies and forces",
                overwrite=True, temperature_K=dataset.temperature_K)
    write_json(out / "teachers.json", {"ensemble_bundle": str(ensemble_bundle.resolve()), **training}, indent=2,
               portable=True)
    return TeachersResult(out, ensemble_bundle, member_bundles, members, blocks, metrics)


def _train_teachers_stacked(cfg: TeachersConfig, dataset: CGDataset, setup: dict, extra_force_refs=None):
    """The teacher stage (:func:`train_teachers`) for a stacked
    architecture: all members in ONE run (``<out>/stacked/``), then the same outputs as the
    member-by-member stage (member bundles, the ensemble bundle, test metrics, plots) plus the
    uncertainty-watch threshold in the ensemble manifest (``training.uncertainty``)."""
    out = Path(cfg.out)
    start = time.time()
    blocks = {key: np.asarray(v, dtype=np.int64) for key, v in setup["blocks"].items()}
    wall = WallParameters.from_dict(setup["wall"])
    pcfg = PotentialConfig.from_dict(setup["architecture"])
    seeds = list(setup["seeds"])
    priors = setup_priors(setup)
    if str(cfg.parallel) not in ("auto", "none", "off", "1"):
        warnings.warn(f"parallel = {cfg.parallel!r} is ignored: stacked members train together in one process",
                      stacklevel=2)
    res = train_stacked(dataset, blocks, pcfg, wall, TEACHER_WEIGHTS, cfg.trainer, out / "stacked", seeds,
                        priors=priors)
    stacked = res.model
    k = stacked.num_members
    bead_types = dataset_bead_types(dataset)
    density = number_density(dataset.positions[blocks["train"]], dataset.boxes[blocks["train"]])
    provenance = dataset_provenance(cfg.dataset, dataset, blocks)

    members, member_bundles = [], []
    for m in range(k):
        single: CGPotential = stacked.network.member(m)
        members.append(res.member_potential(m, wall, density, priors, dataset.topology, dataset.bead_types))
        bundle = member_dir(out, m) / "bundle"
        member_bundles.append(bundle)
        # a bundle left by an earlier stacked run (other data, settings or wall) is replaced: the
        # member's record names the stacked run's fingerprint
        if _member_bundle_stale(bundle, res.info.get("fingerprint")):
            training = {"stage": "teacher", "member": m, "seed": seeds[m], "stacked_run": "stacked",
                        "loss_weights": TEACHER_WEIGHTS.as_dict(), "dataset": provenance,
                        "trainer": config_to_dict(cfg.trainer),
                        "result": {**res.info["members"][m], "fingerprint": res.info.get("fingerprint")},
                        "wall_fit": setup["wall_fit"], "prior_fit": setup.get("prior_fit"), **code_provenance()}
            save_bundle(bundle, single, bead_types=bead_types, wall=wall, model_kind="teacher",
                        variant=f"teacher member {m} (seed {seeds[m]}, stacked)", training=training,
                        description=f"CG teacher {m} of {k}: trained on mapped AA forces only (stacked run)",
                        overwrite=True, periodic=dataset.periodic, priors=priors, temperature_K=dataset.temperature_K)

    test = blocks["test"] if len(blocks["test"]) else blocks["val"]
    preds = predict_members(stacked, dataset, test, cfg.trainer.batch_size)
    ens = {key: np.mean([p[key] for p in preds], axis=0) for key in preds[0]}
    metrics = {"test_frames": [int(test[0]), int(test[-1]) + 1],
               "members": [compare_predictions(p, dataset, test, extra_force_refs) for p in preds],
               "ensemble": compare_predictions(ens, dataset, test, extra_force_refs)}
    metrics["ensemble"]["force_std_mean"] = float(np.mean(np.std([p["forces"] for p in preds], axis=0)))
    uncertainty = None
    if k > 1:
        train_idx = blocks["train"]
        pick = train_idx[np.unique(np.linspace(0, len(train_idx) - 1, min(len(train_idx), 200)).astype(int))]
        fk = np.stack([p["forces"] for p in predict_members(stacked, dataset, pick, cfg.trainer.batch_size)])
        uncertainty = {**force_std_threshold(fk), "source": "training block (up to 200 evenly spaced frames)"}
        metrics["ensemble"]["uncertainty"] = uncertainty
    write_test_report(out, f"ensemble of {k}", metrics, ens, dataset, test)
    training_curve_plot({f"member {m}": out / "stacked" / path for m, path in enumerate(res.info["metrics_csv"])},
                        out / "training_curves.png", "teachers (stacked)")

    training = {"stage": "teachers", "stacked": True, "seeds": seeds, "loss_weights": TEACHER_WEIGHTS.as_dict(),
                "dataset": provenance, "trainer": config_to_dict(cfg.trainer), "wall_fit": setup["wall_fit"],
                "prior_fit": setup.get("prior_fit"), "members": res.info["members"], "stacked_run": res.info,
                "member_bundles": [os.path.relpath(p, out) for p in member_bundles],
                "test_metrics": {"ensemble_forces_vs_aa": metrics["ensemble"]["forces_vs_aa"]},
                "seconds": round(time.time() - start, 1), **code_provenance()}
    if uncertainty is not None:
        training["uncertainty"] = uncertainty
    ensemble_bundle = out / "ensemble"
    network = stacked.network if k > 1 else stacked.network.member(0)
    save_bundle(ensemble_bundle, network, bead_types=bead_types, wall=wall,
                model_kind="ensemble" if k > 1 else "teacher",
                variant=f"ensemble of {k} teachers (stacked)" if k > 1 else "single teacher",
                training=training, description=f"CG teacher ensemble ({k} stacked hipnn-ts members, seeds {seeds}): "
                                               "member means of energies and forces", overwrite=True,
                periodic=dataset.periodic, priors=priors, temperature_K=dataset.temperature_K)
    write_json(out / "teachers.json", {"ensemble_bundle": os.path.relpath(ensemble_bundle, out), **training},
               indent=2, portable=True)
    return TeachersResult(out, ensemble_bundle, member_bundles, members, blocks, metrics)
