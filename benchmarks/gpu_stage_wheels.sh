#!/bin/bash
# Stage, on this CPU machine, the wheels that benchmarks/gpu_check.sh installs on a lent GPU machine
# (which cannot reach any package registry). Run from anywhere inside the checkout:
#
#   benchmarks/gpu_stage_wheels.sh
#
# 1. ../shared/scripts/gpu-wheels.sh (beside the checkout; override with GPU_WHEELS_SCRIPT) downloads
#    the stack the GPU image lacks (openmm + its CUDA 13 platform, openmm-torch, torchmd-net,
#    warp-lang, ase, mdtraj, pymbar, packmol) and splits it into folders .gpuw1 .gpuw2 ... small
#    enough to travel one per device call;
# 2. then this script adds .gpuwx: the test-only and missing-dependency wheels for Python 3.12
#    (pytest and its plugin manager, used only when the image has no pytest; freud-analysis for the
#    RDF test, with rowan, parsnip-cif, more-itertools; numexpr, which pymbar imports).
#
# PART_MB (the size of each .gpuwN part) defaults to what fits beside the working tree in one
# device call (64 MiB in all, minus .gpuwx and a margin), at most 55. At the end the script prints
# the device calls to make (see README, "Running the GPU check").
set -euo pipefail
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
shared=${GPU_WHEELS_SCRIPT:-../shared/scripts/gpu-wheels.sh}
[ -f "$shared" ] || { echo "gpu_stage_wheels.sh: $shared not found (set GPU_WHEELS_SCRIPT)" >&2; exit 2; }

plat=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
# versions as in this project's lock (uv.lock) where it has them
extras=(pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 freud-analysis==3.4.0 rowan==1.3.2 parsnip-cif==1.0.0
        more-itertools==11.2.1 numexpr==2.14.2)

rm -rf .gpuwx
mkdir -p .gpuwx
# (pip's notes about unreachable local index folders of this machine are dropped; its failure is not)
python3 -m pip download -q --no-deps "${plat[@]}" -d .gpuwx "${extras[@]}" 2>&1 | { grep -v "is ignored" || true; }
grep -qx "/.gpuwx/" .git/info/exclude 2>/dev/null || echo "/.gpuwx/" >> .git/info/exclude

# what travels with every call: tracked files and untracked files git does not ignore
tree_bytes=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } \
    | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}')
extra_bytes=$(du -sb .gpuwx | cut -f1)
mib=$((1024 * 1024))
fit=$(( (64 * mib - tree_bytes - extra_bytes - 3 * mib) / mib ))
if [ -z "${PART_MB:-}" ]; then
    PART_MB=$(( fit < 55 ? fit : 55 ))
fi
if [ "$PART_MB" -lt 8 ]; then
    echo "gpu_stage_wheels.sh: the working tree ($((tree_bytes / mib)) MiB) leaves too little room for wheel" \
         "parts in a 64 MiB device call" >&2
    exit 1
fi
echo "working tree $((tree_bytes / mib)) MiB, .gpuwx $((extra_bytes / mib)) MiB: parts of $PART_MB MiB"
PART_MB=$PART_MB bash "$shared"

n=$(find . -maxdepth 1 -name '.gpuw[0-9]*' -type d | wc -l)
[ "$n" -ge 1 ] || { echo "gpu_stage_wheels.sh: $shared made no .gpuwN folder" >&2; exit 1; }
cp "$(dirname "$shared")/gpu-install.sh" .gpuwx/
echo
echo "staged: $(du -sh .gpuw[0-9]* .gpuwx | tr '\t' ' ' | tr '\n' ';')"
echo "device calls, back to back (the machine stays warm ~30 s between calls):"
for i in $(seq 1 $((n - 1))); do
    echo "  run(carry=[\".gpuw$i\"], command=\"ls -la .gpuw$i\")"
done
echo "  run(carry=[\".gpuw$n\", \".gpuwx\"], command=\"bash benchmarks/gpu_check.sh\", timeout_s=540)"
