#!/bin/bash
# The GPU check of issue 11, in ONE call on a lent machine with an NVIDIA GPU (a few minutes):
# install the stack from the staged wheels, run the CUDA-platform tests, and benchmark at 1,000
# beads (stacked hipnn-ts ensemble vs naive K-force ensemble vs one member vs student, both serving
# backends, CUDA graphs off and on; tensornet likewise; training throughput of K stacked members
# vs one by one on the GPU). Results go to $OUT (default runs/gpu):
#
#   gpu_check.log                      every step's output, in order
#   summary.json                       per step: status, exit code, seconds, the end of its log; the
#                                      test counts; each benchmark's rows and goals; the machine.
#                                      Rewritten after every step, so a killed run leaves one too.
#   bench_<arch>_graphs-<off|on>.json  `cgkd benchmark --out` of each MD benchmark
#   training_hipnn-ts.json             `cgkd benchmark --training` (its section `training`)
#
# (at most 8 files: what the device tool brings back). A failing step does not stop the later
# ones; each runs under a time limit cut to what is left of GPU_CHECK_BUDGET_S (default 450 s),
# most important first. Staging and the device calls: README, "Running the GPU check".
#
# Settings (environment):
#   GPU_CHECK_LOCAL=1      dry run on this CPU machine: no install, `uv run python`, platform CPU,
#                          tiny sizes, CUDA-graph steps skipped (checks the script, not the GPU)
#   GPU_CHECK_BUDGET_S     total seconds for all steps (default 450; local 900)
#   GPU_CHECK_STEPS        comma-separated subset of: install,env,tests-gpu,bench-hipnn-ts-off,
#                          bench-hipnn-ts-on,training,bench-tensornet-off,bench-tensornet-on,tests-serving
#   GPU_CHECK_BEADS, GPU_CHECK_MEMBERS, GPU_CHECK_MD_STEPS, GPU_CHECK_WARMUP, GPU_CHECK_REPEATS,
#   GPU_CHECK_TRAINING_BATCH, GPU_CHECK_TRAINING_STEPS   sizes (defaults 1000, 8, 100, 20, 3, 8, 3)
#   GPU_CHECK_BENCH_ARGS   extra `cgkd benchmark` arguments (local default: a tiny model)
#   GPU_CHECK_REINSTALL=1  install again although /tmp/site holds a previous install
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2
LOCAL=${GPU_CHECK_LOCAL:-0}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
LOG=$OUT/gpu_check.log
: > "$LOG"
: > "$WORK/steps.tsv"
export PYTHONUNBUFFERED=1 ROOT WORK LOCAL

if [ "$LOCAL" = 1 ]; then
    PYCMD="uv run --quiet python"
    PLATFORM=CPU
    BUDGET=${GPU_CHECK_BUDGET_S:-900}
    BEADS=${GPU_CHECK_BEADS:-30}
    MEMBERS=${GPU_CHECK_MEMBERS:-2}
    MD_STEPS=${GPU_CHECK_MD_STEPS:-2}
    WARMUP=${GPU_CHECK_WARMUP:-1}
    REPEATS=${GPU_CHECK_REPEATS:-1}
    TRAIN_BATCH=${GPU_CHECK_TRAINING_BATCH:-2}
    TRAIN_STEPS=${GPU_CHECK_TRAINING_STEPS:-1}
    BENCH_ARGS=${GPU_CHECK_BENCH_ARGS:---cutoff 0.6 --embedding-dim 8 --layers 1 --num-rbf 6 --threads 1}
    SERVING_TESTS=${GPU_CHECK_SERVING_TESTS:-tests/unit/serving/test_wall_force.py}
