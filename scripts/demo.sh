#!/usr/bin/env bash
# Sets up the environment (scripts/setup.sh) and runs the main job on the built-in synthetic
# faces: procedural face scans -> XYZRGB grid dataset (+ preview contact sheet).
# Output goes to ${OUT:-demo-out}. Extra arguments are passed to `pcgan synth-faces`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-demo-out}
.venv/bin/pcgan synth-faces --n "${N:-200}" --out "$OUT/scans" "$@"
.venv/bin/pcgan preprocess "$OUT/scans" --out "$OUT/dataset" --res "${RES:-64}" --units mm
.venv/bin/pcgan dataset info "$OUT/dataset"
echo "demo: dataset in $OUT/dataset (preview: $OUT/dataset/preview.png)"
