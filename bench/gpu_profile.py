#!/usr/bin/env python3
"""Small driver for ncu: one B x L cache per format (default 16 x 32768), a few attention calls each.

  python3 bench/gpu_profile.py LIB rvq1x2/tq2,tq4/tq4 [B L]
"""
import ctypes, math, sys
import torch
sys.path.insert(0, __file__.rsplit("/", 1)[0])
import gpu_bench as gb

lib = gb.load_lib(sys.argv[1])
B, L = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (16, 32768)
for spec in sys.argv[2].split(","):
    kf, vf = spec.split("/")
    cache = lib.tqkv_capi_cache_new(gb.HKV, gb.D, kf.encode(), vf.encode(), 64, B * math.ceil(L / 64), B)
    seqs = gb.ints(list(range(B)))
    for t0 in range(0, L, 8192):
        n = min(8192, L - t0)
        k = torch.randn(B, gb.HKV, n, gb.D, device="cuda", dtype=torch.bfloat16)
        gb.check(lib, lib.tqkv_capi_append(cache, B, seqs, n, k.data_ptr(), k.data_ptr(), 1), "append")
    q = torch.randn(B, gb.HQ, 1, gb.D, device="cuda")
    out = torch.empty_like(q)
    for _ in range(3):
        gb.check(lib, lib.tqkv_capi_attend(cache, B, seqs, 1, gb.HQ, q.data_ptr(), out.data_ptr(), 0), "attend")
    torch.cuda.synchronize()
    lib.tqkv_capi_cache_free(cache)
