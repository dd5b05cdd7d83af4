#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine (scripts/setup.sh: apt packages + .venv) and runs the
# main job on the built-in synthetic faces: `pcgan demo` makes the scans, the XYZRGB dataset,
# trains a small StyleGAN2 for a time budget, exports generated faces as .ply point clouds and
# meshes, draws a contact sheet and a turntable GIF, computes the 3D metrics and prints where
# everything is. Arguments go to `pcgan demo` (see `.venv/bin/pcgan demo --help`), e.g.
#   bash scripts/demo.sh --minutes 30 --out demo-out
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pcgan demo "$@"
