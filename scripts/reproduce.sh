#!/usr/bin/env bash
# scripts/reproduce.sh: the whole ReMoE-vs-TopK study of docs/REPRODUCTION.md on a GPU machine:
# the wiki100m split, the seven runs of configs/study/, their validation and test bits per byte,
# `remoe analyze` of every MoE run, the plots, and the document regenerated from the JSON.
#
#   scripts/reproduce.sh [--dry-run] [STAGE ...]
#
# STAGE is one of data, train, eval, analyze, plot, report (default: all six, in that order),
# or pack / unpack, which carry runs between machines (scripts/study_pack.py): pack writes
# $PACK_DIR/study_NAME.tar.xz per run of STUDY_RUNS (its config, thinned metrics, flips, eval
# and analysis JSON: what plot and report read), unpack extracts every $PACK_DIR/study_*.tar.xz
# into place. On the lent GPU machine, which keeps nothing between sessions:
#   STUDY_RUNS="dense topk_e8" PACK_DIR=$OUT scripts/reproduce.sh data train eval analyze pack
# then here, with the returned packs in docs/reproduction/packs: unpack plot report.
# Every stage skips what is already done, so running the script again after an interruption (or
# a device's time limit) continues: `remoe train` resumes from a run's newest checkpoint and
# returns at once for a finished run; eval and analyze outputs that exist are kept.
# --dry-run lists each command instead of running it (the list docs/REPRODUCTION.md shows
# before the study has run). Every command, run or listed, is appended to $RESULTS/commands.txt
# (started afresh when all stages run), which the report quotes.
#
# Environment:
#   REMOE_BIN        the remoe binary (default: build/train/remoe, else .device/remoe, the
#                    bundle of scripts/device_bundle.sh)
#   REMOE_DATA       the corpora of ../shared/data/README.md (default ../shared/data, else
#                    .data/shared, else .device/data: on a machine without ../shared, carry
#                    the .xz files there; device_bundle.sh --study puts them in .device/data)
#   PACK_DIR         where pack writes and unpack reads (default docs/reproduction/packs)
#   RESULTS          where the committed JSON and PNG go (default docs/reproduction)
#   PYTHON           a Python with matplotlib for the plots (default .venv-plot/bin/python, else
#                    python3); the report needs only Python >= 3.11
#   STUDY_RUNS       the runs, names of configs/study/*.toml (default: all seven)
#   TRAIN_OVERRIDES  extra --section.key=value arguments for every run, e.g. "--train.steps=1200"
#                    to fit a time budget (the report reads each run's resolved config)
#   EVAL_BATCHES     remoe eval batches for validation and test bpb (default 600: 600 · 8 · 1024
#                    = 4.9M bytes, windows spread over each 5M split)
#   ANALYZE_TOKENS   tokens per text for remoe analyze (default 1048576)
# Exit status: 0; 2 for bad arguments; otherwise the failing command's, after a line naming it.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
STAGES=()
for a in "$@"; do
  case "$a" in
    --dry-run) DRY=1 ;;
    data|train|eval|analyze|plot|report|pack|unpack) STAGES+=("$a") ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "reproduce.sh: unknown argument '$a' (stages: data train eval analyze plot report pack unpack)" >&2; exit 2 ;;
  esac
