#!/usr/bin/env bash
# Runs on a GPU machine, from the bundle scripts/device_bundle.sh made: the whole gpu test
# suite, the README's tiny training run on the GPU (twice: each grouped GEMM) and on the CPU,
# every kernel benchmark, the PyTorch peer (bench/peer/: its equivalence with remoe on the GPU
# in bf16, then training throughput side by side), then compute-sanitizer memcheck and
# racecheck over the suite (last: their time is the least predictable, and a command has 10
# minutes). Writes into $OUT (default .device/out) eight files, the device tool's limit:
#   gpu_check.json    device, driver, commit, the suite's counts, the training runs (GPU with
#                     the dispatched and with the tiled grouped GEMM, CPU: final validation
#                     loss, sparsity, λ, tokens/s; the two GPU runs' largest loss difference),
#                     the benchmarks' counts, the sanitizers' verdicts
#   gpu_tests.json    GoogleTest's report
#   benchmarks.json   every benchmark program's Google Benchmark report, by program name
#   bench_table.md    the table for bench/README.md (scripts/bench_table.py)
#   peer.json         check_equivalence.py's reports (ReMoE and TopK) and bench_e2e.py's
#   memcheck.txt, racecheck.txt, log.txt   the sanitizers' output; everything printed
# and ends with `N passed, N failed`. Copy the JSON files into bench/results/ and commit them.
# GPU_CHECK_PARTS (default "tests train bench peer sanitizers"; peer = equivalence throughput;
# two more need wiki100m in the bundle, scripts/device_bundle.sh --wiki, and are asked for by
# name: "small", configs/small.toml trained whole on the GPU, about 8 minutes over two
# commands, and "routers", every router on the small config for 200 steps, about 5 minutes;
# their summaries go into gpu_check.json's "runs") runs only the parts it names
# (PEER_IMPLS, default remoe,eager,compile, narrows throughput, PEER_CONFIG and PEER_SET
# change its config;
# SANITIZER_FILTER, a gtest filter, replaces the sanitizers' default set of tests),
# e.g. to split a run over several commands (all of it takes longer than one command's 10
# minutes). On the first H200 (2026-11-23): tests 20 s, train 15 s, bench 80 s, peer 5 min,
# sanitizers 4 min, so "tests train bench" then "peer" then "sanitizers" fit three commands.
# The peer needs a python3 with torch (≥ 2.5) and safetensors, as these machines have.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)  # the checkout the device tool copied (configs/, bench/peer/)
OUT=${OUT:-$HERE/out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1

# NCCL and cuBLAS ship in the Python environment's nvidia/*/lib folders on these machines.
libs=$(find / -path /proc -prune -o \( -name 'libnccl.so*' -o -name 'libcublas.so*' \) -print 2>/dev/null |
       xargs -r -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="$HERE/lib:${libs}${LD_LIBRARY_PATH:-}"
commit=$(cat "$HERE/commit" 2>/dev/null || echo unknown)
device=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1)
echo "gpu_check: commit $commit on ${device:-no GPU} (driver ${driver:-none})"
# The benchmarks put both into their JSON context.
export REMOE_COMMIT="$commit" REMOE_DRIVER="${driver:-unknown}"
parts=" ${GPU_CHECK_PARTS:-tests train bench peer sanitizers} "
# "peer" is its two halves, which also run alone: "equivalence" and "throughput".
[[ $parts == *" peer "* ]] && parts="$parts equivalence throughput "

# merge_json DIR FILE: every DIR/<name>.json into one object {name: its JSON} in FILE (the
# device tool returns at most 8 files); an unreadable one becomes {"error": ...}.
merge_json() {
  python3 - "$1" "$2" <<'PY'
import json, pathlib, sys
src, dst = sys.argv[1:]
merged = {}
for f in sorted(pathlib.Path(src).glob("*.json")):
    try:
        merged[f.stem] = json.loads(f.read_text())
    except ValueError as e:
        print(f"gpu_check: {f.name} is not readable JSON ({e})")
        merged[f.stem] = {"error": f"unreadable JSON ({e})"}
json.dump(merged, open(dst, "w"), indent=1)
PY
}

suite_rc=0
if [[ $parts == *" tests "* ]]; then
  # Bounded: a kernel that deadlocks (an mbarrier wait that never completes) would otherwise
  # take the whole command's 10 minutes and every result after it.
  timeout "${GPU_TESTS_TIMEOUT:-420}" "$HERE/bin/gpu_tests" --gtest_output="json:$OUT/gpu_tests.json"
  suite_rc=$?
  [ $suite_rc -eq 124 ] && echo "gpu_check: gpu_tests stopped after ${GPU_TESTS_TIMEOUT:-420} s (a hang?)"
fi

# The README's first command on each device (run directories outside $OUT: the device tool
# returns few files), the GPU's at train.precision auto (bf16), the CPU's in f32. The GPU runs
# twice: with the grouped GEMM the dispatch picks (v2 on an H200) and with v1 forced
# (REMOE_GROUPED_GEMM=tiled), so the two implementations meet inside the whole model too.
runs=$(mktemp -d)
if [[ $parts == *" train "* ]]; then
  for run in cuda cuda_tiled cpu; do
    dev=${run%_tiled}
    gemm=auto; [[ $run == cuda_tiled ]] && gemm=tiled
    start=$(date +%s)
    REMOE_GROUPED_GEMM=$gemm timeout 300 "$HERE/bin/remoe" train \
      --config "$HERE/../configs/tiny.toml" --data.path="$HERE/data/tinyshakespeare.txt" \
      --train.device="$dev" --log.run_dir="$runs/$run" --log.every=50 > "$runs/$run.log" 2>&1
    echo "gpu_check: remoe train $run exited $? after $(( $(date +%s) - start )) s"
    tail -n 4 "$runs/$run.log"
  done
fi

# wiki100m as text, decompressed once from the bundle's .xz (scripts/device_bundle.sh --wiki).
wiki_text() {
  local xz="$HERE/data/wiki100m.txt.xz" txt="$HERE/data/wiki100m.txt"
  if [ ! -f "$txt" ]; then
    [ -f "$xz" ] || { echo "gpu_check: $xz is missing: bundle with scripts/device_bundle.sh --wiki" >&2; return 1; }
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      "$xz" "$txt.tmp" && mv "$txt.tmp" "$txt" || return 1
  fi
  echo "$txt"
}
# Summaries of longer runs (scripts/run_summary.py), merged into gpu_check.json below. Their
# run directories live in .device/runs: a later command on the still-warm machine resumes a run
# its predecessor's timeout stopped (SIGTERM: remoe saves a checkpoint and exits).
summaries=$(mktemp -d)
summarize() {  # NAME RUN_DIR
  python3 "$ROOT/scripts/run_summary.py" "$2" > "$summaries/$1.json" ||
    echo "{\"error\": \"no summary of $2\"}" > "$summaries/$1.json"
  echo "gpu_check: $1: $(cat "$summaries/$1.json")"
}

# SMALL_CONFIG (default configs/small.toml) replaces the config of both parts below, to try
# their plumbing on a machine where the small config is too slow (configs/tiny.toml).
small_config=${SMALL_CONFIG:-configs/small.toml}

# The CUDA backend's acceptance: configs/small.toml (d 512, 8 layers, E 8, 32K tokens a step,
# 5000 steps: about 8 minutes on an H200) trained on the GPU, its sparsity against 1 − k/E
# ± 0.02. First, SMALL_CPU_STEPS (default 2) steps of it with SMALL_CPU_BATCH (default 1)
# sequence a step, as a run of its own on the GPU (bf16) and on the CPU (f32), whose losses
# gpu_check.json puts side by side (the same short schedule: a step's learning rate depends on
# train.steps). The CPU cannot take the config's own 32 sequences: ReLU routing starts dense,
# so its first step routes every token to all 8 experts, which took over 11 minutes and 17 GB
# on 2 cores here before it was stopped, and 3 steps of 2 sequences took 14 minutes there
# (the device has 16 cores). Then the whole run, bounded by SMALL_TIMEOUT
# (default 420 s, so the part fits one command): it takes two commands, the second resuming
# from the checkpoint the first one's timeout left (the short runs, complete, return at once).
# SMALL_STEPS shortens the whole run.
if [[ $parts == *" small "* ]] && wiki=$(wiki_text); then
  for dev in cuda cpu; do
    start=$(date +%s)
    timeout 360 "$HERE/bin/remoe" train --config "$ROOT/$small_config" --data.path="$wiki" \
      --train.device=$dev --train.steps="${SMALL_CPU_STEPS:-2}" \
      --train.batch_size="${SMALL_CPU_BATCH:-1}" --eval.batches=1 \
      --log.run_dir="$HERE/runs/small_first_$dev" > "$HERE/runs.small_first_$dev.log" 2>&1
    echo "gpu_check: small, first ${SMALL_CPU_STEPS:-2} steps on $dev, exited $? after $(( $(date +%s) - start )) s"
  done
  python3 - "$HERE/runs/small_first_cuda/metrics.jsonl" "$HERE/runs/small_first_cpu/metrics.jsonl" \
    > "$summaries/small_vs_cpu.json" <<'PY'
import json, sys
try:
    gpu, cpu = ({r["step"]: r["loss"] for r in map(json.loads, open(f))} for f in sys.argv[1:])
except (OSError, ValueError, KeyError) as e:
    print(json.dumps({"error": f"no readable metrics ({e})"}))
    sys.exit()
both = sorted(set(gpu) & set(cpu))
print(json.dumps({"steps": both, "gpu_bf16": [gpu[s] for s in both], "cpu_f32": [cpu[s] for s in both],
                  "max_abs_diff": max((abs(gpu[s] - cpu[s]) for s in both), default=None)}))
PY
  echo "gpu_check: small, GPU vs CPU: $(cat "$summaries/small_vs_cpu.json")"
  start=$(date +%s)
  timeout "${SMALL_TIMEOUT:-420}" "$HERE/bin/remoe" train --config "$ROOT/$small_config" \
    --data.path="$wiki" --log.run_dir="$HERE/runs/small" --log.every=250 \
    ${SMALL_STEPS:+--train.steps=$SMALL_STEPS} > "$HERE/runs.small.log" 2>&1
  echo "gpu_check: small on the GPU exited $? after $(( $(date +%s) - start )) s"
  tail -n 3 "$HERE/runs.small.log"
  summarize small "$HERE/runs/small"
fi

# Every router and router option of model/README.md's table on the small config, ROUTER_STEPS
# (default 200) steps each, with its metrics (load per expert, dropped tokens, z-loss, biases).
router_variants=(
  "relu:--model.router=relu"
  "relu_plain_l1:--model.router=relu --model.l1=plain"
  "topk:--model.router=topk"
  "topk_renormalize:--model.router=topk --model.renormalize=true"
  "topk_z_loss:--model.router=topk --model.z_loss_coeff=1e-3"
  "topk_capacity_probs:--model.router=topk --model.capacity_factor=1.0"
  "topk_capacity_position:--model.router=topk --model.capacity_factor=1.25 --model.drop_policy=position"
  "topk_expert_bias:--model.router=topk --model.expert_bias=true --model.bias_update_rate=1e-3"
  "topk_warmup:--model.router=topk --model.k_warm=4 --model.warm_steps=50"
  "expert_choice:--model.router=expert_choice"
  "hash:--model.router=hash"
)
if [[ $parts == *" routers "* ]] && wiki=$(wiki_text); then
  for v in "${router_variants[@]}"; do
    name=${v%%:*}
    start=$(date +%s)
    # shellcheck disable=SC2086  # the overrides are a list of arguments
    timeout 120 "$HERE/bin/remoe" train --config "$ROOT/$small_config" --data.path="$wiki" \
      ${v#*:} --train.steps="${ROUTER_STEPS:-200}" --eval.every=0 --eval.batches=4 \
      --checkpoint.every=0 --log.run_dir="$HERE/runs/router_$name" > "$HERE/runs.router_$name.log" 2>&1
    echo "gpu_check: router $name exited $? after $(( $(date +%s) - start )) s"
    summarize "router_$name" "$HERE/runs/router_$name"
  done
fi

# Each program's --benchmark_min_time (seconds of measured time per benchmark, Google Benchmark
# 1.7's plain number) keeps the whole set to about two minutes on an H200 (an estimate until a
# GPU has run them; bench/README.md); `timeout` stops a program that hangs so the rest still run.
min_time() {
  case $1 in
    grouped_matmul_bench) echo 0.2 ;;  # 49 benchmarks, compute-bound: fewer, longer launches
    *) echo 0.1 ;;
  esac
}
bench_dir=$(mktemp -d)
if [[ $parts == *" bench "* ]]; then
  for b in "$HERE"/bin/*_bench; do
    [ -x "$b" ] || continue
    name=$(basename "$b")
    start=$(date +%s)
    timeout 300 "$b" --benchmark_min_time="$(min_time "$name")" --benchmark_format=console \
      --benchmark_out_format=json --benchmark_out="$bench_dir/$name.json"
    echo "gpu_check: $name exited $? after $(( $(date +%s) - start )) s"
  done
  # Merged at once, before the sanitizers: the device tool returns at most 8 files, and what a
  # command stopped at its limit leaves under $OUT still comes back.
  merge_json "$bench_dir" "$OUT/benchmarks.json"
  python3 "$HERE/bench_table.py" "$OUT/benchmarks.json" > "$OUT/bench_table.md" ||
    echo "gpu_check: bench_table.py failed"
fi
rm -rf "$bench_dir"

# The peer: equivalence on the tiny config (40 steps, ReMoE then TopK), then throughput on the
# small one (d 512, 8 layers, 32K tokens a step) for remoe, eager and compiled PyTorch.
if [[ $parts == *" equivalence "* || $parts == *" throughput "* ]]; then
  peer_dir=$(mktemp -d)
  data="$HERE/data/tinyshakespeare.txt"
  for router in relu topk; do
    [[ $parts == *" equivalence "* ]] || break
    timeout 240 python3 "$ROOT/bench/peer/check_equivalence.py" --remoe "$HERE/bin/remoe" \
      --config "$ROOT/configs/tiny.toml" --set "data.path=$data" --set "model.router=$router" \
      --device cuda --steps 40 --out "$peer_dir/equivalence_$router.json" > /dev/null
    echo "gpu_check: peer equivalence ($router) exited $?"
  done
  if [[ $parts == *" throughput "* ]]; then
    # PEER_CONFIG and PEER_SET (one more KEY=VALUE) pick another shape, e.g. issue 6's target:
    # PEER_CONFIG=configs/paper_182m.toml PEER_SET=train.grad_accum=4 (64 micro-batches a step
    # would take minutes per implementation; tokens/s hardly depends on grad_accum).
    timeout 420 python3 "$ROOT/bench/peer/bench_e2e.py" --remoe "$HERE/bin/remoe" \
      --config "$ROOT/${PEER_CONFIG:-configs/small.toml}" --set "data.path=$data" \
      ${PEER_SET:+--set "$PEER_SET"} --steps 30 --warmup 10 \
      --impls "${PEER_IMPLS:-remoe,eager,compile}" --out "$peer_dir/e2e.json"
    echo "gpu_check: peer throughput exited $?"
  fi
  merge_json "$peer_dir" "$OUT/peer.json"
  rm -rf "$peer_dir"
fi

# --report-api-errors no: NCCL probes for kernel images its library lacks (cudaFuncGetAttributes
# → error 209, 32 of them on the first H200 run), which the sanitizer would count as errors;
# remoe's own CUDA calls are all checked (CUDA_CHECK), so a failing one fails its test anyway.
# The kernels' tests by default: the training, model and NCCL tests run whole training loops,
# which racecheck did not finish in 190 s on an H200 (the kernel tests took it 170 s).
sanitizer_filter=${SANITIZER_FILTER:--*Training*:*Nccl*:*GpuModel*}
sanitize() {  # tool → "clean" or "errors" (details in the log)
  if ! command -v compute-sanitizer > /dev/null; then echo "not run (no compute-sanitizer)"; return; fi
  timeout "${SANITIZER_TIMEOUT:-270}" compute-sanitizer --tool "$1" --report-api-errors no --error-exitcode 99 \
    "$HERE/bin/gpu_tests" --gtest_brief=1 --gtest_filter="$sanitizer_filter" > "$OUT/$1.txt" 2>&1
  case $? in
    0) echo clean ;; 99) echo errors ;;
    124) echo "stopped after ${SANITIZER_TIMEOUT:-270} s (see $1.txt)" ;;
    *) echo "test failures (see $1.txt)" ;;
  esac
}
memcheck="not run" racecheck="not run"
if [[ $parts == *" sanitizers "* ]]; then
  memcheck=$(sanitize memcheck)
  racecheck=$(sanitize racecheck)
fi
echo "gpu_check: memcheck $memcheck, racecheck $racecheck"

python3 - "$OUT" "$commit" "${device:-}" "${driver:-}" "$memcheck" "$racecheck" "$parts" "$runs" \
  "$summaries" <<'PY'
import json, pathlib, sys
out, commit, device, driver, memcheck, racecheck, parts, runs, summaries = sys.argv[1:]
train, losses = {}, {}
for run in ("cuda", "cuda_tiled", "cpu") if "train" in parts.split() else ():
    try:
        steps = [json.loads(l) for l in open(f"{runs}/{run}/metrics.jsonl") if l.strip()]
        last = steps[-1]
        rates = sorted(s["tokens_per_s"] for s in steps[len(steps) // 4:])
        train[run] = {"steps": last["step"], "val_loss": last.get("val_loss"),
                      "sparsity": last["sparsity"], "lambda": last["lambda"],
                      "median_tokens_per_s": rates[len(rates) // 2]}
        losses[run] = [s["loss"] for s in steps]
    except (OSError, ValueError, KeyError, IndexError) as e:
        train[run] = {"error": f"no readable metrics ({e})"}
    print(f"gpu_check: train {run}: {train[run]}")
if "cuda" in losses and "cuda_tiled" in losses:  # same data, same init: bf16 rounding apart
    pairs = list(zip(losses["cuda"], losses["cuda_tiled"]))
    train["grouped_gemm_max_loss_diff"] = max((abs(a - b) for a, b in pairs), default=None)
    print(f"gpu_check: train loss, dispatched vs tiled grouped GEMM, max |diff| over "
          f"{len(pairs)} steps: {train['grouped_gemm_max_loss_diff']}")
bench = {"programs": 0, "run": 0, "errors": 0}
try:
    for report in json.load(open(f"{out}/benchmarks.json")).values():
        bench["programs"] += 1
        for b in report.get("benchmarks", []):
            bench["errors" if b.get("error_occurred") else "run"] += 1
    print(f"gpu_check: {bench['run']} benchmarks ran, {bench['errors']} skipped or failed "
          f"({bench['programs']} programs; the table is bench_table.md)")
except (OSError, ValueError, AttributeError) as e:
    if "bench" in parts.split():
        print(f"gpu_check: no readable benchmarks.json ({e})")
passed = failed = skipped = 0
if "tests" in parts.split():
    try:
        report = json.load(open(f"{out}/gpu_tests.json"))
        for suite in report["testsuites"]:
            for t in suite["testsuite"]:
                if t.get("result") == "SKIPPED": skipped += 1
                elif t.get("failures"): failed += 1
                else: passed += 1
    except (OSError, ValueError, KeyError) as e:
        failed += 1
        print(f"gpu_check: no readable GoogleTest report ({e})")
peer = {}
if "equivalence" in parts.split() or "throughput" in parts.split():
    try:
        for name, report in json.load(open(f"{out}/peer.json")).items():
            peer[name] = report.get("ok", "error" not in json.dumps(report)) if name.startswith("equivalence") \
                else "see peer.json"
    except (OSError, ValueError) as e:
        peer["error"] = f"no readable peer.json ({e})"
    print(f"gpu_check: peer: {peer}")
runs_summary = {}
for f in sorted(pathlib.Path(summaries).glob("*.json")):
    try:
        runs_summary[f.stem] = json.loads(f.read_text())
    except ValueError as e:
        runs_summary[f.stem] = {"error": f"unreadable summary ({e})"}
json.dump({"device": device, "driver": driver, "commit": commit,
           "gpu_tests": {"passed": passed, "failed": failed, "skipped": skipped},
           "train": train, "benchmarks": bench, "peer": peer,
           "memcheck": memcheck, "racecheck": racecheck, "runs": runs_summary},
          open(f"{out}/gpu_check.json", "w"), indent=2)
print(f"{passed} passed, {failed} failed")
PY
rm -rf "$runs" "$summaries"
[ $suite_rc -eq 0 ]
