#!/usr/bin/env bash
# The cpu suite under AddressSanitizer (with LeakSanitizer) and UndefinedBehaviorSanitizer: g++
# builds everything in build-asan, and a memory error, a leak or undefined behaviour in the
# project code or its tests fails the test that hit it. Runs scripts/test.sh there, so it prints
# the same closing line `N passed, N failed, N skipped`. Extra arguments go to `meson test`.
#
# Environment: SANITIZE_BUILD_DIR (default build-asan).
set -uo pipefail
cd "$(dirname "$0")/.."

export CXX=g++
export BUILD_DIR=${SANITIZE_BUILD_DIR:-build-asan}
# b_lundef=false: Meson's default -Wl,--no-undefined does not mix with the sanitizer runtimes.
# buildtype=debug (-O0): g++ compiles the sanitized code about 5x faster than at -O2 (that is
# most of this script's time), the tests still run in seconds, and nothing is optimised away.
export MESON_ARGS="-Dbuildtype=debug -Db_sanitize=address,undefined -Db_lundef=false -Dcuda=disabled -Dbenchmarks=false"
# scripts/setup.sh applies MESON_ARGS when it creates the build directory; an existing one gets
# them here, in case they changed since.
if [ -f "$BUILD_DIR/build.ninja" ] && [ -x .venv/bin/meson ]; then
  # shellcheck disable=SC2086
  .venv/bin/meson configure "$BUILD_DIR" $MESON_ARGS >/dev/null ||
    { echo "sanitize: cannot configure $BUILD_DIR"; echo "0 passed, 1 failed"; exit 1; }
fi
# UBSan only prints by default; halting makes each report a failure. Meson passes these through.
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1
exec ./scripts/test.sh --suite cpu "$@"
