#!/usr/bin/env bash
# Builds (if needed) and runs the whole test suite. Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTQKV_PYTHON=ON
cmake --build build
ctest --test-dir build --output-on-failure -j "$(nproc)"
