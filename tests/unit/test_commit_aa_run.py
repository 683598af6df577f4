"""systems/commit_aa_run.sh (sourced by the AA scripts) commits an AA run's restart state and
mapped parts, never its AA frames, and nothing else staged in the repository."""
import json
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@t"}
KEPT = [".gitignore", "run.json", "progress.json", "state.xml", "checkpoint.chk", "built.pdb", "run.log",
        "cg/part_0000000.h5", "cg/part_0000010.h5"]
LEFT_OUT = ["frames/part_0000000.h5", "production.h5", "cg.h5", ".cgkd-run.lock"]


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=ENV).stdout


def test_commits_restart_state_and_mapped_parts_only(tmp_path):
    repo = tmp_path / "repo"
    run = repo / "systems" / "x" / "aa"
    (run / "cg").mkdir(parents=True)
    (run / "frames").mkdir()
    shutil.copy(ROOT / "systems" / "commit_aa_run.sh", repo / "systems" / "commit_aa_run.sh")
    _git(repo, "init", "-q")
    (run / ".gitignore").write_text("*\n!.gitignore\n")  # as the AA scripts write it: all force-added
    for f in KEPT[1:] + LEFT_OUT:
        (run / f).write_text("x")
    (run / "progress.json").write_text(json.dumps({"step": 1250, "frames": 20}))
    (repo / "other.txt").write_text("staged elsewhere")
    _git(repo, "add", "other.txt")
    subprocess.run(["bash", "-c", '. systems/commit_aa_run.sh && commit_aa_run systems/x/aa "AA test run"'],
                   cwd=repo, check=True, env=ENV)
    committed = sorted(_git(repo, "show", "--name-only", "--format=", "HEAD").split())
    assert committed == sorted(f"systems/x/aa/{f}" for f in KEPT)
    assert _git(repo, "log", "-1", "--format=%s") == \
        "AA test run: restart state and mapped frames at 1250 steps, 20 frames\n"
    assert _git(repo, "diff", "--cached", "--name-only") == "other.txt\n"  # left staged, not committed
