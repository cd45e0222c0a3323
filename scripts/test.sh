#!/usr/bin/env bash
# Set up (scripts/setup.sh), build, run every test suite the machine can run (`cpu` always;
# `gpu` skips itself without a device) and print the closing line `N passed, N failed, N skipped`
# counted over GoogleTest cases. Extra arguments go to `meson test` (e.g. --suite cpu).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}

./scripts/setup.sh || { echo "setup or build failed"; echo "0 passed, 1 failed"; exit 1; }

.venv/bin/meson test -C "$BUILD_DIR" --print-errorlogs --num-processes "$(nproc)" "$@"
status=$?

python3 scripts/test_summary.py "$BUILD_DIR/meson-logs" || status=1
exit $status
