#!/usr/bin/env python3
"""One training run in a few numbers, as JSON: what scripts/gpu_check.sh reports of its GPU
runs (the small config for the CUDA backend's acceptance, each router on the small config).

    scripts/run_summary.py RUN_DIR [--tol 0.02]

From RUN_DIR's metrics.jsonl and config.toml: steps, the first and last training loss, the
validation curve, median tokens/s (the last three quarters of the steps), λ at the end; for an
MoE run the target sparsity 1 − k/E and the sparsity against it (study_report.py's summary:
the first step within ±tol and the statistics from then on), the last step's expert load
(largest and smallest share over layers and experts), and, where the run logs them, the mean
dropped fraction, the last z-loss and the range of the expert biases. Exit status 0, or 1 with
a line naming the file and what is wrong.
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plot  # noqa: E402
import study_report  # noqa: E402


def flat(values):
    for v in values:
        if isinstance(v, list):
            yield from flat(v)
        elif plot._is_number(v):
            yield v


def summarize(run_dir, tol):
    run = plot.Run(run_dir, Path(run_dir).name)
    recs = run.records
    steps, losses = run.series("loss")
    rates = run.series("tokens_per_s")[1][len(recs) // 4:]
    vs, vl = run.series("val_loss")
    lam = run.series("lambda")[1]
    out = {"dir": str(run_dir), "steps": steps[-1], "loss_first": losses[0], "loss_last": losses[-1],
           "val_loss": [[s, v] for s, v in zip(vs, vl)],
           "median_tokens_per_s": statistics.median(rates) if rates else None,
           "lambda_last": lam[-1] if lam else None}
    if run.moe and run.target is not None:
        out["sparsity"] = study_report.sparsity_summary(recs, run.target, tol)
        out["sparsity_last"] = recs[-1].get("sparsity")
        load = list(flat(recs[-1].get("expert_load", [])))
        if load:
            out["expert_load_last"] = {"max": max(load), "min": min(load)}
        dropped = [x for r in recs for x in flat(r.get("dropped_fraction", []))]
        if dropped:
            out["dropped_fraction_mean"] = statistics.fmean(dropped)
        z = run.series("z_loss")[1]
        if z:
            out["z_loss_last"] = z[-1]
        bias = list(flat(recs[-1].get("router_bias", [])))
        if bias:
            out["router_bias_last"] = {"max": max(bias), "min": min(bias)}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--tol", type=float, default=0.02, help="sparsity tolerance (default 0.02)")
    args = ap.parse_args(argv)
    try:
        print(json.dumps(summarize(args.run_dir, args.tol)))
    except plot.PlotError as e:
        print(f"run_summary.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
