"""The bad pipeline configs of the tests, in one table: the bad-input probe
(tests/integration/test_bad_input_probe.py, through `cgkd pipeline`) and the validation tests
(tests/unit/workflow/test_pipeline_validation.py, through ``check_pipeline``) both build them from
here. Imported as ``bad_pipeline_configs`` (tests/ is on sys.path through its conftest)."""
from __future__ import annotations

MODEL = {"architecture": "graph-network", "embedding_dim": 8, "num_layers": 1, "num_rbf": 4, "rbf_type": "gauss",
         "cutoff_nm": 0.6}


def save_datasets(directory):
    """A tiny synthetic CG dataset ``cg.h5`` and a copy with forces 41.84x too small ``kcal.h5``
    (kcal/mol/A stored as kJ/mol/nm) in ``directory``; returns their paths."""
    from openmm_cgkd.training.synthetic import make_synthetic_system

    syn = make_synthetic_system(n_beads=(6, 6), box_nm=1.9, n_frames=12, steps_per_frame=5,
                                equilibration_steps=20, seed=3)
    good = syn.dataset.save(directory / "cg.h5")
    syn.dataset.forces = syn.dataset.forces / 41.84
    return good, syn.dataset.save(directory / "kcal.h5")


def sound_config(out, dataset) -> dict:
    """A pipeline config that passes every check (one epoch, 20 MD steps)."""
    return {"out": str(out), "dataset": str(dataset), "model": dict(MODEL),
            "trainer": {"max_epochs": 1, "accelerator": "cpu"}, "teachers": {"members": 2},
            "md": {"steps": 20, "report_interval": 5}}


def with_changes(base: dict, changes: dict, paths: dict) -> dict:
    """``base`` with ``changes`` applied (``"section.key": value`` sets one key of a section) and
    ``"{name}"`` strings replaced from ``paths`` (``kcal``: the too-small dataset, ``a_file``: a file)."""
    import copy

    data = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, str) and value.startswith("{"):
            value = value.format(**{k: str(v) for k, v in paths.items()})
        section, _, sub = key.partition(".")
        if sub:
            data[section] = {**data.get(section, {}), sub: value}
        else:
            data[section] = value
    return data


# (case id, changes, text the one-line error holds, the probe runs it in a fresh process: "slow")
CASES = [
    ("analysis-typo", {"analysis": {"rdf_bin_widht": 0.01}}, "analysis", ""),
    ("out-is-a-file", {"out": "{a_file}"}, "is a file, not a directory", ""),
    ("10fs-unchecked", {"md.timestep_fs": 10.0}, "beyond the 4 fs run without a check", ""),
    ("interval-beyond-run", {"md.report_interval": 50}, "longer than the run", ""),
    ("members-two", {"teachers.members": "two"}, "members must be an integer", ""),
    ("md-platform", {"md.platform": "GPU"}, "md.platform must be one of", ""),
    ("precision", {"trainer.precision": "33"}, "trainer.precision must be one of", ""),
    ("devices-0", {"trainer.devices": 0}, "trainer.devices", ""),
    ("strategy", {"trainer.strategy": "dpp"}, "trainer.strategy must be one of", ""),
    ("num-threads-0", {"trainer.num_threads": 0}, "num_threads must be >= 1", "slow"),
    ("cutoff-0", {"model.cutoff_nm": 0}, "cutoff", "slow"),
    ("unknown-base", {"model.base": "no-such-net"}, "no model config 'no-such-net'", "slow"),
    ("kcal-forces", {"dataset": "{kcal}"}, "implausibly SMALL", "slow"),
    ("box-under-2-cutoffs", {"model.cutoff_nm": 1.2}, "narrower than twice the model's cutoff", "slow"),
]
