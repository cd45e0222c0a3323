#!/usr/bin/env python3
"""Is the PyTorch peer remoe's model? Runs remoe and the peer from the same remoe checkpoints and
compares what they compute.

    check_equivalence.py --remoe build/train/remoe --config configs/tiny.toml [--set KEY=VALUE ...]
                         [--steps 20] [--device cpu|cuda] [--precision f32|bf16] [--work DIR]
                         [--out report.json]

1. remoe trains `--steps` steps (a checkpoint halfway and at the end).
2. Evaluation: `remoe eval --json` and the peer's evaluation of the last checkpoint — validation
   loss, each layer's sparsity and expert load over the same fixed windows.
3. Training: the peer resumes from the halfway checkpoint (weights, AdamW moments, λ, the data
   sampler's state) and trains to the end; its per-step loss, λ and sparsity are compared with
   remoe's metrics.jsonl and its final weights with remoe's last checkpoint.

Tolerances are per precision (TOLERANCES): f32 on the CPU agrees to rounding; bf16 to bf16's
8 bits. The report (JSON, on stdout and in --out) holds every maximum difference next to its
tolerance. Exit status: 0 equal within tolerance, 1 not (or bad input), 77 torch is missing.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))

# loss: relative; sparsity, load: absolute; lambda: relative; weights: max |Δ| / max |w|.
TOLERANCES = {
    "f32": {"loss": 1e-5, "sparsity": 2e-3, "load": 2e-3, "lambda": 1e-9, "weights": 1e-5},
    "bf16": {"loss": 2e-2, "sparsity": 2e-2, "load": 2e-2, "lambda": 0.45, "weights": 5e-2},
}


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"check_equivalence: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return p.stdout


def max_abs_diff(a, b):
    """Max |a − b| over equal-shaped nested lists of numbers."""
    if isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            return float("inf")
        return max((max_abs_diff(x, y) for x, y in zip(a, b)), default=0.0)
    return abs(float(a) - float(b))


def rel(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


class Report:
    def __init__(self, precision):
        self.tol = TOLERANCES[precision]
        self.checks = []

    def add(self, name, value, kind):
        ok = value <= self.tol[kind]
        self.checks.append({"check": name, "value": value, "tolerance": self.tol[kind], "ok": ok})

    @property
    def ok(self):
        return all(c["ok"] for c in self.checks)


def main(argv=None):
    """The check; a failure before the comparison (a run that fails, bad input) is still a
    report in --out: {"ok": false, "error": ...}."""
    args = parse_args(argv)
    try:
        return check(args)
    except SystemExit as e:
        if args.out and isinstance(e.code, str):
            with open(args.out, "w", encoding="utf-8") as f:
                json.dump({"config": args.config, "overrides": args.set, "device": args.device,
                           "ok": False, "error": e.code}, f, indent=1)
        raise


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--remoe", required=True, help="the remoe binary")
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override passed to remoe train (--KEY VALUE)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--precision", choices=["f32", "bf16"])
    ap.add_argument("--work", help="a directory for the runs (default: a temporary one, removed)")
    ap.add_argument("--out", help="also write the report here")
    return ap.parse_args(argv)


def check(args):
    try:
        import torch  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError as e:
        print(f"check_equivalence: {e}: skipped (scripts/setup_peer.sh installs torch)")
        return SKIP
    sys.path.insert(0, HERE)
    from safetensors.torch import load_file
    from remoe_peer.checkpoint import Checkpoint
    from remoe_peer.config import override_args
    from remoe_peer.train import PeerTrainer, run as peer_run

    if args.steps < 2:
        raise SystemExit("check_equivalence: --steps must be at least 2 (a checkpoint halfway)")
    precision = args.precision or ("bf16" if args.device == "cuda" else "f32")
    half = args.steps // 2
    work = args.work or tempfile.mkdtemp(prefix="remoe_peer_check_")
    run_dir = os.path.join(work, "remoe")
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = override_args(args.set, "check_equivalence")
    try:
        run([args.remoe, "train", "--config", args.config, *overrides,
             "--train.steps", str(args.steps), "--checkpoint.every", str(half),
             "--checkpoint.keep_last", "2", "--eval.every", "0", "--log.run_dir", run_dir,
             "--train.device", args.device, "--train.precision", precision])
        report = Report(precision)

        # Evaluation of the last checkpoint.
        last = Checkpoint(run_dir)
        env = dict(os.environ)
        if args.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""  # remoe eval takes the GPU when it sees one
        p = subprocess.run([args.remoe, "eval", "--checkpoint", last.dir, "--json"],
                           capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise SystemExit(f"check_equivalence: remoe eval failed:\n{p.stderr[-4000:]}")
        theirs = json.loads(p.stdout.strip().splitlines()[-1])
        ours = PeerTrainer(last.config, args.device, precision, checkpoint=last).evaluate(theirs["batches"])
        report.add("eval loss (relative)", rel(theirs["loss"], ours["loss"]), "loss")
        if last.config.moe:
            report.add("eval layer sparsity", max_abs_diff(theirs["layer_sparsity"], ours["layer_sparsity"]), "sparsity")
            report.add("eval expert load", max_abs_diff(theirs["expert_load"], ours["expert_load"]), "load")

        # Training from the halfway checkpoint to the end.
        mid = Checkpoint(os.path.join(run_dir, "checkpoints", f"step_{half:08d}"))
        trainer = PeerTrainer(mid.config, args.device, precision, checkpoint=mid)
        records = []
        peer_run(trainer, args.steps - half, log=records.append)
        with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
            remoe_records = [json.loads(line) for line in f][half:args.steps]
        report.add("train loss per step (relative)",
                   max(rel(a["loss"], b["loss"]) for a, b in zip(remoe_records, records)), "loss")
        if last.config.moe:
            report.add("train sparsity per step",
                       max(abs(a["sparsity"] - b["sparsity"]) for a, b in zip(remoe_records, records)), "sparsity")
            if last.config.router == "relu":
                report.add("λ per step (relative)",
                           max(rel(a["lambda"], b["lambda"]) for a, b in zip(remoe_records, records)), "lambda")
        final = load_file(os.path.join(last.dir, "model.safetensors"))
        peer_params = dict(trainer.model.named_parameters())
        scale = max(t.abs().max().item() for t in final.values())
        diff = max((final[n] - peer_params[n].detach().float().cpu()).abs().max().item() for n in final)
        report.add(f"weights after step {args.steps} (max |Δ| / max |w|)", diff / scale, "weights")
        result = {"config": args.config, "overrides": args.set, "steps": args.steps, "device": args.device,
                  "precision": precision, "ok": report.ok, "checks": report.checks}
        if args.device == "cuda":
            result["gpu"] = torch.cuda.get_device_name()
        text = json.dumps(result, indent=1)
        print(text)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        return 0 if report.ok else 1
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
