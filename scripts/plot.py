#!/usr/bin/env python3
"""Plots of remoe runs, from each run directory's metrics.jsonl and config.toml.

    scripts/plot.py RUN_DIR [RUN_DIR ...] --out DIR

writes into DIR (PNG):
    loss.png                   training loss vs step, validation loss where logged; runs overlaid
    router.png                 λ (log scale) and sparsity vs step for the MoE runs, each run's
                               target sparsity 1 − k/E dashed
    expert_load_<run>.png      per MoE run: share of routed tokens per (layer, expert), averaged
                               over the last 10% of steps (--tail)
    layer_sparsity_<run>.png   per MoE run: each layer's sparsity vs step, target dashed

Needs Python >= 3.11 (tomllib) and matplotlib, kept out of the build's set-up:
    python3 -m venv .venv-plot && .venv-plot/bin/pip install -r scripts/requirements-plot.txt
    .venv-plot/bin/python scripts/plot.py runs/tiny --out plots/
"""
import argparse
import json
import math
import re
import sys
from pathlib import Path

if sys.version_info < (3, 11):
    sys.exit(f"plot.py: Python >= 3.11 is needed (tomllib), this is {sys.version.split()[0]}")
import tomllib


class PlotError(Exception):
    """Bad input: the message names the file (and line) and what is wrong."""


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_metrics(path):
    """The records of a metrics.jsonl, in order. A last line without its newline (a run killed
    mid-write) is dropped with a warning; any other unreadable line is an error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlotError(f"{path}: not found (is this a remoe run directory?)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PlotError(f"{path}: cannot read: {e}") from None
    lines = text.split("\n")
    records = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):  # no newline after it: cut off
                print(f"plot.py: warning: {path}:{i}: ignoring an incomplete last line", file=sys.stderr)
                break
            raise PlotError(f"{path}:{i}: not JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(r, dict):
            raise PlotError(f"{path}:{i}: expected a JSON object, got {type(r).__name__}")
        for key in ("step", "loss"):
            if not _is_number(r.get(key)):
                raise PlotError(f"{path}:{i}: '{key}' must be a number, got {r.get(key)!r}")
        records.append(r)
    if not records:
        raise PlotError(f"{path}: no steps logged yet")
    return records


def read_config(path):
    """The run's config.toml as a dict, or None (with a warning) when the file is absent."""
    path = Path(path)
    if not path.exists():
        print(f"plot.py: warning: {path} not found: no target sparsity drawn", file=sys.stderr)
        return None
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as e:
        raise PlotError(f"{path}: cannot read: {e}") from None


