#!/usr/bin/env python3
"""The PyTorch peer of remoe (bench/peer/README.md): remoe's model and training step in PyTorch.

    peer.py eval  --checkpoint RUN [--batches N] [--device D] [--precision P]
        the validation loss and router statistics of a remoe checkpoint, as JSON
        (the numbers `remoe eval --json` prints for the same checkpoint)
    peer.py train (--config RESOLVED.toml | --checkpoint RUN) [--steps N] [--device D]
                  [--precision P] [--compile] [--metrics FILE] [--weights FILE] [--warmup W]
        train from torch's init (a resolved config: `remoe train --config F --print-config`) or
        on from a remoe checkpoint (its weights, AdamW moments, λ and data sampler state);
        a remoe-style metrics.jsonl line per step with --metrics; the final weights as
        safetensors with --weights; a JSON summary (tokens/s, peak memory) on stdout.

--device: cpu or cuda (default: cuda when there is one). --precision: f32 or bf16 (default: bf16
on a GPU, f32 on the CPU, as remoe's train.precision = "auto"). Errors name the file, the key
and what is expected; the exit status is 1 then.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from remoe_peer import checkpoint as checkpoint_mod  # noqa: E402
from remoe_peer import config as config_mod  # noqa: E402
from remoe_peer.train import PeerTrainer, run  # noqa: E402


def device_and_precision(args):
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("peer: --device cuda, but torch sees no CUDA device")
    precision = args.precision or ("bf16" if device == "cuda" else "f32")
    return device, precision


def cmd_eval(args):
    ck = checkpoint_mod.Checkpoint(args.checkpoint)
    device, precision = device_and_precision(args)
    trainer = PeerTrainer(ck.config, device, precision, checkpoint=ck)
    result = {"checkpoint": ck.dir, "step": ck.step, "device": device, "precision": precision}
    result.update(trainer.evaluate(args.batches or ck.config.eval_batches))
    print(json.dumps(result))


def cmd_train(args):
    if (args.config is None) == (args.checkpoint is None):
        raise SystemExit("peer train: give exactly one of --config RESOLVED.toml and --checkpoint RUN")
    ck = checkpoint_mod.Checkpoint(args.checkpoint) if args.checkpoint else None
    config = ck.config if ck else config_mod.load(args.config)
    device, precision = device_and_precision(args)
    trainer = PeerTrainer(config, device, precision, checkpoint=ck, compile=args.compile)
    steps = args.steps if args.steps is not None else config.steps - trainer.step
    if steps < 1:
        raise SystemExit(f"peer train: nothing to do ({trainer.step} of train.steps = {config.steps} "
                         "done); pass --steps N")
    metrics = open(args.metrics, "w", encoding="utf-8") if args.metrics else None
    log = (lambda r: metrics.write(json.dumps(r) + "\n")) if metrics else None
    summary = run(trainer, steps, log=log, warmup=min(args.warmup, steps - 1))
    if metrics:
        metrics.close()
    if args.weights:
        save_file({n: p.detach().float().cpu().contiguous() for n, p in trainer.model.named_parameters()},
                  args.weights, metadata={"format": "pt"})
    summary.update({"device": device, "precision": precision, "compile": args.compile,
                    "router": config.router if config.moe else "dense",
                    "n_params": trainer.model.n_params(),
                    "n_active_params": trainer.model.n_active_params(),
                    "tokens_per_step": config.grad_accum * config.batch_size * config.seq_len,
                    "final_step": trainer.step})
    if device == "cuda":
        summary["gpu"] = torch.cuda.get_device_name(torch.device(device))
    print(json.dumps(summary))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("eval", "train"):
        s = sub.add_parser(name)
        s.add_argument("--checkpoint")
        s.add_argument("--device", choices=["cpu", "cuda"])
        s.add_argument("--precision", choices=["f32", "bf16"])
    ev = sub.choices["eval"]
    ev.add_argument("--batches", type=int, default=0)
    tr = sub.choices["train"]
    tr.add_argument("--config")
    tr.add_argument("--steps", type=int)
    tr.add_argument("--compile", action="store_true")
    tr.add_argument("--metrics")
    tr.add_argument("--weights")
    tr.add_argument("--warmup", type=int, default=0, help="steps left out of the throughput")
    args = p.parse_args(argv)
    try:
        if args.command == "eval":
            if not args.checkpoint:
                raise SystemExit("peer eval: --checkpoint RUN is required")
            cmd_eval(args)
        else:
            cmd_train(args)
    except (config_mod.ConfigError, ValueError, FileNotFoundError, OSError) as e:
        raise SystemExit(f"peer: {e}")


if __name__ == "__main__":
    main()
