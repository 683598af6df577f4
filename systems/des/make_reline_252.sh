#!/usr/bin/env bash
# How the shipped CG dataset systems/des/reline_252_cg.h5 is made (2-core CPU, OpenMM CPU platform).
# Resumable: rerun this script after an interruption; it continues from the last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."
uv run cgkd aa-run --molecules 252 --run-dir systems/des/aa_small \
    --anneal-ps 20 --anneal-temperature 450 --equilibration-ps 100 \
    --production-ps 500 --frame-interval-ps 0.5 --platform CPU --threads 2 --seed 2026 || true
# map every committed production frame (a partial run maps what it has)
uv run cgkd map --run-dir systems/des/aa_small --mapping systems/des/mapping.yaml \
    --out systems/des/reline_252_cg.h5 \
    --note "reline 63 ChCl + 126 urea, OPLS-DES, 298.1 K NVT Langevin, 2-core CPU"
