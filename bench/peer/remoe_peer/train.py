"""The peer's training step and evaluation: remoe's (train/trainer.cpp) step for step.

    loss = mean CE + Σ_l aux_l, scaled by 1/grad_accum per micro-batch
    clip the global gradient norm (torch semantics, remoe's too), AdamW (fused on a GPU) with
    weight decay on the ≥ 2-D parameters only, the learning rate of train/schedule.h
    then λ ← λ·α if the step's sparsity is under 1 − k/E, else λ/α (ReLU routing only)

λ and the step's statistics stay on the device: a step reads nothing back unless it is logged
(the MoE layer's token counts are data-dependent shapes, which eager PyTorch syncs on anyway).
remoe skips a step whose loss or gradient norm is not finite; the peer, as most PyTorch code,
does not check.
"""
import math
import statistics
import time

import torch
import torch.nn.functional as F

from . import data as data_mod
from .model import Transformer, autocast


def warmup_steps(c):
    w = c.warmup_steps if c.warmup_steps >= 0 else c.steps // 100
    return min(max(w, 1), c.steps)


def learning_rate(c, step):
    """train/schedule.h: linear warmup, cosine to min_lr at the last step (0-based step)."""
    w = warmup_steps(c)
    if step < w:
        return c.lr * (step + 1) / w
    decay = c.steps - w
    if decay <= 1:
        return c.lr
    progress = (step - w) / (decay - 1)
    return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + math.cos(math.pi * progress))


def routing_stats(counts, pairs):
    """From active pairs per (layer, expert) summed over `pairs` (token, expert) pairs a layer:
    each layer's sparsity 1 − active / pairs and each expert's share of its layer's active pairs."""
    active = counts.sum(1)
    return 1.0 - active / pairs, counts / active.clamp(min=1)[:, None]


