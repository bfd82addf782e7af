#!/usr/bin/env python3
"""GPU decode-attention benchmark (run by scripts/gpu-check.sh on an H100/H200).

For each shape (B, L) with 32 query heads / 8 kv heads, d = 128, and each cache format, three
paths measured in this one process on the same random data:
  ours   tqkv's fused split-KV kernel over the compressed GPU pages (libtqkv_capi.so, ctypes)
  sdpa   torch scaled_dot_product_attention, bf16, flash backend, GQA
  naive  dequantize the pages to dense bf16 (tqkv's dequant kernel), then the same SDPA
Method: CUDA events around each call, warm-up, median of >= 50 calls, inputs larger than L2 by
cycling several copies of every cache. Also: device-to-device copy bandwidth (read + write) in
the same run, and encode throughput (GB/s of bf16 K+V input). Writes one JSON.
"""
import argparse
import ctypes
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

HQ, HKV, D = 32, 8, 128
# shapes and formats where the other compiled kernel variants (TQKV_ATTN_VARIANT=1, 2) are timed too
VARIANT_SHAPES = {(16, 32768), (1, 131072)}
VARIANT_FORMATS = {"1": {("rvq1x2", "tq2"), ("rvq2x2", "tq4"), ("tq4", "tq4"), ("q4_0", "q4_0")},
                   "2": {("rvq2x2", "tq4"), ("tq4", "tq4")}}
L2_TARGET = 512 << 20  # cycle copies until every timed path touches >= this many bytes


def load_lib(path):
    lib = ctypes.CDLL(path)
    vp, ip, i = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int
    lib.tqkv_capi_last_error.restype = ctypes.c_char_p
    lib.tqkv_capi_cache_new.restype = vp
    lib.tqkv_capi_cache_new.argtypes = [i, i, ctypes.c_char_p, ctypes.c_char_p, i, i, i]
    lib.tqkv_capi_cache_free.argtypes = [vp]
    lib.tqkv_capi_append.argtypes = [vp, i, ip, i, vp, vp, i]
    lib.tqkv_capi_append_timed.argtypes = [vp, i, ip, i, vp, vp, i, i]
    lib.tqkv_capi_append_timed.restype = ctypes.c_float
    lib.tqkv_capi_attend.argtypes = [vp, i, ip, i, i, vp, vp, i]
    lib.tqkv_capi_dequant.argtypes = [vp, i, ip, i, i, vp]
    lib.tqkv_capi_signs.argtypes = [vp, i, i, ctypes.POINTER(ctypes.c_float)]
    lib.tqkv_capi_bytes_per_token_head.argtypes = [vp]
    lib.tqkv_capi_bytes_per_token_head.restype = ctypes.c_longlong
    return lib


def check(lib, rc, what):
    if rc != 0:
        raise RuntimeError(f"{what}: {lib.tqkv_capi_last_error().decode()}")


def ints(xs):
    return (ctypes.c_int * len(xs))(*xs)


def time_calls(fn, n_copies, warmup=10, reps=60):
    for i in range(warmup):
        fn(i % n_copies)
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for r in range(reps):
        ev[r][0].record()
        fn(r % n_copies)
        ev[r][1].record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in ev)


def copy_bandwidth():
    n = 1 << 31  # 2 GiB of bytes
    a = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    b = torch.empty_like(a)
    ms = time_calls(lambda i: b.copy_(a), 1, warmup=5, reps=30)
    del a, b
    return 2 * n / (ms * 1e-3) / 1e12


def hadamard(d, device):
    h = torch.ones(1, 1, device=device)
    while h.shape[0] < d:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / math.sqrt(d)