else
    PYCMD="python3"
    PLATFORM=CUDA
    BUDGET=${GPU_CHECK_BUDGET_S:-450}
    BEADS=${GPU_CHECK_BEADS:-1000}
    MEMBERS=${GPU_CHECK_MEMBERS:-8}
    MD_STEPS=${GPU_CHECK_MD_STEPS:-100}
    WARMUP=${GPU_CHECK_WARMUP:-20}
    REPEATS=${GPU_CHECK_REPEATS:-3}
    TRAIN_BATCH=${GPU_CHECK_TRAINING_BATCH:-8}
    TRAIN_STEPS=${GPU_CHECK_TRAINING_STEPS:-3}
    BENCH_ARGS=${GPU_CHECK_BENCH_ARGS:-}
    SERVING_TESTS=${GPU_CHECK_SERVING_TESTS:-tests/unit/serving/test_wall_force.py tests/unit/test_platforms.py \
tests/integration/test_openmm_serving.py tests/integration/test_stacked_serving.py \
tests/integration/test_serving_backends.py}
fi
ALL_STEPS=install,env,tests-gpu,bench-hipnn-ts-off,bench-hipnn-ts-on,training,bench-tensornet-off,bench-tensornet-on,tests-serving
WANTED=${GPU_CHECK_STEPS:-$ALL_STEPS}
export PYCMD
START=$(date +%s)

say() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

# --------------------------------------------------------------------------- the summary
write_summary() {
    python3 - "$OUT" "$WORK" "$LOCAL" "$PLATFORM" "$BEADS" "$MEMBERS" "$BUDGET" <<'PY'
import json, os, re, sys, time
out, work, local, platform, beads, members, budget = sys.argv[1:]
steps = []
with open(os.path.join(work, "steps.tsv")) as fh:
    for line in fh:
        name, status, rc, seconds, cmd, result = (line.rstrip("\n").split("\t") + [""] * 6)[:6]
        entry = {"step": name, "status": status, "rc": None if rc == "" else int(rc),
                 "seconds": None if seconds == "" else int(seconds), "command": cmd}
        log = os.path.join(work, name + ".log")
        if os.path.isfile(log):
            with open(log, errors="replace") as lf:
                lines = lf.read().splitlines()
            entry["log_tail"] = lines[-25:]
            if name.startswith("tests"):  # pytest's closing line: "N passed, M skipped in S s"
                last = [l for l in lines if re.search(r"\d+ (passed|failed|error|skipped|deselected)", l)]
                entry["pytest"] = last[-1].strip("= ") if last else None
        if result and os.path.isfile(result):
            try:
                with open(result) as rf:
                    data = json.load(rf)
            except ValueError as exc:
                entry["result_error"] = str(exc)
            else:
                entry["result_file"] = os.path.basename(result)
                rows = [{"model": r.get("model"), "backend": r.get("backend"), "cuda_graphs": r.get("cuda_graphs"),
                         "openmm_ms": (r.get("openmm") or {}).get("median_ms"),
                         "torch_ms": (r.get("torch") or {}).get("median_ms"),
                         "ns_per_day": r.get("ns_per_day"), "openmm_overhead": r.get("openmm_overhead")}
                        for r in data.get("results", [])]
                entry["md_rows"] = rows
                entry["md_goals"] = data.get("goals")
                if "training" in data:
                    entry["training_rows"] = [{k: r.get(k) for k in ("name", "members", "ms_per_step", "frames_per_s")}
                                              for r in data["training"].get("results", [])]
                    entry["training_goals"] = data["training"].get("goals")
                entry["machine"] = data.get("machine")
        steps.append(entry)
env = os.path.join(work, "env.json")
summary = {"written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "local_dry_run": local == "1",
           "platform": platform, "beads": int(beads), "members": int(members), "budget_s": int(budget),
           "environment": json.load(open(env)) if os.path.isfile(env) else None,
           "counts": {s: sum(1 for e in steps if e["status"] == s) for s in ("ok", "failed", "timeout", "skipped")},
           "steps": steps}
tmp = os.path.join(out, ".summary.json.part")
with open(tmp, "w") as fh:
    json.dump(summary, fh, indent=1)
os.replace(tmp, os.path.join(out, "summary.json"))
PY
}

record() {  # name status rc seconds command result-file
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${6:-}" >> "$WORK/steps.tsv"
    write_summary || say "could not write summary.json"
}

