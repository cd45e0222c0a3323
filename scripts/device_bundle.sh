#!/usr/bin/env bash
# Packs what a GPU machine without a build environment needs into .device/ (ignored by git):
# the gpu test binary, the kernel benchmarks, the remoe binary, the shared libraries they use
# that are not part of every Linux (Google Benchmark, OpenMP's runtime), a little data, and
# scripts/gpu_check.sh with scripts/bench_table.py. The device tool carries the folder
# (`carry: [".device"]`, 64 MiB at most) and runs `bash .device/gpu_check.sh`. The binaries are
# x86-64, built here with the CUDA objects for sm_90a. cuBLAS is not carried (libcublasLt alone
# is 540 MB): the CUDA benchmarks dlopen the device's own libcublas.so.13 (bench/cuda_bench.cuh).
# `.device/remoe ARGS` runs remoe with those libraries (and the device's NCCL) found.
#   scripts/device_bundle.sh [--study | --wiki] [BUILD_DIR]    (default: build)
# --study packs remoe alone, with the four corpora of scripts/reproduce.sh in .device/data
# (31 MB; 41 MB in all), instead of the tests and benchmarks: for the study's calls.
# --wiki adds wiki100m.txt.xz (26 MB; 58 MB in all) to the whole bundle, for gpu_check.sh's
# "small" and "routers" parts.
set -euo pipefail
cd "$(dirname "$0")/.."
STUDY=0 WIKI=0
case "${1:-}" in
  --study) STUDY=1; shift ;;
  --wiki) WIKI=1; shift ;;
esac
BUILD=${1:-build}
[ -x "$BUILD/tests/gpu_tests" ] || { echo "device_bundle: $BUILD/tests/gpu_tests is missing: build with CUDA first (scripts/setup.sh on a machine with nvcc)" >&2; exit 1; }

rm -rf .device
mkdir -p .device/bin .device/lib .device/data
cp "$BUILD/train/remoe" .device/bin/
if [ "$STUDY" = 0 ]; then
  cp "$BUILD/tests/gpu_tests" .device/bin/
  for b in "$BUILD"/bench/*_bench; do [ -x "$b" ] && cp "$b" .device/bin/; done
fi
# Debug info is most of their size and the carried folder is bounded: strip it (the CUDA
# fatbins stay). Where a crash needs symbols, carry the unstripped binary alone.
strip --strip-debug .device/bin/*
# Every library outside glibc, the compiler's runtime and CUDA's own (toml++, Google Benchmark,
# OpenMP's runtime...; NCCL and cuBLAS come from the device's Python environment: gpu_check.sh
# finds them there). A list of what to take would miss the next library a binary links.
for bin in .device/bin/*; do
  ldd "$bin" | awk '/=> \//{print $3}' |
    grep -vE '/(libc|libm|libpthread|librt|libdl|libgcc_s|libstdc\+\+|libnccl|libcuda|libcudart|libcublas[A-Za-z]*)\.so' || true
done | sort -u | while read -r lib; do cp -L "$lib" .device/lib/; done
cp scripts/gpu_check.sh scripts/bench_table.py .device/
[ -f ../shared/data/tinyshakespeare.txt ] && cp ../shared/data/tinyshakespeare.txt .device/data/
corpora=()
[ "$STUDY" = 1 ] && corpora=(wiki100m.txt.xz code_c.txt.xz po.txt.xz)
[ "$WIKI" = 1 ] && corpora=(wiki100m.txt.xz)
if [ ${#corpora[@]} -gt 0 ]; then
  for f in "${corpora[@]}"; do
    [ -f "../shared/data/$f" ] || { echo "device_bundle: ../shared/data/$f is missing" >&2; exit 1; }
    cp "../shared/data/$f" .device/data/
  done
fi
# remoe with the bundle's libraries, and NCCL and cuBLAS wherever that machine keeps them (its
# Python environment's nvidia/*/lib; looked up once, then cached in .device/.libpath).
cat > .device/remoe <<'WRAPPER'
#!/usr/bin/env bash
HERE=$(cd "$(dirname "$0")" && pwd)
if [ ! -f "$HERE/.libpath" ]; then
  find / -path /proc -prune -o \( -name 'libnccl.so*' -o -name 'libcublas.so*' \) -print 2>/dev/null |
    xargs -r -n1 dirname | sort -u | tr '\n' ':' > "$HERE/.libpath"
fi
export LD_LIBRARY_PATH="$HERE/lib:$(cat "$HERE/.libpath")${LD_LIBRARY_PATH:-}"
exec "$HERE/bin/remoe" "$@"
WRAPPER
chmod +x .device/remoe
# A tree with uncommitted changes is recorded as HEAD-dirty: the results must not name a commit
# that did not hold the code they measured.
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD 2>/dev/null; then
  commit="$commit-dirty"
  echo "device_bundle: note: the working tree has uncommitted changes (commit recorded as $commit)" >&2
fi
echo "$commit" > .device/commit
du -sh .device | awk '{print "device_bundle: .device is " $1 " (the device tool carries 64 MiB at most)"}'
