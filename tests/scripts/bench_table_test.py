"""scripts/bench_table.py on a hand-written sample (tests/scripts/bench_sample.json, in the
merged form scripts/gpu_check.sh writes) and on one program's report alone.

Run from the source root: python3 tests/scripts/bench_table_test.py
"""
import importlib.util
import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_table.py"
SAMPLE = Path(__file__).resolve().parent / "bench_sample.json"

spec = importlib.util.spec_from_file_location("bench_table", SCRIPT)
bench_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_table)


def rows(text):
    """The table's body rows, split into stripped cells."""
    out = []
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| program"):
            out.append([c.strip() for c in line.strip("|").split("|")])
    return out


class BenchTableTest(unittest.TestCase):
    def test_gemm_row_has_throughput_baseline_and_ratio(self):
        r = rows(bench_table.table([SAMPLE]))[0]
        self.assertEqual(r, ["grouped_matmul_bench", "grouped_matmul_forward",
                             "cfg=182M proj=up load=uni T=8192 k=1 E=8 M=8192 K=768 N=3072",
                             "123 TFLOP/s", "cuBLAS 600 TFLOP/s", "0.21"])

    def test_errors_and_missing_baselines_say_why(self):
        r = rows(bench_table.table([SAMPLE]))
        self.assertEqual(r[1][3], "error: no CUDA device")
        self.assertEqual(r[1][1], "grouped_matmul_backward_dw")
        self.assertEqual(r[2][3:], ["50.0 TFLOP/s",
                                    "no cuBLAS baseline: libcublas.so.13: cannot open shared object file",
                                    ""])

    def test_aggregates_show_the_median_only(self):
        combine = [r for r in rows(bench_table.table([SAMPLE])) if r[1] == "combine_forward"]
        self.assertEqual(len(combine), 1)
        self.assertEqual(combine[0][2:], ["cfg=182M load=uni T=8192 E=8 k=1 d=768", "2000 GB/s",
                                          "copy 4000 GB/s", "0.50"])

    def test_attention_shows_both_reference_ratios(self):
        att = [r for r in rows(bench_table.table([SAMPLE])) if r[1] == "attention_forward"][0]
        self.assertEqual(att[3:], ["20.0 TFLOP/s", "cuBLAS bf16 8192: 800 TFLOP/s",
                                   "0.03 (f32 peak: 0.40)"])

    def test_cpu_rate_counter_in_gflops(self):
        cpu = [r for r in rows(bench_table.table([SAMPLE])) if r[0] == "matmul_bench"]
        self.assertEqual(cpu, [["matmul_bench", "BM_matmul_xwT", "256 128 512", "3.43 GFLOP/s",
                                "", ""]])

    def test_provenance_comment_per_program(self):
        text = bench_table.table([SAMPLE])
        self.assertIn("<!-- grouped_matmul_bench: Sample GPU, commit 0123abc, "
                      "2000-01-01T00:00:00+00:00 -->", text)
        self.assertEqual(text.count("<!--"), 4)

    def test_one_program_report_is_named_after_its_file(self):
        merged = json.loads(SAMPLE.read_text())
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "transformer_bench.json"
            path.write_text(json.dumps(merged["transformer_bench"]))
            result = subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True,
                                    text=True, check=True)
        r = rows(result.stdout)
        self.assertEqual([x[0] for x in r], ["transformer_bench"])
        self.assertEqual(r[0][2], "cfg=182M B=8 S=1024 Hq=12 Hkv=4 Dh=64")

    def test_files_without_reports(self):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "x.json"
            path.write_text('{"not": "a report"}')
            result = subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True,
                                    text=True)
        self.assertEqual(result.returncode, 0)  # a map holding no report: an empty table
        self.assertEqual(rows(result.stdout), [])
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "x.json"
            path.write_text("[1, 2]")
            result = subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True,
                                    text=True)
        self.assertEqual(result.returncode, 1)
        self.assertIn("bench_table.py:", result.stderr)


if __name__ == "__main__":
    unittest.main()