done
ALL=0
if [ ${#STAGES[@]} -eq 0 ]; then STAGES=(data train eval analyze plot report); ALL=1; fi

ALL_RUNS="dense topk_e8 remoe_e8 topk_e32 remoe_e32 topk_e8_g4 remoe_e8_g4"
RUNS_LIST=${STUDY_RUNS:-$ALL_RUNS}
RESULTS=${RESULTS:-docs/reproduction}
EVAL_BATCHES=${EVAL_BATCHES:-600}
ANALYZE_TOKENS=${ANALYZE_TOKENS:-1048576}
TRAIN_OVERRIDES=${TRAIN_OVERRIDES:-}
if [ -z "${REMOE_DATA:-}" ]; then
  REMOE_DATA=../shared/data
  for d in .data/shared .device/data; do
    [ -e "$REMOE_DATA/wiki100m.txt.xz" ] || [ ! -e "$d/wiki100m.txt.xz" ] || REMOE_DATA=$d
  done
fi
PACK_DIR=${PACK_DIR:-docs/reproduction/packs}
if [ -z "${REMOE_BIN:-}" ]; then
  REMOE_BIN=build/train/remoe
  [ -x "$REMOE_BIN" ] || [ ! -x .device/remoe ] || REMOE_BIN=.device/remoe
fi
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  [ ! -x .venv-plot/bin/python ] || PYTHON=.venv-plot/bin/python
fi
WIKI=.data/wiki100m
for n in $RUNS_LIST; do
  [ -f "configs/study/$n.toml" ] || { echo "reproduce.sh: STUDY_RUNS names '$n', but configs/study/$n.toml does not exist" >&2; exit 2; }
done

mkdir -p "$RESULTS"
COMMANDS="$RESULTS/commands.txt"
if [ "$ALL" = 1 ]; then
  if [ "$DRY" = 1 ]; then echo "# planned by scripts/reproduce.sh --dry-run: not run yet" >"$COMMANDS"
  else echo "# run by scripts/reproduce.sh, started $(date -u '+%Y-%m-%d %H:%M UTC')" >"$COMMANDS"; fi
fi

# Runs (or with --dry-run only lists) one command, appending it to $COMMANDS.
run() {
  echo "+ $*"
  echo "$*" >>"$COMMANDS"
  [ "$DRY" = 1 ] && return 0
  "$@" || { rc=$?; echo "reproduce.sh: failed ($rc): $*" >&2; exit $rc; }
}
# run_to FILE CMD...: CMD's stdout into FILE (written to FILE.tmp, then renamed).
run_to() {
  local out=$1; shift
  echo "+ $* > $out"
  echo "$* > $out" >>"$COMMANDS"
  [ "$DRY" = 1 ] && return 0
  "$@" >"$out.tmp" || { rc=$?; rm -f "$out.tmp"; echo "reproduce.sh: failed ($rc): $*" >&2; exit $rc; }
  mv "$out.tmp" "$out"
}
need_bin() {
  [ "$DRY" = 1 ] || [ -x "$REMOE_BIN" ] || {
    echo "reproduce.sh: no remoe binary at $REMOE_BIN: build it (./scripts/setup.sh) or set REMOE_BIN" >&2; exit 1; }
}
is_moe() { ! grep -q '^ffn = "dense"' "configs/study/$1.toml"; }
# Complete checkpoints of a run, oldest first.
checkpoints() {
  local d
  for d in "runs/study/$1"/checkpoints/step_*; do
    [ -f "$d/COMPLETE" ] && echo "$d"
  done
  return 0
}

# xz -dc, or Python's lzma where xz is missing.
unxz_to() {
  if command -v xz >/dev/null; then run_to "$2" xz -dc "$1"
  else run_to "$2" python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"
  fi
}
check_sha() {  # FILE SHA256: the checksum ../shared/data/README.md gives
  [ "$DRY" = 1 ] && return 0
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$got" = "$2" ] || { echo "reproduce.sh: $1 has sha256 $got, expected $2 (../shared/data/README.md)" >&2; exit 1; }
}

stage_data() {
  for f in wiki100m.txt.xz code_c.txt.xz po.txt.xz tinyshakespeare.txt; do
    [ "$DRY" = 1 ] || [ -f "$REMOE_DATA/$f" ] || {
      echo "reproduce.sh: $REMOE_DATA/$f not found: set REMOE_DATA to the folder of ../shared/data/README.md" >&2; exit 1; }
  done
  [ "$DRY" = 1 ] || mkdir -p "$WIKI"
  if [ ! -f "$WIKI/test.txt" ]; then
    unxz_to "$REMOE_DATA/wiki100m.txt.xz" "$WIKI/all.txt"
    check_sha "$WIKI/all.txt" fce0658e43ca871e65f25a1aee8445aba71575de6fd36d59f806a1bbb271a312
    # The corpus's own split (../shared/data/README.md): 90M train, 5M validation, 5M test.
    run_to "$WIKI/train.txt" head -c 90000000 "$WIKI/all.txt"
    run dd if="$WIKI/all.txt" of="$WIKI/val.txt" bs=1000000 skip=90 count=5 status=none
    run_to "$WIKI/test.txt" tail -c 5000000 "$WIKI/all.txt"
    run rm -f "$WIKI/all.txt"
  fi
  [ -f .data/code_c.txt ] || { unxz_to "$REMOE_DATA/code_c.txt.xz" .data/code_c.txt
    check_sha .data/code_c.txt 3e1f737bb19081dc68dad20b1ccbfb422679d9d2e296c25401802b027c497a6d; }
  [ -f .data/po.txt ] || { unxz_to "$REMOE_DATA/po.txt.xz" .data/po.txt
    check_sha .data/po.txt 0c0643124bca78d9a94baf37a9d3821fe0fdd541db5573785ae7b769d7a5e0a0; }
}

stage_train() {
  need_bin
  [ "$DRY" = 1 ] || "$REMOE_BIN" info >"$RESULTS/info.txt"
  for n in $RUNS_LIST; do
    # shellcheck disable=SC2086  # TRAIN_OVERRIDES is a list of arguments
    run_to "$RESULTS/dryrun_$n.txt" "$REMOE_BIN" train --config "configs/study/$n.toml" $TRAIN_OVERRIDES --dry-run
    # shellcheck disable=SC2086
    run "$REMOE_BIN" train --config "configs/study/$n.toml" $TRAIN_OVERRIDES
  done
}

stage_eval() {
  need_bin
  for n in $RUNS_LIST; do
    [ -f "$RESULTS/eval_${n}_val.json" ] ||
      run_to "$RESULTS/eval_${n}_val.json" "$REMOE_BIN" eval --checkpoint "runs/study/$n" --batches "$EVAL_BATCHES" --json
    [ -f "$RESULTS/eval_${n}_test.json" ] ||
      run_to "$RESULTS/eval_${n}_test.json" "$REMOE_BIN" eval --checkpoint "runs/study/$n" --text "$WIKI/test.txt" --batches "$EVAL_BATCHES" --json
  done
}

stage_analyze() {
  need_bin
  for n in $RUNS_LIST; do
    is_moe "$n" || continue  # a dense model has no router (remoe analyze says so)
    mapfile -t ck < <(checkpoints "$n")
    if [ "$DRY" = 1 ] && [ ${#ck[@]} -lt 2 ]; then
      ck=("runs/study/$n/checkpoints/step_00002250" "runs/study/$n/checkpoints/step_00002500")
    fi
    [ ${#ck[@]} -ge 2 ] || { echo "reproduce.sh: runs/study/$n has fewer than two complete checkpoints: train it first" >&2; exit 1; }
    local last=${ck[-1]} prev=${ck[-2]}
    [ -f "$RESULTS/analysis_$n.json" ] ||
      run "$REMOE_BIN" analyze --checkpoint "$last" --compare "$prev" \
        --text wiki="$WIKI/test.txt" --text code_c=.data/code_c.txt --text po=.data/po.txt \
        --text shakespeare="$REMOE_DATA/tinyshakespeare.txt" --tokens "$ANALYZE_TOKENS" \
        --out "$RESULTS/analysis_$n.json"
    # The flip rate over training: each pair of consecutive checkpoints (in the run directory;
    # scripts/study_report.py --runs gathers them into study.json).
    [ "$DRY" = 0 ] || echo "# and one such command per pair of consecutive complete checkpoints:" >>"$COMMANDS"
    [ "$DRY" = 1 ] || mkdir -p "runs/study/$n/flips"
    for ((i = 1; i < ${#ck[@]}; i++)); do
      local out
      out="runs/study/$n/flips/$(basename "${ck[i]}").json"
      [ -f "$out" ] ||
        run "$REMOE_BIN" analyze --checkpoint "${ck[i]}" --compare "${ck[i-1]}" \
          --text wiki="$WIKI/test.txt" --tokens 131072 --out "$out"
    done
  done
}

stage_plot() {
  local dirs=() analyses=()
  for n in $RUNS_LIST; do
    dirs+=("runs/study/$n")
    if is_moe "$n"; then analyses+=("$RESULTS/analysis_$n.json"); fi
  done
  run "$PYTHON" scripts/plot.py "${dirs[@]}" --out "$RESULTS"
  run "$PYTHON" scripts/plot_analysis.py "${analyses[@]}" --runs "${dirs[@]}" --first 400 --text wiki --out "$RESULTS"
}

stage_report() {
  local dirs=()
  for n in $RUNS_LIST; do dirs+=("runs/study/$n"); done
  run "$PYTHON" scripts/study_report.py --runs "${dirs[@]}" --results "$RESULTS" --out docs/REPRODUCTION.md
}

stage_pack() {
  local have=()
  for n in $RUNS_LIST; do
    if [ "$DRY" = 1 ] || [ -f "runs/study/$n/metrics.jsonl" ]; then have+=("$n")
    else echo "reproduce.sh: pack: runs/study/$n has no metrics.jsonl: skipped (not trained here)"; fi
  done
  [ ${#have[@]} -eq 0 ] ||
    run python3 scripts/study_pack.py pack --out "$PACK_DIR" --results "$RESULTS" "${have[@]}"
}

stage_unpack() {
  local packs=()
  for f in "$PACK_DIR"/study_*.tar.xz; do [ -f "$f" ] && packs+=("$f"); done
  [ ${#packs[@]} -gt 0 ] || [ "$DRY" = 1 ] ||
    { echo "reproduce.sh: unpack: no $PACK_DIR/study_*.tar.xz" >&2; exit 1; }
  [ ${#packs[@]} -eq 0 ] || run python3 scripts/study_pack.py unpack "${packs[@]}"
}

for s in "${STAGES[@]}"; do
  echo "== $s"
  "stage_$s"
done
