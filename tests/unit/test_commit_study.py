"""systems/des/commit_study.sh commits the study's small files (its .gitignore keeps the bulky ones
out) and nothing outside the study directory."""
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@t"}

KEPT = ["stages/md.json", "stages/md.clock.json", "md/student-x/replica_00/replica.json.gz",
        "md/student-x/replica_00/log.csv", "md/student-x/replica_00/run.json",
        "teachers/members/member_00/best_weights.pt", "teachers/members/member_00/result.json",
        "teachers/members/member_00/logs/metrics.csv", "teachers/ensemble/model.pt", "analysis/student-x/summary.md",
        "analysis/student-x/rdf.png", "report.md", "sweep/p1/stages/teachers.json"]
LEFT_OUT = ["data/cg.h5", "labels/ensemble.h5", "teachers/members/member_00/checkpoints/last.ckpt",
            "md/student-x/replica_00/trajectory.dcd", "md/student-x/replica_00/checkpoint.chk",
            "analysis/student-x/report.json", "sweep/p1/analysis/teacher-00/report.json", "stages/md.json.part"]


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=ENV).stdout


def _study_repo(tmp_path):
    """A new git repository holding commit_study.sh and the study's .gitignore: (repo, study, script)."""
    repo = tmp_path / "repo"
    study = repo / "systems" / "des" / "study"
    study.mkdir(parents=True)
    script = repo / "systems" / "des" / "commit_study.sh"
    shutil.copy(ROOT / "systems" / "des" / "commit_study.sh", script)
    shutil.copy(ROOT / "systems" / "des" / "study" / ".gitignore", study / ".gitignore")
    _git(repo, "init", "-q")
    return repo, study, script


def test_commits_the_small_files_only(tmp_path):
    repo, study, _ = _study_repo(tmp_path)
    for f in KEPT + LEFT_OUT:
        (study / f).parent.mkdir(parents=True, exist_ok=True)
        (study / f).write_text(f)
    (repo / "someone_elses_work.py").write_text("x = 1\n")
    subprocess.run(["bash", str(repo / "systems" / "des" / "commit_study.sh")], check=True, env=ENV,
                   capture_output=True)
    committed = set(_git(repo, "ls-files").split())
    prefix = "systems/des/study/"
    assert {prefix + f for f in KEPT} | {prefix + ".gitignore"} == committed
    assert "stages done: md" in _git(repo, "log", "-1", "--format=%s")

    # nothing new: no empty commit; a bulky file that slipped through stops the commit
    subprocess.run(["bash", str(repo / "systems" / "des" / "commit_study.sh")], check=True, env=ENV)
    assert _git(repo, "rev-list", "--count", "HEAD").strip() == "1"
    (study / "md" / "big.bin").write_bytes(b"\0" * 5_000_001)
    res = subprocess.run(["bash", str(repo / "systems" / "des" / "commit_study.sh")], env=ENV, capture_output=True,
                         text=True)
    assert res.returncode != 0 and "over 5 MB" in res.stderr
    assert _git(repo, "rev-list", "--count", "HEAD").strip() == "1"


