"""``cgkd refine``: remove a student's short-range traps by labelling its own MD frames with the
ensemble and fine-tuning on them, round after round (docs/guide/students.md, "Refining a student").

Round k (1, 2, ... ``rounds``) starts from the student of round k-1 (round 1: ``cfg.student``):

1. ``md.replicas`` short MD runs of that student (OpenMM, Langevin) from training frames of the
   dataset, a frame kept every ``md.interval_steps`` steps; a replica that blows up keeps the frames
   it made (its failure is recorded);
2. every MD frame is evaluated by the ensemble (:func:`~openmm_cgkd.training.labels.predict_labels`:
   labels and member force spread); frames with a pair closer than the dataset's closest contact of
   its type pair, or a spread above the watch threshold, are selected
   (:func:`~openmm_cgkd.training.refine.select_frames`);
3. the student is fine-tuned from its weights on its training frames plus the frames of rounds 1..k
   (:func:`~openmm_cgkd.training.refine.fine_tune`); the new bundle goes to ``OUT/round_KK/bundle``.

When a round's MD has no pair below the contact, the loop stops there (converged). After the last
fine-tune one more MD of the final student checks it (``OUT/round_KK/record.json`` with
``"check": true``, no fine-tune). Each round writes ``OUT/round_KK/record.json``: MD frames, frames
found (by contact, by spread), the coordination below the contact per pair of the round's student
(and of the dataset's test block), the force error on the test block before and after, the
fine-tune's losses. A round whose record exists is not redone (resumable; its key must match:
the settings and the checksum of its input student; the check round of a run given more
``rounds`` later becomes a fine-tune round); ``OUT/summary.json`` lists the rounds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from openmm_cgkd.fileio import read_json, write_json
from openmm_cgkd.fingerprint import bundle_checksum, digest
from openmm_cgkd.training.config import ConfigError, LossWeights, RefineConfig, config_to_dict

__all__ = ["refine_student", "RefineResult", "round_dir"]

# settings that do not change what a round computes
_HARDWARE = ("out", "device")
_MD_HARDWARE = ("platform", "threads")


@dataclass
class RefineResult:
    out: Path
    rounds: list[dict]  # the records, in order
    final_bundle: Path
    converged: bool


def round_dir(out: Path, k: int) -> Path:
    return Path(out) / f"round_{k:02d}"


def _key(cfg: RefineConfig, student_checksum: str, k: int) -> dict:
    d = config_to_dict(cfg)
    for name in _HARDWARE:
        d.pop(name, None)
    for name in _MD_HARDWARE:
        d["md"].pop(name, None)
    for name in ("student", "ensemble", "dataset", "rounds"):
        d.pop(name, None)
    return {"settings": digest(d), "student": student_checksum, "round": k}


def _blocks(cfg: RefineConfig, manifest, n_frames: int) -> dict[str, np.ndarray]:
    """The student's own train/val/test blocks (from its manifest), else ``cfg.split``'s."""
    from openmm_cgkd.training.data import split_blocks

    recorded = ((manifest.training or {}).get("dataset") or {})
    blocks = recorded.get("blocks") or {}
    if recorded.get("n_frames") == n_frames and all(blocks.get(b) for b in ("train", "val", "test")):
        return {b: np.arange(*blocks[b]) for b in ("train", "val", "test")}
    return split_blocks(n_frames, cfg.split)


def _student_md(bundle_path: Path, ds, starts: list[int], cfg: RefineConfig, seed: int, progress: bool):
    """MD frames of the student: (positions (F, N, 3), boxes (F, 3, 3), per-replica records)."""
    import openmm
    from openmm import unit

    from openmm_cgkd.serving.forcefield import CGKDForceField
    from openmm_cgkd.topology import dataset_topology

    md = cfg.md
    ff = CGKDForceField(bundle_path)
    positions, boxes, reps = [], [], []
    chunks = md.steps // md.interval_steps
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(starts) * chunks, desc="student MD", unit="frame")
    for r, frame in enumerate(starts):
        box = ds.boxes[frame] if ds.periodic else None
        sim = ff.create_simulation(dataset_topology(ds, frame), ds.positions[frame], box_vectors=box,
                                   temperature=md.temperature_K if md.temperature_K is not None else ds.temperature_K,
                                   friction_per_ps=md.friction_per_ps,
                                   timestep_fs=md.timestep_fs, platform=md.platform, threads=md.threads,
                                   seed=seed + r)
        failure, kept = None, 0
        for c in range(chunks):
            try:
                sim.step(md.interval_steps)
                state = sim.context.getState(getPositions=True)
            except openmm.OpenMMException as exc:  # NaN or neighbour overflow: keep what was made
                failure = {"step": int(sim.currentStep), "message": str(exc).splitlines()[0][:300]}
                break
            pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            if not np.all(np.isfinite(pos)):
                failure = {"step": int(sim.currentStep), "message": "non-finite positions"}
                break
            positions.append(np.asarray(pos, np.float32))
            boxes.append(np.zeros((3, 3), np.float32) if box is None else np.asarray(box, np.float32))
            kept += 1
            if bar is not None:
                bar.update(1)
        reps.append({"replica": r, "start_frame": int(frame), "seed": seed + r, "frames": kept,
                     "steps": int(sim.currentStep), "failure": failure})
        del sim
    if bar is not None:
        bar.close()
    if not positions:
        return np.zeros((0, ds.n_beads, 3), np.float32), np.zeros((0, 3, 3), np.float32), reps
    return np.stack(positions), np.stack(boxes), reps


def _threshold(cfg: RefineConfig, ensemble, ds, train: np.ndarray) -> tuple[float, str]:
    from openmm_cgkd.serving.uncertainty import fit_threshold, manifest_threshold

    if cfg.spread_threshold is not None:
        return float(cfg.spread_threshold), "given"
    value = manifest_threshold(ensemble)
    if value is not None:
        return value, "ensemble manifest"
    fit = fit_threshold(ensemble, ds, frames=train, quantile=cfg.spread_quantile)
    return float(fit["threshold_kj_mol_nm"]), f"{cfg.spread_quantile:g} quantile on training frames"


def _test_errors(model, ds, test: np.ndarray) -> dict:
    from openmm_cgkd.training.metrics import evaluate_frames

    metrics, _ = evaluate_frames(model, ds, test, batch_size=8)
    keep = ("forces_vs_aa", "forces_vs_teacher")
    return {k: {m: metrics[k][m] for m in ("rmse", "mae", "r2")} for k in keep if k in metrics}


def _potential(bundle, ds, train: np.ndarray):
    """The bundle's student as a :class:`TrainablePotential` (network + wall + priors)."""
    from openmm_cgkd.training.model import TrainablePotential, number_density

    density = number_density(ds.positions[train], ds.boxes[train])
    tp = TrainablePotential(bundle.manifest.potential_config, bundle.manifest.wall, density, bundle.priors,
                            ds.topology, ds.bead_types)
    tp.network.load_state_dict(bundle.eager_model().state_dict())
    return tp.eval()


