"""Copy the models of a finished `cgkd pipeline` run into models/ with model cards.

    uv run python models/ship_from_pipeline.py runs/des-quick --student ensemble-e-ft-faa

writes ``models/des-teachers`` (the ensemble bundle) and ``models/des-student`` (the student
bundle), each with ``MODEL_CARD.md`` (data, variant, training metrics, structural TAEs and
MD speed measured by the pipeline) and ``continuity.npz``: a fixed input (bead types,
positions nm, box nm; frame 0 of the pipeline's dataset) with the module's outputs on it when
shipped. ``tests/continuity`` checks every shipped bundle still loads and reproduces them.

Provenance stays portable: the manifests name their inputs relative to the shipped bundle (a
bundle shipped alongside by its shipped copy, e.g. the student's teachers as ``../des-teachers``)
next to their sha256 checksums, and the model cards name the run relative to the repository.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _module_outputs(bundle, types, pos, box) -> dict:
    import torch

    out = bundle.module(torch.as_tensor(types, dtype=torch.long), torch.as_tensor(pos, dtype=torch.float32),
                        torch.as_tensor(box, dtype=torch.float32))
    return {"energy": float(out[0]), "bead_energies": out[1].detach().numpy(), "forces": out[2].detach().numpy()}


def _fmt(stat: dict | None) -> str:
    return "-" if not stat else f"{stat['mean']:.3f} +- {stat['std']:.3f}"


def _rebase_provenance(dst: Path, src: Path, shipped: dict[Path, Path]) -> None:
    """The copied manifest names its inputs relative to where the run wrote the bundle (``src``):
    name them relative to ``dst`` instead, and a bundle shipped alongside by its shipped copy."""
    import yaml

    from openmm_cgkd.bundle import MANIFEST_NAME, BundleManifest
    from openmm_cgkd.provenance import relative_path

    def fix(path: str) -> str:
        target = (src / path).resolve()
        return relative_path(shipped.get(target, target), dst)

    manifest = yaml.safe_load((dst / MANIFEST_NAME).read_text())
    training = manifest["training"]
    if (training.get("dataset") or {}).get("path"):
        training["dataset"]["path"] = fix(training["dataset"]["path"])
    if training.get("member_bundles"):
        training["member_bundles"] = [fix(p) for p in training["member_bundles"]]
    teachers = training.get("teachers") or {}
    if teachers.get("teacher_bundle"):
        old = teachers["teacher_bundle"]
        teachers["teacher_bundle"] = fix(old)
        manifest["description"] = manifest["description"].replace(old, teachers["teacher_bundle"])
    text = BundleManifest.from_dict(manifest, source=str(dst)).to_yaml()
    (dst / MANIFEST_NAME).write_text(text)


def ship(run: Path, student_variant: str, name_prefix: str = "des") -> list[Path]:
    from openmm_cgkd.bundle import load_bundle
    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.provenance import make_portable, relative_path

    from openmm_cgkd.pipeline import stage_outputs

    stages = {name: stage_outputs(run, name) for name in ("teachers", "students", "md", "analysis")}
    missing = {name for name, outputs in stages.items() if outputs is None}
    if missing:
        raise SystemExit(f"{run}: the pipeline has not finished stages {sorted(missing)}")
    teachers, students = stages["teachers"], stages["students"].students  # TeachersResult, {name: StudentResult}
    md, analysis = stages["md"].models, stages["analysis"].models  # {model: ReplicaRecords}, {model: ModelAnalysis}
    if student_variant not in students:
        raise SystemExit(f"no student {student_variant!r} in {run}; have {sorted(students)}")
    dataset_path = run / "data" / "cg.h5"
    ds = CGDataset.load(dataset_path)
    types, pos, box = ds.bead_types, ds.positions[0], ds.boxes[0]

    entries = [
        (f"{name_prefix}-teachers", teachers.ensemble, f"ensemble-{len(teachers.members)}", teachers.metrics),
        (f"{name_prefix}-student", students[student_variant].bundle, f"student-{student_variant}",
         students[student_variant].metrics),
    ]
    written = []
    shipped = {src.resolve(): HERE / name for name, src, _, _ in entries}
    for name, src, model_key, metrics in entries:
        dst = HERE / name
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.part"))
        _rebase_provenance(dst, src.resolve(), shipped)
        bundle = load_bundle(dst)
        ref = _module_outputs(bundle, types, pos, box)
        np.savez_compressed(dst / "continuity.npz", bead_types=types, positions_nm=pos, box_nm=box,
                            energy_kj_mol=ref["energy"], bead_energies_kj_mol=ref["bead_energies"],
                            forces_kj_mol_nm=ref["forces"])
        man = bundle.manifest
        summary = analysis[model_key].summary if model_key in analysis else {}
        speeds = [r.ns_per_day for r in md.get(model_key, ()) if r.ns_per_day is not None]
        ensemble_summary = analysis[entries[0][2]].summary if entries[0][2] in analysis else {}
        teacher_summary = analysis["teacher-00"].summary if "teacher-00" in analysis else {}
        card = [
            f"# {name}", "",
            f"{man.description or man.model_kind}", "",
            "## What it is",
            f"- kind: **{man.model_kind}**" + (f", variant `{man.variant}`" if man.variant else "")
            + (f", {man.num_members} members" if man.num_members > 1 else ""),
            f"- architecture: {man.architecture.get('architecture')} (embedding {man.architecture.get('embedding_dim')}, "
            f"{man.architecture.get('num_layers')} layers, {man.architecture.get('num_rbf')} {man.architecture.get('rbf_type')} RBFs), "
            f"cutoff {man.cutoff_nm} nm; repulsive wall fitted per bead-type pair (cutoff {man.wall.cutoff_nm:.3f} nm)",
            "- bead types: " + ", ".join(f"{b.name} ({b.mass_dalton:.3f} Da, residue {b.residue_name})"
                                         for b in man.bead_types),
            "",
            "## Data",
            f"- {ds.n_frames} frames of {ds.n_beads} beads ({ds.type_counts()}), times {ds.times[0]:.1f}-{ds.times[-1]:.1f} ps, "
            f"box {np.linalg.norm(box, axis=1).round(4).tolist()} nm",
            f"- source: {ds.provenance.get('selected_from', '?')} ({ds.provenance.get('selection', '')})",
            f"- AA: {ds.provenance.get('note', '')}",
            "",
            "## Training metrics (test block, kJ/mol/nm)",
            "```json", json.dumps(metrics, indent=1, default=str)[:3000], "```",
            "",
            "## Structure in MD (TAE vs the AA reference; mean +- std over replicas; lower is better)",
            "| model | RDF | ADF | CDF |", "|---|---|---|---|",
            f"| this model | {_fmt(summary.get('rdf'))} | {_fmt(summary.get('adf'))} | {_fmt(summary.get('cdf'))} |",
            f"| ensemble of teachers | {_fmt(ensemble_summary.get('rdf'))} | {_fmt(ensemble_summary.get('adf'))} | {_fmt(ensemble_summary.get('cdf'))} |",
            f"| single teacher 00 | {_fmt(teacher_summary.get('rdf'))} | {_fmt(teacher_summary.get('adf'))} | {_fmt(teacher_summary.get('cdf'))} |",
            "",
            "## Speed",
            f"- {np.mean(speeds):.3g} ns/day in OpenMM MD ({md[model_key][0].platform} platform, {ds.n_beads} beads, "
            f"2 fs step) on a shared 2-core CPU ({platform.processor() or platform.machine()}), other jobs running"
            if speeds else "- not measured",
            "",
            "## Caveats",
            "- Trained for a few epochs on a 2-core CPU by `systems/des/quick.yaml`: a working model of the method's",
            "  workflow, not the paper's accuracy. Retrain with `systems/des/paper.yaml` on a GPU for production use.",
            "",
            f"Made from `{relative_path(run, HERE.parent)}` (relative to the repository) by "
            "`models/ship_from_pipeline.py`; `continuity.npz` holds the reference outputs.",
        ]
        (dst / "MODEL_CARD.md").write_text(make_portable("\n".join(card) + "\n", dst))
        written.append(dst)
        print(f"shipped {dst}")
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="output directory of a finished `cgkd pipeline` run")
    p.add_argument("--student", default="ensemble-e-ft-faa", help="student variant to ship")
    p.add_argument("--prefix", default="des", help="names: <prefix>-teachers, <prefix>-student")
    a = p.parse_args()
    ship(a.run, a.student, a.prefix)


if __name__ == "__main__":
    main()
