#!/usr/bin/env bash
# Checks `remoe export` against transformers: for each FFN kind (dense → Llama; ReMoE, TopK and
# renormalised TopK → Mixtral) it trains a tiny model for a few steps (or takes the checkpoint
# given), exports it, dumps remoe's logits of one validation window (`remoe eval
# --dump-logits`) and runs scripts/compare_hf.py on the same input ids.
#
#   scripts/check_hf_export.sh                      the four kinds, tiny runs in a temp dir
#   scripts/check_hf_export.sh --checkpoint DIR     one existing checkpoint (or run directory)
#
# Environment: REMOE_BIN (default build/train/remoe), PYTHON (default python3: it needs torch
# and transformers), STEPS (default 20), KEEP=1 keeps the temp dir.
# Exit status: 0 all match, 1 a mismatch or an error, 77 skipped (no torch/transformers).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${REMOE_BIN:-build/train/remoe}
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-20}

if ! err=$("$PYTHON" -c "import torch, transformers" 2>&1); then
  echo "check_hf_export: SKIP: $PYTHON cannot import torch and transformers (${err##*$'\n'})."
  echo "  Install them (e.g. in a venv: pip install torch transformers) and set PYTHON=<venv>/bin/python."
  exit 77
fi
[[ -x "$BIN" ]] || { echo "check_hf_export: $BIN not found: build first (ninja -C build train/remoe)"; exit 1; }

work=$(mktemp -d /tmp/remoe_hf_check.XXXXXX)
[[ "${KEEP:-0}" == 1 ]] || trap 'rm -rf "$work"' EXIT

# compare NAME CHECKPOINT: export, dump logits, compare; prints compare_hf.py's verdict.
compare() {
  local name=$1 ckpt=$2
  "$BIN" export --checkpoint "$ckpt" --out "$work/$name.hf" > "$work/$name.export.log" 2>&1 ||
    { cat "$work/$name.export.log"; return 1; }
  "$BIN" eval --checkpoint "$ckpt" --batches 1 --dump-logits "$work/$name.logits" > /dev/null || return 1
  echo -n "$name: "
  "$PYTHON" scripts/compare_hf.py --export "$work/$name.hf" --logits "$work/$name.logits"
}

if [[ "${1:-}" == "--checkpoint" ]]; then
  [[ $# -eq 2 ]] || { echo "usage: $0 [--checkpoint DIR]"; exit 1; }
  compare checkpoint "$2"
  exit
fi

status=0
for kind in dense relu topk topk_renormalized; do
  case $kind in
    dense) model=(--model.ffn=dense) ;;
    relu) model=(--model.ffn=moe --model.router=relu) ;;
    topk) model=(--model.ffn=moe --model.router=topk --model.top_k=2) ;;
    topk_renormalized) model=(--model.ffn=moe --model.router=topk --model.top_k=2 --model.renormalize=true) ;;
  esac
  "$BIN" train --config configs/tiny.toml "${model[@]}" --model.d_model=32 --model.n_heads=4 \
    --model.n_kv_heads=2 --model.d_ffn=64 --model.n_experts=4 --train.steps="$STEPS" \
    --train.batch_size=4 --train.seq_len=48 --eval.every=0 --eval.batches=1 --log.every=1000 \
    --log.run_dir="$work/$kind" > "$work/$kind.train.log" 2>&1 ||
    { echo "$kind: training failed:"; tail -5 "$work/$kind.train.log"; status=1; continue; }
  compare "$kind" "$work/$kind" || status=1
done
exit $status
