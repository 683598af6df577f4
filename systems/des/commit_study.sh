#!/usr/bin/env bash
# Commit the small results of the study (`cgkd pipeline systems/des/study.yaml`, and the sweep
# under study/sweep/) so that a stop loses little and a fresh clone of main continues from them:
#
#   systems/des/commit_study.sh                  # commit once (what changed in systems/des/study/)
#   systems/des/commit_study.sh --every 600 &    # in the background while the pipeline runs:
#                                                #   commit every 600 s, and once more when stopped
#   systems/des/commit_study.sh --with-checkpoints   # before a session ends: also the training
#                                                #   checkpoints of the runs still under way
#
# Another study: name its output directory (it needs a .gitignore like this one's), e.g.
#   systems/des/commit_study.sh systems/dipeptide/study --every 600 &
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
# Training checkpoints (checkpoints/*.ckpt, 0.2-0.7 MB each) of runs still under way (no
# result.json yet) are the restart state of a long training run: --with-checkpoints (and the
# commit made when the background loop is stopped) force-adds them, so a fresh clone resumes that
# run from its last epoch instead of its start; the periodic commits leave them out (one copy
# per session end, not one per 10 min), and a finished run needs only its best_weights.pt. The
# same holds for MD replicas under way (no replica.json.gz yet): their checkpoint.chk and the
# trajectory.dcd it continues are committed at a session's end and leave git when the replica
# is finished and analysed (its record keeps what the study needs).
set -euo pipefail
cd "$(dirname "$0")/../.."
STUDY=systems/des/study
EVERY=0
CHECKPOINTS=0
while [ $# -gt 0 ]; do
    case "$1" in
        --every) EVERY=$2; shift 2 ;;
        --with-checkpoints) CHECKPOINTS=1; shift ;;
        *) STUDY=$1; shift ;;
    esac
done
[ -d "$STUDY" ] || { echo "commit_study.sh: $STUDY does not exist (run the pipeline first)" >&2; exit 1; }
[ -f "$STUDY/.gitignore" ] || { echo "commit_study.sh: $STUDY/.gitignore is missing" >&2; exit 1; }

holds_machine_path() {   # file: whether it names an absolute path of a machine
    grep -qaE '(^|[^A-Za-z0-9_.])/(work|tmp|home|root|Users)/' "$1"
}

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
    local spec=("$STUDY" ":(exclude)$STUDY/**/checkpoints/**" ":(exclude)$STUDY/**/checkpoint.chk"
                ":(exclude)$STUDY/**/*.dcd") add=() drop=()
    commit_paths "results so far; stages done: ${done_stages:-none}" "${spec[@]}" || return 1
    [ "${1:-0}" = 1 ] || return 0
    # the checkpoints of training runs still under way (no result.json next to checkpoints/) ...
    # (never one that holds a machine path: checkpoints written before the trainers stored their
    # paths relative to the checkpoint did; such a run starts again from epoch 0 on a fresh clone)
    while IFS= read -r -d '' ck; do
        [ -f "$(dirname "$(dirname "$ck")")/result.json" ] && continue
        if holds_machine_path "$ck"; then
            echo "commit_study.sh: not committing $ck: it holds an absolute path" >&2
        else
            add+=("$ck")
        fi
    done < <(find "$STUDY" -path '*/checkpoints/*.ckpt' -print0)
    # ... and of MD replicas still under way (no replica.json.gz yet): their OpenMM checkpoint and
    # the trajectory it continues (252 beads: about 3 kB a frame)
    while IFS= read -r -d '' ck; do
        local rep
        rep=$(dirname "$ck")
        [ -f "$rep/replica.json.gz" ] && continue
        add+=("$ck")
        [ -f "$rep/trajectory.dcd" ] && add+=("$rep/trajectory.dcd")
    done < <(find "$STUDY" -path '*/replica_*/checkpoint.chk' -print0)
    # ... and out of git those committed earlier whose run has finished since, or that are gone
    while IFS= read -r ck; do
        { [ ! -f "$ck" ] || [ -f "$(dirname "$(dirname "$ck")")/result.json" ] || \
            holds_machine_path "$ck"; } && drop+=("$ck")
    done < <(git ls-files -- "$STUDY" | grep '/checkpoints/[^/]*\.ckpt$' || true)
    while IFS= read -r f; do
        { [ ! -f "$f" ] || [ -f "$(dirname "$f")/replica.json.gz" ]; } && drop+=("$f")
    done < <(git ls-files -- "$STUDY" | grep -E '/replica_[^/]*/(checkpoint\.chk|trajectory\.dcd)$' || true)
    [ $(( ${#add[@]} + ${#drop[@]} )) -gt 0 ] || return 0
    # committed from a scratch index made from HEAD, so nothing else staged goes in with them
    local idx status=0
    idx=$(mktemp)
    GIT_INDEX_FILE=$idx git read-tree HEAD
    [ ${#drop[@]} -eq 0 ] || GIT_INDEX_FILE=$idx git rm -q --cached --ignore-unmatch -- "${drop[@]}"
    [ ${#add[@]} -eq 0 ] || GIT_INDEX_FILE=$idx git add -f -- "${add[@]}"
    GIT_INDEX_FILE=$idx git diff --cached --quiet || GIT_INDEX_FILE=$idx git commit -q -m \
        "Study ($STUDY): restart state of unfinished training runs and MD replicas: ${#add[@]} files kept, ${#drop[@]} out" \
        || status=$?
    rm -f "$idx"
    git reset -q -- "${add[@]}" "${drop[@]}" 2>/dev/null || true   # the real index follows HEAD for these paths
    return $status
}

commit_paths() {   # message, paths: commit exactly these paths (other staged work is left alone)
    local msg=$1
    shift
    for _ in 1 2 3 4 5; do   # the index may be locked by another git command for a moment
        git add -- "$@" 2>/dev/null || true   # (a path that is ignored and out of the index stays out)
        if git diff --cached --quiet -- "$@" || git commit -q -m "Study ($STUDY): $msg" -- "$@"; then
            return 0
        fi
        sleep 7
    done
    echo "commit_study.sh: could not commit (git busy?)" >&2
    return 1
}

if [ "$EVERY" -gt 0 ]; then
    trap 'commit_once 1; exit 0' TERM INT
    while true; do
        sleep "$EVERY" &
        wait $! || true
        commit_once || true
    done
fi
commit_once "$CHECKPOINTS"
