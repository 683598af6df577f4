"""No machine paths in anything shipped or written: provenance names files relative to where it is
stored, with sha256 checksums.

Scans the shipped bundles and datasets, and every file a tiny teachers -> labels -> student run
and a mapping writes, for absolute paths; checks that the relative paths written resolve to the
files that were used.
"""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from openmm_cgkd.fileio import absolute_paths, file_reference, make_portable, rebase, relative_path
from openmm_cgkd.fileio import file_sha256 as sha256_file

ROOT = Path(__file__).resolve().parents[2]
TEXT_SUFFIXES = {".yaml", ".yml", ".json", ".md", ".csv", ".txt", ".log"}


def _h5_records(path: Path) -> list:
    """Every attribute of an HDF5 file (root, groups, datasets), JSON-decoded where possible."""
    import h5py

    out = []

    def add(obj):
        for key, value in obj.attrs.items():
            if isinstance(value, bytes):
                value = value.decode(errors="replace")
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            out.append({f"{obj.name}:{key}": value if isinstance(value, (str, dict, list)) else str(value)})

    with h5py.File(path, "r") as h5:
        add(h5)
        h5.visititems(lambda name, obj: add(obj))
    return out


def _scan(root: Path) -> dict[str, list[str]]:
    """{file: absolute paths found} for the text files and HDF5 attributes under ``root``."""
    found = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.endswith(".part"):
            continue
        if p.suffix in TEXT_SUFFIXES:
            hits = absolute_paths(p.read_text(errors="replace"))
        elif p.suffix == ".h5":
            hits = absolute_paths(_h5_records(p))
        else:
            continue
        if hits:
            found[str(p)] = hits
    return found


# ------------------------------------------------------------------------------- the helpers

def test_make_portable_rewrites_absolute_paths_only(tmp_path):
    data = tmp_path / "data" / "cg.h5"
    data.parent.mkdir()
    data.write_bytes(b"x")
    base = tmp_path / "runs" / "bundle"
    record = {"path": str(data), "note": f"labels of {tmp_path}/teachers/ensemble.", "unit": "kJ/mol/nm",
              "friction": "1/ps", "rel": "../opls-des.yaml", "url": "https://arxiv.org/abs/2510.26650",
              "list": [str(data), 3, None], "text": "(s_i + s_j) / 2"}
    out = make_portable(record, base)
    assert out["path"] == "../../data/cg.h5" and (base / out["path"]).resolve() == data.resolve()
    assert out["note"] == "labels of ../../teachers/ensemble."
    for key in ("unit", "friction", "rel", "url", "text"):
        assert out[key] == record[key]
    assert out["list"] == ["../../data/cg.h5", 3, None]
    assert absolute_paths(record) == [str(data), f"{tmp_path}/teachers/ensemble.", str(data)]
    assert absolute_paths(out) == []
    assert absolute_paths({"a": "C:\\Users\\me\\run", "b": "~/runs/x"}) == ["C:\\Users\\me\\run", "~/runs/x"]
    ref = file_reference(data, base)
    assert ref == {"path": "../../data/cg.h5", "sha256": sha256_file(data)}
    assert rebase("../../data/cg.h5", base, tmp_path) == "data/cg.h5"
    assert relative_path(data, data.parent) == "cg.h5"


# ------------------------------------------------------------------------------- shipped files

def test_shipped_bundles_and_datasets_carry_no_machine_paths():
    scanned = [ROOT / "models", ROOT / "systems", ROOT / "configs", ROOT / "benchmarks", ROOT / "examples"]
    found = {}
    for root in scanned:
        found.update(_scan(root))
    assert not found, f"absolute paths in shipped files: {found}"
    # raw bytes too: HDF5 keeps the bytes of a rewritten attribute in the file until it is repacked
    machine_path = re.compile(rb"(^|[^A-Za-z0-9_.])/(work|tmp|home|root|Users)/")
    raw = [str(p.relative_to(ROOT)) for p in sorted(ROOT.joinpath("systems").rglob("*.h5"))
           + sorted(ROOT.joinpath("models").rglob("*")) if p.is_file() and machine_path.search(p.read_bytes())]
    assert not raw, f"machine paths in the bytes of shipped files: {raw}"
    # the shipped dataset names its force field and system file relative to ITSELF (not to the AA
    # run directory it was mapped in), and they are the files its checksum recorded
    shipped = ROOT / "systems" / "des" / "reline_252_cg.h5"
    system = json.loads(_h5_value(shipped, "provenance"))["system"]
    assert (shipped.parent / system["forcefield"]).resolve() == (ROOT / "systems" / "des" / "opls-des.yaml")
    assert system["forcefield_sha256"] == sha256_file(shipped.parent / system["forcefield"])
    assert (shipped.parent / system["source"]).is_file()


def test_a_mapped_run_written_elsewhere_names_the_same_force_field(tmp_path):
    """read_mapped's provenance names the run's system files so that a dataset saved in another
    directory still points at them (the shipped copy is written next to the force field)."""
    from openmm_cgkd.data.aamd import read_mapped
    from openmm_cgkd.data.dataset import CGDataset

    run = ROOT / "systems" / "des" / "aa_reline_252"
    (tmp_path / "a" / "b").mkdir(parents=True)
    read_mapped(run).select_frames(list(range(3))).save(tmp_path / "a" / "b" / "cg.h5")
    system = CGDataset.load(tmp_path / "a" / "b" / "cg.h5").provenance["system"]
    assert (tmp_path / "a" / "b" / system["forcefield"]).resolve() == (ROOT / "systems" / "des" / "opls-des.yaml")


