#!/usr/bin/env bash
# Sets up the environment (scripts/setup.sh) and runs the main job on the built-in synthetic
# faces: `pcgan demo` (scans -> dataset -> training -> .ply/meshes -> pictures -> metrics).
# Extra arguments go to `pcgan demo`, e.g. `bash scripts/demo.sh --minutes 3 --out /tmp/demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pcgan demo "$@"
