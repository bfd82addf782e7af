#!/usr/bin/env python3
"""Decode speed and GPU memory of transformers' LlamaForCausalLM with transformers' default cache
(DynamicCache + SDPA) vs tqkv's compressed GPU cache (tqkv.hf.TqkvCache + the "tqkv" attention).

Model: a random-weight Llama with the shape of an 8B model (32 layers, hidden 4096, 32 query / 8 kv
heads, head_dim 128, FFN 14336, vocab 128256), bf16 weights on the GPU; --layers reduces the depth.
Quality is measured on the real (small) models by python/tests/test_gpu_hf.py, not here.

For each batch B, context L and cache: the cache is filled with L random bf16 tokens per layer
through the cache's own update() (what a prefill would store; the context is NOT prefilled by the
model, which would take minutes at 128k), then the model decodes --warmup + --steps tokens (one
forward of B x 1 tokens each, greedy). Times: host clock around each step after
torch.cuda.synchronize(), median over the timed steps. Memory: device-wide used bytes
(torch.cuda.mem_get_info: torch's allocator AND tqkv's own cudaMalloc pools) after the weights,
after the fill and after decoding; kv_bytes: the cache's own bytes (tensor sizes for the
DynamicCache, bytes_resident for tqkv, which reserves max_cache_len = L + steps pages up front).
Configurations whose estimated need exceeds free memory are recorded as skipped, not run.
Writes one JSON (--out) after every configuration.
"""
import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import torch


def gib(x):
    return round(x / 2 ** 30, 3)


def used():
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    return total - free


def make_model(layers, vocab):
    import transformers
    kw = dict(vocab_size=vocab, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
              num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
              rms_norm_eps=1e-5, tie_word_embeddings=False)
    import inspect
    if "rope_parameters" in inspect.signature(transformers.LlamaConfig.__init__).parameters:
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": 500000.0}
    else:
        kw["rope_theta"] = 500000.0
    config = transformers.LlamaConfig(**kw)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = transformers.LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(old)
    return model.eval()