def _model_key(config, key, default, source):
    value = config.get("model", {}).get(key, default)
    if key in ("n_experts", "top_k", "granularity") and not (
            isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise PlotError(f"{source}: model.{key} = {value!r}: expected a positive integer")
    return value


def is_moe(config, records):
    if config is not None:
        return config.get("model", {}).get("ffn", "moe") == "moe"
    return any("layer_sparsity" in r for r in records)


def uses_lambda(config, records):
    """λ only moves for ReLU routing; TopK runs log the unused λ0."""
    if config is not None:
        return is_moe(config, records) and config.get("model", {}).get("router", "relu") == "relu"
    return len({r.get("lambda") for r in records}) > 1


def target_sparsity(config, source="config.toml"):
    """1 − k/E with granularity G applied to both (REMOE_SPEC §4: the ratio does not move),
    or None without a config."""
    if config is None:
        return None
    g = _model_key(config, "granularity", 1, source)
    e = _model_key(config, "n_experts", 8, source) * g
    k = _model_key(config, "top_k", 1, source) * g
    if k > e:
        raise PlotError(f"{source}: model.top_k = {k // g} exceeds model.n_experts = {e // g}")
    return 1.0 - k / e


def mean_expert_load(records, tail=0.1, source="metrics.jsonl"):
    """(layers × experts) share of routed tokens averaged over the last ⌈tail·n⌉ of the n steps
    that log expert_load, and the first and last step averaged; None when no step logs it."""
    loads = [(r["step"], r["expert_load"]) for r in records if "expert_load" in r]
    if not loads:
        return None
    n = max(1, math.ceil(tail * len(loads)))
    window = loads[-n:]
    shape = None
    total = None
    for step, load in window:
        ok = isinstance(load, list) and load and all(
            isinstance(row, list) and all(_is_number(v) for v in row) for row in load)
        this = (len(load), len(load[0])) if ok else None
        if not ok or any(len(row) != this[1] for row in load):
            raise PlotError(f"{source}: step {step}: expert_load must be a non-empty list of "
                            "equally long lists of numbers (layer × expert)")
        if shape is None:
            shape, total = this, [[0.0] * this[1] for _ in range(this[0])]
        elif this != shape:
            raise PlotError(f"{source}: step {step}: expert_load is {this[0]}×{this[1]}, "
                            f"earlier steps {shape[0]}×{shape[1]}")
        for l, row in enumerate(load):
            for e, v in enumerate(row):
                total[l][e] += v
    mean = [[v / len(window) for v in row] for row in total]
    return mean, window[0][0], window[-1][0]


def run_names(dirs):
    """Each directory's name; the whole path as given where two runs share a name."""
    names = [Path(d).resolve().name or str(d) for d in dirs]
    return [str(d) if names.count(n) > 1 else n for n, d in zip(names, dirs)]


def file_stem(name):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"


class Run:
    def __init__(self, directory, name):
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise PlotError(f"{directory}: not a directory")
        self.name = name
        self.metrics_path = self.dir / "metrics.jsonl"
        self.records = read_metrics(self.metrics_path)
        self.config_path = self.dir / "config.toml"
        self.config = read_config(self.config_path)
        self.moe = is_moe(self.config, self.records)
        self.target = target_sparsity(self.config, self.config_path) if self.moe else None

    def series(self, key):
        pts = [(r["step"], r[key]) for r in self.records if _is_number(r.get(key))]
        return [p[0] for p in pts], [p[1] for p in pts]


# --- drawing (matplotlib is imported only here, so the readers above work without it) -------

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def open_output(out):
    """pyplot, once the folder `out` exists: a PlotError says how to install matplotlib when it
    is missing, or why the folder cannot be made."""
    try:
        plt = _plt()
    except ImportError:
        raise PlotError("matplotlib is not installed: python3 -m venv .venv-plot && "
                        ".venv-plot/bin/pip install -r scripts/requirements-plot.txt, "
                        "then run this with .venv-plot/bin/python") from None
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PlotError(f"--out {out}: cannot create: {e}") from None
    return plt, out


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _plt().close(fig)
    print(f"wrote {path}")


def plot_loss(runs, colors, out):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    for run, color in zip(runs, colors):
        ax.plot(*run.series("loss"), color=color, lw=1.0, alpha=0.85, label=f"{run.name} train")
        steps, val = run.series("val_loss")
        if steps:
            ax.plot(steps, val, color=color, ls="--", marker="o", ms=4, label=f"{run.name} val")
    ax.set_title("Loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, out / "loss.png")


def plot_router(runs, colors, out):
    moe = [(r, c) for r, c in zip(runs, colors) if r.moe]
    if not moe:
        print("plot.py: no MoE run: router.png not drawn", file=sys.stderr)
        return
    plt = _plt()
    fig, (ax_l, ax_s) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for run, color in moe:
        if uses_lambda(run.config, run.records):
            ax_l.plot(*run.series("lambda"), color=color, lw=1.2, label=run.name)
        ax_s.plot(*run.series("sparsity"), color=color, lw=1.2, label=run.name)
    # One dashed line per distinct target: in the run's colour when it is that run's alone,
    # black when runs share it (named unless every run does).
    targets = {}
    for run, color in moe:
        if run.target is not None:
            targets.setdefault(round(run.target, 12), []).append((run, color))
    for target, owners in targets.items():
        label = f"target 1 − k/E = {target:.4g}"
        if len(owners) < len(moe):
            label += " (" + ", ".join(run.name for run, _ in owners) + ")"
        ax_s.axhline(target, color=owners[0][1] if len(owners) == 1 else "black", ls="--", lw=1.0,
                     label=label)
    ax_l.set_yscale("log")
    ax_l.set_title("L1 coefficient λ (adaptive, ReLU routing)")
    ax_l.set_ylabel("λ")
    ax_l.grid(alpha=0.3, which="both")
    if ax_l.lines:
        ax_l.legend()
    else:
        ax_l.text(0.5, 0.5, "no ReLU-routed run", ha="center", va="center",
                  transform=ax_l.transAxes)
    ax_s.set_title("Sparsity: 1 − active / (tokens × experts), mean over layers")
    ax_s.set_xlabel("step")
    ax_s.set_ylabel("sparsity")
    ax_s.set_ylim(-0.02, 1.02)
    ax_s.grid(alpha=0.3)
    ax_s.legend()
    _save(fig, out / "router.png")


def plot_expert_load(run, out, tail):
    found = mean_expert_load(run.records, tail, run.metrics_path)
    if found is None:
        return
    load, first, last = found
    n_layers, n_experts = len(load), len(load[0])
    plt = _plt()
    fig, ax = plt.subplots(figsize=(min(3 + 0.55 * n_experts, 20), min(2 + 0.45 * n_layers, 14)))
    image = ax.imshow(load, cmap="viridis", vmin=0, aspect="auto")
    fig.colorbar(image, ax=ax, label="share of routed tokens")
    if n_experts <= 32 and n_layers <= 32:
        peak = max(max(row) for row in load) or 1.0
        for l in range(n_layers):
            for e in range(n_experts):
                v = load[l][e]
                ax.text(e, l, f"{v:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if v > 0.6 * peak else "white")
    ax.set_xticks(range(n_experts))
    ax.set_yticks(range(n_layers))
    ax.set_xlabel("expert")
    ax.set_ylabel("layer")
    span = f"step {first}" if first == last else f"steps {first}–{last}"
    ax.set_title(f"{run.name}: expert load, mean over {span} (uniform = 1/E = {1 / n_experts:.3g})")
    _save(fig, out / f"expert_load_{file_stem(run.name)}.png")


def plot_layer_sparsity(run, out):
    rows = [(r["step"], r["layer_sparsity"]) for r in run.records
            if isinstance(r.get("layer_sparsity"), list)]
    if not rows:
        return
    n_layers = max(len(s) for _, s in rows)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    cmap = plt.get_cmap("viridis" if n_layers > 10 else "tab10")
    for l in range(n_layers):
        pts = [(step, s[l]) for step, s in rows if l < len(s) and _is_number(s[l])]
        color = cmap(l / max(n_layers - 1, 1)) if n_layers > 10 else cmap(l)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, lw=1.0, label=f"layer {l}")
    if run.target is not None:
        ax.axhline(run.target, color="black", ls="--", lw=1.0,
                   label=f"target 1 − k/E = {run.target:.4g}")
    ax.set_title(f"{run.name}: sparsity per layer")
    ax.set_xlabel("step")
    ax.set_ylabel("sparsity")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(ncol=2 if n_layers > 8 else 1, fontsize=8 if n_layers > 8 else None)
    _save(fig, out / f"layer_sparsity_{file_stem(run.name)}.png")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="a remoe run directory (log.run_dir)")
    p.add_argument("--out", required=True, metavar="DIR", help="where the PNGs go (created)")
    p.add_argument("--tail", type=float, default=0.1,
                   help="fraction of the last steps the expert-load heatmap averages (default 0.1)")
    args = p.parse_args(argv)
    if not 0 < args.tail <= 1:
        p.error(f"--tail must be in (0, 1], got {args.tail}")
    try:
        runs = [Run(d, n) for d, n in zip(args.runs, run_names(args.runs))]
        plt, out = open_output(args.out)
        cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        colors = [cycle[i % len(cycle)] for i in range(len(runs))]
        plot_loss(runs, colors, out)
        plot_router(runs, colors, out)
        for run in runs:
            if run.moe:
                plot_expert_load(run, out, args.tail)
                plot_layer_sparsity(run, out)
    except PlotError as e:
        print(f"plot.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