def test_shipped_student_names_its_teachers_by_relative_path_and_checksum():
    from openmm_cgkd.bundle import read_manifest

    student = read_manifest(ROOT / "models" / "des-student")
    teachers = read_manifest(ROOT / "models" / "des-teachers")
    ref = student.training["teachers"]
    assert ref["teacher_bundle"] == "../des-teachers"
    assert ref["teacher_checksums"] == teachers.checksums  # the shipped teachers ARE its teachers
    assert sha256_file(ROOT / "models" / "des-teachers" / "model.pt") == teachers.checksums["model.pt"]


def _h5_value(path: Path, key: str):
    import h5py

    with h5py.File(path, "r") as h5:
        return h5.attrs[key]


# ------------------------------------------------------------------------------- what a run writes

def test_a_tiny_training_run_writes_no_machine_paths(tmp_path):
    from openmm_cgkd.bundle import load_bundle
    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.training.config import LabelsConfig, StudentConfig, TeachersConfig, TrainerConfig
    from openmm_cgkd.training.labels import make_labels
    from openmm_cgkd.training.students import train_student
    from openmm_cgkd.training.synthetic import make_synthetic_system
    from openmm_cgkd.training.teachers import train_teachers

    synth = make_synthetic_system(n_beads=(8, 8), box_nm=1.65, n_frames=20, steps_per_frame=10,
                                  equilibration_steps=100, seed=3)
    data = synth.dataset.save(tmp_path / "data" / "cg.h5")
    model = {"architecture": "graph-network", "cutoff_nm": 0.8, "embedding_dim": 8, "num_layers": 1, "num_rbf": 8,
             "rbf_type": "gauss"}
    trainer = TrainerConfig(max_epochs=1, batch_size=4, progress_bar=False, num_threads=1)
    teachers = train_teachers(TeachersConfig(dataset=str(data), out=str(tmp_path / "runs" / "teachers"), model=model,
                                             members=2, trainer=trainer))
    labelled = make_labels(LabelsConfig(dataset=str(data), teachers=str(teachers.ensemble_bundle),
                                        out=str(tmp_path / "data" / "labelled.h5")), progress=False)
    student = train_student(StudentConfig(dataset=str(labelled), out=str(tmp_path / "runs" / "student"),
                                          variant="ensemble-e-ft-faa", trainer=trainer))

    found = _scan(tmp_path)
    assert not found, f"absolute paths written by a training run: {found}"

    # ... and the relative paths lead to the files used, whose checksums match
    st = load_bundle(student.bundle)
    ref = st.manifest.training["dataset"]
    assert (student.bundle / ref["path"]).resolve() == Path(labelled).resolve()
    assert ref["sha256"] == sha256_file(labelled)
    assert (student.bundle / st.manifest.training["teachers"]["teacher_bundle"]).resolve() == \
        teachers.ensemble_bundle.resolve()
    ens = load_bundle(teachers.ensemble_bundle)
    for rel, member in zip(ens.manifest.training["member_bundles"], teachers.member_bundles):
        assert (teachers.ensemble_bundle / rel).resolve() == member.resolve()
    lab = CGDataset.load(labelled).labels.provenance
    assert (Path(labelled).parent / lab["teacher_bundle"]).resolve() == teachers.ensemble_bundle.resolve()


def test_a_mapped_dataset_names_its_inputs_relative_to_itself(tmp_path):
    from openmm_cgkd.data.build import write_pdb
    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.data.external import load_trajectory
    from openmm_cgkd.data.mapping import MappingSpec, map_trajectory
    from openmm_cgkd.data.opls import build_topology, load_forcefield

    comp, box = {"choline": 1, "cl": 1, "urea": 2}, 2.0
    ff = load_forcefield(ROOT / "systems" / "des" / "opls-des.yaml")
    top = build_topology(ff, comp, box_nm=box)
    rng = np.random.default_rng(0)
    x0 = np.vstack([ff.molecules[k].coordinates - ff.molecules[k].coordinates.mean(0) + rng.uniform(0.5, 1.5, 3)
                    for k, n in comp.items() for _ in range(n)])
    pdb = write_pdb(tmp_path / "aa" / "top.pdb", top, x0)
    frames = 3
    pos = x0[None] + rng.normal(0, 0.01, (frames, len(x0), 3))
    np.save(tmp_path / "aa" / "forces.npy", rng.normal(0, 500.0, pos.shape))
    import mdtraj as md

    md.Trajectory(pos, md.load_topology(str(pdb)), unitcell_lengths=np.full((frames, 3), box),
                  unitcell_angles=np.full((frames, 3), 90.0)).save_dcd(str(tmp_path / "aa" / "traj.dcd"))
    mapping = (ROOT / "systems" / "des" / "mapping.yaml").resolve()  # given by an absolute path
    masses = np.array([a.element.mass for a in md.load_topology(str(pdb)).atoms])  # test data: all-atom
    aa = load_trajectory(tmp_path / "aa" / "traj.dcd", pdb, forces=tmp_path / "aa" / "forces.npy", timestep_ps=1.0,
                         check_units=False, masses=masses)  # a dilute toy box
    out = map_trajectory(aa, MappingSpec.from_yaml(mapping)).save(tmp_path / "cg" / "cg.h5")

    assert not _scan(tmp_path / "cg")
    prov = CGDataset.load(out).provenance
    assert (out.parent / prov["mapping"]).resolve() == mapping and prov["mapping_sha256"] == sha256_file(mapping)
