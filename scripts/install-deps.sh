#!/usr/bin/env bash
# Installs the Debian packages tqkv builds with. Idempotent; run as root (or via sudo).
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config git xz-utils
      libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev
      nlohmann-json3-dev libopenblas-dev liblzma-dev
      python3-dev python3-numpy python3-pybind11 python3-pytest
      clang libclang-rt-14-dev libomp-14-dev  # scripts/ci-sanitize.sh: clang builds, ASan/UBSan/TSan, libFuzzer, libomp + Archer
      libxxhash-dev
      python3-torch)  # python/tests/test_tp.py: tensor parallelism over torch.distributed's gloo backend (CPU)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
