#!/usr/bin/env bash
# One command for an H100/H200 machine: build tqkv with CUDA, run the GPU tests (codes
# bit-identical to the CPU, attention vs float64 within the derived bound), compute-sanitizer
# memcheck on a small case, then the benchmark (bench/gpu_bench.py -> one JSON).
#
#   scripts/gpu-check.sh [DEBS_DIR] [OUT_DIR]
#
# DEBS_DIR (optional): Debian 12 .debs of the -dev packages tqkv builds with, for machines that
# lack them (apt-get download libgtest-dev googletest nlohmann-json3-dev libcli11-dev libfmt-dev
# libfmt9 liblzma-dev libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread libgfortran5
# libxxhash-dev libxxhash0);
# they are unpacked into /opt/deps. OUT_DIR (default
# gpu-results/, or $OUT when set) receives test logs and gpu-bench.json.
# Environment: GPU_CHECK_QUICK=1 runs small benchmark shapes only; GPU_CHECK_BENCH_ARGS adds
# arguments to bench/gpu_bench.py (e.g. "--shapes 16x32768,1x131072"); GPU_CHECK_SKIP_BENCH=1 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
DEBS=${1:-}
OUTDIR=${2:-${OUT:-gpu-results}}
mkdir -p "$OUTDIR"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUTDIR/nvidia-smi.txt" || true

source scripts/gpu-deps.sh  # PREFIX_ARGS from the .debs in $DEBS
JOBS=$(nproc)
B=${GPU_CHECK_BUILD:-build-gpu}
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTQKV_CUDA=ON -DTQKV_BUILD_BENCH=OFF "${PREFIX_ARGS[@]}" \
  > "$OUTDIR/cmake.log" 2>&1 || { tail -30 "$OUTDIR/cmake.log"; exit 1; }
cmake --build "$B" -j "$JOBS" --target tqkv_tests tqkv_capi > "$OUTDIR/build.log" 2>&1 || { grep -B3 -A20 -m3 "error" "$OUTDIR/build.log"; tail -20 "$OUTDIR/build.log"; exit 1; }
echo "build ok ($SECONDS s)"

status=0
# 1. GPU tests (fresh random inputs every run; outputs poisoned before every kernel).
timeout 300 "$B"/tqkv_tests --gtest_filter='*Cuda*' 2>&1 | head -c 4000000 > "$OUTDIR/gpu-tests.log" || status=1
grep -m 60 -E "^\[  (PASSED|FAILED|SKIPPED) |worst error|^\[  FAILED|Failure" "$OUTDIR/gpu-tests.log" || true
grep -E "tests? from .* ran|PASSED|FAILED" "$OUTDIR/gpu-tests.log" | tail -3

echo "tests done ($SECONDS s)"
# 2. compute-sanitizer memcheck on a small case (encode + pages + decode + prefill attention).
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ -x "$SAN" ]; then
  timeout 200 "$SAN" --tool memcheck --error-exitcode 3 "$B"/tqkv_tests \
    --gtest_filter='Formats/CudaCache.CodesAndAttention/tq2_tq2_d64_g2:Formats/CudaCache.CodesAndAttention/q4_0_q4_0_d64_g3:Formats/CudaEncode.BitIdenticalToCpu/rvq1x2_d80' \
    > "$OUTDIR/memcheck.log" 2>&1 && echo "memcheck: clean" || { echo "memcheck: FAILED"; tail -30 "$OUTDIR/memcheck.log"; status=1; }
  grep -E "ERROR SUMMARY" "$OUTDIR/memcheck.log" || true
else
  echo "compute-sanitizer not found: memcheck skipped"
fi

# 3. benchmark
if [ "${GPU_CHECK_SKIP_BENCH:-0}" != 1 ]; then
  export TQKV_COMMIT=${TQKV_COMMIT:-$(cat COMMIT 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo unknown)}
  Q=(); [ "${GPU_CHECK_QUICK:-0}" = 1 ] && Q=(--quick)
  LEFT=$(( ${GPU_CHECK_DEADLINE:-100000} - SECONDS ))
  echo "benchmark (time left $LEFT s)"
  PYTHONUNBUFFERED=1 timeout $LEFT python3 bench/gpu_bench.py --lib "$B"/libtqkv_capi.so --out "$OUTDIR/gpu-bench.json" "${Q[@]}" ${GPU_CHECK_BENCH_ARGS:-} \
    2>&1 | tee "$OUTDIR/bench.log" || status=1
fi
exit $status