def sdpa(q, k, v):
    from torch.nn.attention import sdpa_kernel, SDPBackend
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="small shapes only (smoke test)")
    ap.add_argument("--shapes", default="", help="BxL list overriding the default shapes, e.g. 16x32768,1x131072")
    ap.add_argument("--formats", default="rvq1x2/tq2,tq2/tq2,rvq2x2/tq4,tq4/tq4,q4_0/q4_0,q8_0/q8_0,f16/f16")
    ap.add_argument("--no-naive", action="store_true", help="skip the dequantize-then-SDPA path (and its check)")
    ap.add_argument("--no-variant", action="store_true", help="skip the TQKV_ATTN_VARIANT=1/2 timings")
    ap.add_argument("--no-encode", action="store_true", help="skip the encode throughput")
    args = ap.parse_args()
    lib = load_lib(args.lib)
    torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(0)
    res = {
        "command": " ".join(sys.argv),
        "commit": os.environ.get("TQKV_COMMIT", "unknown"),
        "device": f"{props.name}, {props.multi_processor_count} SMs, {props.total_memory >> 30} GiB",
        "torch": torch.__version__,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "heads": {"q": HQ, "kv": HKV, "d": D},
        "method": "CUDA events per call, 10 warm-up calls, median of 60, several cache copies cycled so each path touches >= 512 MiB",
    }
    res["copy_bw_TBps"] = copy_bandwidth()
    print(f"copy bandwidth (read+write): {res['copy_bw_TBps']:.2f} TB/s", flush=True)
    shapes = [(1, 4096), (16, 4096), (1, 32768), (16, 32768)] if args.quick else \
        [(1, 4096), (16, 4096), (64, 4096), (1, 32768), (16, 32768), (64, 32768), (1, 131072), (16, 131072)]
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    formats = [tuple(f.split("/")) for f in args.formats.split(",")]
    H = hadamard(D, dev)
    rows = []
    sdpa_cache = {}
    for (B, L) in shapes:
        # ---- bf16 SDPA baseline (same shapes, own random K/V) ----
        kv_bytes = 2 * B * HKV * L * D * 2
        nc = max(1, min(8, math.ceil(L2_TARGET / kv_bytes)))
        ks = [torch.randn(B, HKV, L, D, device=dev, dtype=torch.bfloat16) for _ in range(nc)]
        vs = [torch.randn(B, HKV, L, D, device=dev, dtype=torch.bfloat16) for _ in range(nc)]
        qb = torch.randn(B, HQ, 1, D, device=dev, dtype=torch.bfloat16)
        t_sdpa = time_calls(lambda i: sdpa(qb, ks[i], vs[i]), nc)
        del ks, vs
        torch.cuda.empty_cache()
        sdpa_cache[(B, L)] = t_sdpa
        print(f"B={B} L={L}: sdpa bf16 {t_sdpa:.4f} ms ({kv_bytes / t_sdpa / 1e9:.2f} TB/s)", flush=True)
        for (kf, vf) in formats:
            row = {"B": B, "L": L, "key": kf, "value": vf, "sdpa_ms": t_sdpa, "sdpa_bytes": kv_bytes}
            try:
                probe = lib.tqkv_capi_cache_new(HKV, D, kf.encode(), vf.encode(), 64, 1, 1)
                if not probe:
                    raise RuntimeError(lib.tqkv_capi_last_error().decode())
                bpt = lib.tqkv_capi_bytes_per_token_head(probe)
                lib.tqkv_capi_cache_free(probe)
                our_bytes = B * L * HKV * bpt
                nc = max(1, min(16, math.ceil(L2_TARGET / our_bytes)))
                pages = nc * B * math.ceil(L / 64)
                cache = lib.tqkv_capi_cache_new(HKV, D, kf.encode(), vf.encode(), 64, pages, nc * B)
                if not cache:
                    raise RuntimeError(lib.tqkv_capi_last_error().decode())
                chunk = min(L, 8192)
                for cpy in range(nc):
                    seqs = list(range(cpy * B, cpy * B + B))
                    for t0 in range(0, L, chunk):
                        n = min(chunk, L - t0)
                        k = torch.randn(B, HKV, n, D, device=dev, dtype=torch.bfloat16)
                        v = torch.randn(B, HKV, n, D, device=dev, dtype=torch.bfloat16)
                        check(lib, lib.tqkv_capi_append(cache, B, ints(seqs), n, k.data_ptr(), v.data_ptr(), 1), "append")
                torch.cuda.synchronize()
                q = torch.randn(B, HQ, 1, D, device=dev, dtype=torch.float32)
                out = torch.full_like(q, float("nan"))
                seq_lists = [ints(list(range(c * B, c * B + B))) for c in range(nc)]
                t_ours = time_calls(lambda i: check(lib, lib.tqkv_capi_attend(cache, B, seq_lists[i], 1, HQ, q.data_ptr(), out.data_ptr(), 0), "attend"), nc)
                # ---- naive: dequantize the pages (copy 0) to bf16, then SDPA ----
                # pk{b} keys are stored before RoPE: no dense dequantization (RoPE is applied in attention)
                naive_ok = 2 * B * HKV * L * D * 2 < (24 << 30) and not kf.startswith("pk") and not args.no_naive
                t_naive, rel, ref = None, None, None
                if naive_ok:
                    kd = torch.empty(B, HKV, L, D, device=dev, dtype=torch.bfloat16)
                    vd = torch.empty_like(kd)
                    sk = torch.empty(HKV, D, dtype=torch.float32)
                    sv = torch.empty(HKV, D, dtype=torch.float32)
                    krot = vrot = True
                    for h in range(HKV):
                        krot = lib.tqkv_capi_signs(cache, 0, h, sk[h].numpy().ctypes.data_as(ctypes.POINTER(ctypes.c_float))) == 0
                        vrot = lib.tqkv_capi_signs(cache, 1, h, sv[h].numpy().ctypes.data_as(ctypes.POINTER(ctypes.c_float))) == 0
                    sk, sv = sk.to(dev), sv.to(dev)
                    g = HQ // HKV

                    def naive(i):
                        check(lib, lib.tqkv_capi_dequant(cache, B, seq_lists[0], L, 0, kd.data_ptr()), "dequant")
                        check(lib, lib.tqkv_capi_dequant(cache, B, seq_lists[0], L, 1, vd.data_ptr()), "dequant")
                        qq = q
                        if krot:  # rotate q into each kv head's key domain: R q = H (s * q)
                            qq = (q.view(B, HKV, g, D) * sk.view(1, HKV, 1, D)) @ H
                            qq = qq.view(B, HQ, 1, D)
                        o = sdpa(qq.to(torch.bfloat16), kd, vd).float()
                        if vrot:  # back from the value domain: R^T o = s * (H o)
                            o = ((o.view(B, HKV, g, D) @ H) * sv.view(1, HKV, 1, D)).view(B, HQ, 1, D)
                        return o

                    t_naive = time_calls(naive, 1, warmup=3, reps=50)
                    check(lib, lib.tqkv_capi_attend(cache, B, seq_lists[0], 1, HQ, q.data_ptr(), out.data_ptr(), 0), "attend")
                    ref = naive(0)
                    torch.cuda.synchronize()
                    rel = ((out - ref).norm() / ref.norm()).item()
                    del kd, vd
                out.fill_(float("nan"))  # the default kernel's output on copy 0, to compare the variants with
                check(lib, lib.tqkv_capi_attend(cache, B, seq_lists[0], 1, HQ, q.data_ptr(), out.data_ptr(), 0), "attend")
                out0 = out.clone()
                for var in ("1", "2"):
                    if args.no_variant or (B, L) not in VARIANT_SHAPES or (kf, vf) not in VARIANT_FORMATS[var]:
                        continue
                    # another compiled kernel variant (TQKV_ATTN_VARIANT, see attention.cu): 1 the
                    # other tiles-per-step / register trade-off, 2 the half-size lut4 tables
                    os.environ["TQKV_ATTN_VARIANT"] = var
                    try:
                        t_v = time_calls(lambda i: check(lib, lib.tqkv_capi_attend(cache, B, seq_lists[i], 1, HQ, q.data_ptr(), out.data_ptr(), 0), "attend"), nc)
                        out.fill_(float("nan"))
                        check(lib, lib.tqkv_capi_attend(cache, B, seq_lists[0], 1, HQ, q.data_ptr(), out.data_ptr(), 0), "attend")
                        torch.cuda.synchronize()
                        row[f"variant{var}_ms"] = t_v
                        msg = f"  {kf:>6}/{vf:<5} variant {var}: {t_v:.4f} ms (x{t_sdpa / t_v:.2f} vs sdpa)"
                        if ref is not None:
                            row[f"variant{var}_rel_diff_vs_naive"] = ((out - ref).norm() / ref.norm()).item()
                            msg += f", |v-naive|/|naive| {row[f'variant{var}_rel_diff_vs_naive']}"
                        row[f"variant{var}_rel_diff_vs_default"] = ((out - out0).norm() / out0.norm()).item()
                        msg += f", |v-default|/|default| {row[f'variant{var}_rel_diff_vs_default']}"
                        print(msg, flush=True)
                    finally:
                        del os.environ["TQKV_ATTN_VARIANT"]
                lib.tqkv_capi_cache_free(cache)
                torch.cuda.empty_cache()
                row.update({
                    "ours_ms": t_ours, "ours_bytes": our_bytes, "ours_TBps": our_bytes / t_ours / 1e9,
                    "ours_frac_copy_bw": our_bytes / t_ours / 1e9 / res["copy_bw_TBps"],
                    "speedup_vs_sdpa": t_sdpa / t_ours, "naive_ms": t_naive,
                    "naive_speedup_vs_sdpa": (t_sdpa / t_naive) if t_naive else None,
                    "rel_diff_ours_vs_naive": rel, "copies_cycled": nc, "bytes_per_token_head": bpt,
                })
                print(f"  {kf:>6}/{vf:<5} ours {t_ours:.4f} ms {row['ours_TBps']:.2f} TB/s "
                      f"({100 * row['ours_frac_copy_bw']:.0f}% copy) x{row['speedup_vs_sdpa']:.2f} vs sdpa; "
                      f"naive {t_naive if t_naive is None else round(t_naive, 4)} ms; |ours-naive|/|naive| {rel}", flush=True)
            except Exception as e:  # noqa: BLE001 - record and go on
                row["error"] = str(e)
                print(f"  {kf}/{vf}: ERROR {e}", flush=True)
            rows.append(row)
            res["attention"] = rows
            with open(args.out, "w") as f:  # partial results survive a time limit
                json.dump(res, f, indent=1)
    res["attention"] = rows
    # ---- encode throughput: B=16, L=32768 bf16 K and V in one append ----
    enc = []
    for (kf, vf) in ([] if args.no_encode else formats):
        B, L = (4, 4096) if args.quick else (16, 32768)
        try:
            cache = lib.tqkv_capi_cache_new(HKV, D, kf.encode(), vf.encode(), 64, B * math.ceil(L / 64), B)
            if not cache:
                raise RuntimeError(lib.tqkv_capi_last_error().decode())
            k = torch.randn(B, HKV, L, D, device=dev, dtype=torch.bfloat16)
            v = torch.randn(B, HKV, L, D, device=dev, dtype=torch.bfloat16)
            ms = lib.tqkv_capi_append_timed(cache, B, ints(list(range(B))), L, k.data_ptr(), v.data_ptr(), 1, 30)
            if ms < 0:
                raise RuntimeError(lib.tqkv_capi_last_error().decode())
            inb = 2 * B * HKV * L * D * 2
            enc.append({"key": kf, "value": vf, "B": B, "L": L, "ms": ms, "input_bytes_bf16": inb, "GBps": inb / ms / 1e6})
            print(f"encode {kf}/{vf}: {ms:.3f} ms, {inb / ms / 1e6:.0f} GB/s of bf16 input", flush=True)
            lib.tqkv_capi_cache_free(cache)
            del k, v
            torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001
            enc.append({"key": kf, "value": vf, "error": str(e)})
            print(f"encode {kf}/{vf}: ERROR {e}", flush=True)
    res["encode"] = enc
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    # ---- summary table ----
    print("\n B      L  format        ours ms   TB/s  %copy  sdpa ms  speedup  naive ms")
    for r in rows:
        if "error" in r:
            print(f"{r['B']:>2} {r['L']:>6}  {r['key']}/{r['value']}: {r['error']}")
            continue
        nv = f"{r['naive_ms']:.3f}" if r["naive_ms"] else "-"
        print(f"{r['B']:>2} {r['L']:>6}  {r['key'] + '/' + r['value']:<12} {r['ours_ms']:8.4f} {r['ours_TBps']:6.2f} "
              f"{100 * r['ours_frac_copy_bw']:5.0f}% {r['sdpa_ms']:8.4f} {r['speedup_vs_sdpa']:7.2f}x {nv:>9}")


if __name__ == "__main__":
    main()
