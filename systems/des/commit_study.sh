#!/usr/bin/env bash
# Commit the small results of the study (`cgkd pipeline systems/des/study.yaml`, and the sweep
# under study/sweep/) so that a stop loses little and a fresh clone of main continues from them:
#
#   systems/des/commit_study.sh                  # commit once (what changed in systems/des/study/)
#   systems/des/commit_study.sh --every 600 &    # in the background while the pipeline runs:
#                                                #   commit every 600 s, and once more when stopped
#
# What is committed: every file under systems/des/study/ that its .gitignore does not exclude:
# stage markers (stages/*.json, with their fingerprints and wall times), teacher and student
# bundles, training runs' fingerprint.json / result.json / best_weights.pt / logs/metrics.csv,
# each MD replica's compact record (replica.json.gz: curves, TAEs, stability, pymbar, energy
# series or failure), log.csv, run.json, fingerprint.json and start/final structures, the
# analysis summaries and figures, the report. Kept out (made again when needed): the selected
# frames (data/), labelled datasets (labels/), training checkpoints, MD trajectories (*.dcd) and
# checkpoints. Only paths under the study directory are staged and committed; other work in
# the repository is left alone. A file over 5 MB stops the commit (something bulky got in).
set -euo pipefail
cd "$(dirname "$0")/../.."
STUDY=systems/des/study
EVERY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --every) EVERY=$2; shift 2 ;;
        *) STUDY=$1; shift ;;
    esac
done
[ -d "$STUDY" ] || { echo "commit_study.sh: $STUDY does not exist (run the pipeline first)" >&2; exit 1; }
[ -f "$STUDY/.gitignore" ] || { echo "commit_study.sh: $STUDY/.gitignore is missing" >&2; exit 1; }

commit_once() {
    local big
    big=$(git ls-files --others --modified --exclude-standard -- "$STUDY" | while read -r f; do
        [ -f "$f" ] && [ "$(stat -c %s "$f")" -gt 5000000 ] && echo "$f"; done || true)
    if [ -n "$big" ]; then
        echo "commit_study.sh: not committing, files over 5 MB: $big (add them to $STUDY/.gitignore?)" >&2
        return 1
    fi
    local done_stages
    done_stages=$(cd "$STUDY/stages" 2>/dev/null && ls -- *.json 2>/dev/null | grep -v clock | sed 's/\.json$//' | tr '\n' ' ' || true)
    for _ in 1 2 3 4 5; do   # the index may be locked by another git command for a moment
        if git add -- "$STUDY" && { git diff --cached --quiet -- "$STUDY" || \
                git commit -q -m "Study (systems/des/study.yaml): results so far; stages done: ${done_stages:-none}" -- "$STUDY"; }; then
            return 0
        fi
        sleep 7
    done
    echo "commit_study.sh: could not commit (git busy?)" >&2
    return 1
}

if [ "$EVERY" -gt 0 ]; then
    trap 'commit_once; exit 0' TERM INT
    while true; do
        sleep "$EVERY" &
        wait $! || true
        commit_once || true
    done
fi
commit_once