def _check_inputs(cfg: RefineConfig):
    from openmm_cgkd.bundle import load_bundle
    from openmm_cgkd.data.dataset import CGDataset

    for name in ("student", "ensemble", "dataset"):
        if not getattr(cfg, name):
            raise ConfigError(f"refine needs `{name}` (--{name})")
    student = load_bundle(cfg.student)
    ensemble = load_bundle(cfg.ensemble)
    if student.manifest.model_kind != "student" and student.manifest.model_kind != "teacher":
        raise ConfigError(f"{cfg.student} is a {student.manifest.model_kind} bundle; refine takes one network "
                          "(a student)")
    if ensemble.manifest.model_kind != "ensemble" or ensemble.manifest.num_members < 2:
        raise ConfigError(f"{cfg.ensemble} is not an ensemble of >= 2 members: the spread and the labels need one")
    ds = CGDataset.load(cfg.dataset)
    for what, b in (("student", student), ("ensemble", ensemble)):
        if list(b.manifest.type_names) != list(ds.type_names):
            raise ConfigError(f"the {what}'s bead types {b.manifest.type_names} differ from the dataset's "
                              f"{ds.type_names}")
    if ds.labels is None:
        raise ConfigError(f"{cfg.dataset} has no distillation labels: give the student's labelled dataset")
    return student, ensemble, ds


