#!/usr/bin/env python3
"""Training throughput, remoe against its PyTorch peer, on one config and one device, in one go.

    bench_e2e.py --remoe build/train/remoe --config configs/small.toml [--set KEY=VALUE ...]
                 [--routers relu,topk] [--impls remoe,eager,compile] [--steps 30] [--warmup 10]
                 [--device cuda] [--out bench/results/e2e_<gpu>.json]

For each router (model.router; "dense" means model.ffn = "dense") and each implementation —
remoe (`remoe train`), the peer in eager mode, the peer under torch.compile — it trains `--steps`
steps from the same resolved config (each in its own process: no memory or compile cache is
shared) and reports, over the steps after `--warmup`:
  tokens_per_s   remoe: the median of metrics.jsonl's per-step rates; the peer: its timed span
                 (one sync at each end) — and the peer's per-step median where it logs each step
  mfu            tokens/s · FLOPs per token / 989e12 (the H200's dense bf16 peak), with FLOPs
                 per token = 6 · N_matmul + 6 · L · d_attn · S: N_matmul the active parameters
                 that multiply (all but the embedding table), and causal attention's QKᵀ and PV
                 forward and backward (12 · L · d_attn · S halved by the mask)
  peak_memory_bytes   remoe: metrics.jsonl's gpu_memory_peak (its pool's high-water mark); the
                 peer: torch.cuda.max_memory_allocated
  phase_ms       remoe: the median per phase (data, forward, backward, optimizer) of
                 metrics.jsonl's phase_ms, timed by CUDA events on its stream (train/phase_timer.h)
and each implementation's speed relative to the peer's eager and compiled runs. The JSON (--out)
carries the device, the commit, the resolved config's shape and every number; a markdown table
goes to stdout. Where a run fails its error is recorded and the others still run.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PEAK_FLOPS = 989e12  # H200 (and H100 SXM) dense bf16 tensor-core peak


def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def flops_per_token(c, n_active, n_embedding):
    d_attn = c.n_heads * c.head_dim
    return 6.0 * (n_active - n_embedding) + 6.0 * c.n_layers * d_attn * c.seq_len


def run_remoe(args, overrides, work):
    run_dir = os.path.join(work, "remoe_run")
    shutil.rmtree(run_dir, ignore_errors=True)
    p = sh([args.remoe, "train", "--config", args.config, *overrides, "--log.run_dir", run_dir,
            "--train.device", args.device])
    if p.returncode != 0:
        return {"error": p.stderr.strip()[-2000:] or f"exit {p.returncode}"}
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        steps = [json.loads(line) for line in f if line.strip()]
    timed = steps[args.warmup:]
    peaks = [s["gpu_memory_peak"] for s in steps if "gpu_memory_peak" in s]
    phases = {}
    for s in timed:
        for phase, ms in s.get("phase_ms", {}).items():
            phases.setdefault(phase, []).append(ms)
    return {"tokens_per_s": statistics.median(s["tokens_per_s"] for s in timed),
            "peak_memory_bytes": max(peaks) if peaks else None,
            "phase_ms": {p: statistics.median(v) for p, v in phases.items()},
            "final_loss": steps[-1]["loss"]}


def run_peer(args, resolved_path, compile_):
    cmd = [sys.executable, os.path.join(HERE, "peer.py"), "train", "--config", resolved_path,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
    if compile_:
        cmd.append("--compile")
    p = sh(cmd)
    if p.returncode != 0:
        return {"error": p.stderr.strip()[-2000:] or f"exit {p.returncode}"}
    s = json.loads(p.stdout.strip().splitlines()[-1])
    return {"tokens_per_s": s["tokens_per_s"], "peak_memory_bytes": s["peak_memory_bytes"],
            "n_params": s["n_params"], "n_active_params": s["n_active_params"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--remoe", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--routers", default="relu,topk")
    ap.add_argument("--impls", default="remoe,eager,compile")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    if not 0 <= args.warmup < args.steps:
        raise SystemExit(f"bench_e2e: --warmup must be in [0, --steps), got {args.warmup} of {args.steps}")
    impls = args.impls.split(",")
    for i in impls:
        if i not in ("remoe", "eager", "compile"):
            raise SystemExit(f"bench_e2e: --impls takes remoe, eager, compile; got {i!r}")
    sys.path.insert(0, HERE)
    import torch
    from remoe_peer import config as config_mod
    from remoe_peer.model import Transformer

    work = tempfile.mkdtemp(prefix="remoe_e2e_")
    rows = []
    try:
        for router in args.routers.split(","):
            overrides = config_mod.override_args(args.set, "bench_e2e")
            overrides += (["--model.ffn", "dense"] if router == "dense" else ["--model.ffn", "moe", "--model.router", router])
            overrides += ["--train.steps", str(args.steps), "--eval.every", "0", "--checkpoint.every", "0",
                          "--log.every", str(args.steps)]
            p = sh([args.remoe, "train", "--config", args.config, *overrides, "--print-config"])
            if p.returncode != 0:
                raise SystemExit(f"bench_e2e: remoe could not resolve the config: {p.stderr.strip()}")
            resolved_path = os.path.join(work, f"{router}.toml")
            with open(resolved_path, "w", encoding="utf-8") as f:
                f.write(p.stdout)
            c = config_mod.parse(p.stdout, resolved_path)
            with torch.device("meta"):
                m = Transformer(c)
            fpt = flops_per_token(c, m.n_active_params(), c.vocab_size * c.d_model)
            results = {}
            for impl in impls:
                r = run_remoe(args, overrides, work) if impl == "remoe" else run_peer(args, resolved_path, impl == "compile")
                if "tokens_per_s" in r:
                    r["mfu"] = r["tokens_per_s"] * fpt / PEAK_FLOPS
                results[impl] = r
                print(f"bench_e2e: {router} {impl}: {r}", file=sys.stderr)
            for impl, r in results.items():
                for base in ("eager", "compile"):
                    b = results.get(base, {})
                    if "tokens_per_s" in r and "tokens_per_s" in b:
                        r[f"vs_{base}"] = r["tokens_per_s"] / b["tokens_per_s"]
            rows.append({"router": router, "flops_per_token": fpt, "n_params": m.n_params(),
                         "n_active_params": m.n_active_params(), "results": results})
    finally:
        shutil.rmtree(work, ignore_errors=True)

    commit = sh(["git", "-C", HERE, "rev-parse", "HEAD"]).stdout.strip() or "unknown"
    gpu = torch.cuda.get_device_name() if args.device == "cuda" and torch.cuda.is_available() else None
    report = {"device": gpu or args.device,
              "commit": commit, "config": args.config, "overrides": args.set, "steps": args.steps,
              "warmup": args.warmup, "peak_flops": PEAK_FLOPS, "shape": {
                  k: getattr(c, k) for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ffn",
                                             "n_experts", "top_k", "granularity", "batch_size", "seq_len",
                                             "grad_accum")},
              "runs": rows}
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    print(table(report))
    return 0 if all("error" not in r for row in rows for r in row["results"].values()) else 1


def table(report):
    lines = ["| router | impl | tokens/s | MFU | peak memory | vs eager | vs compile | remoe's step by phase (ms) |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for row in report["runs"]:
        for impl, r in row["results"].items():
            if "error" in r:
                lines.append(f"| {row['router']} | {impl} | failed: {r['error'].splitlines()[-1][:60]} | | | | | |")
                continue
            mem = f"{r['peak_memory_bytes'] / 2**30:.1f} GiB" if r.get("peak_memory_bytes") else "–"
            rel = [f"{r[k]:.2f}×" if k in r else "–" for k in ("vs_eager", "vs_compile")]
            phases = ", ".join(f"{p} {ms:.1f}" for p, ms in r.get("phase_ms", {}).items()) or "–"
            lines.append(f"| {row['router']} | {impl} | {r['tokens_per_s']:,.0f} | {100 * r['mfu']:.1f}% | "
                         f"{mem} | {rel[0]} | {rel[1]} | {phases} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
