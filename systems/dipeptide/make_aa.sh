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
#   env:   THREADS (default 1), COMMIT_EVERY_S (default 600),
#          RUN (default systems/dipeptide/aa), SEED (default 4001),
#          MAPPING (default: the system's, mapping.yaml)
#
# The second, independent run (the noise floor of the FES score, more basin visits):
#   RUN=systems/dipeptide/aa_b SEED=4002 systems/dipeptide/make_aa.sh
# The run with the left-out atoms' forces aggregated (same bead positions, far less force noise):
#   RUN=systems/dipeptide/aa_f SEED=4003 MAPPING=systems/dipeptide/mapping_forces.yaml systems/dipeptide/make_aa.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PRODUCTION_PS=${1:-100000}
COMMIT_EVERY_S=${COMMIT_EVERY_S:-600}
THREADS=${THREADS:-1}
RUN=${RUN:-systems/dipeptide/aa}
SEED=${SEED:-4001}
MAPPING_ARGS=()
[ -n "${MAPPING:-}" ] && MAPPING_ARGS=(--mapping "$MAPPING")
mkdir -p "$RUN"
[ -f "$RUN/.gitignore" ] || printf '# AA dipeptide run: only restart state and mapped CG frames are kept (force-added by\n# ../make_aa.sh). AA frames (frames/, production.h5) are never kept.\n*\n!.gitignore\n' > "$RUN/.gitignore"

# shellcheck source=../commit_aa_run.sh
. systems/commit_aa_run.sh
LABEL="AA dipeptide $(basename "$RUN") (amber14/GBn2, 300 K, seed $SEED)"
commit_aa_run_every "$COMMIT_EVERY_S" "$RUN" "$LABEL"
status=0
uv run --quiet cgkd aa-run --system systems/dipeptide/system.yaml --run-dir "$RUN" --seed "$SEED" \
    --equilibration-ps 1000 --production-ps "$PRODUCTION_PS" --frame-interval-ps 1 --checkpoint-every 1000 \
    --timestep 4 --hydrogen-mass 3 --platform CPU --threads "$THREADS" "${MAPPING_ARGS[@]}" \
    --no-progress >> "$RUN/run.log" 2>&1 || status=$?
[ -n "$COMMITTER" ] && kill "$COMMITTER" 2>/dev/null || true
[ "$COMMIT_EVERY_S" -gt 0 ] && commit_aa_run "$RUN" "$LABEL"
exit "$status"
