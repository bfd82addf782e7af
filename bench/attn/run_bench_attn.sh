#!/usr/bin/env bash
# Decode-attention speed of compressed caches vs f16/f16 (measured in the same process for every
# row), at the issue's shape. Writes OUT.json (array of `tqkv bench-attn --json` objects) and prints
# a markdown table.
#   bench/attn/run_bench_attn.sh OUT.json [tqkv binary] [extra bench-attn flags]
set -euo pipefail
out=$1 tqkv=${2:-./build/tqkv}
shift $(( $# >= 2 ? 2 : 1 ))
shape=(--ctx 65536 --q-heads 32 --kv-heads 8 --head-dim 128 --batch 4)
pairs=("rvq1x2 tq2" "rvq2x2 tq4" "q8_0 q8_0" "q4_0 q4_0" "tq2 tq2" "kivi2 kivi2")
# BENCH_PAIRS="f16 f16;tq4 tq4;..." replaces the list.
if [ -n "${BENCH_PAIRS:-}" ]; then IFS=';' read -ra pairs <<< "$BENCH_PAIRS"; fi
echo "[" > "$out"
n=${#pairs[@]} i=0
for p in "${pairs[@]}"; do
  i=$((i + 1))
  set -- $p "$@"
  k=$1 v=$2
  shift 2
  echo "[$i/$n] $k / $v" >&2
  "$tqkv" bench-attn "${shape[@]}" --cache-type-k "$k" --cache-type-v "$v" --json "$@" >> "$out"
  [ "$i" -lt "$n" ] && echo "," >> "$out"
done
echo "]" >> "$out"
python3 - "$out" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
# byte-limited: the speedup if the step took time in proportion to its bytes (f16 bytes / bytes);
# of byte limit: speedup_vs_f16 / byte-limited (issue 8's goal: >= 0.60).
print("| K / V | bits K/V | ms/step | f16 ms/step | speedup vs f16 | byte-limited | of byte limit | GB/s | f16 GB/s | DRAM GB/s | bw fraction | f16 bw fraction |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['cache_type_k']} / {r['cache_type_v']} | {r['bits_per_element_k']:.2f}/{r['bits_per_element_v']:.2f} | "
          f"{r['ms_per_step']:.2f} | {r['f16_ms_per_step']:.2f} | **{r['speedup_vs_f16']:.2f}x** | "
          f"{r['f16_bytes_read_per_step'] / r['bytes_read_per_step']:.2f}x | "
          f"{r['speedup_vs_f16'] * r['bytes_read_per_step'] / r['f16_bytes_read_per_step']:.2f} | {r['gb_per_s']:.2f} | "
          f"{r['f16_gb_per_s']:.2f} | {r['dram_gb_per_s']:.2f} | {r['bandwidth_fraction']:.2f} | {r['f16_bandwidth_fraction']:.2f} |")
PY
