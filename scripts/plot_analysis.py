#!/usr/bin/env python3
"""Plots of `remoe analyze` JSON files (and of the first steps of run directories).

    scripts/plot_analysis.py ANALYSIS.json [ANALYSIS.json ...] --out DIR
                             [--runs RUN_DIR ...] [--first N] [--text NAME]

Each ANALYSIS.json is named after its file: analysis_<name>.json → <name>. Writes into DIR (PNG):
    domains_<name>.png     per analysis: one panel per MoE layer, texts (domains) × experts, the
                           share of each text's routed (token, expert) pairs per expert
    rare_vs_common.png     mean active experts per token (mean over layers) against the
                           frequency of the token's byte and byte pair in the training text, one
                           line per analysis, on the text --text (default: the first text)
    layer_sparsity.png     per-layer sparsity on --text, one line per analysis, targets dashed
    flip_rate.png          per-layer token flip rate on --text between the two checkpoints of
                           each analysis that has a "compare" block
    stages.png             with --runs: λ (log scale) and sparsity over the first N steps (--first,
                           default 400) of each ReLU-routed run, target dashed: the paper's
                           three stages

Needs Python >= 3.11 and matplotlib (scripts/requirements-plot.txt); the readers work without it.
Exit status: 0, or 1 with one line naming the file and what is wrong.
"""
import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plot  # noqa: E402  (scripts/plot.py: run directories, PlotError, drawing helpers)

PlotError = plot.PlotError


def analysis_name(path):
    stem = Path(path).stem
    return stem[len("analysis_"):] if stem.startswith("analysis_") and len(stem) > 9 else stem


def _list_of_numbers(v, n=None):
    return isinstance(v, list) and (n is None or len(v) == n) and all(plot._is_number(x) for x in v)


