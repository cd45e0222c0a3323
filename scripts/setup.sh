#!/usr/bin/env bash
# Set-up on a fresh Debian machine (idempotent): system packages, a current Meson in a local
# virtual environment, then configure and build everything in ./build.
#
# Why Meson from PyPI: Debian's Meson 1.0.1 writes no dependency file for CUDA objects, so a .cu
# file is not rebuilt when a header it includes changes (meson#11969): stale GPU code.
#
# Environment: BUILD_DIR (default build), MESON_ARGS (extra `meson setup` arguments).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}
VENV=.venv
packages=(g++ ninja-build pkg-config libgtest-dev libbenchmark-dev libtomlplusplus-dev nlohmann-json3-dev xz-utils)
# python3 with venv may come from elsewhere (pyenv): only ask apt for it when it is absent.
if ! { command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null; }; then
  packages+=(python3 python3-venv)
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/meson" ]; then
  echo "setup: installing Meson into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check 'meson>=1.5'
fi
MESON="$VENV/bin/meson"

# nvcc is often installed but not on PATH; the CUDA backend is built whenever it is found.
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  # shellcheck disable=SC2086
  "$MESON" setup "$BUILD_DIR" ${MESON_ARGS:-}
fi
ninja -C "$BUILD_DIR"
