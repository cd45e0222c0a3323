#!/usr/bin/env python3
"""Google Benchmark JSON reports → the markdown results table of bench/README.md.

    scripts/bench_table.py FILE.json...

Each FILE is one program's report (`--benchmark_out_format=json`) or the benchmarks.json that
scripts/gpu_check.sh writes (a report per program, by name). One table: program, kernel, shape
(the name's key:value parts), throughput (TFLOP/s, GB/s, or GFLOP/s from a FLOP/s rate counter),
the baseline measured in the same process (cuBLAS TFLOP/s or copy GB/s) and the ratio. A
benchmark that failed or was skipped shows its message. Where a report has aggregates
(--benchmark_repetitions), the median is shown. A comment line above the table gives each
program's device, commit and date.
"""
import json
import sys
from pathlib import Path

SUFFIXES = ("/manual_time", "/real_time", "/process_time")


def reports_of(data, default_name):
    """(program, report) pairs from one loaded file."""
    if isinstance(data, dict) and "benchmarks" in data:
        return [(default_name, data)]
    if isinstance(data, dict):
        return [(name, r) for name, r in data.items() if isinstance(r, dict) and "benchmarks" in r]
    raise ValueError("neither a Google Benchmark report nor a map of them")


def split_name(name):
    """'op/key:value/key:value/manual_time' → ('op', 'key=value key=value')."""
    for s in SUFFIXES:
        if name.endswith(s):
            name = name[: -len(s)]
    kernel, _, shape = name.partition("/")
    return kernel, " ".join(p.replace(":", "=", 1) for p in shape.split("/") if p)


def rows_of(report):
    """The benchmarks to show: medians where there are aggregates, else every run."""
    runs = report.get("benchmarks", [])
    if any(b.get("run_type") == "aggregate" for b in runs):
        medians = [b for b in runs if b.get("aggregate_name") == "median"]
        errors = [b for b in runs if b.get("error_occurred") and b.get("run_type") != "aggregate"]
        return medians + [e for e in errors if e["run_name"] not in {m["run_name"] for m in medians}]
    return runs


def fmt(v):
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cells(b):
    """(throughput, baseline, ratio) for one benchmark."""
    if b.get("error_occurred"):
        return f"error: {b.get('error_message', '?')}", "", ""
    throughput = baseline = ""
    if "TFLOP/s" in b:
        throughput = f"{fmt(b['TFLOP/s'])} TFLOP/s"
        for key in sorted(b):
            if key.endswith("TFLOP/s") and key != "TFLOP/s" and key.startswith("cublas"):
                # cublas_TFLOP/s: the same shape; cublas_<what>_TFLOP/s: a reference GEMM
                what = key[len("cublas"):-len("TFLOP/s")].strip("_").replace("_", " ")
                baseline = f"cuBLAS {what + ': ' if what else ''}{fmt(b[key])} TFLOP/s"
                break
    elif "GB/s" in b:
        throughput = f"{fmt(b['GB/s'])} GB/s"
        if "copy_GB/s" in b:
            baseline = f"copy {fmt(b['copy_GB/s'])} GB/s"
    elif "FLOP/s" in b:  # a Google Benchmark rate counter (the CPU benchmarks): FLOP/s
        throughput = f"{fmt(b['FLOP/s'] * 1e-9)} GFLOP/s"
    ratio = f"{b['ratio']:.2f}" if "ratio" in b else ""
    if "ratio_f32" in b:
        ratio += f" (f32 peak: {b['ratio_f32']:.2f})"
    if not baseline and b.get("label"):
        baseline = b["label"]
    return throughput, baseline, ratio


def table(paths):
    lines, header = [], []
    for path in paths:
        data = json.loads(Path(path).read_text())
        for program, report in reports_of(data, Path(path).stem):
            ctx = report.get("context", {})
            header.append(f"<!-- {program}: {ctx.get('cuda_device', '?')}, commit "
                          f"{ctx.get('remoe_commit', '?')}, {ctx.get('date', '?')} -->")
            for b in rows_of(report):
                kernel, shape = split_name(b.get("run_name", b["name"]))
                lines.append("| " + " | ".join([program, kernel, shape, *cells(b)]) + " |")
    return "\n".join(header + ["", "| program | kernel | shape | throughput | baseline | ratio |",
                               "|---|---|---|---|---|---|"] + lines) + "\n"


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) >= 2 else 2
    try:
        sys.stdout.write(table(argv[1:]))
    except (OSError, ValueError, KeyError) as e:
        print(f"bench_table.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
