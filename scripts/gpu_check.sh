#!/usr/bin/env bash
# Runs on a GPU machine, from the bundle scripts/device_bundle.sh made: the whole gpu test
# suite, compute-sanitizer memcheck and racecheck over it, and every kernel benchmark. Writes
# into $OUT (default .device/out):
#   gpu_check.json    device, driver, commit, the suite's counts, the sanitizers' verdicts
#   gpu_tests.json    GoogleTest's report;  <bench>.json  Google Benchmark's reports
#   log.txt           everything printed
# and ends with `N passed, N failed`. Copy the JSON files into bench/results/ and commit them.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1

# NCCL and cuBLAS ship in the Python environment's nvidia/*/lib folders on these machines.
libs=$(find / -path /proc -prune -o \( -name 'libnccl.so*' -o -name 'libcublas.so*' \) -print 2>/dev/null |
       xargs -r -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="$HERE/lib:${libs}${LD_LIBRARY_PATH:-}"
commit=$(cat "$HERE/commit" 2>/dev/null || echo unknown)
device=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1)
echo "gpu_check: commit $commit on ${device:-no GPU} (driver ${driver:-none})"

"$HERE/bin/gpu_tests" --gtest_output="json:$OUT/gpu_tests.json"
suite_rc=$?

sanitize() {  # tool → "clean" or "errors" (details in the log)
  if ! command -v compute-sanitizer > /dev/null; then echo "not run (no compute-sanitizer)"; return; fi
  compute-sanitizer --tool "$1" --error-exitcode 99 "$HERE/bin/gpu_tests" --gtest_brief=1 > "$OUT/$1.txt" 2>&1
  case $? in 0) echo clean ;; 99) echo errors ;; *) echo "test failures (see $1.txt)" ;; esac
}
memcheck=$(sanitize memcheck)
racecheck=$(sanitize racecheck)
echo "gpu_check: memcheck $memcheck, racecheck $racecheck"

for b in "$HERE"/bin/*_bench; do
  [ -x "$b" ] || continue
  "$b" --benchmark_format=console --benchmark_out_format=json --benchmark_out="$OUT/$(basename "$b").json"
done

python3 - "$OUT" "$commit" "${device:-}" "${driver:-}" "$memcheck" "$racecheck" <<'PY'
import json, sys
out, commit, device, driver, memcheck, racecheck = sys.argv[1:]
passed = failed = skipped = 0
try:
    report = json.load(open(f"{out}/gpu_tests.json"))
    for suite in report["testsuites"]:
        for t in suite["testsuite"]:
            if t.get("result") == "SKIPPED": skipped += 1
            elif t.get("failures"): failed += 1
            else: passed += 1
except (OSError, ValueError, KeyError) as e:
    failed += 1
    print(f"gpu_check: no readable GoogleTest report ({e})")
json.dump({"device": device, "driver": driver, "commit": commit,
           "gpu_tests": {"passed": passed, "failed": failed, "skipped": skipped},
           "memcheck": memcheck, "racecheck": racecheck},
          open(f"{out}/gpu_check.json", "w"), indent=2)
print(f"{passed} passed, {failed} failed")
PY
[ $suite_rc -eq 0 ]
