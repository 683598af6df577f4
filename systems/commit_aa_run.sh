# Sourced by the AA scripts (systems/*/make_*.sh): commit an AA run's restart state and mapped
# frames to git, so that a stop loses little and a fresh clone resumes the run.
#
#   commit_aa_run RUN LABEL       commit once: RUN's .gitignore, run.json, progress.json,
#                                 state.xml, checkpoint.chk, start.pdb, built.pdb, run.log and
#                                 cg/part_*.h5 (never the AA frames), under the run's lock
#   commit_aa_run_every S RUN LABEL   the same every S seconds in the background (sets COMMITTER
#                                 to its pid; S = 0: nothing)
#
# LABEL starts the commit message ("LABEL: restart state and mapped frames at N steps, M frames").

commit_aa_run() {
    local run=$1 label=$2
    local files=("$run/.gitignore")
    local f
    for f in run.json progress.json state.xml checkpoint.chk start.pdb built.pdb run.log; do
        [ -f "$run/$f" ] && files+=("$run/$f")
    done
    compgen -G "$run/cg/part_*.h5" >/dev/null && files+=("$run"/cg/part_*.h5)
    [ ${#files[@]} -gt 1 ] || return 0
    local where
    where=$(python3 -c "import json;d=json.load(open('$run/progress.json'));print(d['step'],'steps,',d['frames'],'frames')" 2>/dev/null || echo "start")
    for _ in 1 2 3 4 5; do   # the index may be locked by another git command for a moment
        if flock "$run/.lock" sh -c 'git add -f "$@" && { git diff --cached --quiet -- "$@" || git commit -q -m "'"$label"': restart state and mapped frames at '"$where"'" -- "$@"; }' _ "${files[@]}"; then
            return 0
        fi
        sleep 7
    done
    echo "warning: could not commit the progress of $run" >&2
}

commit_aa_run_every() {
    local every=$1 run=$2 label=$3
    COMMITTER=
    [ "$every" -gt 0 ] || return 0
    ( while sleep "$every"; do commit_aa_run "$run" "$label"; done ) &
    COMMITTER=$!
}
