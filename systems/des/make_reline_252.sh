#!/usr/bin/env bash
# The AA reference data of reline (252 molecules: 63 choline, 63 Cl, 126 urea; OPLS-DES, 1-4 x0.5;
# 298.1 K NVT Langevin; 2-core CPU). Resumable across machines: rerun this script on a fresh clone
# and it continues from the restart state committed in systems/des/aa_reline_252/.
#
#   protocol: pack + minimise; anneal 50 ps (450 K -> 298.1 K); 1,000 ps NVT equilibration;
#             1,500 ps NVT production, positions + forces every 1 ps (1,500 frames)
#   integrator: LangevinMiddle 4 fs, H-bond constraints, hydrogen masses repartitioned to 3 Da
#             (integrator only; the mapping uses physical masses)
#   each 10-frame part is mapped to beads as it is written (aa_reline_252/cg/part_*.h5)
#
# With COMMIT_EVERY_S > 0 (default 600) a background loop commits the restart state (run.json,
# progress.json, state.xml, checkpoint.chk, start.pdb) and the mapped parts to git under the
# run's lock, so a stop loses at most that many seconds of MD. When the run is complete the
# mapped dataset is written to systems/des/reline_252_cg.h5 (the shipped dataset).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=systems/des/aa_reline_252
COMMIT_EVERY_S=${COMMIT_EVERY_S:-600}
mkdir -p "$RUN"

commit_progress() {
    local files=("$RUN/.gitignore")
    for f in run.json progress.json state.xml checkpoint.chk start.pdb run.log; do
        [ -f "$RUN/$f" ] && files+=("$RUN/$f")
    done
    [ -d "$RUN/cg" ] && files+=("$RUN"/cg/part_*.h5)
    [ ${#files[@]} -gt 1 ] || return 0
    local frames
    frames=$(python3 -c "import json;d=json.load(open('$RUN/progress.json'));print(d['step'],'steps,',d['frames'],'frames')" 2>/dev/null || echo "start")
    for _ in 1 2 3 4 5; do   # the index may be locked by another git command for a moment
        if flock "$RUN/.lock" sh -c 'git add -f "$@" && { git diff --cached --quiet -- "$@" || git commit -q -m "AA reference run (reline 252): restart state and mapped frames at '"$frames"'" -- "$@"; }' _ "${files[@]}"; then
            return 0
        fi
        sleep 7
    done
    echo "warning: could not commit the AA run's progress" >&2
}

if [ "$COMMIT_EVERY_S" -gt 0 ]; then
    ( while sleep "$COMMIT_EVERY_S"; do commit_progress; done ) &
    COMMITTER=$!
    trap 'kill $COMMITTER 2>/dev/null || true' EXIT
fi

status=0
uv run --quiet cgkd aa-run --molecules 252 --run-dir "$RUN" \
    --anneal-ps 50 --anneal-temperature 450 --equilibration-ps 1000 \
    --production-ps 1500 --frame-interval-ps 1 --checkpoint-every 10 \
    --timestep 4 --hydrogen-mass 3 --platform CPU --threads 2 --seed 2027 \
    --no-progress >> "$RUN/run.log" 2>&1 || status=$?
if [ "$status" -eq 0 ] && [ -f "$RUN/cg.h5" ]; then
    # the shipped dataset, written from the committed mapped parts (not copied: its provenance
    # names the force field relative to where it is written)
    uv run python -c "from openmm_cgkd.data.aamd import read_mapped; read_mapped('$RUN').save('systems/des/reline_252_cg.h5')"
fi
[ "$COMMIT_EVERY_S" -gt 0 ] && commit_progress
exit "$status"
