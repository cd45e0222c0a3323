"""remoe's decoder (model/transformer.h, model/moe.h, REMOE_SPEC §1-5) in PyTorch, written the
way a strong PyTorch user would: bf16 autocast for the matmuls, scaled-dot-product attention
(flash on a GPU) with grouped-query heads, torch._grouped_mm for the expert GEMMs on a GPU.

Parameters carry remoe's names (`layers.3.moe.w1`, shapes included), so a remoe checkpoint loads
with load_state_dict as it is. What is f32 whatever the precision, as in remoe: the router
logits, the routing and its regulariser, the norms, RoPE and the losses.
"""
import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

GROUP_ALIGN = 16  # torch._grouped_mm wants each group's rows to start 16-aligned


def _param(*shape):
    return nn.Parameter(torch.empty(*shape))


def rmsnorm(x, weight, eps):
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class Rope(nn.Module):
    """Rotate-half RoPE (kernels/rope.h): element i pairs with i + Dh/2, angle s · base^(−2i/Dh),
    angles in double."""

    def __init__(self, head_dim, base):
        super().__init__()
        self.head_dim, self.base = head_dim, base
        self._cache = {}

    def tables(self, seq, device):
        key = (seq, str(device))
        if key not in self._cache:
            half = self.head_dim // 2
            i = torch.arange(half, dtype=torch.float64)
            inv_freq = self.base ** (-2.0 * i / self.head_dim)
            angle = torch.arange(seq, dtype=torch.float64)[:, None] * inv_freq[None, :]  # (S, Dh/2)
            self._cache[key] = (angle.cos().float().to(device), angle.sin().float().to(device))
        return self._cache[key]

    def forward(self, x):  # x (B, S, H, Dh) → f32
        cos, sin = self.tables(x.shape[1], x.device)
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
        x = x.float()
        a, b = x.chunk(2, dim=-1)
        return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        hd = c.head_dim
        self.wq = _param(c.n_heads * hd, c.d_model)
        self.wk = _param(c.n_kv_heads * hd, c.d_model)
        self.wv = _param(c.n_kv_heads * hd, c.d_model)
        self.wo = _param(c.d_model, c.n_heads * hd)
        self.c = c

    def forward(self, h, rope, batch, seq):
        c = self.c
        hd = c.head_dim
        q = rope(F.linear(h, self.wq).view(batch, seq, c.n_heads, hd))
        k = rope(F.linear(h, self.wk).view(batch, seq, c.n_kv_heads, hd))
        v = F.linear(h, self.wv).view(batch, seq, c.n_kv_heads, hd)
        dtype = v.dtype  # bf16 under autocast: the flash kernel's
        o = F.scaled_dot_product_attention(q.to(dtype).transpose(1, 2), k.to(dtype).transpose(1, 2),
                                           v.transpose(1, 2), is_causal=True,
                                           enable_gqa=c.n_heads != c.n_kv_heads)
        return F.linear(o.transpose(1, 2).reshape(batch * seq, c.n_heads * hd), self.wo)


