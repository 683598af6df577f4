#!/usr/bin/env bash
# AA reference data of the capped alanine dipeptide (amber14 + GBn2 implicit water, 300 K, no cutoff):
#
#   minimise the structure; 1,000 ps NVT equilibration; 100 ns NVT production with positions and
#   forces every 1 ps; LangevinMiddle 4 fs, 1/ps, H-bond constraints, hydrogen masses 3 Da (for the
#   integrator only: the mapping uses physical masses); each 1,000-frame part is mapped to the 6
#   beads of mapping.yaml as it is written (aa/cg/part_*.h5, about 0.2 MB each: kept in git).
#
# Resumable across machines: rerun on a fresh clone and the run continues from the restart state
# committed in systems/dipeptide/aa/. A background loop commits that state and the mapped parts
# every COMMIT_EVERY_S seconds (default 600; 0: never) under the run's lock.
#
#   usage: systems/dipeptide/make_aa.sh [PRODUCTION_PS]        (default 100000)
#   env:   THREADS (default 1), COMMIT_EVERY_S (default 600)
set -euo pipefail
cd "$(dirname "$0")/../.."
PRODUCTION_PS=${1:-100000}
COMMIT_EVERY_S=${COMMIT_EVERY_S:-600}
THREADS=${THREADS:-1}
RUN=systems/dipeptide/aa
mkdir -p "$RUN"
[ -f "$RUN/.gitignore" ] || printf '# AA dipeptide run: only restart state and mapped CG frames are kept (force-added by\n# ../make_aa.sh). AA frames (frames/, production.h5) are never kept.\n*\n!.gitignore\n' > "$RUN/.gitignore"

commit_progress() {
    local files=("$RUN/.gitignore")
    for f in run.json progress.json state.xml checkpoint.chk start.pdb built.pdb run.log; do
        [ -f "$RUN/$f" ] && files+=("$RUN/$f")
    done
    compgen -G "$RUN/cg/part_*.h5" >/dev/null && files+=("$RUN"/cg/part_*.h5)
    local where
    where=$(python3 -c "import json;d=json.load(open('$RUN/progress.json'));print(d['step'],'steps,',d['frames'],'frames')" 2>/dev/null || echo "start")
    for _ in 1 2 3 4 5; do   # the index may be locked by another git command for a moment
        if flock "$RUN/.lock" sh -c 'git add -f "$@" && { git diff --cached --quiet -- "$@" || git commit -q -m "AA dipeptide (amber14/GBn2, 300 K): restart state and mapped frames at '"$where"'" -- "$@"; }' _ "${files[@]}"; then
            return 0
        fi
        sleep 7
    done
    echo "warning: could not commit the progress of $RUN" >&2
}

COMMITTER=
if [ "$COMMIT_EVERY_S" -gt 0 ]; then
    ( while sleep "$COMMIT_EVERY_S"; do commit_progress; done ) &
    COMMITTER=$!
fi
status=0
uv run --quiet cgkd aa-run --system systems/dipeptide/system.yaml --run-dir "$RUN" --seed 4001 \
    --equilibration-ps 1000 --production-ps "$PRODUCTION_PS" --frame-interval-ps 1 --checkpoint-every 1000 \
    --timestep 4 --hydrogen-mass 3 --platform CPU --threads "$THREADS" \
    --no-progress >> "$RUN/run.log" 2>&1 || status=$?
[ -n "$COMMITTER" ] && kill "$COMMITTER" 2>/dev/null || true
[ "$COMMIT_EVERY_S" -gt 0 ] && commit_progress
exit "$status"
