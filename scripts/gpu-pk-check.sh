#!/usr/bin/env bash
# GPU check of the pk{b} (pre-RoPE keys) CUDA path, for an H100/H200 machine, in one command:
# build (or use prebuilt binaries), the pk GPU tests, the other CUDA tests, compute-sanitizer
# memcheck on a small pk case, optional mutant binaries (each must fail some pk test), and the
# decode benchmark of pk vs tq formats at B=16 L=32768 (bench/gpu_bench.py -> one JSON).
#
#   scripts/gpu-pk-check.sh [DEBS_DIR] [OUT_DIR]
#
# Environment: GPU_PK_PREBUILT=DIR uses DIR/tqkv_tests and DIR/libtqkv_capi.so (built elsewhere
# with -DTQKV_CUDA=ON) when they run here, else builds; GPU_PK_MUTANTS=DIR runs every
# DIR/mut-*.xz test binary (xz-compressed) on the pk tests; GPU_PK_SKIP_BENCH=1 skips the benchmark;
# GPU_PK_BENCH_FORMATS overrides the formats; GPU_PK_OTHER_TESTS the filter of the non-pk CUDA tests; GPU_PK_BENCH_SHAPES the BxL list.
set -uo pipefail
cd "$(dirname "$0")/.."
DEBS=${1:-}
OUTDIR=${2:-${OUT:-gpu-results}}
mkdir -p "$OUTDIR"
LOG="$OUTDIR/gpu-pk.log"
exec > >(tee -a "$LOG") 2>&1
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv || true
source scripts/gpu-deps.sh  # PREFIX_ARGS and LD_LIBRARY_PATH from the .debs in $DEBS
B=build-gpu
T= CAPI=
if [ -n "${GPU_PK_PREBUILT:-}" ]; then
  for f in "$GPU_PK_PREBUILT"/*.xz; do [ -e "$f" ] && xz -dkf "$f"; done
  chmod +x "$GPU_PK_PREBUILT"/tqkv_tests 2>/dev/null
  if "$GPU_PK_PREBUILT"/tqkv_tests --gtest_filter='CudaBuild.*' > /dev/null 2>&1; then
    T="$GPU_PK_PREBUILT"/tqkv_tests
    CAPI="$GPU_PK_PREBUILT"/libtqkv_capi.so
    echo "prebuilt binaries run here"
  else
    echo "prebuilt binaries do not run here:"; ldd "$GPU_PK_PREBUILT"/tqkv_tests | grep "not found"
  fi
fi
if [ -z "$T" ]; then
  cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTQKV_CUDA=ON -DTQKV_BUILD_BENCH=OFF "${PREFIX_ARGS[@]}" \
    > "$OUTDIR/cmake.log" 2>&1 || { tail -30 "$OUTDIR/cmake.log"; exit 1; }
  cmake --build "$B" -j "$(nproc)" --target tqkv_tests tqkv_capi > "$OUTDIR/build.log" 2>&1 ||
    { grep -B3 -A20 -m3 "error" "$OUTDIR/build.log"; exit 1; }
  T=$B/tqkv_tests CAPI=$B/libtqkv_capi.so
  echo "build ok ($SECONDS s)"
fi
status=0
# 1. pk tests, then every other CUDA test (the cache hooks must not change the other formats)
timeout 200 "$T" --gtest_filter='*CudaPk*' > "$OUTDIR/pk-tests.txt" 2>&1 || status=1
grep -E "^\[  (PASSED|FAILED) |worst error|Failure|error:" "$OUTDIR/pk-tests.txt" | head -40
echo "pk tests done ($SECONDS s)"
OTHER=${GPU_PK_OTHER_TESTS:-*Cuda*:-*CudaPk*}
timeout 200 "$T" --gtest_filter="$OTHER" > "$OUTDIR/cuda-tests.txt" 2>&1 || status=1
grep -E "^\[  (PASSED|FAILED) |^\[  FAILED" "$OUTDIR/cuda-tests.txt" | head -20
echo "other CUDA tests done ($SECONDS s)"
# 2. memcheck on small pk cases (encode, pending rows, the fit, attention, merge)
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ -x "$SAN" ]; then
  timeout 200 "$SAN" --tool memcheck --error-exitcode 3 "$T" \
    --gtest_filter='Formats/CudaPkCache.CodesStatsAndAttention/pk4_tq4_d64_g1*:Formats/CudaPkEncode.BitIdenticalToCpu/pk2_d80:CudaPkCacheErrors.*' \
    > "$OUTDIR/pk-memcheck.txt" 2>&1 && echo "memcheck: clean" || { echo "memcheck: FAILED"; tail -30 "$OUTDIR/pk-memcheck.txt"; status=1; }
  grep -E "ERROR SUMMARY" "$OUTDIR/pk-memcheck.txt" || true
fi
# 3. mutants: each must fail at least one pk test
if [ -n "${GPU_PK_MUTANTS:-}" ]; then
  for f in "$GPU_PK_MUTANTS"/mut-*.xz; do
    xz -dkf "$f"; m=${f%.xz}; chmod +x "$m"
    timeout 90 "$m" --gtest_filter='*CudaPk*' > "$m.txt" 2>&1
    echo "mutant $(basename "$m"): exit $?, failed: $(grep -E '^\[  FAILED  \] [A-Za-z]' "$m.txt" | grep -v ' tests\?,' | sed 's/.*\] //;s/ (.*//' | sort -u | tr '\n' ' ')"
  done | tee "$OUTDIR/pk-mutants.txt"
fi
# 4. benchmark
if [ "${GPU_PK_SKIP_BENCH:-0}" != 1 ]; then
  export TQKV_COMMIT=${TQKV_COMMIT:-$(cat COMMIT 2>/dev/null || echo unknown)}
  PYTHONUNBUFFERED=1 timeout 300 python3 bench/gpu_bench.py --lib "$CAPI" --out "$OUTDIR/gpu-pk-bench.json" --shapes "${GPU_PK_BENCH_SHAPES:-16x32768}" \
    --formats "${GPU_PK_BENCH_FORMATS:-pk2/tq2,tq2/tq2,rvq1x2/tq2,pk3/tq4,pk4/tq4,tq4/tq4}" > "$OUTDIR/bench.txt" 2>&1 || status=1
  tail -12 "$OUTDIR/bench.txt"
fi
echo "total $SECONDS s, status $status"
exit $status
