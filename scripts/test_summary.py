"""Counts GoogleTest cases in a `meson test` run and prints `N passed, N failed, N skipped`.

Reads meson-logs/testlog.junit.xml (meson merges each gtest executable's report into it) and
meson-logs/testlog.json (one line per executable), so an executable that crashed or timed out
before writing its report still counts as a failure. Exits 1 when anything failed.
"""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

logs = Path(sys.argv[1] if len(sys.argv) > 1 else "build/meson-logs")
passed = failed = skipped = 0
failed_by_exe = {}
junit = logs / "testlog.junit.xml"
if junit.exists():
    for suite in ET.parse(junit).getroot().iter("testsuite"):
        tests = int(suite.get("tests", 0))
        bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skip = int(suite.get("skipped", 0))
        passed += tests - bad - skip
        failed += bad
        skipped += skip
        exe = suite.get("name", "").rsplit(".", 1)[0]
        failed_by_exe[exe] = failed_by_exe.get(exe, 0) + bad

runs = logs / "testlog.json"
if runs.exists():
    for line in runs.read_text().splitlines():
        run = json.loads(line)
        if run.get("result") in ("OK", "SKIP", "EXPECTEDFAIL"):
            continue
        exe = f"remoe.{run.get('name', '')}"
        if failed_by_exe.get(exe, 0) == 0:  # crashed, timed out, or failed outside a test case
            print(f"test executable failed without a failing case: {run.get('name')} ({run.get('result')})")
            failed += 1
else:
    print(f"no test log in {logs}")
    failed += 1

print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