def read_analysis(path):
    """A `remoe analyze` JSON document, checked for the fields the plots and the report read."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlotError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PlotError(f"{path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise PlotError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict) or doc.get("kind") != "remoe-analyze":
        raise PlotError(f"{path}: not a remoe analyze document (no \"kind\": \"remoe-analyze\")")
    model = doc.get("model")
    if not isinstance(model, dict) or not all(
            isinstance(model.get(k), int) and model[k] >= 1 for k in ("n_experts", "moe_layers")):
        raise PlotError(f"{path}: \"model\" needs positive integers n_experts and moe_layers")
    E, L = model["n_experts"], model["moe_layers"]
    texts = doc.get("texts")
    if not isinstance(texts, list) or not texts:
        raise PlotError(f"{path}: \"texts\" must be a non-empty list")
    for i, t in enumerate(texts):
        where = f"{path}: texts[{i}]"
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise PlotError(f"{where}: needs a \"name\"")
        for key in ("layer_sparsity", "active_experts", "max_share"):
            if not _list_of_numbers(t.get(key), L):
                raise PlotError(f"{where} ({t['name']}): \"{key}\" must be {L} numbers")
        usage = t.get("expert_usage")
        if not (isinstance(usage, list) and len(usage) == L and all(_list_of_numbers(r, E) for r in usage)):
            raise PlotError(f"{where} ({t['name']}): \"expert_usage\" must be {L} × {E} numbers")
        for kind in ("byte", "pair"):
            buckets = t.get("frequency", {}).get(kind, {}).get("buckets")
            if not isinstance(buckets, list) or not buckets:
                raise PlotError(f"{where} ({t['name']}): no frequency.{kind}.buckets")
    doc["_path"] = str(path)
    doc["_name"] = analysis_name(path)
    return doc


def text_of(doc, name):
    """The text entry called `name` (None: the first)."""
    texts = doc["texts"]
    if name is None:
        return texts[0]
    for t in texts:
        if t["name"] == name:
            return t
    raise PlotError(f"{doc['_path']}: no text named '{name}' (it has "
                    + ", ".join(t["name"] for t in texts) + ")")


def bucket_curve(text, kind, min_tokens=1):
    """[(bucket index, label, mean active experts, tokens)] for the populated buckets."""
    out = []
    for i, b in enumerate(text["frequency"][kind]["buckets"]):
        if b.get("tokens", 0) >= min_tokens and plot._is_number(b.get("active_experts_mean")):
            out.append((b.get("bucket", i), b.get("label", str(b.get("bucket", i))),
                        b["active_experts_mean"], b["tokens"]))
    return out


def compare_of(doc, name):
    """The compare entry of text `name` (None: the first), or None without --compare."""
    comp = doc.get("compare")
    if not isinstance(comp, dict):
        return None
    for c in comp.get("texts", []):
        if name is None or c.get("name") == name:
            return c
    return None


# --- drawing ---------------------------------------------------------------------------------

def plot_domains(doc, out):
    plt = plot._plt()
    texts = doc["texts"]
    L, E = doc["model"]["moe_layers"], doc["model"]["n_experts"]
    cols = min(L, 4)
    rows = math.ceil(L / cols)
    fig, axes = plt.subplots(rows, cols, squeeze=False, layout="constrained",
                             figsize=(min(2.2 + 0.32 * E, 9) * cols,
                                      1.0 + (0.6 + 0.45 * len(texts)) * rows))
    peak = max(max(max(t["expert_usage"][l]) for t in texts) for l in range(L)) or 1.0
    image = None
    for l in range(rows * cols):
        ax = axes[l // cols][l % cols]
        if l >= L:
            ax.axis("off")
            continue
        grid = [t["expert_usage"][l] for t in texts]
        image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=peak, aspect="auto")
        ax.set_title(f"layer {l}", fontsize=9)
        ax.set_yticks(range(len(texts)))
        ax.set_yticklabels([t["name"] for t in texts] if l % cols == 0 else [], fontsize=8)
        ax.set_xticks(range(0, E, max(1, E // 8)))
        ax.tick_params(axis="x", labelsize=7)
        if l // cols == rows - 1:
            ax.set_xlabel("expert", fontsize=8)
    fig.colorbar(image, ax=axes, label="share of the text's routed pairs", shrink=0.8)
    fig.suptitle(f"{doc['_name']} ({doc['model'].get('router')}, E = {E}, step {doc.get('step')}): "
                 f"expert usage per text (uniform = 1/E = {1 / E:.3g})", fontsize=10)
    fig.savefig(out / f"domains_{plot.file_stem(doc['_name'])}.png", dpi=110)
    plt.close(fig)
    print(f"wrote {out / ('domains_' + plot.file_stem(doc['_name']) + '.png')}")


def plot_rare_vs_common(docs, text, out):
    plt = plot._plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, kind, title in ((axes[0], "byte", "byte"), (axes[1], "pair", "byte pair (previous, this)")):
        labels = {}
        for doc in docs:
            t = text_of(doc, text)
            pts = bucket_curve(t, kind)
            labels.update({p[0]: p[1] for p in pts})
            ax.plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=doc["_name"])
        ax.set_xticks(sorted(labels))
        ax.set_xticklabels([labels[b] for b in sorted(labels)], rotation=30, fontsize=7)
        ax.set_title(f"active experts vs frequency of the {title} in the training text", fontsize=9)
        ax.set_xlabel("relative frequency (common → rare)")
        ax.set_ylabel("mean active experts per token (mean over layers)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"text: {text or docs[0]['texts'][0]['name']}", fontsize=10)
    plot._save(fig, out / "rare_vs_common.png")


def plot_layer_sparsity(docs, text, out):
    plt = plot._plt()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for doc in docs:
        t = text_of(doc, text)
        line, = ax.plot(range(len(t["layer_sparsity"])), t["layer_sparsity"], marker="o", label=doc["_name"])
        target = doc["model"].get("target_sparsity")
        if plot._is_number(target):
            ax.axhline(target, color=line.get_color(), ls="--", lw=0.8)
    ax.set_title(f"sparsity per layer on {text or 'the first text'} (dashed: 1 − k/E)")
    ax.set_xlabel("MoE layer")
    ax.set_ylabel("1 − active / (tokens × experts)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    plot._save(fig, out / "layer_sparsity.png")


def plot_flip_rate(docs, text, out):
    with_compare = [(d, compare_of(d, text)) for d in docs]
    with_compare = [(d, c) for d, c in with_compare if c and _list_of_numbers(c.get("token_flip_rate"))]
    if not with_compare:
        print("plot_analysis.py: no analysis has a compare block: flip_rate.png not drawn", file=sys.stderr)
        return
    plt = plot._plt()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for doc, c in with_compare:
        ax.plot(range(len(c["token_flip_rate"])), c["token_flip_rate"], marker="o",
                label=f"{doc['_name']} (step {doc['compare'].get('step')} → {doc.get('step')})")
    ax.set_title("routing flip rate: tokens whose set of active experts differs")
    ax.set_xlabel("MoE layer")
    ax.set_ylabel("fraction of tokens")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    plot._save(fig, out / "flip_rate.png")


def plot_stages(runs, first, out):
    relu = [r for r in runs if r.moe and plot.uses_lambda(r.config, r.records)]
    if not relu:
        print("plot_analysis.py: no ReLU-routed run: stages.png not drawn", file=sys.stderr)
        return
    plt = plot._plt()
    fig, (ax_l, ax_s) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for run in relu:
        steps, lam = run.series("lambda")
        keep = [i for i, s in enumerate(steps) if s <= first]
        ax_l.plot([steps[i] for i in keep], [lam[i] for i in keep], label=run.name)
        steps, sp = run.series("sparsity")
        keep = [i for i, s in enumerate(steps) if s <= first]
        line, = ax_s.plot([steps[i] for i in keep], [sp[i] for i in keep], label=run.name)
        if run.target is not None:
            ax_s.axhline(run.target, color=line.get_color(), ls="--", lw=0.8)
    ax_l.set_yscale("log")
    ax_l.set_ylabel("λ")
    ax_l.set_title(f"λ and sparsity over the first {first} steps (dashed: target 1 − k/E)")
    ax_l.grid(alpha=0.3, which="both")
    ax_l.legend(fontsize=8)
    ax_s.set_ylabel("sparsity")
    ax_s.set_xlabel("step")
    ax_s.set_ylim(-0.02, 1.02)
    ax_s.grid(alpha=0.3)
    plot._save(fig, out / "stages.png")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("analyses", nargs="*", metavar="ANALYSIS.json", help="remoe analyze --out files")
    p.add_argument("--out", required=True, metavar="DIR", help="where the PNGs go (created)")
    p.add_argument("--runs", nargs="*", default=[], metavar="RUN_DIR", help="run directories for stages.png")
    p.add_argument("--first", type=int, default=400, help="steps stages.png shows (default 400)")
    p.add_argument("--text", default=None, help="the text the line plots use (default: each file's first)")
    args = p.parse_args(argv)
    if args.first < 1:
        p.error(f"--first must be a positive integer, got {args.first}")
    if not args.analyses and not args.runs:
        p.error("nothing to plot: give ANALYSIS.json files and/or --runs")
    try:
        docs = [read_analysis(a) for a in args.analyses]
        names = [d["_name"] for d in docs]
        if len(set(names)) != len(names):
            raise PlotError("two analyses share a name: " + ", ".join(sorted(n for n in names if names.count(n) > 1)))
        runs = [plot.Run(d, n) for d, n in zip(args.runs, plot.run_names(args.runs))]
        for d in docs:
            text_of(d, args.text)  # fail before drawing
        _, out = plot.open_output(args.out)
        for d in docs:
            plot_domains(d, out)
        if docs:
            plot_rare_vs_common(docs, args.text, out)
            plot_layer_sparsity(docs, args.text, out)
            plot_flip_rate(docs, args.text, out)
        if runs:
            plot_stages(runs, args.first, out)
    except PlotError as e:
        print(f"plot_analysis.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