def refine_student(cfg: RefineConfig, log=print, progress: bool = True) -> RefineResult:
    """Run (or resume) the refinement of ``cfg`` (see the module docstring)."""
    from openmm_cgkd.bundle import load_bundle, save_bundle
    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.model.uncertainty import bead_force_spread
    from openmm_cgkd.training.common import code_provenance, dataset_bead_types
    from openmm_cgkd.training.labels import predict_labels
    from openmm_cgkd.training.refine import (RefineError, check_weights, close_pair_counts, closest_contacts,
                                             coordination_below_contact, fine_tune, frames_dataset, select_frames)

    student0, ensemble, ds = _check_inputs(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    blocks = _blocks(cfg, student0.manifest, ds.n_frames)
    train, test = blocks["train"], blocks["test"]
    recorded = (student0.manifest.training or {}).get("loss_weights")
    if cfg.weights is None and not recorded:
        raise ConfigError(f"{cfg.student} records no loss weights; give `weights:` in the refine config")
    weights = check_weights(cfg.weights or LossWeights(**recorded))
    # bonded pairs the wall leaves to the priors are no contacts (a bond is closer than any of them)
    pr = student0.priors
    excluded = ds.topology.excluded_pairs(pr.exclusions) if pr is not None and pr.exclusions > 0 else None
    contacts = closest_contacts(ds, train, excluded)
    ref_counts = close_pair_counts(ds.positions[test], ds.boxes[test] if ds.periodic else None, ds.bead_types,
                                   ds.type_names, contacts, cfg.contact_margin_nm, excluded)
    reference = coordination_below_contact(ref_counts, ds.bead_types, ds.type_names)
    threshold, threshold_source = _threshold(cfg, ensemble, ds, train)
    log(f"[refine] closest contacts (nm) of the training frames: "
        + ", ".join(f"{k} {v:.3f}" for k, v in contacts.items())
        + f"; spread threshold {threshold:.4g} kJ/mol/nm ({threshold_source})")
    rng_starts = np.random.default_rng(cfg.seed)
    records: list[dict] = []
    found: list[CGDataset] = []
    current = Path(student0.path)
    converged = False
    for k in range(1, cfg.rounds + 2):
        check = k == cfg.rounds + 1  # after the last fine-tune: the final student's MD only
        rdir = round_dir(out, k)
        starts = sorted(int(s) for s in rng_starts.choice(train, size=cfg.md.replicas,
                                                          replace=len(train) < cfg.md.replicas))
        key = {**_key(cfg, bundle_checksum(current), k), "check": check}
        rec = read_json(rdir / "record.json")
        if rec is not None and rec.get("check") and not check and not rec.get("converged") \
                and rec.get("key") == {**key, "check": True}:
            rec = None  # the check of an earlier, shorter run: now a fine-tune round (more --rounds)
        if rec is not None:
            if rec.get("key") != key:
                raise ConfigError(f"{rdir} holds a round made with other settings or from another student; "
                                  "give a new --out (or delete it) to refine again")
            log(f"[refine] round {k}: done earlier ({rec['frames_found']} frames found)")
            records.append(rec)
            if rec.get("frames_file"):
                found.append(CGDataset.load(rdir / rec["frames_file"]))
            if rec.get("converged") or check:
                converged = bool(rec.get("converged"))
                break
            current = rdir / "bundle"
            continue
        rdir.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        student = load_bundle(current)
        pos, boxes, reps = _student_md(current, ds, starts, cfg, cfg.seed * 1000 + 100 * k, progress)
        rec = {"round": k, "check": check, "key": key, "student": str(current), "md": {
            "replicas": reps, "frames": int(len(pos)), "steps": cfg.md.steps, "interval_steps": cfg.md.interval_steps,
            "timestep_fs": cfg.md.timestep_fs}, "contacts_nm": contacts, "contact_margin_nm": cfg.contact_margin_nm,
            "reference_coordination_below_contact": reference, "spread_threshold_kj_mol_nm": threshold,
            "spread_threshold_source": threshold_source}
        if len(pos) == 0:
            raise RefineError(f"round {k}: every MD replica of {current} failed at once "
                              f"({reps[0]['failure']}); shorten md.timestep_fs")
        md_ds = frames_dataset(ds, pos, boxes, {"source": f"cgkd refine round {k}: MD of {current}"})
        md_ds.labels = predict_labels(ensemble, md_ds, device=cfg.device, progress=progress)
        spread = bead_force_spread(md_ds.labels.force_std).max(axis=1)
        counts = close_pair_counts(pos, boxes if ds.periodic else None, ds.bead_types, ds.type_names, contacts,
                                   cfg.contact_margin_nm, excluded)
        close = counts.sum(axis=1)
        chosen = select_frames(spread, close, threshold, cfg.max_new_frames)
        rec.update({"coordination_below_contact": coordination_below_contact(counts, ds.bead_types, ds.type_names),
                    "frames_close": int(np.count_nonzero(close)), "frames_spread": int(np.count_nonzero(
                        ~(spread <= threshold))), "max_spread_kj_mol_nm": float(np.max(spread)),
                    "frames_found": int(len(chosen)), "frames_file": None})
        worst = ", ".join(f"{p} {c['per_a']:.4f}" for p, c in rec["coordination_below_contact"].items())
        log(f"[refine] round {k}: {len(pos)} MD frames, {rec['frames_close']} with a pair below the contact, "
            f"{rec['frames_spread']} above the spread threshold; coordination below the contact: {worst}")
        if check or rec["frames_close"] == 0:
            rec["converged"] = rec["frames_close"] == 0
            converged = rec["converged"]
            rec["seconds"] = round(time.time() - t0, 1)
            write_json(rdir / "record.json", rec, indent=1, portable=True)
            records.append(rec)
            break
        new = md_ds.select_frames(chosen)
        new.save(rdir / "frames.h5")
        rec["frames_file"] = "frames.h5"
        found.append(new)
        everything = found[0] if len(found) == 1 else _concat(found)
        before = _potential(student, ds, train)
        rec["test_before"] = _test_errors(before, ds, test)
        net = student.eager_model()
        res = fine_tune(net, student.manifest.wall, student.priors, ds, blocks, everything, weights, cfg.fine_tune,
                        device=_torch_device(cfg.device), progress=progress)
        rec["test_after"] = _test_errors(res.model, ds, test)
        rec["fine_tune"] = res.info
        training = {**(student.manifest.training or {}), "refine": {
            "round": k, "from": str(current), "dataset": str(Path(cfg.dataset).resolve()),
            "ensemble": str(Path(ensemble.path).resolve()),
            "frames_files": [str((round_dir(out, j + 1) / "frames.h5").resolve()) for j in range(len(found))],
            "frames_found": rec["frames_found"],
            "frames_total": int(everything.n_frames), "loss_weights": weights.as_dict(),
            "fine_tune": config_to_dict(cfg.fine_tune), "test_before": rec["test_before"],
            "test_after": rec["test_after"]}, **code_provenance()}
        save_bundle(rdir / "bundle", res.model.network, bead_types=dataset_bead_types(ds), wall=student.manifest.wall,
                    model_kind="student", variant=student.manifest.variant, training=training,
                    description=f"{student0.manifest.description} (refined: round {k} of cgkd refine)",
                    overwrite=True, periodic=ds.periodic, priors=student.priors,
                    temperature_K=student.manifest.temperature_K)
        rec["bundle"] = "bundle"
        rec["seconds"] = round(time.time() - t0, 1)
        b, a = rec["test_before"]["forces_vs_aa"]["rmse"], rec["test_after"]["forces_vs_aa"]["rmse"]
        log(f"[refine] round {k}: {len(chosen)} frames labelled ({everything.n_frames} in all); test force RMSE vs "
            f"AA {b:.3f} -> {a:.3f} kJ/mol/nm; bundle {rdir / 'bundle'}")
        write_json(rdir / "record.json", rec, indent=1, portable=True)
        records.append(rec)
        current = rdir / "bundle"
    final = current
    write_json(out / "summary.json", {"rounds": [r["round"] for r in records], "final_bundle": str(final),
                                      "converged": converged, "contacts_nm": contacts,
                                      "coordination_below_contact": {r["round"]: r["coordination_below_contact"]
                                                                     for r in records}}, indent=1, portable=True)
    return RefineResult(out, records, final, converged)


def _torch_device(name: str) -> str:
    from openmm_cgkd.training.devices import torch_device

    return str(torch_device(name))


def _concat(parts):
    """One dataset of the frames of ``parts`` (same system; labelled, no AA forces)."""
    from openmm_cgkd.data.dataset import DistillationLabels
    from openmm_cgkd.training.refine import frames_dataset

    first = parts[0]
    ds = frames_dataset(first, np.concatenate([p.positions for p in parts]), np.concatenate([p.boxes for p in parts]),
                        {"source": "cgkd refine: frames of every round so far"})
    lab = [p.labels for p in parts]
    ds.labels = DistillationLabels(np.concatenate([x.forces for x in lab]),
                                   np.concatenate([x.bead_energies for x in lab]),
                                   np.concatenate([x.energy for x in lab]),
                                   np.concatenate([x.force_std for x in lab]), dict(lab[0].provenance))
    return ds
