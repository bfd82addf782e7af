#!/usr/bin/env python3
"""Small driver for ncu: one B=16 L=32768 cache per format, a few attention calls each."""
import ctypes, math, sys
import torch
sys.path.insert(0, __file__.rsplit("/", 1)[0])
import gpu_bench as gb

lib = gb.load_lib(sys.argv[1])
B, L = 16, 32768
for spec in sys.argv[2].split(","):
    kf, vf = spec.split("/")
    cache = lib.tqkv_capi_cache_new(gb.HKV, gb.D, kf.encode(), vf.encode(), 64, B * math.ceil(L / 64), B)
    seqs = gb.ints(list(range(B)))
    for t0 in range(0, L, 8192):
        k = torch.randn(B, gb.HKV, 8192, gb.D, device="cuda", dtype=torch.bfloat16)
        gb.check(lib, lib.tqkv_capi_append(cache, B, seqs, 8192, k.data_ptr(), k.data_ptr(), 1), "append")
    q = torch.randn(B, gb.HQ, 1, gb.D, device="cuda")
    out = torch.empty_like(q)
    for _ in range(3):
        gb.check(lib, lib.tqkv_capi_attend(cache, B, seqs, 1, gb.HQ, q.data_ptr(), out.data_ptr(), 0), "attend")
    torch.cuda.synchronize()
    lib.tqkv_capi_cache_free(cache)
