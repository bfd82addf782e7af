#!/usr/bin/env bash
# Issue 13's runs on a GPU machine (docs/tensor-parallel.md): tensor-parallel decode with tqkv's
# compressed GPU cache, NCCL all-reduce, 1 and 2 GPUs. Builds the package with CUDA through
# scripts/gpu-python.sh (its build only), then:
#   - bench/tp_bench.py on 1 GPU (torchrun) -> tp-1gpu.json
#   - with >= 2 GPUs: bench/tp_bench.py on 2 GPUs (NCCL) -> tp-2gpu.json
#     with 1 GPU:     2 ranks on cuda:0 over gloo, generation only (the sharded GPU path's
#                     correctness; no timings) -> tp-2rank-1gpu.json
#   - tp_bench.py --summarize -> tp-summary.md
# NVLink multicast stays off: NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
# NVSHMEM_DISABLE_NVLS=1 (set here and again inside tp_bench.py before torch.distributed loads).
#
#   scripts/gpu-tp.sh [DEBS_DIR] [OUT_DIR]        (arguments as scripts/gpu-python.sh)
# Environment: GPU_TP_ARGS (extra tp_bench.py arguments, e.g. "--contexts 32768").
set -euo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUTDIR=$(mkdir -p "${2:-${OUT:-gpu-results}}" && cd "${2:-${OUT:-gpu-results}}" && pwd)
GPU_PY_SKIP_TESTS=1 GPU_PY_SKIP_BENCH=1 ./scripts/gpu-python.sh "${1:-}" "$OUTDIR"
B=${GPU_PY_BUILD:-build-gpu-py}
export PYTHONPATH=$PWD/$B/python PYTHONUNBUFFERED=1
if [ -n "${1:-}" ]; then
  P=/opt/deps/usr
  export LD_LIBRARY_PATH=$P/lib/x86_64-linux-gnu:$P/lib/x86_64-linux-gnu/openblas-pthread:${LD_LIBRARY_PATH:-}
fi
PY=$(command -v python3)
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
echo "GPUs: $NGPU"
status=0
# shellcheck disable=SC2086
"$PY" -m torch.distributed.run --standalone --nproc_per_node 1 bench/tp_bench.py --out "$OUTDIR/tp-1gpu.json" ${GPU_TP_ARGS:-} \
  2>&1 | tee "$OUTDIR/tp-1gpu.log" || status=1
files=("$OUTDIR/tp-1gpu.json")
if [ "$NGPU" -ge 2 ]; then
  # shellcheck disable=SC2086
  "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 bench/tp_bench.py --out "$OUTDIR/tp-2gpu.json" ${GPU_TP_ARGS:-} \
    2>&1 | tee "$OUTDIR/tp-2gpu.log" || status=1
  files+=("$OUTDIR/tp-2gpu.json")
else
  echo "one GPU: 2 ranks on cuda:0 over gloo, generation only (no timings, no NCCL)"
  "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 bench/tp_bench.py --backend gloo --same-gpu --parts generate \
    --out "$OUTDIR/tp-2rank-1gpu.json" 2>&1 | tee "$OUTDIR/tp-2rank-1gpu.log" || status=1
  files+=("$OUTDIR/tp-2rank-1gpu.json")
fi
"$PY" bench/tp_bench.py --summarize "${files[@]}" | tee "$OUTDIR/tp-summary.md" || status=1
exit $status
