#!/usr/bin/env bash
# The Python side of the GPU check (issue 12), for an H100/H200 machine with torch (CUDA) and
# transformers: builds the tqkv package with CUDA for the machine's python3 (its pybind11, numpy),
# runs the Python tests that need the GPU (tqkv.gpu, tqkv.hf on the shipped GGUF) and the ones that
# check the package itself, then bench/gpu_hf_bench.py (decode tok/s and GPU memory, transformers'
# default cache vs tqkv's, random 8B-shaped Llama) -> one JSON. Runs after or without
# scripts/gpu-check.sh (separate build directory).
#
#   scripts/gpu-python.sh [DEBS_DIR] [OUT_DIR]
#
# DEBS_DIR: Debian .debs of tqkv's -dev dependencies for machines that lack them (as in
# scripts/gpu-check.sh, plus libxxhash-dev libxxhash0). OUT_DIR (default gpu-results/, or $OUT): pytest log, hf_quality.json,
# gpu-hf-bench.json, logs.
# Environment: GPU_PY_DEADLINE (seconds for the whole script, default 100000; the benchmark gets
# what is left), GPU_PY_BENCH_ARGS (extra arguments, e.g. "--layers 8 --contexts 8192"),
# GPU_PY_SKIP_BENCH=1, GPU_PY_SKIP_TESTS=1, GPU_PY_MUTATIONS=1 (after the tests: break the installed
# package's Python in four ways, one at a time, and check that the named test fails each time).
set -euo pipefail
cd "$(dirname "$0")/.."
DEBS=${1:-}
OUTDIR=$(mkdir -p "${2:-${OUT:-gpu-results}}" && cd "${2:-${OUT:-gpu-results}}" && pwd)
DEADLINE=${GPU_PY_DEADLINE:-100000}
PY=$(command -v python3)
"$PY" -c "import sys, torch, transformers, pybind11, numpy; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'pybind11', pybind11.__version__, 'numpy', numpy.__version__)"

source scripts/gpu-deps.sh  # PREFIX_ARGS from the .debs in $DEBS
B=${GPU_PY_BUILD:-build-gpu-py}
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTQKV_CUDA=ON -DTQKV_PYTHON=ON -DPython3_EXECUTABLE="$PY" \
  -DTQKV_BUILD_BENCH=OFF "${PREFIX_ARGS[@]}" > "$OUTDIR/py-cmake.log" 2>&1 || { tail -40 "$OUTDIR/py-cmake.log"; exit 1; }
cmake --build "$B" -j "$(nproc)" --target tqkv_python tqkv_python_files tqkv_cli > "$OUTDIR/py-build.log" 2>&1 \
  || { grep -B3 -A20 -m3 "error" "$OUTDIR/py-build.log"; tail -20 "$OUTDIR/py-build.log"; exit 1; }
echo "build ok ($SECONDS s)"

status=0
export PYTHONPATH=$PWD/$B/python TQKV_CLI=$PWD/$B/tqkv TQKV_SOURCE_DIR=$PWD TQKV_BUILD_DIR=$PWD/$B \
  TQKV_CMAKE=$(command -v cmake) TQKV_GPU_RESULTS=$OUTDIR PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
TQKV_PYTHON_INSTALL_DIR=$(sed -n 's/^TQKV_PYTHON_INSTALL_DIR:STRING=//p' "$B/CMakeCache.txt")
export TQKV_PYTHON_INSTALL_DIR
if [ "${GPU_PY_SKIP_TESTS:-0}" != 1 ]; then
  LEFT=$(( DEADLINE - SECONDS - 60 ))
  timeout $(( LEFT > 60 ? LEFT : 60 )) "$PY" -m pytest -q -rs -p no:cacheprovider -s \
    python/tests/test_gpu.py python/tests/test_gpu_hf.py python/tests/test_docs.py python/tests/test_convert.py \
    python/tests/test_install.py \
    > "$OUTDIR/pytest-gpu.log" 2>&1 || status=1
  grep -E "worst error|passed|failed|skipped|error|Error" "$OUTDIR/pytest-gpu.log" | tail -40
  echo "tests done ($SECONDS s)"
fi

# Mutation check: each line breaks one thing in the built package (not the sources) and names the
# test that must catch it.
mutate() {  # NAME FILE SED-EXPRESSION PYTEST-SELECTOR
  local f=$B/python/tqkv/$2
  cp "$f" "$f.orig"
  sed -i "$3" "$f"
  if cmp -s "$f" "$f.orig"; then
    echo "mutation $1: the edit did not apply"; status=1
  elif env -u TQKV_GPU_RESULTS timeout 200 "$PY" -m pytest -q -x -p no:cacheprovider "$4" >> "$OUTDIR/mutations.log" 2>&1; then
    echo "mutation $1: NOT caught by $4"; status=1
  else
    echo "mutation $1: caught by $4"
  fi
  mv "$f.orig" "$f"
}
if [ "${GPU_PY_MUTATIONS:-0}" = 1 ]; then
  mutate "no RoPE unpermute" convert.py 's|transpose(0, 2, 1, 3)|transpose(0, 1, 2, 3)|' \
    python/tests/test_gpu_hf.py::test_logits_match_tqkv_perplexity
  mutate "attention output layout" hf.py 's|return out.to(query.dtype).transpose(1, 2).contiguous(), None|return out.to(query.dtype).contiguous(), None|' \
    python/tests/test_gpu_hf.py::test_logits_match_tqkv_perplexity
  mutate "cache not found by attention" hf.py 's|        setattr(key_states, _TAG, self)|        pass|' \
    python/tests/test_gpu_hf.py::test_greedy_tokens_identical_f16
  mutate "stream not passed" gpu.py 's|, _stream(self.device))|, 0)|' \
    python/tests/test_gpu.py::test_side_stream_ordering
  echo "mutations done ($SECONDS s)"
fi

if [ "${GPU_PY_SKIP_BENCH:-0}" != 1 ]; then
  export TQKV_COMMIT=${TQKV_COMMIT:-$(cat COMMIT 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo unknown)}
  LEFT=$(( DEADLINE - SECONDS ))
  echo "benchmark (time left $LEFT s)"
  # shellcheck disable=SC2086
  timeout $(( LEFT > 30 ? LEFT : 30 )) "$PY" bench/gpu_hf_bench.py --out "$OUTDIR/gpu-hf-bench.json" \
    --deadline $(( LEFT > 90 ? LEFT - 90 : 0 )) ${GPU_PY_BENCH_ARGS:-} 2>&1 | tee "$OUTDIR/bench-hf.log" || status=1
fi
exit $status
