"""The study protocol's settings: frame selection by range, the MD length, report interval and
discard in ps, single-teacher students per member, and clear errors for impossible settings."""
import numpy as np
import pytest
import yaml

from openmm_cgkd.data.frames import select_frames
from openmm_cgkd.workflow.config import MDConfig, analysis_settings, load_pipeline_config, student_plan
from openmm_cgkd.training.config import ConfigError

TIMES = 1050.0 + np.arange(1500) * 1.0  # a production of 1,500 frames, 1 ps apart, after 1,050 ps of MD


def test_select_frames_by_start_window_count_and_stride():
    idx, desc = select_frames(TIMES, start_frame=357)
    assert idx[0] == 357 and idx[-1] == 1499 and "from frame 357" in desc
    idx, desc = select_frames(TIMES, window_ps=[100, 1500])  # measured from the first frame's time
    assert idx[0] == 100 and idx[-1] == 1499 and len(idx) == 1400
    idx, _ = select_frames(TIMES, window_ps=[100, 200], stride=2)
    assert idx.tolist() == list(range(100, 200, 2))
    idx, _ = select_frames(TIMES, start_frame=10, max_frames=100, stride=4)
    assert idx.tolist() == list(range(10, 110, 4))
    with pytest.raises(ConfigError, match="holds only 1500"):
        select_frames(TIMES, start_frame=1500)
    with pytest.raises(ConfigError, match="max_frames"):
        select_frames(TIMES, start_frame=1000, max_frames=600)
    with pytest.raises(ConfigError, match="leaves 0"):
        select_frames(TIMES, window_ps=[2000, 3000])


def test_md_length_interval_and_discard_in_ps():
    md = MDConfig(length_ps=300, timestep_fs=4.0, report_interval_ps=1.0, discard_ps=100)
    assert md.n_steps == 75_000 and md.interval_steps == 250
    assert MDConfig(steps=100, report_interval=10).n_steps == 100
    assert MDConfig().n_steps == 2000 and MDConfig().interval_steps == 50
    assert MDConfig(replicas=4, teacher_replicas=2).n_teacher_replicas == 2 and MDConfig(replicas=3).n_teacher_replicas == 3
    for bad, match in (({"steps": 10, "length_ps": 1.0}, "not both"), ({"discard_ps": 300, "length_ps": 300}, "shorter"),
                       ({"report_interval": 5, "report_interval_ps": 1.0}, "not both"),
                       ({"teacher_replicas": 0}, "teacher_replicas"),
                       ({"timestep_check": {"nve_ps": 0.01}}, "fewer than 3 samples")):
        with pytest.raises(ConfigError, match=match):
            MDConfig(**bad)


def _cfg(tmp_path, **over):
    # ADF cutoffs given: without them they come from the dataset's g(r), and there is no dataset here
    over["analysis"] = {"adf_cutoffs": [0.6], **over.get("analysis", {})}
    data = {"dataset": "cg.h5", "teachers": {"members": 4}, **over}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    return load_pipeline_config(tmp_path / "c.yaml")


def test_discard_ps_becomes_the_same_discard_frames_for_every_replica(tmp_path):
    cfg = _cfg(tmp_path, md={"length_ps": 300, "timestep_fs": 2.0, "report_interval_ps": 1.0, "discard_ps": 100})
    assert analysis_settings(cfg).discard_frames == 100  # frames 0 .. 99 (t < 100 ps) are dropped
    cfg = _cfg(tmp_path, md={"length_ps": 300, "report_interval_ps": 1.0, "discard_ps": 100}, analysis={"stride": 4})
    assert analysis_settings(cfg).discard_frames == 25
    with pytest.raises(ConfigError, match="not both"):
        _cfg(tmp_path, md={"discard_ps": 1}, analysis={"discard_frames": 5})


def test_students_per_member_and_config_errors(tmp_path):
    cfg = _cfg(tmp_path, students={"variants": ["ensemble-e-ft-faa", "ensemble-ft-faa", "single-e-ft-faa"],
                                   "single_teacher_members": [0, 1, 2, 3]})
    plan = student_plan(cfg)
    assert list(plan) == ["ensemble-e-ft-faa", "ensemble-ft-faa"] + [f"single-e-ft-faa-teacher{k:02d}"
                                                                     for k in range(4)]
    assert plan["single-e-ft-faa-teacher02"] == {"variant": "single-e-ft-faa", "labels": "member_02", "member": 2}
    with pytest.raises(ConfigError, match="single_teacher_members"):
        _cfg(tmp_path, students={"variants": ["single-e-ft"], "single_teacher_members": [4]})
    with pytest.raises(ConfigError, match="unknown variant"):
        _cfg(tmp_path, students={"variants": ["ensemble-magic"]})
    with pytest.raises(ConfigError, match="not both"):
        _cfg(tmp_path, dataset_start_frame=3, dataset_window_ps=[0, 10])
    with pytest.raises(ConfigError, match="dataset_window_ps"):
        _cfg(tmp_path, dataset_window_ps=[10, 5])


def test_ramachandran_key_is_a_path_next_to_the_config_and_no_analysis_setting(tmp_path):
    from openmm_cgkd.workflow.config import ramachandran_spec, replica_analysis_key

    assert ramachandran_spec(_cfg(tmp_path)) is None
    (tmp_path / "rama.yaml").write_text(yaml.safe_dump(
        {"phi": [0, 1, 2, 3], "psi": [1, 2, 3, 4],
         "basins": [{"key": "a", "name": "A", "region": [{"phi": [-180, 0], "psi": [-180, 180]}]}]}))
    cfg = _cfg(tmp_path, analysis={"ramachandran": "rama.yaml"})
    spec = ramachandran_spec(cfg)
    assert spec.psi == [1, 2, 3, 4] and "ramachandran" not in analysis_settings(cfg, with_dataset=False).to_dict()
    plain = analysis_settings(_cfg(tmp_path), with_dataset=False)
    assert analysis_settings(cfg, with_dataset=False) == plain  # the key changes no structural setting
    # the replica analysis key gains the spec only when it is set: other studies keep their digests
    assert replica_analysis_key(plain, "d", None) == {"settings": plain.to_dict(), "reference": "d"}
    keyed = replica_analysis_key(plain, "d", spec)["ramachandran"]
    assert keyed["psi"] == [1, 2, 3, 4] and "description" not in keyed  # a new description re-runs nothing
    from openmm_cgkd.errors import MissingFileError

    with pytest.raises(MissingFileError, match="Ramachandran spec not found"):
        ramachandran_spec(_cfg(tmp_path, analysis={"ramachandran": "missing.yaml"}))