def test_checkpoints_of_unfinished_training_are_committed_only_when_asked(tmp_path):
    """--with-checkpoints adds the restart state of training runs still under way (no result.json),
    takes out those of runs finished since, and leaves other staged work alone."""
    repo, study, script = _study_repo(tmp_path)
    (repo / "mine.py").write_text("x = 1\n")
    _git(repo, "add", "mine.py")  # staged by someone else: must not go into the study's commits
    running, finished = study / "teachers" / "members" / "member_01", study / "teachers" / "members" / "member_00"
    for run in (running, finished):
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "last.ckpt").write_bytes(b"epoch 3")
        (run / "logs").mkdir()
        (run / "logs" / "metrics.csv").write_text("epoch\n3\n")
    (finished / "result.json").write_text("{}")
    leaky = study / "sweep" / "p1" / "teachers" / "members" / "member_00" / "checkpoints" / "last.ckpt"
    leaky.parent.mkdir(parents=True)
    leaky.write_bytes(b"dirpath /work/main/systems/des/study")  # a machine path: never committed
    subprocess.run(["bash", str(script)], check=True, env=ENV, capture_output=True)
    assert not [f for f in _git(repo, "ls-files").split() if f.endswith(".ckpt")]  # periodic commits: none

    subprocess.run(["bash", str(script), "--with-checkpoints"], check=True, env=ENV, capture_output=True)
    ckpts = [f for f in _git(repo, "ls-files").split() if f.endswith(".ckpt")]
    assert ckpts == ["systems/des/study/teachers/members/member_01/checkpoints/last.ckpt"]
    assert "mine.py" not in _git(repo, "ls-tree", "-r", "--name-only", "HEAD").split()
    assert _git(repo, "diff", "--cached", "--name-only").split() == ["mine.py"]

    # training goes on: periodic commits leave the checkpoint alone; the run finishes: it leaves git
    (running / "checkpoints" / "last.ckpt").write_bytes(b"epoch 9")
    subprocess.run(["bash", str(script)], check=True, env=ENV, capture_output=True)
    assert _git(repo, "show", f"HEAD:{ckpts[0]}") == "epoch 3"
    (running / "result.json").write_text("{}")
    subprocess.run(["bash", str(script), "--with-checkpoints"], check=True, env=ENV, capture_output=True)
    assert not [f for f in _git(repo, "ls-files").split() if f.endswith(".ckpt")]
    assert (running / "checkpoints" / "last.ckpt").read_bytes() == b"epoch 9"  # the files themselves stay
    assert _git(repo, "diff", "--cached", "--name-only").split() == ["mine.py"]


def test_restart_state_of_unfinished_md_replicas(tmp_path):
    """--with-checkpoints also commits the OpenMM checkpoint and trajectory of MD replicas under way
    (no replica.json.gz); periodic commits leave them as they were; a finished replica's leave git."""
    repo, study, script = _study_repo(tmp_path)
    running, finished = study / "md" / "student-x" / "replica_01", study / "md" / "student-x" / "replica_00"
    for rep in (running, finished):
        rep.mkdir(parents=True)
        for f in ("checkpoint.chk", "trajectory.dcd", "log.csv"):
            (rep / f).write_text(f"{f} 1")
    (finished / "replica.json.gz").write_text("record")
    subprocess.run(["bash", str(script)], check=True, env=ENV, capture_output=True)
    restart = {"systems/des/study/md/student-x/replica_01/checkpoint.chk",
               "systems/des/study/md/student-x/replica_01/trajectory.dcd"}
    assert not restart & set(_git(repo, "ls-files").split())
    subprocess.run(["bash", str(script), "--with-checkpoints"], check=True, env=ENV, capture_output=True)
    files = set(_git(repo, "ls-files").split())
    assert restart <= files and not any("replica_00/" in f and f.endswith((".chk", ".dcd")) for f in files)

    # the replica goes on: periodic commits keep the committed restart state (its log moves on) ...
    for f in ("checkpoint.chk", "trajectory.dcd", "log.csv"):
        (running / f).write_text(f"{f} 2")
    subprocess.run(["bash", str(script)], check=True, env=ENV, capture_output=True)
    head = "HEAD:systems/des/study/md/student-x/replica_01/"
    assert _git(repo, "show", head + "checkpoint.chk") == "checkpoint.chk 1"
    assert _git(repo, "show", head + "log.csv") == "log.csv 2"
    # ... and when it is finished and analysed, its restart state leaves git (the files stay)
    (running / "replica.json.gz").write_text("record")
    subprocess.run(["bash", str(script), "--with-checkpoints"], check=True, env=ENV, capture_output=True)
    assert not restart & set(_git(repo, "ls-files").split())
    assert (running / "trajectory.dcd").read_text() == "trajectory.dcd 2"