# run_step NAME CAP_SECONDS RESULT_FILE COMMAND...: under the time left (at most CAP), its output to
# the log; never stops the script.
run_step() {
    local name=$1 cap=$2 result=$3
    shift 3
    if [[ ",$WANTED," != *",$name,"* ]]; then
        return 0
    fi
    local left=$((BUDGET - ($(date +%s) - START)))
    local limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 20 ]; then
        say "step $name: SKIPPED (${left}s left of the ${BUDGET}s budget)"
        record "$name" skipped "" 0 "$*" ""
        return 0
    fi
    say "step $name (limit ${limit}s): $*"
    if [ -n "$result" ]; then rm -f "$result"; fi  # not a stale one from an earlier run
    local t0 rc status
    t0=$(date +%s)
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG" "$WORK/$name.log"
    rc=$?
    status=ok
    [ "$rc" -ne 0 ] && status=failed
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && status=timeout
    say "step $name: $status (exit $rc, $(( $(date +%s) - t0 ))s)"
    record "$name" "$status" "$rc" "$(( $(date +%s) - t0 ))" "$*" "$result"
}

skip_step() {  # name reason
    if [[ ",$WANTED," == *",$1,"* ]]; then
        say "step $1: SKIPPED ($2)"
        record "$1" skipped "" 0 "$2" ""
    fi
}

# --------------------------------------------------------------------------- the steps
install_stack() {
    # the .gpuwN parts (gpu-wheels.sh numbers them part.0 .. part.N-1, one per folder) -> /tmp/site;
    # a failure is reported (exit status) but the environment for the later steps is still written
    local parts n_parts inst failed=0
    if [ -d /tmp/site/openmm ] && [ "${GPU_CHECK_REINSTALL:-0}" != 1 ]; then
        echo "the stack is installed in /tmp/site already (a previous run on this machine): not again"
    else
        parts=$(find . -maxdepth 2 -path './.gpuw[0-9]*/part.*')
        n_parts=$(echo "$parts" | grep -c . || true)
        if [ "$n_parts" -eq 0 ]; then
            echo "no .gpuwN/part.* here: carry every .gpuwN folder (benchmarks/gpu_stage_wheels.sh)"; return 3
        fi
        for i in $(seq 0 $((n_parts - 1))); do
            echo "$parts" | grep -q "/part\.$i\$" || { echo "part.$i is missing (found: $parts): the" \
                "machine was given back between the calls? carry the .gpuwN folders again"; return 3; }
        done
        inst=$(find . -maxdepth 2 -path './.gpuw[0-9]*/gpu-install.sh' | head -1)
        echo "installing from $n_parts parts with $inst"
        # its own shell: it sets -e and exports what is re-derived below; its last part checks imports
        bash -c "source '$inst'" || { failed=$?; echo "$inst failed (exit $failed)"; }
    fi
    if [ -d .gpuwx ]; then
        local extra=()
        for w in .gpuwx/*.whl; do
            [ -f "$w" ] || continue
            case $(basename "$w") in
                pytest-*|pluggy-*|iniconfig-*) python3 -c "import pytest" 2>/dev/null || extra+=("$w") ;;
                *) extra+=("$w") ;;
            esac
        done
        if [ "${#extra[@]}" -gt 0 ]; then
            echo "extra wheels: ${extra[*]}"
            python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target /tmp/site "${extra[@]}" || { failed=$?; echo "installing the extra wheels failed"; }
        fi
    else
        echo "no .gpuwx folder (pytest / freud wheels): carry it with the last .gpuwN"
    fi
    # what gpu-install.sh exports, for the later steps, plus torch's own library folder: openmm-torch's
    # plugins find libtorch through an RPATH relative to their site-packages, which misses the image's
    # torch when they are installed into /tmp/site (without it TorchForce would depend on torch being
    # imported before openmm)
    local nvlibs torchlib
    nvlibs=$(python3 -c "import site,glob; print(':'.join(sorted({d for s in site.getsitepackages() for d in glob.glob(s+'/nvidia/**/lib', recursive=True)})))" 2>/dev/null || true)
    torchlib=$(python3 -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))" 2>/dev/null || true)
    local libs=$torchlib${nvlibs:+:$nvlibs}
    {
        printf 'export PYTHONPATH=%q\n' "/tmp/site:$ROOT"
        libs=${libs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        if [ -n "$libs" ]; then printf 'export LD_LIBRARY_PATH=%q\n' "$libs"; fi
    } > "$WORK/env.sh"
    cat "$WORK/env.sh"
    return "$failed"
}

