#!/usr/bin/env bash
# Fuzzes the parsers of hostile input (fuzz/README.md): builds the libFuzzer targets with clang,
# AddressSanitizer and UndefinedBehaviorSanitizer in build-fuzz, runs each for SECONDS (default
# 60) on a scratch copy of its seed corpus (the committed corpus does not grow), prints one line
# per target and the closing line `N passed, N failed` (a target passes when the fuzzer found
# nothing), and exits non-zero on any finding. The input behind a finding is kept under
# build-fuzz/findings/<target>/ and each fuzzer's output in build-fuzz/fuzz-logs/.
#
# Usage: scripts/fuzz.sh [SECONDS]
# Environment: FUZZ_BUILD_DIR (default build-fuzz).
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
build=${FUZZ_BUILD_DIR:-build-fuzz}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS]: SECONDS is a positive integer, got '$seconds'"
  echo "0 passed, 1 failed"
  exit 2
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# libFuzzer is part of clang's runtime libraries (clang 14 on Debian 12); scripts/setup.sh
# installs everything else.
missing=()
for p in clang libclang-rt-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "fuzz: installing ${missing[*]}"
  if ! { as_root apt-get update -qq &&
         as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
    echo "fuzz: cannot install ${missing[*]}"
    echo "0 passed, 1 failed"
    exit 1
  fi
fi

# clang, both sanitizers and the fuzz targets; no CUDA, tests or benchmarks. b_lundef=false:
# Meson's default -Wl,--no-undefined does not mix with the sanitizer runtimes.
meson_args="-Dcuda=disabled -Dtests=false -Dbenchmarks=false -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false"
# scripts/setup.sh applies them when it creates the build directory; an existing one gets them
# here, in case they changed since.
if [ -f "$build/build.ninja" ] && [ -x .venv/bin/meson ]; then
  # shellcheck disable=SC2086
  .venv/bin/meson configure "$build" $meson_args >/dev/null ||
    { echo "fuzz: cannot configure $build"; echo "0 passed, 1 failed"; exit 1; }
fi
if ! CXX=clang++ BUILD_DIR="$build" MESON_ARGS="$meson_args" ./scripts/setup.sh; then
  echo "fuzz: setup or build of $build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

# UBSan only prints by default: halting makes a report a crash that libFuzzer records.
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$build/fuzz-logs"
passed=0
failed=0
for exe in "$build"/fuzz/fuzz_*; do
  [ -f "$exe" ] && [ -x "$exe" ] || continue  # not the fuzz_*.p object directories
  target=$(basename "$exe")
  work="$scratch/$target"
  findings="$build/findings/$target"
  log="$build/fuzz-logs/$target.log"
  mkdir -p "$work"
  rm -rf "$findings" && mkdir -p "$findings"
  if [ -d "fuzz/corpus/$target" ]; then
    cp fuzz/corpus/"$target"/* "$work"/
  else
    echo "fuzz: $target has no seed corpus (fuzz/corpus/$target/): starting from nothing"
  fi
  seeds=$(find "$work" -type f | wc -l)
  dict=()
  [ -f "fuzz/$target.dict" ] && dict=("-dict=fuzz/$target.dict")
  # -timeout: one input running that long is a finding (a hang); the outer timeout only guards
  # against the fuzzer itself not stopping.
  timeout --kill-after=10 $((seconds + 300)) "$exe" "$work" "${dict[@]}" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$findings/" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
  grown=$(find "$work" -type f | wc -l)
  if [ $rc = 0 ]; then
    echo "fuzz: $target: no finding in ${seconds} s (${runs:-?} inputs; corpus $seeds -> $grown)"
    passed=$((passed + 1))
  else
    # The report: from the sanitizer's or libFuzzer's first error line (else the log's end).
    first=$(grep -n -m 1 -E 'ERROR: |runtime error:|FINDING:|ALARM:|out-of-memory|deadly signal' \
            "$log" | cut -d: -f1)
    echo "---- $target: $log${first:+ from line $first}"
    if [ -n "$first" ]; then tail -n "+$first" "$log" | head -n 80; else tail -n 40 "$log"; fi
    echo "----"
    saved=$(find "$findings" -type f | head -1)
    echo "fuzz: $target: FINDING (exit status $rc)${saved:+; the input is $saved, replay it with $exe $saved}"
    failed=$((failed + 1))
  fi
done
if [ $((passed + failed)) = 0 ]; then
  echo "fuzz: no fuzz targets in $build/fuzz"
  failed=1
fi
echo "$passed passed, $failed failed"
[ $failed = 0 ]
