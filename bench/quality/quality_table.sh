#!/usr/bin/env bash
# Quality of every KV-cache configuration on a real model, side by side, in one run:
# perplexity, KL divergence against the f16-cache logits, top-1 agreement, K+V bits per element.
#   bench/quality/quality_table.sh MODEL.gguf TEXT CTX CHUNKS OUT.json [tqkv binary]
# Writes OUT.json (one object per configuration, the JSON of `tqkv perplexity`) and prints a
# markdown table.
set -euo pipefail
model=$1 text=$2 ctx=$3 chunks=$4 out=$5 tqkv=${6:-./build/tqkv}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
base="$tmp/base.kld"
common=(-m "$model" -f "$text" -c "$ctx" --chunks "$chunks" --json)
echo "f16 reference run..." >&2
"$tqkv" perplexity "${common[@]}" --kl-divergence-base "$base" > "$tmp/f16.json"
configs=(
  "q8_0|-ctk q8_0 -ctv q8_0"
  "q4_0|-ctk q4_0 -ctv q4_0"
  "kivi4|--method kivi --key-bits 4 --value-bits 4"
  "kivi2|--method kivi --key-bits 2 --value-bits 2"
  "tq4 (TurboQuant-MSE)|--method turboquant_mse --key-bits 4 --value-bits 4"
  "tq3 K / tq2 V|-ctk tq3 -ctv tq2"
  "tq2 (TurboQuant-MSE)|--method turboquant_mse --key-bits 2 --value-bits 2"
  "rvq2x2 K / tq4 V|--method turboquant_rvq --key-bits 2 --residuals 2 --value-bits 4"
  "rvq2x2 K / tq2 V|--method turboquant_rvq --key-bits 2 --residuals 2 --value-bits 2"
  "rvq1x3 K / tq2 V|--method turboquant_rvq --key-bits 1 --residuals 3 --value-bits 2"
  "rvq1x2 K / tq2 V (default)|--method turboquant_rvq --key-bits 1 --residuals 2 --value-bits 2"
  "rvq1x2 laplacian (seed)|--method turboquant_rvq --key-bits 1 --residuals 2 --value-bits 2 --residual-codebook laplacian"
  "rvq1x2, no Hadamard|--method turboquant_rvq --key-bits 1 --residuals 2 --value-bits 2 --no-hadamard"
  "rvq1x2 + q8_0 boundary layers|--method turboquant_rvq --key-bits 1 --residuals 2 --value-bits 2 --kv-boundary-layers 1"
  "rvq1x2 + f16 window 64|--method turboquant_rvq --key-bits 1 --residuals 2 --value-bits 2 --kv-window 64"
)
echo "[" > "$out"
python3 - "$tmp/f16.json" "f16 (reference)" >> "$out" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); j["label"] = sys.argv[2]; print(json.dumps(j) + ",")
PY
n=${#configs[@]}
i=0
for c in "${configs[@]}"; do
  i=$((i + 1))
  label=${c%%|*} flags=${c#*|}
  echo "[$i/$n] $label" >&2
  # shellcheck disable=SC2086
  "$tqkv" perplexity "${common[@]}" --kl-divergence "$base" $flags > "$tmp/r.json"
  sep=","; [ "$i" -eq "$n" ] && sep=""
  python3 - "$tmp/r.json" "$label" "$flags" "$sep" >> "$out" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); j["label"] = sys.argv[2]; j["flags"] = sys.argv[3]
print(json.dumps(j) + sys.argv[4])
PY
done
echo "]" >> "$out"
python3 - "$out" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
base = rows[0]["ppl"]
print("| cache (K / V) | K+V bits/elem | PPL | dPPL | mean KLD | p99 KLD | top-1 agree |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    k = r.get("kld_mean"); p = r.get("kld_p99"); t = r.get("top1_agreement")
    f = lambda v, fmt: (fmt % v) if isinstance(v, (int, float)) else "-"
    print(f"| {r['label']} | {r['kv_bits_per_element']:.3f} | {r['ppl']:.4f} | {100*(r['ppl']/base-1):+.2f}% | "
          f"{f(k, '%.5f')} | {f(p, '%.4f')} | {f(t, '%.4f')} |")
PY
