"""A remoe config, resolved (every key present, as `remoe train --config F --print-config` prints
it and a checkpoint's state.json "config" holds), as the peer reads it.

The peer implements what remoe's main results use: a dense SwiGLU FFN, or an MoE layer with ReLU
routing (ReMoE, load-balanced or plain L1) or softmax top-k routing (dMoE, optionally
renormalised), with granularity, on text read as bytes, on one GPU. Anything else is refused
with the key, its value and what the peer supports — never silently run as something else.
"""
import tomllib
from dataclasses import dataclass


class ConfigError(ValueError):
    pass


@dataclass
class PeerConfig:
    # [model]
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ffn: int
    norm_eps: float
    rope_base: float
    init_std: float
    ffn: str            # "dense" | "moe"
    router: str         # "relu" | "topk"
    n_experts: int      # before granularity
    top_k: int          # before granularity
    granularity: int
    l1: str             # "load_balanced" | "plain"
    aux_coeff: float
    renormalize: bool
    # [data]
    data_path: str
    val_path: str
    val_fraction: float
    # [train]
    seed: int
    steps: int
    batch_size: int
    seq_len: int
    grad_accum: int
    # [optim]
    lr: float
    min_lr: float
    warmup_steps: int
    weight_decay: float
    beta1: float
    beta2: float
    eps: float
    grad_clip: float
    # [remoe]
    lambda0: float
    alpha: float
    # [eval]
    eval_batches: int

    @property
    def experts(self):
        return self.n_experts * self.granularity

    @property
    def active_experts(self):
        return self.top_k * self.granularity

    @property
    def expert_d_ffn(self):
        return self.d_ffn // self.granularity

    @property
    def head_dim(self):
        return self.d_model // self.n_heads

    @property
    def target_sparsity(self):
        return 1.0 - self.active_experts / self.experts

    @property
    def moe(self):
        return self.ffn == "moe"


# (section, key, field, type) for every value the peer reads.
_FIELDS = [
    ("model", "vocab_size", "vocab_size", int), ("model", "d_model", "d_model", int),
    ("model", "n_layers", "n_layers", int), ("model", "n_heads", "n_heads", int),
    ("model", "n_kv_heads", "n_kv_heads", int), ("model", "d_ffn", "d_ffn", int),
    ("model", "norm_eps", "norm_eps", float), ("model", "rope_base", "rope_base", float),
    ("model", "init_std", "init_std", float), ("model", "ffn", "ffn", str),
    ("model", "router", "router", str), ("model", "n_experts", "n_experts", int),
    ("model", "top_k", "top_k", int), ("model", "granularity", "granularity", int),
    ("model", "l1", "l1", str), ("model", "aux_coeff", "aux_coeff", float),
    ("model", "renormalize", "renormalize", bool),
    ("data", "path", "data_path", str), ("data", "val_path", "val_path", str),
    ("data", "val_fraction", "val_fraction", float),
    ("train", "seed", "seed", int), ("train", "steps", "steps", int),
    ("train", "batch_size", "batch_size", int), ("train", "seq_len", "seq_len", int),
    ("train", "grad_accum", "grad_accum", int),
    ("optim", "lr", "lr", float), ("optim", "min_lr", "min_lr", float),
    ("optim", "warmup_steps", "warmup_steps", int), ("optim", "weight_decay", "weight_decay", float),
    ("optim", "beta1", "beta1", float), ("optim", "beta2", "beta2", float),
    ("optim", "eps", "eps", float), ("optim", "grad_clip", "grad_clip", float),
    ("remoe", "lambda0", "lambda0", float), ("remoe", "alpha", "alpha", float),
    ("eval", "batches", "eval_batches", int),
]

# Keys whose other values the peer does not implement: (section, key, the value it needs, why).
_UNSUPPORTED = [
    ("model", "capacity_factor", 0.0, "capacity dropping"),
    ("model", "z_loss_coeff", 0.0, "the router z-loss"),
    ("model", "expert_bias", False, "aux-loss-free balancing"),
    ("model", "k_warm", 0, "the TopK warm-up"),
    ("data", "format", "text", "token shards"),
    ("data", "within_documents", False, "document-bounded windows"),
    ("dist", "expert_parallel", 1, "expert parallelism"),
]


def parse(text, source):
    """A PeerConfig from a resolved TOML config; ConfigError names `source`, the key and what
    is expected."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    values = {}
    for section, key, field, kind in _FIELDS:
        table = doc.get(section)
        if not isinstance(table, dict) or key not in table:
            raise ConfigError(f"{source}: [{section}] {key} is missing; the peer reads resolved "
                              "configs (`remoe train --config F --print-config`, or a "
                              "checkpoint's state.json)")
        v = table[key]
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            raise ConfigError(f"{source}: [{section}] {key} = {v!r}, expected {kind.__name__}")
        values[field] = v
    for section, key, needed, what in _UNSUPPORTED:
        v = doc.get(section, {}).get(key, needed)
        if v != needed:
            raise ConfigError(f"{source}: [{section}] {key} = {v!r}: the peer does not implement "
                              f"{what} (it needs {key} = {needed!r})")
    c = PeerConfig(**values)
    if c.ffn not in ("dense", "moe"):
        raise ConfigError(f"{source}: [model] ffn = {c.ffn!r}, expected \"dense\" or \"moe\"")
    if c.moe and c.router not in ("relu", "topk"):
        raise ConfigError(f"{source}: [model] router = {c.router!r}: the peer implements "
                          "\"relu\" (ReMoE) and \"topk\"")
    if c.l1 not in ("load_balanced", "plain"):
        raise ConfigError(f"{source}: [model] l1 = {c.l1!r}, expected \"load_balanced\" or \"plain\"")
    if c.vocab_size != 256:
        raise ConfigError(f"{source}: [model] vocab_size = {c.vocab_size}: the peer reads text as "
                          "bytes (256)")
    return c


def override_args(sets, prog):
    """remoe's command-line overrides (--KEY VALUE) from KEY=VALUE strings; SystemExit naming
    `prog` and the bad one otherwise."""
    args = []
    for kv in sets:
        if "=" not in kv:
            raise SystemExit(f"{prog}: --set expects KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        args += [f"--{k}", v]
    return args


def load(path):
    with open(path, encoding="utf-8") as f:
        return parse(f.read(), path)
