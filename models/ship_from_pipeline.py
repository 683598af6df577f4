"""Copy the models of a finished `cgkd pipeline` run into models/ with model cards.

    uv run python models/ship_from_pipeline.py systems/des/study
    uv run python models/ship_from_pipeline.py systems/dipeptide/study --prefix dipeptide

writes ``models/des-teachers`` (the ensemble bundle) and ``models/des-student`` (the student
bundle: by default the ensemble-distilled student the run's report chose by its fixed rule,
``openmm_cgkd.workflow.report.best_student``; ``--student VARIANT`` ships another), each with
``MODEL_CARD.md`` (data, variant, why this student, training metrics, structural TAEs, contacts below the
AA's closest contact with their gate and figure ``contacts.png``, and MD
speed measured by the pipeline; for a study with ``analysis.ramachandran``, the phi/psi FES score, basin
populations and transitions against the AA's with figure ``fes.png``) and ``continuity.npz``: a fixed input (bead types, positions nm,
box nm, bead bonds; frame 0 of the pipeline's dataset) with the module's outputs on it when shipped.
``tests/continuity`` checks every shipped bundle still loads and reproduces them.

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
    """"mean +- std" of a summary entry; "-" when there is none (no scored replica: its mean is
    NaN in memory, null in the JSON markers it is read back from)."""
    if not stat or stat.get("mean") is None or stat.get("std") is None:
        return "-"
    return f"{stat['mean']:.3f} +- {stat['std']:.3f}"


def _rebase_provenance(dst: Path, src: Path, shipped: dict[Path, Path], timestep_fs: float) -> None:
    """The copied manifest names its inputs relative to where the run wrote the bundle (``src``):
    name them relative to ``dst`` instead, and a bundle shipped alongside by its shipped copy.
    It records the study's MD time step (fs) as the model's checked step (the default of MD with it)."""
    import yaml

    from openmm_cgkd.bundle import MANIFEST_NAME, BundleManifest
    from openmm_cgkd.fileio import relative_path

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
    manifest["timestep_fs"] = float(timestep_fs)
    text = BundleManifest.from_dict(manifest, source=str(dst)).to_sealed_yaml()  # re-checksummed: it changed
    (dst / MANIFEST_NAME).write_text(text)


def _aa_summary(prov: dict) -> str:
    """One line on the AA data behind a mapped dataset, from its provenance (``cgkd aa-run``)."""
    system, protocol = prov.get("system") or {}, prov.get("protocol") or {}
    if not system or not protocol:
        return prov.get("note") or prov.get("source") or "not recorded"
    s14 = system.get("scale_14") or {}
    hmr = protocol.get("hydrogen_mass_da")
    return (f"{system.get('n_atoms')} atoms ({system.get('name')}, force field {system.get('forcefield')}, 1-4 "
            f"Coulomb x {s14.get('coulomb')} and LJ x {s14.get('lj')}), {protocol.get('temperature_K')} K NVT "
            f"({protocol.get('thermostat')}); {protocol.get('equilibration_ps'):g} ps equilibration, "
            f"{protocol.get('production_ps'):g} ps production with positions and forces every "
            f"{protocol.get('frame_interval_ps'):g} ps; AA step {protocol.get('timestep_fs'):g} fs"
            + (f" with hydrogen masses {hmr:g} Da for the integrator only (bead centres and masses from the "
               "physical masses)" if hmr else ""))


def _phi_psi_card(run: Path, analysis, compared: dict, model_key: str, name: str, dst: Path) -> list[str]:
    """The card's phi/psi section (a study with ``analysis.ramachandran``; none without) and its
    ``fes.png`` (the AA's FES beside this model's)."""
    if not analysis.ramachandran or not analysis.models.get(model_key) or not analysis.models[model_key].ramachandran:
        return []
    from openmm_cgkd.analysis.phipsi import fes_from_dict, phi_psi_markdown
    from openmm_cgkd.analysis.plots import plot_fes_panels
    from openmm_cgkd.analysis.ramachandran import RamachandranSpec

    spec = analysis.ramachandran["spec"]
    models = {n: a.ramachandran for n, a in compared.items() if a.ramachandran}
    lines = ["## Backbone dihedrals: the phi/psi free energy", "",
             f"phi = beads {spec['phi']}, psi = beads {spec['psi']}. FES score of each replica against the AA "
             "(Jensen-Shannon divergence, nats; total absolute error), basin fractions (mean +- SE over replicas; in "
             "brackets the difference from the AA in standard errors and in kT) and transitions between basin cores "
             "per ns, beside the ensemble and the single teachers:", ""]
    lines += phi_psi_markdown(models, analysis.ramachandran["reference"], spec["basins"])
    data_file = run / "analysis" / "ramachandran.json"
    if data_file.is_file():
        data = json.loads(data_file.read_text())
        m = analysis.models[model_key].ramachandran
        plot_fes_panels({"AA": fes_from_dict(data["reference"]["fes"]), name: fes_from_dict(data["models"][model_key]["fes"])},
                        dst / "fes.png", basins=RamachandranSpec.from_dict(spec).basins,
                        scores={name: f"JS {m['js']['mean']:.3f}, TAE {m['tae']['mean']:.2f}"})
        lines += ["", "![phi/psi free energy](fes.png)"]
    return lines + [""]


def ship(run: Path, student_variant: str, name_prefix: str = "des", allow_failing_gate: bool = False) -> list[Path]:
    import yaml

    from openmm_cgkd.bundle import load_bundle
    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.workflow.cache import stage_outputs
    from openmm_cgkd.analysis.contacts import contact_gate
    from openmm_cgkd.analysis.statistics import StatisticsConfig
    from openmm_cgkd.workflow.report import best_student, comparison_markdown, contacts_plot
    from openmm_cgkd.workflow.results import AnalysisResult, ensemble_model, model_kind, student_model
    from openmm_cgkd.fileio import make_portable, relative_path

    stages = {name: stage_outputs(run, name) for name in ("teachers", "students", "md", "analysis")}
    missing = {name for name, outputs in stages.items() if outputs is None}
    if missing:
        raise SystemExit(f"{run}: the pipeline has not finished stages {sorted(missing)}")
    teachers, students = stages["teachers"], stages["students"].students  # TeachersResult, {name: StudentResult}
    md, analysis = stages["md"].models, stages["analysis"].models  # {model: ReplicaRecords}, {model: ModelAnalysis}
    why = "named by --student"
    run_cfg = yaml.safe_load((run / "pipeline.yaml").read_text()) if (run / "pipeline.yaml").is_file() else {}
    rules = StatisticsConfig.from_dict(run_cfg.get("statistics") or {})  # the run's declared decision rules
    if student_variant == "best":
        try:
            student_variant, why = best_student(stages["analysis"], stages["students"], stages["md"], rules)
        except LookupError as e:
            raise SystemExit(f"{run}: {e}; name one with --student") from None
        print(f"student: {student_variant} ({why})")
    if student_variant not in students:
        raise SystemExit(f"no student {student_variant!r} in {run}; have {sorted(students)}")
    dataset_path = run / "data" / "cg.h5"  # the run's frame selection, else the dataset it was given
    if not dataset_path.is_file() and run_cfg.get("dataset"):
        dataset_path = (run / run_cfg["dataset"]).resolve()  # pipeline.yaml names it relative to the run
    ds = CGDataset.load(dataset_path)
    types, pos, box = ds.bead_types, ds.positions[0], ds.boxes[0]
    bonds = np.asarray(ds.topology.bonds if ds.topology is not None else np.zeros((0, 2)), np.int64).reshape(-1, 2)

    entries = [
        (f"{name_prefix}-teachers", teachers.ensemble, ensemble_model(len(teachers.members)), teachers.metrics),
        (f"{name_prefix}-student", students[student_variant].bundle, student_model(student_variant),
         students[student_variant].metrics),
    ]
    source = ds.provenance.get("selected_from")
    # the selection names its source relative to the selected file: name it relative to the repository
    source = (f"{relative_path(dataset_path.parent / source, HERE.parent)} (relative to the repository)"
              if source and not Path(source).is_absolute() else make_portable(str(source or "?"), HERE.parent))
    md_cfg = run_cfg.get("md") or {}  # the MD settings the speeds were measured with
    for name, _, model_key, _ in entries:  # a model that fails the contact gate is not shipped by default
        coordination = analysis[model_key].coordination if model_key in analysis else {}
        gate = contact_gate(coordination) if coordination else None
        if gate is not None and not gate.passed and not allow_failing_gate:
            raise SystemExit(f"ship_from_pipeline.py: error: {name} ({model_key}) fails the contact gate "
                             f"({'; '.join(gate.failed)}); ship another --student, or pass --allow-failing-gate "
                             "(the card then says so)")
    written = []
    shipped = {src.resolve(): HERE / name for name, src, _, _ in entries}
    for name, src, model_key, metrics in entries:
        dst = HERE / name
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.part"))
        _rebase_provenance(dst, src.resolve(), shipped, md_cfg.get("timestep_fs", 2.0))
        bundle = load_bundle(dst)
        ref = _module_outputs(bundle, types, pos, box)
        np.savez_compressed(dst / "continuity.npz", bead_types=types, positions_nm=pos, box_nm=box, bonds=bonds,
                            energy_kj_mol=ref["energy"], bead_energies_kj_mol=ref["bead_energies"],
                            forces_kj_mol_nm=ref["forces"])
        man = bundle.manifest
        speeds = [r.ns_per_day for r in md.get(model_key, ()) if r.ns_per_day is not None]
        # this model beside the ensemble and the single teachers, as in the pipeline's report
        compared = {n: a for n, a in analysis.items() if n == model_key or model_kind(n) in ("ensemble", "teacher")}
        table = comparison_markdown(AnalysisResult(compared, {}), stages["md"])
        table = table.split("\n", 2)[2]  # the card has its own heading
        floor = stages["analysis"].noise_floor
        coordination = analysis[model_key].coordination if model_key in analysis else {}
        if coordination:
            gate = contact_gate(coordination)
            contacts_plot(coordination, dst / "contacts.png", f"{name}: coordination below the AA's closest contact")
            contact_lines = [
                "## Contacts closer than the AA's closest contact", "",
                "Neighbours per bead closer than the AA's closest contact of each pair (model vs AA; "
                "docs/evidence.md): " + ", ".join(f"{k} {c['model_per_a']:.4f} vs {c['reference_per_a']:.4f}"
                                                  for k, c in coordination.items()) + ".",
                f"Contact gate (every pair at most {gate.factor:g} x the AA's + {gate.floor:g}): "
                + ("pass." if gate.passed else "**FAIL**: " + "; ".join(gate.failed) + "."), "",
                "![contacts](contacts.png)", ""]
        else:
            contact_lines = ["## Contacts closer than the AA's closest contact", "",
                             "Not measured: " + ("the run's analysis predates the contact measure." if ds.periodic else
                                                 "the data have no periodic box (no RDF)."), ""]
        phi_psi_lines = _phi_psi_card(run, stages["analysis"], compared, model_key, name, dst)
        runs_ = teachers.runs if model_key == entries[0][2] else (students[student_variant].run,)
        epochs = [r.epochs for r in runs_ if r.epochs is not None]
        converged = bool(runs_) and all(r.stopped_early for r in runs_)
        lo, hi = (min(epochs), max(epochs)) if epochs else ("?", "?")
        training = (f"trained to early stopping on the validation block ({lo if lo == hi else f'{lo}-{hi}'} epochs)"
                    if converged and epochs else
                    f"trained for {hi} epochs WITHOUT reaching early stopping: "
                    "not converged, a working model of the workflow")
        card = [
            f"# {name}", "",
            f"{man.description or man.model_kind}", "",
            "## What it is",
            f"- kind: **{man.model_kind}**" + (f", variant `{man.variant}`" if man.variant else "")
            + (f", {man.num_members} members" if man.num_members > 1 else "")
            + (f"; shipped as the study's student: {why}" if model_key != entries[0][2] else ""),
            f"- architecture: {man.architecture.get('architecture')} (embedding {man.architecture.get('embedding_dim')}, "
            f"{man.architecture.get('num_layers')} layers, {man.architecture.get('num_rbf')} {man.architecture.get('rbf_type')} RBFs), "
            f"cutoff {man.cutoff_nm} nm; repulsive wall fitted per bead-type pair (cutoff {man.wall.cutoff_nm:.3f} nm)",
            "- bead types: " + ", ".join(f"{b.name} ({b.mass_dalton:.3f} Da, residue {b.residue_name})"
                                         for b in man.bead_types),
            "",
            "## Data",
            f"- {ds.n_frames} frames of {ds.n_beads} beads ({ds.type_counts()}), times {ds.times[0]:.1f}-{ds.times[-1]:.1f} ps, "
            + (f"box {[round(float(x), 4) for x in np.linalg.norm(box, axis=1)]} nm" if ds.periodic else
               "no periodic box"),
            f"- source: {source}; {ds.provenance.get('selection', '')}",
            f"- AA: {_aa_summary(ds.provenance)}",
            "",
            "## Training metrics (test block, kJ/mol/nm)",
            "```json", json.dumps(metrics, indent=1, default=str)[:3000], "```",
            "",
            "## Structure in MD (TAE vs the AA reference; mean +- std over replicas; lower is better)",
            table,
            (f"AA noise floor (blocks of {f'{floor.block_ps:g} ps, ' if floor.block_ps is not None else ''}"
             f"{floor.block_frames} reference frames vs the other half): "
             + ", ".join(f"{k.upper()} {floor.summary[k].mean:.3f}" for k in ("rdf", "adf", "cdf") if k in floor.summary)
             + "." if floor is not None else "AA noise floor: not measured."),
            "",
        ] + contact_lines + phi_psi_lines + [
            "## Speed",
            f"- {np.mean(speeds):.3g} ns/day in OpenMM MD ({md[model_key][0].platform} platform, {ds.n_beads} beads, "
            f"{md_cfg.get('timestep_fs', 2.0):g} fs step, {md_cfg.get('threads') or 'all'} thread(s) per replica, "
            f"{md_cfg.get('workers', 1)} replica(s) at once) on {platform.processor() or platform.machine()}"
            if speeds else "- not measured",
            "",
            "## Caveats",
            f"- {training}.",
            f"- CPU scale: {ds.n_beads} beads and {ds.n_frames} frames of AA data."
            + (f" The paper's scale is `systems/{name_prefix}/paper.yaml` (meant for a GPU)."
               if (HERE.parent / "systems" / name_prefix / "paper.yaml").is_file() else ""),
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
    p.add_argument("--student", default="best",
                   help="student variant to ship (default 'best': the ensemble-distilled student the report chose)")
    p.add_argument("--prefix", default="des", help="names: <prefix>-teachers, <prefix>-student")
    p.add_argument("--allow-failing-gate", action="store_true",
                   help="ship a model that fails the contact gate (its card says FAIL); refused by default")
    a = p.parse_args()
    ship(a.run, a.student, a.prefix, a.allow_failing_gate)


if __name__ == "__main__":
    main()
