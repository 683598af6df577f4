"""Distillation labels: teacher predictions on every frame of a dataset (docs/METHOD.md section 2.4).

:func:`make_labels` loads a teacher bundle (one teacher, or an ensemble: then member means, or
one chosen member) and evaluates it, plus the bundle's wall, on every frame. The labels are the
total model outputs, network + wall, exactly what the teacher would give in MD:

* ``forces`` F_T (F, N, 3) kJ/mol/nm, ``bead_energies`` e_T (F, N) kJ/mol (the wall's pair
  energies split half and half between the two beads), ``energy`` E_T (F,) kJ/mol;
* ``force_std`` (F, N, 3): the member spread (population std) of an ensemble, zeros otherwise.

A hipnn-ts teacher or stacked ensemble is evaluated on batches of frames (periodic or not; at least
2,048 beads a batch, so a 6-bead molecule goes 341 frames at a time) by the written-out chain
rule of :func:`~openmm_cgkd.model.stacked.training_forward` (``create_graph=False``: no autograd
through the pairs; the pair list, distances and sensitivities computed once for all members), its
wall and bonded priors on the same batches; other architectures frame by frame through the
bundle's module. Both give the same labels to float32
round-off (``tests/unit/training/test_labels_fast.py``).

Their provenance names the teacher bundle (path, weights checksums and the content checksum of the
whole bundle, :func:`openmm_cgkd.fingerprint.bundle_checksum`, kind, members), the label source
(``ensemble`` mean or ``member K``/``teacher``), the wall and the architecture, so that a
student can reuse the wall and architecture and record whom it learned from.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from openmm_cgkd.data.dataset import CGDataset, DistillationLabels
from openmm_cgkd.training.config import ConfigError, LabelsConfig
from openmm_cgkd.training.stacked import prior_terms, wall_terms

__all__ = ["label_source", "predict_labels", "make_labels"]

_FRAME_BEADS = 2048  # beads per batch of the batched path by default (252-bead frames: 8 a batch)


def label_source(model_kind: str, num_members: int, member: int | None) -> str:
    """``ensemble`` (member means), ``member K`` (one member of an ensemble) or ``teacher``."""
    if model_kind == "ensemble" and num_members > 1:
        return "ensemble" if member is None else f"member {member}"
    return "teacher"


def _device(name: str) -> torch.device:
    from openmm_cgkd.training.devices import torch_device

    return torch_device(name)


def _stacked_network(bundle):
    """The eager :class:`~openmm_cgkd.model.stacked.StackedEnsemblePotential` of a hipnn-ts bundle
    (a teacher or student as one member), or None: another architecture."""
    from openmm_cgkd.model.potential import STACKED_ARCHITECTURES, CGPotential
    from openmm_cgkd.model.stacked import StackedEnsemblePotential

    if bundle.manifest.architecture.get("architecture") not in STACKED_ARCHITECTURES:
        return None
    model = bundle.eager_model()
    if isinstance(model, CGPotential):
        model = StackedEnsemblePotential.from_members([model])
    return model if isinstance(model, StackedEnsemblePotential) else None


@torch.no_grad()
def predict_labels(bundle, dataset: CGDataset, member: int | None = None, device: str = "auto",
                   progress: bool = False, batch_size: int | None = None) -> DistillationLabels:
    """Evaluate ``bundle`` (a loaded :class:`~openmm_cgkd.bundle.Bundle`) + its wall on every frame
    (hipnn-ts networks: ``batch_size`` frames at a time, default enough frames for 2,048 beads and
    at least 8; see the module docstring)."""
    from openmm_cgkd.fingerprint import bundle_checksum

    man = bundle.manifest
    if list(man.type_names) != list(dataset.type_names):
        raise ConfigError(f"the teacher bundle's bead types {man.type_names} differ from the dataset's "
                          f"{dataset.type_names}")
    is_ensemble = man.model_kind == "ensemble" and man.num_members > 1
    if member is not None and not (is_ensemble and 0 <= member < man.num_members):
        raise ConfigError(f"member {member} does not exist: the bundle is a {man.model_kind} with "
                          f"{man.num_members} member(s)")
    dev = _device(device)
    module = bundle.module.to(dev)
    wall = bundle.wall_module().to(dev)
    prior = None
    if bundle.priors is not None:
        from openmm_cgkd.model.priors_torch import PriorPotential

        if bundle.priors.exclusions > 0:
            wall.set_exclusions(dataset.topology.excluded_pairs(bundle.priors.exclusions), dataset.n_beads)
        prior = PriorPotential(bundle.priors, dataset.topology, dataset.bead_types, dtype=torch.float64).to(dev)
        prior = None if prior.is_empty else prior
    elif dataset.topology.has_bonds:
        raise ConfigError("the dataset's beads are bonded but the teacher bundle has no bonded priors (it was "
                          "trained on one-bead molecules): label with teachers trained on this dataset")
    types = torch.from_numpy(dataset.bead_types.astype(np.int64)).to(dev)
    f, n = dataset.n_frames, dataset.n_beads
    forces = np.empty((f, n, 3), np.float32)
    bead_e = np.empty((f, n), np.float32)
    energy = np.empty(f, np.float64)
    std = np.zeros((f, n, 3), np.float32)
    stacked = _stacked_network(bundle)
    if stacked is not None:  # network, wall and priors on batches of frames, every member at once
        from openmm_cgkd.model.stacked import joined_pairs, training_forward

        stacked = stacked.to(dev)
        if batch_size is None:  # small molecules: many frames a batch
            batch_size = max(8, _FRAME_BEADS // max(1, n))
        starts = range(0, f, batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="labels", unit="batch")
        for s0 in starts:
            batch = slice(s0, s0 + batch_size)
            pos_b = torch.from_numpy(np.ascontiguousarray(dataset.positions[batch])).to(dev)
            box_b = torch.from_numpy(np.ascontiguousarray(dataset.boxes[batch])).to(dev)
            pairs = joined_pairs(stacked.neighbors, pos_b, box_b)
            out = training_forward(stacked, types, pos_b, box_b, create_graph=False, pairs=pairs)
            f_k, b_k, e_k = out["forces"].double(), out["bead_energies"].double(), out["energy"].double()
            if is_ensemble and member is not None:
                f_k, b_k, e_k = f_k[member:member + 1], b_k[member:member + 1], e_k[member:member + 1]
            mean_f = f_k.mean(0)
            if is_ensemble and member is None:
                std[batch] = torch.sqrt(((f_k - mean_f) ** 2).mean(0)).float().cpu().numpy()
            wb, wf = wall_terms(wall, types, pos_b, box_b)
            wb, wf = wb.double(), wf.double()
            if prior is not None:
                pb, pf = prior_terms(prior, pos_b.double(), box_b.double() if dataset.periodic else None)
                wb, wf = wb + pb, wf + pf
            forces[batch] = (mean_f + wf).float().cpu().numpy()
            bead_e[batch] = (b_k.mean(0) + wb).float().cpu().numpy()
            energy[batch] = (e_k.mean(0) + wb.sum(-1)).cpu().numpy()
    frames = range(f) if stacked is None else range(0)  # other architectures: frame by frame
    if progress and stacked is None:
        from tqdm import tqdm

        frames = tqdm(frames, desc="labels", unit="frame")
    for i in frames:
        pos = torch.from_numpy(dataset.positions[i]).to(dev)
        box = torch.from_numpy(dataset.boxes[i]).to(dev) if dataset.periodic else None
        if is_ensemble and member is not None:
            e_k, b_k, f_k = module.forward_members(types, pos, box)
            e, b, frc = e_k[member], b_k[member], f_k[member]
        elif is_ensemble:
            e, b, frc, s = module(types, pos, box)
            std[i] = s.float().cpu().numpy()
        else:
            e, b, frc = module(types, pos, box)[:3]
        we, wb, wf = wall(types, pos, box)
        if prior is not None:
            pe, pb, pf = prior(types, pos.double(), None if box is None else box.double())
            we, wb, wf = we.double() + pe, wb.double() + pb, wf.double() + pf
        forces[i] = (frc.double().cpu() + wf.double().cpu()).numpy()
        bead_e[i] = (b.double().cpu() + wb.double().cpu()).numpy()
        energy[i] = float(e.double().cpu() + we.double().cpu())
    prov = {
        "teacher_bundle": str(Path(bundle.path).resolve()) if bundle.path else None,
        "teacher_checksums": dict(man.checksums), "teacher_kind": man.model_kind,
        "teacher_bundle_checksum": bundle_checksum(bundle.path) if bundle.path else None,
        "num_members": int(man.num_members), "member": member,
        "source": label_source(man.model_kind, man.num_members, member), "teacher_variant": man.variant,
        "architecture": dict(man.architecture), "wall": man.wall.to_dict(),
        "includes_wall": True, "teacher_training_seeds": man.training.get("seeds"),
        "priors": None if bundle.priors is None else bundle.priors.to_dict(),
    }
    return DistillationLabels(forces, bead_e, energy, std, prov)


def make_labels(cfg: LabelsConfig, progress: bool = True, window: dict | None = None) -> Path:
    """Label every frame of ``cfg.dataset`` with ``cfg.teachers``; write the labels into the dataset
    (or into a copy at ``cfg.out``). ``window``: keyword arguments of
    :meth:`~openmm_cgkd.data.dataset.CGDataset.window`; the labelled frames are then written as a
    new dataset at ``cfg.out`` (required). Teachers trained at another temperature than the
    dataset's are allowed with a :class:`~openmm_cgkd.errors.CGKDWarning`. Returns the labelled
    dataset's path."""
    import warnings

    from openmm_cgkd.bundle import load_bundle
    from openmm_cgkd.errors import CGKDWarning

    if not cfg.dataset or not cfg.teachers:
        raise ConfigError("labels need `dataset` and `teachers` (a teacher or ensemble bundle)")
    src = Path(cfg.dataset)
    if window and (not cfg.out or Path(cfg.out).resolve() == src.resolve()):
        raise ConfigError("labelling a window of frames writes a new dataset: give --out (another file)")
    dataset = CGDataset.load(src)
    bundle = load_bundle(cfg.teachers)
    from openmm_cgkd.training.model import check_boxes_for_cutoff

    m = bundle.manifest
    check_boxes_for_cutoff(dataset.boxes, max(float(m.cutoff_nm), float(m.wall.cutoff_nm)),
                           f"labelling {src} with {cfg.teachers}")
    t_data, t_model = dataset.temperature_K, bundle.manifest.temperature_K
    if t_data is not None and t_model is not None and abs(t_data - t_model) > 0.5:
        warnings.warn(CGKDWarning(f"the teachers were trained on data at {t_model:g} K; this dataset is at "
                                  f"{t_data:g} K"), stacklevel=2)
    if window:
        dataset = dataset.window(**window)
        labels = predict_labels(bundle, dataset, cfg.member, cfg.device, progress=progress)
        dataset.labels = labels
        return dataset.save(cfg.out)
    labels = predict_labels(bundle, dataset, cfg.member, cfg.device, progress=progress)
    target = src
    if cfg.out:
        target = Path(cfg.out)
        if target.resolve() != src.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            shutil.copyfile(src, tmp)
            tmp.replace(target)
    dataset.save_labels(target, labels)
    return target
