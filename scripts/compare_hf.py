#!/usr/bin/env python3
"""Check that transformers computes remoe's logits from a `remoe export` folder.

    remoe eval --checkpoint RUN --dump-logits /tmp/logits.bin
    remoe export --checkpoint RUN --out /tmp/hf
    python3 scripts/compare_hf.py --export /tmp/hf --logits /tmp/logits.bin

Loads the folder with the class config.json names (LlamaForCausalLM or MixtralForCausalLM), runs
the input ids of the dumped window (FILE.json) and compares the logits with remoe's (FILE: raw
little-endian f32). Where Mixtral's routing is not remoe's — ReLU routing (ReMoE), or TopK
gates that are not renormalised — the MoE blocks are patched with remoe's routing first
(patch_moe_routing), so that the comparison tests the exported weights and layout, not a
routing that was never trained.

Exit status: 0 match (max |difference| <= tolerance), 1 mismatch or bad input, 77 skipped
(torch or transformers cannot be imported).
"""
import argparse
import json
import os
import sys
import types

SKIP = 77


def expert_weights(block, e):
    """(w1, w3, w2) of expert e as (F, d), (F, d), (d, F), from either layout transformers uses:
    a ModuleList of w1/w2/w3 Linears (4.x) or fused gate_up_proj (E, 2F, d) and down_proj
    (E, d, F) parameters (5.x, which loads the per-expert names by concatenating w1 then w3)."""
    experts = block.experts
    if hasattr(experts, "gate_up_proj"):
        gate_up = experts.gate_up_proj[e]
        f = gate_up.shape[0] // 2
        return gate_up[:f], gate_up[f:], experts.down_proj[e]
    ex = experts[e]
    return ex.w1.weight, ex.w3.weight, ex.w2.weight


def remoe_moe_forward(block, hidden_states, router, top_k, renormalize):
    """remoe's MoE layer (REMOE_SPEC §1, §3): y = Σ_e gate_e · w2_e(silu(w1_e x) ⊙ w3_e x)."""
    import torch
    import torch.nn.functional as F

    shape = hidden_states.shape
    x = hidden_states.reshape(-1, shape[-1])
    logits = F.linear(x, block.gate.weight)  # (T, E)
    if router == "relu":
        gates = F.relu(logits)
    else:
        probs = torch.softmax(logits.float(), dim=-1)
        top_p, top_i = torch.topk(probs, top_k, dim=-1)
        if renormalize:
            top_p = top_p / top_p.sum(dim=-1, keepdim=True)
        gates = torch.zeros_like(probs).scatter(1, top_i, top_p).to(x.dtype)
    y = torch.zeros_like(x)
    for e in range(gates.shape[1]):
        rows = torch.nonzero(gates[:, e] > 0).flatten()
        if rows.numel() == 0:
            continue
        w1, w3, w2 = expert_weights(block, e)
        xe = x[rows]
        h = F.silu(F.linear(xe, w1)) * F.linear(xe, w3)
        y.index_add_(0, rows, gates[rows, e, None] * F.linear(h, w2))
    y = y.reshape(shape)
    # transformers 4.x's block returns (hidden_states, router_logits), 5.x the hidden states.
    return (y, logits) if isinstance(block.experts, torch.nn.ModuleList) else y


def patch_moe_routing(model, config):
    """Replaces the forward of every MixtralSparseMoeBlock with remoe's routing as config.json's
    "remoe" object describes it. Returns the number of blocks patched (0 when Mixtral's own
    routing is remoe's)."""
    info = config.get("remoe", {})
    router = info.get("router")
    renormalize = bool(info.get("renormalize", False))
    if info.get("ffn") != "moe" or (router == "topk" and renormalize):
        return 0
    if router not in ("relu", "topk"):
        raise ValueError(f'config.json: remoe.router is {router!r}, expected "relu" or "topk"')
    top_k = int(config["num_experts_per_tok"])
    n = 0
    for module in model.modules():
        if type(module).__name__ == "MixtralSparseMoeBlock":
            module.forward = types.MethodType(
                lambda self, h: remoe_moe_forward(self, h, router, top_k, renormalize), module)
            n += 1
    if n == 0:
        raise RuntimeError("no MixtralSparseMoeBlock found to patch (a transformers version "
                           "whose Mixtral module is named differently?)")
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--export", required=True, help="the folder `remoe export` wrote")
    ap.add_argument("--logits", required=True, help="the file `remoe eval --dump-logits` wrote")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="max |difference| (f32)")
    ap.add_argument("--no-patch", action="store_true",
                    help="keep transformers' own MoE routing (shows how far it is from remoe's)")
    args = ap.parse_args()

    try:
        import torch
        import transformers
    except Exception as e:  # ImportError, or a broken install (missing shared libraries)
        print(f"compare_hf: skip: cannot import torch and transformers ({e})")
        return SKIP

    with open(os.path.join(args.export, "config.json")) as f:
        config = json.load(f)
    with open(args.logits + ".json") as f:
        side = json.load(f)
    seq, vocab = side["shape"]
    ids = side["input_ids"]
    if len(ids) != seq or vocab != config["vocab_size"]:
        print(f"compare_hf: {args.logits}.json: shape {side['shape']} does not fit {len(ids)} "
              f"input ids and vocab_size {config['vocab_size']}")
        return 1
    with open(args.logits, "rb") as f:
        raw = f.read()
    if len(raw) != seq * vocab * 4:
        print(f"compare_hf: {args.logits} is {len(raw)} bytes, expected {seq}·{vocab}·4 = {seq * vocab * 4}")
        return 1
    ref = torch.frombuffer(bytearray(raw), dtype=torch.float32).reshape(seq, vocab)

    try:
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:
        pass
    arch = config["architectures"][0]
    cls = getattr(transformers, arch)
    model = cls.from_pretrained(args.export, attn_implementation="eager").float().eval()
    patched = 0 if args.no_patch else patch_moe_routing(model, config)
    with torch.no_grad():
        out = model(torch.tensor([ids], dtype=torch.long)).logits[0].float()
    diff = (out - ref).abs().max().item()
    ok = diff <= args.tolerance
    print(f"compare_hf: {arch} (transformers {transformers.__version__}, torch {torch.__version__}"
          f"{f', {patched} MoE blocks patched to remoe routing' if patched else ''}): "
          f"{seq} positions × {vocab} logits, max |difference| {diff:.3e} "
          f"{'<=' if ok else '>'} {args.tolerance:g}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
