#!/usr/bin/env bash
# Sets up the environment (scripts/setup.sh) and runs the test suite on CPU.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k grid -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q --timeout=600 "$@"
