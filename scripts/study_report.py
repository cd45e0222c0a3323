#!/usr/bin/env python3
"""docs/REPRODUCTION.md from the study's JSON (scripts/reproduce.sh's last stage).

    scripts/study_report.py [--runs RUN_DIR ...] [--results DIR] [--out FILE]

--runs: the study's run directories (runs/study/<name>); their metrics.jsonl, config.toml and
flips/*.json (remoe analyze --compare of consecutive checkpoints) are summarised into
RESULTS/study.json first. Then the document is written from RESULTS alone (default
docs/reproduction): study.json, eval_<name>_val.json and eval_<name>_test.json (remoe eval
--json), analysis_<name>.json (remoe analyze), dryrun_<name>.txt (remoe train --dry-run),
commands.txt and info.txt (scripts/reproduce.sh). Without study.json the document says that the
study has not been run, and lists the commands that will run it (commands.txt from
`scripts/reproduce.sh --dry-run`). Every number in the document comes from those files.

Needs Python >= 3.11 (tomllib), nothing else. Exit status 0, or 1 with a line naming the file
and what is wrong.
"""
import argparse
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plot  # noqa: E402  (run directories: metrics.jsonl, config.toml)
import plot_analysis  # noqa: E402  (remoe analyze documents)

PlotError = plot.PlotError
RUNS = ["dense", "topk_e8", "remoe_e8", "topk_e32", "remoe_e32", "topk_e8_g4", "remoe_e8_g4"]
# REMOE_SPEC §6: validation loss (nats per GPT-2 token, The Pile, 182M active, k = 1).
PAPER_E = {"TopK": {8: 1.936, 32: 1.874}, "ReMoE": {8: 1.921, 32: 1.852}}
SETTLE_TOL = 0.01  # |S − target| that counts as "at the target"
PAPER_STAGE3_FROM = 100  # the paper's Stage III statistics start at step 100


# --- summaries of a run directory --------------------------------------------------------------

def sparsity_summary(records, target, tol=SETTLE_TOL):
    """The step sparsity against its target: the first step within ±tol (the end of Stages I
    and II), and from then on (and from step 100, the paper's choice) mean, std, the largest
    deviation and the share of steps within ±tol."""
    pts = [(r["step"], r["sparsity"]) for r in records if plot._is_number(r.get("sparsity"))]
    settle = next((s for s, v in pts if abs(v - target) <= tol + 1e-12), None)

    def stats(from_step):
        vals = [v for s, v in pts if from_step is not None and s >= from_step]
        if not vals:
            return None
        dev = [abs(v - target) for v in vals]
        return {"from_step": from_step, "steps": len(vals), "mean": statistics.fmean(vals),
                "std": statistics.pstdev(vals), "max_abs_dev": max(dev),
                "within_tol": sum(d <= tol + 1e-12 for d in dev) / len(dev)}

    return {"target": target, "tolerance": tol, "settle_step": settle,
            "after_settle": stats(settle), "from_step_100": stats(PAPER_STAGE3_FROM)}


def run_summary(run):
    cfg = run.config or {}
    model, train = cfg.get("model", {}), cfg.get("train", {})
    steps, losses = run.series("loss")
    vs, vbpb = run.series("val_bpb")
    out = {
        "dir": str(run.dir),
        "ffn": model.get("ffn", "moe"),
        "router": model.get("router") if run.moe else None,
        "n_experts": model.get("n_experts") if run.moe else None,
        "top_k": model.get("top_k") if run.moe else None,
        "granularity": model.get("granularity", 1) if run.moe else None,
        "steps": train.get("steps"),
        "tokens_per_step": (train.get("batch_size", 0) * train.get("grad_accum", 1) * train.get("seq_len", 0)),
        "last_step": steps[-1] if steps else None,
        "train_loss_last": losses[-1] if losses else None,
        "val_bpb_curve": [[s, v] for s, v in zip(vs, vbpb)],
        "tokens_per_s_median": statistics.median(run.series("tokens_per_s")[1]) if run.series("tokens_per_s")[1] else None,
    }
    if run.moe and run.target is not None:
        out["target_sparsity"] = run.target
        if plot.uses_lambda(run.config, run.records):
            out["sparsity"] = sparsity_summary(run.records, run.target)
            lam = run.series("lambda")
            out["lambda_first_400"] = [[s, v] for s, v in zip(*lam) if s <= 400]
    flips = []
    for f in sorted((run.dir / "flips").glob("*.json")):
        doc = plot_analysis.read_analysis(f)
        c = plot_analysis.compare_of(doc, "wiki") or plot_analysis.compare_of(doc, None)
        if c:
            flips.append({"from_step": doc["compare"].get("step"), "to_step": doc.get("step"),
                          "mean_token_flip_rate": c.get("mean_token_flip_rate"),
                          "mean_mask_flip_rate": c.get("mean_mask_flip_rate")})
    out["flips"] = flips
    return out