env_info() {
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    # shellcheck disable=SC2086  # PYCMD is a command line ("uv run --quiet python" or "python3")
    $PYCMD - <<'PY'
import json, os, platform, sys
info = {"python": sys.version.split()[0], "machine": platform.machine()}
import openmm  # before torch, as some of our modules do: its plugins must find libtorch by themselves
names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
info.update(openmm=openmm.__version__, openmm_platforms=names)
# every failure, not only CUDA's: a Torch plugin that did not load means no TorchForce on that platform
info["openmm_plugin_load_failures"] = list(openmm.Platform.getPluginLoadFailures())
import torch
info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
            gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
for mod in ("openmmtorch", "torchmdnet", "warp", "mdtraj", "pymbar", "freud", "pytest"):
    try:
        m = __import__(mod)
        info[mod] = getattr(m, "__version__", "imported")
    except Exception as exc:  # report, do not stop: the later steps say what it breaks
        info[mod] = f"NOT IMPORTABLE: {type(exc).__name__}: {exc}"
import openmm_cgkd
from openmm_cgkd.platforms import default_platform_name
info["openmm_cgkd"] = os.path.relpath(os.path.dirname(openmm_cgkd.__file__))
info["default_platform"] = default_platform_name()
print(json.dumps(info, indent=1))
with open(os.path.join(os.environ["WORK"], "env.json"), "w") as fh:
    json.dump(info, fh)
PY
}
export -f install_stack env_info

read -r -a PY <<< "$PYCMD"
read -r -a EXTRA <<< "$BENCH_ARGS"
read -r -a SERVING <<< "$SERVING_TESTS"
CGKD=("${PY[@]}" -m openmm_cgkd.cli.main)
SIZE=(--platform "$PLATFORM" --beads "$BEADS" --members "$MEMBERS" --no-progress "${EXTRA[@]}")
TIMING=(--steps "$MD_STEPS" --warmup "$WARMUP" --repeats "$REPEATS")
say "OUT=$OUT local=$LOCAL platform=$PLATFORM beads=$BEADS members=$MEMBERS budget=${BUDGET}s steps: $WANTED"

if [ "$LOCAL" = 1 ]; then
    skip_step install "local dry run: the environment of this checkout (uv)"
else
    run_step install 240 "" bash -c install_stack
    if [ -f "$WORK/env.sh" ]; then
        # shellcheck disable=SC1091
        source "$WORK/env.sh"
    fi
fi
run_step env 90 "" bash -c env_info
run_step tests-gpu 180 "" "${PY[@]}" -m pytest -q -rs -p no:cacheprovider --continue-on-collection-errors \
    -m gpu tests
for arch in hipnn-ts tensornet; do
    run_step "bench-$arch-off" 200 "$OUT/bench_${arch}_graphs-off.json" "${CGKD[@]}" benchmark "${SIZE[@]}" \
        "${TIMING[@]}" --architecture "$arch" --cuda-graphs off --backend torchforce python \
        --out "$OUT/bench_${arch}_graphs-off.json"
    if [ "$PLATFORM" = CUDA ]; then  # static shapes follow (--static-shapes auto)
        run_step "bench-$arch-on" 150 "$OUT/bench_${arch}_graphs-on.json" "${CGKD[@]}" benchmark "${SIZE[@]}" \
            "${TIMING[@]}" --architecture "$arch" --cuda-graphs on --backend torchforce \
            --out "$OUT/bench_${arch}_graphs-on.json"
    else
        skip_step "bench-$arch-on" "CUDA graphs need the CUDA platform"
    fi
    if [ "$arch" = hipnn-ts ]; then  # training throughput; its MD part is one cheap student row
        run_step training 200 "$OUT/training_hipnn-ts.json" "${CGKD[@]}" benchmark "${SIZE[@]}" \
            --architecture hipnn-ts --models student --backend torchforce --skip-torch --steps 1 --warmup 0 \
            --repeats "$REPEATS" --training --training-batch "$TRAIN_BATCH" --training-steps "$TRAIN_STEPS" \
            --out "$OUT/training_hipnn-ts.json"
    fi
done
run_step tests-serving 240 "" "${PY[@]}" -m pytest -q -rs -p no:cacheprovider -m "not gpu and not slow" \
    "${SERVING[@]}"

write_summary
say "done in $(( $(date +%s) - START ))s: $(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['counts'])" "$OUT/summary.json")"
find "$OUT" -maxdepth 1 -type f -printf '%10s bytes  %f\n' | sort -k3 | tee -a "$LOG"