def fill(cache, n_layers, B, L, gen, chunk_tokens):
    """L random bf16 tokens per layer into `cache` through Cache.update (chunks of chunk_tokens)."""
    for layer in range(n_layers):
        t = 0
        while t < L:
            n = min(chunk_tokens, L - t)
            k = torch.randn(B, 8, n, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
            v = torch.randn(B, 8, n, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
            cache.update(k, v, layer)
            t += n
            del k, v


def run_one(model, n_layers, fmt, B, L, steps, warmup, base_used):
    import tqkv.hf
    from transformers import DynamicCache
    gen = torch.Generator(device="cuda").manual_seed(1)
    total = torch.cuda.mem_get_info()[1]
    f16_kv = 2 * B * L * 8 * 128 * 2 * n_layers
    if fmt == "sdpa":
        # DynamicCache concatenates each step: a layer's K and V exist twice during its update.
        need = f16_kv + 2 * f16_kv / n_layers + 4 * 2 ** 30
        if base_used + need > total:
            return dict(skipped=f"does not fit: needs ~{gib(need)} GiB for the bf16 KV cache and the per-step copy, "
                                f"{gib(total - base_used)} GiB free")
        model.set_attn_implementation("sdpa")
        cache = DynamicCache()
        t0 = time.perf_counter()
        for layer in range(n_layers):  # one tensor per layer (a chunked cat would copy L^2)
            k = torch.randn(B, 8, L, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
            v = torch.randn(B, 8, L, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
            cache.update(k, v, layer)
            del k, v
    else:
        cache = tqkv.hf.TqkvCache(model, fmt, max_cache_len=L + 2 * steps + warmup + 1)
        t0 = time.perf_counter()
        fill(cache, n_layers, B, L, gen, max(1024, 65536 // B))
    torch.cuda.synchronize()
    fill_s = time.perf_counter() - t0
    after_fill = used()
    if fmt == "sdpa":
        kv_bytes = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    else:
        kv_bytes = cache.bytes_resident
    torch.cuda.reset_peak_memory_stats()
    ids = torch.randint(0, model.config.vocab_size, (B, 1), device="cuda", generator=gen)
    times = []
    with torch.no_grad():
        for i in range(warmup + steps):
            torch.cuda.synchronize()
            t = time.perf_counter()
            out = model(input_ids=ids, past_key_values=cache, use_cache=True)
            ids = out.logits[:, -1:].argmax(-1)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
            del out
        # The same number of steps again without a synchronization per step (how generate runs:
        # the host queues the next step while the GPU works): tokens/s of the whole block.
        torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(steps):
            out = model(input_ids=ids, past_key_values=cache, use_cache=True)
            ids = out.logits[:, -1:].argmax(-1)
            del out
        torch.cuda.synchronize()
        block_s = time.perf_counter() - t
    after_decode = used()
    assert cache.get_seq_length() == L + warmup + 2 * steps
    ms = statistics.median(times[warmup:]) * 1e3
    res = dict(ms_per_step=round(ms, 3), tok_per_s=round(B / (ms / 1e3), 1),
               pipelined_ms_per_step=round(block_s / steps * 1e3, 3), pipelined_tok_per_s=round(B * steps / block_s, 1),
               step_ms_all=[round(x * 1e3, 3) for x in times], kv_bytes=kv_bytes, kv_gib=gib(kv_bytes),
               f16_kv_bytes=f16_kv, kv_ratio_vs_bf16=round(f16_kv / kv_bytes, 3),
               device_used_after_fill_gib=gib(after_fill), device_used_after_decode_gib=gib(after_decode),
               device_used_minus_weights_gib=gib(after_decode - base_used),
               torch_peak_allocated_during_decode_gib=gib(torch.cuda.max_memory_allocated()), fill_s=round(fill_s, 2))
    del cache
    gc.collect()
    torch.cuda.empty_cache()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--contexts", default="8192,32768,131072")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--formats", default="sdpa,rvq1x2/tq2,tq4/tq4")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--deadline", type=float, default=1e9, help="seconds: start no configuration after this")
    a = ap.parse_args()
    t_start = time.perf_counter()
    import transformers
    import tqkv
    import tqkv.gpu
    ok, why = tqkv.gpu.available()
    if not ok:
        sys.exit(f"tqkv GPU backend unavailable: {why}")
    doc = dict(command=" ".join([os.path.basename(sys.executable)] + sys.argv),
               commit=os.environ.get("TQKV_COMMIT", "unknown"), device=torch.cuda.get_device_name(0),
               tqkv_device=tqkv.gpu.device_name(), torch=torch.__version__, transformers=transformers.__version__,
               model=dict(layers=a.layers, hidden=4096, q_heads=32, kv_heads=8, head_dim=128, ffn=14336,
                          vocab=a.vocab, weights="random, bf16"),
               method=__doc__.split("\n\n")[2].replace("\n", " "), steps=a.steps, warmup=a.warmup, runs=[])
    try:
        doc["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,clocks.sm,clocks.mem",
                                            "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    model = make_model(a.layers, a.vocab)
    base_used = used()
    doc["device_used_weights_gib"] = gib(base_used)
    for L in [int(x) for x in a.contexts.split(",")]:
        for B in [int(x) for x in a.batches.split(",")]:
            for fmt in a.formats.split(","):
                row = dict(context=L, batch=B, cache="transformers DynamicCache + SDPA (bf16)" if fmt == "sdpa"
                           else f"tqkv {fmt}", format=fmt)
                if time.perf_counter() - t_start > a.deadline:
                    row["skipped"] = "time budget of this run exhausted"
                else:
                    try:
                        row.update(run_one(model, a.layers, fmt, B, L, a.steps, a.warmup, base_used))
                    except (torch.OutOfMemoryError, RuntimeError) as e:
                        if "out of memory" not in str(e).lower() and "exhausted" not in str(e):
                            raise
                        row["skipped"] = f"out of memory: {str(e).splitlines()[0][:200]}"
                        gc.collect()
                        torch.cuda.empty_cache()
                print(json.dumps({k: v for k, v in row.items() if k != "step_ms_all"}), flush=True)
                doc["runs"].append(row)
                with open(a.out, "w") as f:
                    json.dump(doc, f, indent=1)
    # summary
    print(f"\n{'L':>7} {'B':>3} {'cache':<12} {'ms/step':>9} {'tok/s':>9} {'pipe tok/s':>10} {'KV GiB':>8} {'x bf16':>7}")
    for r in doc["runs"]:
        if "skipped" in r:
            print(f"{r['context']:>7} {r['batch']:>3} {r['format']:<12} skipped: {r['skipped'][:60]}")
        else:
            print(f"{r['context']:>7} {r['batch']:>3} {r['format']:<12} {r['ms_per_step']:>9.2f} {r['tok_per_s']:>9.1f} "
                  f"{r['pipelined_tok_per_s']:>10.1f} "
                  f"{r['kv_gib']:>8.2f} {r['kv_ratio_vs_bf16']:>7.2f}")


if __name__ == "__main__":
    main()