class DenseFfn(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.w1 = _param(c.d_ffn, c.d_model)
        self.w3 = _param(c.d_ffn, c.d_model)
        self.w2 = _param(c.d_model, c.d_ffn)

    def forward(self, h):
        return F.linear(F.silu(F.linear(h, self.w1)) * F.linear(h, self.w3), self.w2)


def _grouped(xs, w, offsets, use_grouped_mm):
    """xs (N, in) expert-major, w (E, out, in) → (N, out): row block e times w[e]ᵀ."""
    if use_grouped_mm:
        return torch._grouped_mm(xs, w.to(xs.dtype).transpose(-2, -1), offs=offsets)
    bounds = [0] + offsets.tolist()
    outs = [F.linear(xs[bounds[e]:bounds[e + 1]], w[e]) for e in range(w.shape[0])]
    return torch.cat(outs)


class Moe(nn.Module):
    """Routing → expert-major permutation → grouped SwiGLU experts → gate-weighted combine."""

    def __init__(self, c):
        super().__init__()
        E, Fe = c.experts, c.expert_d_ffn
        self.router = _param(E, c.d_model)
        self.w1 = _param(E, Fe, c.d_model)
        self.w3 = _param(E, Fe, c.d_model)
        self.w2 = _param(E, c.d_model, Fe)
        self.c = c

    def route(self, h, lam):
        """gates (T, E) f32, active mask (T, E) bool, the layer's regulariser (f32)."""
        c = self.c
        T, E, k = h.shape[0], c.experts, c.active_experts
        with torch.autocast(h.device.type, enabled=False):
            logits = F.linear(h.float(), self.router.float())
            if c.router == "relu":
                gates = F.relu(logits)
                mask = gates > 0
                scores, coeff = gates, lam
            else:
                probs = torch.softmax(logits, dim=-1)
                top = torch.topk(probs, k, dim=-1).indices
                mask = torch.zeros_like(probs, dtype=torch.bool).scatter_(1, top, True)
                gates = probs * mask
                if c.renormalize:
                    gates = gates / gates.sum(-1, keepdim=True)
                scores, coeff = probs, c.aux_coeff
            counts = mask.sum(0).to(torch.float32)  # c_e: a constant of the loss
            if c.router == "relu" and c.l1 == "plain":
                aux = coeff / T * scores.sum()
            else:  # REMOE_SPEC §2-3: coeff · E / (k · T²) · Σ_e c_e Σ_t s_te
                aux = coeff * E / (k * T * T) * (counts * scores.sum(0)).sum()
        return gates, mask, aux

    def forward(self, h, lam):
        c = self.c
        T, E = h.shape[0], c.experts
        gates, mask, aux = self.route(h, lam)
        # Expert-major pairs, tokens ascending within an expert: remoe's stable permutation.
        expert, token = mask.t().nonzero(as_tuple=True)
        counts = torch.bincount(expert, minlength=E)
        x = h.to(torch.get_autocast_dtype(h.device.type)) if torch.is_autocast_enabled(h.device.type) else h
        use_grouped_mm = h.is_cuda and x.dtype == torch.bfloat16 and hasattr(torch, "_grouped_mm")
        if use_grouped_mm:
            # Each group padded to GROUP_ALIGN rows (zeros): the alignment _grouped_mm needs.
            padded = (counts + GROUP_ALIGN - 1) // GROUP_ALIGN * GROUP_ALIGN
            ends = torch.cumsum(padded, 0)
            rank = torch.arange(expert.numel(), device=h.device) - (torch.cumsum(counts, 0) - counts)[expert]
            rows = (ends - padded)[expert] + rank
            xs = x.new_zeros(int(ends[-1]), x.shape[1]).index_copy_(0, rows, x[token])
            offsets = ends.to(torch.int32)
        else:
            rows = None
            xs = x[token]
            offsets = torch.cumsum(counts, 0)
        a = _grouped(xs, self.w1, offsets, use_grouped_mm)
        b = _grouped(xs, self.w3, offsets, use_grouped_mm)
        ys = _grouped(F.silu(a) * b, self.w2, offsets, use_grouped_mm)
        if rows is not None:
            ys = ys[rows]
        weighted = ys.float() * gates[token, expert].unsqueeze(1)
        y = torch.zeros(T, h.shape[1], dtype=torch.float32, device=h.device).index_add_(0, token, weighted)
        return y, aux, counts


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention_norm = nn.Parameter(torch.ones(c.d_model))
        self.attention = Attention(c)
        self.ffn_norm = nn.Parameter(torch.ones(c.d_model))
        if c.moe:
            self.moe = Moe(c)
        else:
            self.ffn = DenseFfn(c)


class Transformer(nn.Module):
    """forward(ids (B·S), batch, seq, lam) → logits (T, V) f32, aux (Σ over layers), and per MoE
    layer its active pairs per expert (E) as a device tensor (nothing is read back)."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.tok_embeddings = _param(c.vocab_size, c.d_model)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.norm = nn.Parameter(torch.ones(c.d_model))
        self.output = _param(c.vocab_size, c.d_model)
        self.rope = Rope(c.head_dim, c.rope_base)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, generator=None):
        """remoe's scheme (model/transformer.h) from torch's generator: N(0, init_std²), the
        output projections wo and w2 N(0, (init_std/√(2L))²), the router N(0, init_std²), norms 1.
        Not remoe's draws: load a remoe checkpoint for the same weights."""
        c = self.c
        out_std = c.init_std / math.sqrt(2.0 * c.n_layers)
        for name, p in self.named_parameters():
            if p.ndim == 1:
                p.fill_(1.0)
            else:
                std = out_std if name.endswith((".wo", ".w2")) else c.init_std
                p.normal_(0.0, std, generator=generator)

    def forward(self, ids, batch, seq, lam):
        c = self.c
        x = F.embedding(ids, self.tok_embeddings).float()
        aux = torch.zeros((), device=ids.device)
        stats = []
        for layer in self.layers:
            x = x + layer.attention(rmsnorm(x, layer.attention_norm, c.norm_eps), self.rope, batch, seq)
            h = rmsnorm(x, layer.ffn_norm, c.norm_eps)
            if c.moe:
                y, layer_aux, counts = layer.moe(h, lam)
                aux = aux + layer_aux
                stats.append(counts)
            else:
                y = layer.ffn(h)
            x = x + y
        logits = F.linear(rmsnorm(x, self.norm, c.norm_eps), self.output).float()
        return logits, aux, stats

    def n_params(self):
        return sum(p.numel() for p in self.parameters())

    def n_active_params(self):
        c = self.c
        if not c.moe:
            return self.n_params()
        expert = sum(p.numel() for n, p in self.named_parameters()
                     if n.endswith((".moe.w1", ".moe.w3", ".moe.w2")))
        return self.n_params() - expert + expert // c.experts * c.active_experts


def autocast(device, precision):
    """bf16 autocast for "bf16", nothing for "f32"."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
