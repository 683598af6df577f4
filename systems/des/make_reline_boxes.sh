#!/usr/bin/env bash
# Independent AA boxes of reline for the evidence study (issue: independent boxes, a held-out
# reference). Box 1 is the existing run (aa_reline_252, packmol seed 2027). Boxes 2-4 each get
# their own packmol + velocity seed and a decorrelating protocol:
#
#   pack + minimise; 1,000 ps NVT at 500 K (hot hold); 100 ps linear cool-down to 298.1 K;
#   1,000 ps NVT equilibration at 298.1 K; 500 ps NVT production, positions + forces every 1 ps
#   LangevinMiddle 4 fs, H-bond constraints, hydrogen masses 3 Da (integrator only; the mapping
#   uses physical masses); each 10-frame part mapped to beads as it is written (cg/part_*.h5)
#
# Box 4 is the held-out reference: never trained on (systems/des/aa_boxes/README.md).
# Resumable across machines: rerun on a fresh clone and each box continues from the restart
# state committed in systems/des/aa_boxes/box_N/. A background loop commits that state and the
# mapped parts every COMMIT_EVERY_S seconds (default 600) under the run's lock.
#
#   usage: systems/des/make_reline_boxes.sh [BOX ...]      (default: 2 3 4, one after another)
#   env:   THREADS (default 1), COMMIT_EVERY_S (default 600)
set -euo pipefail
cd "$(dirname "$0")/../.."
COMMIT_EVERY_S=${COMMIT_EVERY_S:-600}
THREADS=${THREADS:-1}
BOXES=("$@")
[ ${#BOXES[@]} -gt 0 ] || BOXES=(2 3 4)

commit_progress() {
    local run=$1
    local files=("$run/.gitignore")
    for f in run.json progress.json state.xml checkpoint.chk start.pdb run.log; do
        [ -f "$run/$f" ] && files+=("$run/$f")
    done
    compgen -G "$run/cg/part_*.h5" >/dev/null && files+=("$run"/cg/part_*.h5)
    [ ${#files[@]} -gt 1 ] || return 0
    local where
    where=$(python3 -c "import json;d=json.load(open('$run/progress.json'));print(d['step'],'steps,',d['frames'],'frames')" 2>/dev/null || echo "start")
    for _ in 1 2 3 4 5; do   # the index may be locked by another git command for a moment
        if flock "$run/.lock" sh -c 'git add -f "$@" && { git diff --cached --quiet -- "$@" || git commit -q -m "AA box '"$(basename "$run")"' (reline 252): restart state and mapped frames at '"$where"'" -- "$@"; }' _ "${files[@]}"; then
            return 0
        fi
        sleep 7
    done
    echo "warning: could not commit the progress of $run" >&2
}

for box in "${BOXES[@]}"; do
    case "$box" in 2|3|4) ;; *) echo "make_reline_boxes.sh: error: box must be 2, 3 or 4, got '$box'" >&2; exit 2;; esac
    RUN=systems/des/aa_boxes/box_$box
    mkdir -p "$RUN"
    [ -f "$RUN/.gitignore" ] || printf '# AA box %s: only restart state and mapped CG frames are kept (force-added by\n# ../../make_reline_boxes.sh). AA frames (frames/, production.h5) are bulky: never kept.\n*\n!.gitignore\n' "$box" > "$RUN/.gitignore"
    COMMITTER=
    if [ "$COMMIT_EVERY_S" -gt 0 ]; then
        ( while sleep "$COMMIT_EVERY_S"; do commit_progress "$RUN"; done ) &
        COMMITTER=$!
    fi
    status=0
    uv run --quiet cgkd aa-run --molecules 252 --run-dir "$RUN" --seed $((3000 + box)) \
        --hot-ps 1000 --anneal-temperature 500 --anneal-ps 100 --equilibration-ps 1000 \
        --production-ps 500 --frame-interval-ps 1 --checkpoint-every 10 \
        --timestep 4 --hydrogen-mass 3 --platform CPU --threads "$THREADS" \
        --no-progress >> "$RUN/run.log" 2>&1 || status=$?
    [ -n "$COMMITTER" ] && kill "$COMMITTER" 2>/dev/null || true
    [ "$COMMIT_EVERY_S" -gt 0 ] && commit_progress "$RUN"
    [ "$status" -eq 0 ] || exit "$status"
done