class PeerTrainer:
    """config: a PeerConfig. checkpoint: a checkpoint.Checkpoint to start from (its weights,
    AdamW moments, step, λ and data sampler state), or None for a fresh run from torch's
    generator seeded with train.seed. compile: torch.compile the model's forward."""

    def __init__(self, config, device, precision="f32", checkpoint=None, compile=False):
        c = self.c = config
        self.device = torch.device(device)
        self.precision = precision
        torch.manual_seed(c.seed)
        self.model = Transformer(c).to(self.device)
        self.step = 0
        lam = c.lambda0
        rng_state = None
        if checkpoint is not None:
            checkpoint.load_model(self.model)
            self.step, lam, rng_state = checkpoint.step, checkpoint.lam, checkpoint.data_rng
        self.lam = torch.tensor(lam, dtype=torch.float64, device=self.device)
        params = dict(self.model.named_parameters())
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            [{"params": [p for p in params.values() if p.ndim >= 2], "weight_decay": c.weight_decay},
             {"params": [p for p in params.values() if p.ndim < 2], "weight_decay": 0.0}],
            lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps, fused=fused, foreach=None if fused else True)
        if checkpoint is not None:
            moments = checkpoint.moments()
            for name, p in params.items():
                if name not in moments:
                    raise ValueError(f"{checkpoint.dir}/optimizer.safetensors has no moments for {name}")
                m, v = moments[name]
                self.optimizer.state[p] = {
                    # AdamW's step count is the step number (remoe counts skipped steps too).
                    "step": torch.tensor(float(self.step), dtype=torch.float32,
                                         device=self.device if fused else "cpu"),
                    "exp_avg": m.to(self.device, p.dtype).clone(),
                    "exp_avg_sq": v.to(self.device, p.dtype).clone()}
        self.corpus = data_mod.Corpus(c)
        self.sampler = data_mod.WindowSampler(self.corpus, c.seq_len, seed=c.seed, state=rng_state)
        self.forward = self.model.forward
        if compile:
            torch._dynamo.config.capture_scalar_outputs = True
            torch._dynamo.config.capture_dynamic_output_shape_ops = True
            self.forward = torch.compile(self.model.forward)

    def train_step(self):
        """One optimizer step; returns its statistics as device tensors (read them to log)."""
        c = self.c
        lr = learning_rate(c, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        lam_used = self.lam.clone()
        ce_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        aux_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        counts_sum = None
        for _ in range(c.grad_accum):
            inputs, targets = self.sampler.next(c.batch_size)
            inputs = inputs.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            with autocast(self.device, self.precision):
                logits, aux, stats = self.forward(inputs, c.batch_size, c.seq_len, self.lam)
            ce = F.cross_entropy(logits.float(), targets)
            ((ce + aux) / c.grad_accum).backward()
            ce_sum += ce.detach().double() / c.grad_accum
            aux_sum += aux.detach().double() / c.grad_accum
            if stats:
                counts = torch.stack(stats).double()  # (L, E)
                counts_sum = counts if counts_sum is None else counts_sum + counts
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip) \
            if c.grad_clip > 0 else torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters()])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        record = {"step": self.step + 1, "loss": ce_sum, "aux": aux_sum, "lr": lr,
                  "lambda": lam_used, "grad_norm": grad_norm}
        if counts_sum is not None:
            pairs = c.grad_accum * c.batch_size * c.seq_len * c.experts
            record["layer_sparsity"], record["expert_load"] = routing_stats(counts_sum, pairs)
            record["sparsity"] = 1.0 - counts_sum.sum() / (pairs * c.n_layers)
            if c.router == "relu":  # REMOE_SPEC §2: after the step, from its sparsity
                self.lam = torch.where(record["sparsity"] < c.target_sparsity,
                                       self.lam * c.alpha, self.lam / c.alpha)
        self.step += 1
        return record

    @torch.no_grad()
    def evaluate(self, batches):
        """remoe eval's numbers: the mean over `batches` fixed validation batches of each batch's
        mean CE, and the routing's per-layer sparsity and expert load over all of them."""
        c = self.c
        total = 0.0
        counts_sum = None
        for i in range(batches):
            inputs, targets = data_mod.fixed_batch(self.corpus, c.seq_len, c.batch_size, i, batches)
            with autocast(self.device, self.precision):
                logits, _, stats = self.model.forward(inputs.to(self.device), c.batch_size,
                                                      c.seq_len, torch.zeros((), device=self.device))
            total += F.cross_entropy(logits.float(), targets.to(self.device)).item()
            if stats:
                counts = torch.stack(stats).double()
                counts_sum = counts if counts_sum is None else counts_sum + counts
        out = {"batches": batches, "batch_size": c.batch_size, "seq_len": c.seq_len,
               "loss": total / batches, "bpb": total / batches / math.log(2)}
        if counts_sum is not None:
            sparsity, load = routing_stats(counts_sum, batches * c.batch_size * c.seq_len * c.experts)
            out["layer_sparsity"], out["expert_load"] = sparsity.tolist(), load.tolist()
        return out


def to_host(record):
    """A step record with its tensors read back (one sync)."""
    return {k: (v.tolist() if torch.is_tensor(v) else v) for k, v in record.items()}


def run(trainer, steps, log=None, warmup=0):
    """`steps` optimizer steps; log(record) after each (reading it back) when given. Returns the
    throughput over the steps after the first `warmup`: tokens/s of the whole timed span (one
    sync at each end) and the median of the per-step rates when every step is logged."""
    c = trainer.c
    tokens = c.grad_accum * c.batch_size * c.seq_len
    dev = trainer.device
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    per_step = []
    sync()
    start = time.perf_counter()
    for i in range(steps):
        if i == warmup:
            sync()
            start = time.perf_counter()
        t0 = time.perf_counter()
        record = trainer.train_step()
        if log is not None:
            host = to_host(record)
            host["tokens_per_s"] = tokens / (time.perf_counter() - t0)
            per_step.append(host["tokens_per_s"])
            log(host)
    sync()
    timed = steps - warmup
    elapsed = time.perf_counter() - start
    return {"steps": steps, "timed_steps": timed,
            "tokens_per_s": tokens * timed / elapsed if timed > 0 else None,
            "median_step_tokens_per_s": statistics.median(per_step[warmup:]) if per_step[warmup:] else None,
            "peak_memory_bytes": torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None}