def collect(run_dirs, results):
    runs = {}
    for d, name in zip(run_dirs, plot.run_names(run_dirs)):
        runs[name] = run_summary(plot.Run(d, name))
    doc = {"kind": "remoe-study", "runs": runs}
    (results / "study.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {results / 'study.json'}")


# --- reading RESULTS -----------------------------------------------------------------------------

def read_json(path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise PlotError(f"{path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise PlotError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None


def read_eval(path):
    doc = read_json(path)
    if not isinstance(doc, dict) or not plot._is_number(doc.get("bpb")):
        raise PlotError(f"{path}: not a remoe eval --json result (no number \"bpb\")")
    return doc


def read_params(path):
    """(total, active) parameters from remoe train --dry-run's "parameters:" line."""
    text = path.read_text(encoding="utf-8")
    m = re.search(r"parameters: ([\d.]+) ?([kKMG]?) total, ([\d.]+) ?([kKMG]?) active", text)
    if not m:
        raise PlotError(f"{path}: no 'parameters: N total, N active' line (remoe train --dry-run output?)")
    scale = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}
    return float(m[1]) * scale[m[2]], float(m[3]) * scale[m[4]]


def load_results(results):
    study_path = results / "study.json"
    study = read_json(study_path) if study_path.exists() else None
    if study is not None and not (isinstance(study, dict) and isinstance(study.get("runs"), dict)):
        raise PlotError(f"{study_path}: not a study summary (no \"runs\" object)")
    rows = {}
    for name in (study or {}).get("runs", {}):
        row = {"summary": study["runs"][name]}
        for split in ("val", "test"):
            p = results / f"eval_{name}_{split}.json"
            row[split] = read_eval(p) if p.exists() else None
        p = results / f"analysis_{name}.json"
        row["analysis"] = plot_analysis.read_analysis(p) if p.exists() else None
        p = results / f"dryrun_{name}.txt"
        row["params"] = read_params(p) if p.exists() else None
        rows[name] = row
    return study, rows


# --- derived quantities --------------------------------------------------------------------------

def domain_divergence(doc):
    """Per layer, the mean over texts of the total-variation distance between the text's expert
    usage and the mean usage over the texts (0: every text routes alike; at most 1 − 1/texts, for
    texts on disjoint experts)."""
    texts = doc["texts"]
    out = []
    for l in range(doc["model"]["moe_layers"]):
        rows = [t["expert_usage"][l] for t in texts]
        mean = [sum(col) / len(rows) for col in zip(*rows)]
        out.append(statistics.fmean(0.5 * sum(abs(a - b) for a, b in zip(r, mean)) for r in rows))
    return out


def rare_common(doc, text="wiki", kind="byte", min_tokens=1000):
    """(common bucket label, its mean active experts, rare bucket label, its mean) over the
    buckets holding at least min_tokens tokens; None when fewer than two do."""
    try:
        t = plot_analysis.text_of(doc, text)
    except PlotError:
        t = doc["texts"][0]
    pts = plot_analysis.bucket_curve(t, kind, min_tokens)
    if len(pts) < 2:
        return None
    return pts[0][1], pts[0][2], pts[-1][1], pts[-1][2]


def fmt(v, digits=4):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def fmt_params(n):
    return "—" if n is None else f"{n / 1e6:.1f}M"


def label(s):
    if s["ffn"] == "dense":
        return "Dense"
    r = {"relu": "ReMoE", "topk": "TopK"}.get(s["router"], s["router"])
    g = s.get("granularity") or 1
    return f"{r} E={s['n_experts']}" + (f" G={g} (E·G={s['n_experts'] * g}, k·G={s['top_k'] * g})" if g > 1 else f" k={s['top_k']}")


# --- the document -------------------------------------------------------------------------------

DESIGN = """\
## The study

Seven runs, one backbone and one recipe; only the FFN differs (`configs/study/`):

| run | FFN |
|---|---|
| `dense` | dense SwiGLU, d_ffn 2048 |
| `topk_e8`, `remoe_e8` | E = 8 experts of 2048, k = 1 |
| `topk_e32`, `remoe_e32` | E = 32 experts of 2048, k = 1 |
| `topk_e8_g4`, `remoe_e8_g4` | granularity G = 4: E·G = 32 experts of 2048 / 4 = 512, k·G = 4 |

Every run activates the same FFN width per token (2048), so the active parameters match to
within 0.6%: 31.7M for Dense, 31.8M at E = 8, 31.9M at E = 32 and at G = 4 (the routers' E·d
weights make the difference; `remoe train --config configs/study/NAME.toml --dry-run`, copied to
`dryrun_NAME.txt` below). Totals: 208M at E = 8 and G = 4, 812M at E = 32.

**Backbone**: the paper's LLaMA-style decoder (REMOE_SPEC §5) at d_model 512, 8 layers, 8 query /
4 KV heads, SwiGLU 2048, every layer MoE, RoPE base 1e6, init std 0.01, untied embeddings, over
bytes (vocabulary 256), sequence 1024. A third of the paper's smallest model (768 × 12): the size
at which a run of ~82M tokens takes minutes on one H200 — 240 MFLOP per token for training
(6·N + attention), 19.7 PFLOP per run. `configs/small.toml`, the same backbone with E = 8 and
the same 32K tokens a step, ran at 345K (ReLU) and 414K (TopK) tokens/s over 30 steps on an
H200 (bench/results/2026-11-23_h200_gpu_check_c7d61af.json): about 4 minutes per E = 8 run,
longer at E = 32 and for ReMoE's dense first steps.

**Data**: wiki100m as bytes with the corpus's own split: the first 90,000,000 bytes train, the
next 5,000,000 validation, the last 5,000,000 test (`scripts/reproduce.sh` writes them to
.data/wiki100m/ as train.txt, val.txt and test.txt: the trainer does not read .xz). The configs
name train.txt as `data.path` and val.txt as `data.val_path`, so the trainer never sees the test
bytes; `remoe eval --text .data/wiki100m/test.txt` scores them.

**Tokens and batch**: 2500 steps of 32 × 1024 bytes (micro-batches of 8, grad_accum 4) =
81.9M bytes, 0.91 of an epoch: no byte is seen twice on average, every run sees the same windows
in the same order (one seed). The paper's batch is 512 × 1024 over 60k steps; 32 sequences keeps
enough steps (2500) for the λ controller's three stages (~110 steps to settle in the paper) to
be a small part of the run.

**Recipe** (REMOE_SPEC §5, scaled): AdamW β (0.9, 0.999), ε 1e-8, weight decay 0.01 (not on 1-D
parameters), grad clip 1.0, cosine to lr/10 — as the paper — with LR 1e-3 (paper: 5e-4 at 182M
and batch 512; a 32M model at batch 32 trains well at 1e-3, which configs/small.toml also uses)
and 100 warmup steps (4%; the paper's 1% would be 25 steps, over before Stage II ends, whereas
the paper's 600-step warmup outlasted it). ReMoE: λ₀ 1e-8, α 1.2, load-balanced L1. TopK:
softmax over E, top-k of the raw probabilities, aux loss 0.01, dropless.

**Evaluation**: validation and test bits per byte from `remoe eval` over 600 batches of 8 windows
of 1024 (4.9M bytes, windows spread evenly over each 5M split); the trainer also logs a 16-batch
validation every 100 steps (the loss curves).

**Domains**: the study trains on wiki100m only, as the issue asks, so the domain analysis routes
held-out slices of four domains through wiki-trained models: wiki prose (the test split), C code
(code_c), translation catalogues in many languages (po) and Shakespeare — the last three never
seen in training. This asks whether the experts a wiki model learned split by domain, which is
weaker than the paper's setting (domains of its own training mix, The Pile). A model trained on a
mix of the four would answer the paper's question directly; it is not one of the seven runs.

### What `remoe analyze` measures

On fixed windows (the checkpoint's sequence length, spread evenly over each text), a no-grad
forward records each MoE layer's active mask A (tokens × experts) — `train/analyze.h`:

- **active experts** of a token in a layer: the experts with a nonzero gate, Σ_e A[t, e]
  (ReLU routing: any number 0..E; TopK: k);
- **frequency buckets**: the token's byte (and the pair of it and the byte before it, inside the
  window) has relative frequency f in the training split; decade buckets 1e-(b+1) ≤ f < 1e-b,
  then "unseen"; per bucket the mean active experts per layer;
- **layer sparsity**: 1 − ΣA / (T·E) over the text;
- **expert usage** per text and layer: each expert's share of the routed (token, expert) pairs
  (sums to 1); the report's **domain divergence** is, per layer, the mean over texts of the
  total-variation distance between a text's usage and the texts' mean usage (0: all alike);
- **flip rate** between two checkpoints of a run on the same windows: per layer the share of
  tokens whose set of active experts differs (token flip rate), and of mask entries that differ.
  REMOE_SPEC §6 says only that ReMoE's routing is more stable over training than TopK's; these
  are our definitions.
"""


def commands_block(results):
    p = results / "commands.txt"
    if not p.exists():
        return "(no commands.txt: run `scripts/reproduce.sh --dry-run` to list them)\n"
    return "```sh\n" + p.read_text(encoding="utf-8").rstrip("\n") + "\n```\n"


def not_run_document(results):
    return f"""# Reproduction: ReMoE against TopK at small scale

**Status: the study has not been run yet.** The trainer's GPU path has run on an H200 (its
`gpu` suite passes; bench/results/), but no session with a GPU has had the half hour or more of
device time the seven runs take; no number or figure below is a result. When the runs have been made,
`scripts/reproduce.sh` regenerates this document with `scripts/study_report.py` from the JSON it
writes to docs/reproduction/: the bits-per-byte table, the loss curves, λ and sparsity over the
first 400 steps, the domain × expert heatmaps, the rare-vs-common plot, and plain answers to the
four questions of the issue (does ReMoE's validation bpb beat TopK's at E = 8; does the gap grow
at E = 32; does sparsity hold 1 − k/E within ±0.01 after the first stages; do rare tokens get
more experts and do domains specialise).

{DESIGN}
## How to run it

On a GPU machine with a build (`./scripts/setup.sh`) and the corpora in ../shared/data (or the
.xz files in .data/shared, with `REMOE_DATA` pointing there):

```sh
scripts/reproduce.sh            # data, train, eval, analyze, plot, report; again to continue
scripts/reproduce.sh --dry-run  # the commands, without running them
```

`TRAIN_OVERRIDES="--train.steps=1200"` shortens every run to fit a time budget (the report reads
each run's resolved config).

**On the lent GPU machine** (the device tool: 10 minutes a command, 30 of device time a session,
nothing kept between sessions, a few files back from each command), a run's checkpoints never
leave it, so each command trains, evaluates and analyses its runs there and packs what the
report reads into one file per run. Here: `scripts/device_bundle.sh --study` (remoe and the
corpora in .device/, 41 MB); then on the device, with `carry: [".device"]`, about two E = 8 runs
a command:

```sh
STUDY_RUNS="topk_e8 remoe_e8" PACK_DIR=$OUT scripts/reproduce.sh data train eval analyze pack
```

and here, with the returned `study_*.tar.xz` in docs/reproduction/packs/ (commit them: the
runs of a later session join them there), `scripts/reproduce.sh unpack plot report`.

The commands it will run (`scripts/reproduce.sh --dry-run`):

{commands_block(results)}"""


def verdicts(rows):
    lines = []

    def bpb(name, split="val"):
        r = rows.get(name)
        return r[split]["bpb"] if r and r.get(split) else None

    t8, r8, t32, r32 = bpb("topk_e8"), bpb("remoe_e8"), bpb("topk_e32"), bpb("remoe_e32")
    if t8 is not None and r8 is not None:
        lines.append(f"- **E = 8: ReMoE's validation bpb {'beats' if r8 < t8 else 'does not beat'} TopK's**: "
                     f"{r8:.4f} vs {t8:.4f} (gap TopK − ReMoE = {t8 - r8:+.4f} bits/byte).")
    else:
        lines.append("- E = 8: not answered (an evaluation of topk_e8 or remoe_e8 is missing).")
    if None not in (t8, r8, t32, r32):
        g8, g32 = t8 - r8, t32 - r32
        lines.append(f"- **The gap {'grows' if g32 > g8 else 'does not grow'} at E = 32**: "
                     f"{g32:+.4f} bits/byte at E = 32 against {g8:+.4f} at E = 8 "
                     f"(ReMoE {r32:.4f}, TopK {t32:.4f}).")
    else:
        lines.append("- E = 32: not answered (an evaluation is missing).")
    for name in ("remoe_e8", "remoe_e32", "remoe_e8_g4"):
        s = rows.get(name, {}).get("summary", {}).get("sparsity") if name in rows else None
        if not s:
            continue
        a = s.get("after_settle")
        if not a:
            lines.append(f"- **{name}: sparsity never came within ±{SETTLE_TOL} of {s['target']:.4f}.**")
            continue
        holds = a["within_tol"] >= 0.95
        lines.append(
            f"- **{name}: sparsity {'holds' if holds else 'does not hold'} 1 − k/E = {s['target']:.4f} within "
            f"±{SETTLE_TOL}** after step {s['settle_step']} (the first step within it, the end of Stages I-II): "
            f"mean {a['mean']:.4f} ± {a['std']:.4f}, {100 * a['within_tol']:.1f}% of {a['steps']} steps within, "
            f"largest deviation {a['max_abs_dev']:.4f} (criterion: ≥ 95% of steps within).")
    for name in ("remoe_e8", "remoe_e32", "remoe_e8_g4"):
        doc = rows.get(name, {}).get("analysis") if name in rows else None
        if not doc:
            continue
        for kind, what in (("byte", "bytes"), ("pair", "byte pairs")):
            rc = rare_common(doc, kind=kind)
            if rc is None:
                continue
            lines.append(f"- **{name}: rare {what} {'get more' if rc[3] > rc[1] else 'do not get more'} experts** "
                         f"than common ones on the wiki test text: {rc[3]:.3f} active experts per token "
                         f"in the rarest bucket with ≥ 1000 tokens ({rc[2]}) against {rc[1]:.3f} in the "
                         f"most common ({rc[0]}).")
    for e in ("e8", "e32", "e8_g4"):
        a, b = rows.get(f"remoe_{e}", {}).get("analysis"), rows.get(f"topk_{e}", {}).get("analysis")
        if a and b:
            da, db = statistics.fmean(domain_divergence(a)), statistics.fmean(domain_divergence(b))
            lines.append(f"- **{e.upper()}: domains {'specialise more under ReMoE' if da > db else 'do not specialise more under ReMoE'}** "
                         f"than under TopK: domain divergence (mean over layers) {da:.3f} vs {db:.3f}.")
    return "\n".join(lines) + "\n"


def results_document(study, rows, results):
    info = (results / "info.txt").read_text(encoding="utf-8").strip() if (results / "info.txt").exists() else "not recorded"
    out = ["# Reproduction: ReMoE against TopK at small scale\n",
           "Generated by `scripts/study_report.py` from the JSON in docs/reproduction/ "
           "(written by `scripts/reproduce.sh`); do not edit by hand.\n",
           f"Machine (remoe info): {info.replace(chr(10), '; ')}\n",
           "## Answers\n", verdicts(rows),
           "## Bits per byte\n",
           "| run | FFN | active params | total params | tokens | val bpb | test bpb | trainer's last val bpb |",
           "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        s = r["summary"]
        total, active = r["params"] or (None, None)
        tokens = (s.get("last_step") or 0) * (s.get("tokens_per_step") or 0)
        last_val = s["val_bpb_curve"][-1][1] if s.get("val_bpb_curve") else None
        out.append(f"| `{name}` | {label(s)} | {fmt_params(active)} | {fmt_params(total)} | {tokens:,} "
                   f"| {fmt(r['val']['bpb'] if r['val'] else None)} | {fmt(r['test']['bpb'] if r['test'] else None)} "
                   f"| {fmt(last_val)} |")
    out += ["", "val and test: `remoe eval` (eval_NAME_val.json, eval_NAME_test.json); the last column is "
            "the trainer's 16-batch validation at its last evaluation (metrics.jsonl, via study.json).\n",
            "## Sparsity and λ (ReMoE)\n",
            "| run | target | settled at step | mean ± std after | within ±0.01 | largest deviation | from step 100: mean ± std |",
            "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        s = r["summary"].get("sparsity")
        if not s:
            continue
        a, p = s.get("after_settle"), s.get("from_step_100")
        out.append(f"| `{name}` | {s['target']:.4f} | {fmt(s['settle_step'])} | "
                   + (f"{a['mean']:.4f} ± {a['std']:.4f} | {100 * a['within_tol']:.1f}% | {a['max_abs_dev']:.4f}" if a else "— | — | —")
                   + (f" | {p['mean']:.4f} ± {p['std']:.4f} |" if p else " | — |"))
    out += ["", "![λ and sparsity over the first 400 steps](reproduction/stages.png)\n",
            "![λ and sparsity over the whole runs](reproduction/router.png)\n",
            "## Loss curves\n", "![training and validation loss](reproduction/loss.png)\n",
            "## Routing analysis (remoe analyze, wiki test text and three unseen domains)\n",
            "| run | sparsity on wiki (per layer: min … max) | domain divergence (mean, max over layers) | token flip rate, last two checkpoints (wiki, mean over layers) |",
            "|---|---|---|---|"]
    for name, r in rows.items():
        doc = r["analysis"]
        if not doc:
            continue
        try:
            t = plot_analysis.text_of(doc, "wiki")
        except PlotError:
            t = doc["texts"][0]
        dd = domain_divergence(doc)
        c = plot_analysis.compare_of(doc, t["name"])
        out.append(f"| `{name}` | {min(t['layer_sparsity']):.4f} … {max(t['layer_sparsity']):.4f} | "
                   f"{statistics.fmean(dd):.3f}, {max(dd):.3f} | "
                   + (f"{c['mean_token_flip_rate']:.4f} (step {doc['compare']['step']} → {doc['step']})" if c else "—") + " |")
    flips = [(n, r["summary"]["flips"]) for n, r in rows.items() if r["summary"].get("flips")]
    if flips:
        out += ["", "Token flip rate over training (wiki, mean over layers, consecutive kept checkpoints):", ""]
        for n, f in flips:
            out.append(f"- `{n}`: " + ", ".join(f"{x['from_step']}→{x['to_step']}: {fmt(x['mean_token_flip_rate'])}" for x in f))
    out += ["", "![active experts against byte and byte-pair frequency](reproduction/rare_vs_common.png)\n",
            "![sparsity per layer](reproduction/layer_sparsity.png)\n",
            "![flip rate per layer](reproduction/flip_rate.png)\n"]
    for name, r in rows.items():
        if r["analysis"]:
            out.append(f"![{name}: expert usage per domain](reproduction/domains_{name}.png)\n")
    out += ["## Against the paper (REMOE_SPEC §6)\n",
            "The paper reports validation loss in nats per GPT-2 token on The Pile after ~30B tokens "
            "at 182M active parameters; this study reports bits per byte on Wikipedia after 82M bytes "
            "at 32M. Only the direction and the relative size of the gaps compare:\n",
            "| E | paper TopK − ReMoE (nats/token) | relative to TopK | here TopK − ReMoE (val bpb) | relative to TopK |",
            "|---|---|---|---|---|"]
    for e in (8, 32):
        pt, pr = PAPER_E["TopK"][e], PAPER_E["ReMoE"][e]
        t = rows.get(f"topk_e{e}", {}).get("val")
        r = rows.get(f"remoe_e{e}", {}).get("val")
        here = (t["bpb"] - r["bpb"], (t["bpb"] - r["bpb"]) / t["bpb"]) if t and r else None
        out.append(f"| {e} | {pt - pr:.3f} | {100 * (pt - pr) / pt:.2f}% | "
                   + (f"{here[0]:+.4f} | {100 * here[1]:+.2f}% |" if here else "— | — |"))
    out += ["", "The paper also observes Stage III sparsity 0.8751 ± 0.0061 for target 0.875 after "
            "step 100, settling in ~110 steps at α = 1.2; rare tokens getting more experts; domain "
            "specialisation under ReMoE and near-uniform routing under TopK; and more stable "
            "routing than TopK's. The tables above give this study's numbers for each.\n",
            DESIGN, "## The commands that made every number and figure\n", commands_block(results)]
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--runs", nargs="*", default=[], metavar="RUN_DIR")
    p.add_argument("--results", default="docs/reproduction", metavar="DIR")
    p.add_argument("--out", default="docs/REPRODUCTION.md", metavar="FILE")
    args = p.parse_args(argv)
    results = Path(args.results)
    try:
        if args.runs:
            results.mkdir(parents=True, exist_ok=True)
            collect(args.runs, results)
        study, rows = load_results(results)
        text = results_document(study, rows, results) if study else not_run_document(results)
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    except PlotError as e:
        print(f"study_report.py: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"study_report.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
