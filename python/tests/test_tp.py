"""Tensor parallelism on CPU with torch.distributed's gloo backend: 2 and 4 ranks decode a seeded
random Llama-shaped model (python/tests/tiny_llama.py: 3 layers, 8 query / 4 kv heads, d=64), and 2
ranks the shipped GGUF models/tqkv-ref-d64.gguf (4 layers, 4 query / 2 kv heads, d=64, weights read
by tqkv.Model through tqkv.convert), with tqkv.tp's sharded compressed cache and the engine's
all-reduce, against the same model in one process with the unsharded cache. Four caches: f16,
rvq1x2/tq2, tq4/tq4, and rvq1x2/tq4 with an f16 window, sinks and q8_0 boundary layers.

What must hold, and why the tolerance is what it is:
- Sharding is exact per head: a rank's cache encodes its heads with the rotations of their GLOBAL
  indices, so for the same float32 inputs it stores the same bytes as the unsharded cache and its
  attention outputs are bit-identical. Checked directly: the sha256 of every byte stored for every
  (layer, global kv head) equals the reference's.
- The only arithmetic that differs is summation order: the reference sums o_proj / down_proj over
  all n inputs in one matmul, the ranks sum n / world each and the all-reduce adds the partials (in
  gloo's order). Both results are within gamma_n * sum|w_j a_j| of the exact sum (gamma_n =
  n u / (1 - n u)). The dense model runs in float64 (u = 2^-53, n <= 1024: gamma_n ~ 1.1e-13), and
  q, k, v are rounded to float32 before the cache sees them: a relative difference of ~1e-13 moves
  a float32 value only when it sits that close to a rounding midpoint (probability ~1e-13 / 2^-24
  ~ 2e-6 per element at worst, ~1e-8 typically), so the cache inputs, codes and attention outputs
  are bit-identical and the logits differ by float64 rounding only: 6 all-reduces of <= 2.3e-13
  relative each, amplified by 3 layers of RMSNorm / SwiGLU / weights of norm <= ~3.
  TOL = 1e-9 * max(1, max|logit|) leaves > 1000x margin above that, and sits 60x below the
  smallest effect a sharding error can have (one float32 ulp, 2^-24 ~ 6e-8 relative, in any cache
  input; a wrong head offset changes codes by whole quantization steps: ~1e-1).
- Hence: identical greedy tokens for every format (f16 and compressed), and logits within TOL.
"""
import os
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip(
    "torch", reason="tensor-parallel tests need PyTorch (Debian: apt-get install python3-torch; scripts/install-deps.sh)")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("tensor-parallel tests need torch.distributed with the gloo backend (this torch build has none)",
                allow_module_level=True)

import tiny_llama  # noqa: E402  (python/tests/, on sys.path under pytest)
from conftest import SOURCE_DIR  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
N_NEW = 20
REL_TOL = 1e-9  # derived in the module docstring


@pytest.fixture(scope="module")
def reference():
    """{(model, cache): tokens, logits, digests} of the single process (world 1: every model)."""
    import tqkv

    torch.set_num_threads(1)
    tqkv.set_threads(1)
    out = {}
    for model_name, w, cfg, prompt in tiny_llama.models(SOURCE_DIR, 1):
        for name, config in tiny_llama.cache_configs():
            model = tiny_llama.Reference(w, config, cfg)
            toks, logits = tiny_llama.greedy(model, prompt, N_NEW)
            out[(model_name, name)] = {"tokens": toks, "logits": logits, "digests": model.digests(),
                                       "n_kv_heads": cfg["n_kv_heads"], "group": cfg["n_heads"] // cfg["n_kv_heads"]}
    return out


def run_ranks(world, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]))
    t0 = time.time()
    r = subprocess.run([sys.executable, os.path.join(HERE, "tp_ranks.py"), str(world), str(tmp_path), str(N_NEW),
                        str(SOURCE_DIR)],
                       env=env, capture_output=True, timeout=600)
    assert r.returncode == 0, f"tp_ranks.py {world} failed:\n{r.stdout.decode()}\n{r.stderr.decode()}"
    print(f"{world} gloo ranks: {time.time() - t0:.1f} s")
    return [torch.load(os.path.join(tmp_path, f"rank{i}.pt")) for i in range(world)]


def test_reference_compresses(reference):
    """The compressed formats really change the logits (else the comparison below proves little)."""
    for (model, name), ref in reference.items():
        if name != "f16":
            assert (ref["logits"] - reference[(model, "f16")]["logits"]).abs().max() > 1e-3, (model, name)


def test_reference_is_the_gguf_model(reference):
    """The float64 torch model built from tqkv-ref-d64.gguf (RoPE layout via tqkv.convert) with an
    f16 tqkv cache greedily generates exactly what tqkv's own runtime generates: the sharded runs
    below are compared with the real model, not a mis-wired one."""
    import tqkv

    m = tqkv.Model(str(SOURCE_DIR / "models" / "tqkv-ref-d64.gguf"))
    text = m.generate("Once upon a time, in a small village by the sea,", max_tokens=N_NEW, temperature=0)
    assert m.detokenize(reference[("gguf-d64", "f16")]["tokens"]) == text


@pytest.mark.parametrize("world", [2, 4])
def test_gloo_ranks_match_single_process(world, tmp_path, reference):
    ranks = run_ranks(world, tmp_path)
    ran = [key for key in reference if key in ranks[0]]
    assert ("random", "f16") in ran and len(ran) >= 4
    if world == 2:
        assert ("gguf-d64", "f16") in ran  # the shipped GGUF (2 kv heads) shards over 2 ranks
    for key in ran:
        ref, name = reference[key], " ".join(key)
        tol = REL_TOL * max(1.0, float(ref["logits"].abs().max()))
        digests = {}
        for r, res in enumerate(ranks):
            got = res[key]
            # Every rank holds its own heads: the kv heads over `world` ranks, in rank order.
            H, g = ref["n_kv_heads"], ref["group"]
            per = H // world
            assert got["shards"][0] == (f"<tqkv.HeadShard kv_heads=[{r * per}, {(r + 1) * per}) of {H} "
                                        f"q_heads=[{g * r * per}, {g * (r + 1) * per})>"), got["shards"][0]
            assert got["tokens"] == ref["tokens"], f"{name}, rank {r}/{world}: greedy tokens differ"
            diff = float((got["logits"] - ref["logits"]).abs().max())
            print(f"{name:50s} world {world} rank {r}: max |logit diff| {diff:.3e} (tol {tol:.1e})")
            assert diff <= tol, f"{name}, rank {r}/{world}: logits differ by {diff:.3e} > {tol:.1e}"
            assert not set(digests) & set(got["digests"]), "two ranks hold the same head"
            digests.update(got["digests"])
        # Sharded caches concatenated == the unsharded cache, bit for bit, in every layer.
        assert digests.keys() == ref["digests"].keys()
        bad = [k for k in digests if digests[k] != ref["digests"][k]]
        assert not bad, f"{name}, world {world}: stored bytes differ for (layer, kv head) {bad}"


@pytest.mark.parametrize("style", ["neox", "adjacent"])
def test_attention_shard_pre_rope_keys(style):
    """tqkv.tp with a pre-RoPE key format (pk2: keys stored before RoPE, the attention applies it)
    gives the attention of the post-RoPE f16 cache: tqkv.tp's RoPE (q, and k for post-RoPE formats)
    and the C++ attention's RoPE of stored keys follow the same convention. Both caches hold f16
    keys here (the pk statistics need 128 tokens; before that keys wait in f16), rounded before vs
    after RoPE: scores differ by ~2 * 2^-11 relative, so outputs agree to ~1e-3 of their size;
    TOL = 5e-3 of max|out|. A convention mismatch (pairs (i, i+d/2) vs (2i, 2i+1)) moves them by O(1)."""
    import tqkv
    import tqkv.tp

    g = torch.Generator().manual_seed(0)
    dim, H, KV, d = 256, 4, 2, 64
    wq = torch.randn(H * d, dim, generator=g, dtype=torch.float64) * 2 / dim ** 0.5
    wk = torch.randn(KV * d, dim, generator=g, dtype=torch.float64) * 2 / dim ** 0.5
    wv = torch.randn(KV * d, dim, generator=g, dtype=torch.float64) / dim ** 0.5
    wo = torch.randn(dim, H * d, generator=g, dtype=torch.float64) / (H * d) ** 0.5
    x = torch.randn(40, dim, generator=g, dtype=torch.float64)
    outs = []
    for config in [tqkv.KVCacheConfig(cache_type_k="pk2", cache_type_v="f16"), None]:
        a = tqkv.tp.AttentionShard(layer=0, n_heads=H, n_kv_heads=KV, head_dim=d, rank=0, world_size=1,
                                   config=config, rope_style=style, rope_base=100.0)
        assert a.cache.keys_pre_rope == (config is not None)
        outs.append(torch.cat([a(x[:30], wq, wk, wv, wo)] + [a(x[i:i + 1], wq, wk, wv, wo) for i in range(30, 40)]))
    diff, size = float((outs[0] - outs[1]).abs().max()), float(outs[1].abs().max())
    assert diff <= 5e-3 * size, f"{style}: pre-RoPE vs post-RoPE attention differ by {diff:.3e} (max |out| {size:.3f})"


def test_hf_cache_layers_take_their_global_kv_head_offset():
    """tqkv.hf under a tensor-parallel plan (no transformers here: a stub stands in for its two
    base classes; only tqkv.hf's own logic runs): a layer that sees h of the model's n kv heads
    builds its GPU cache with the global offset of rank r's block, r from the model's device mesh
    (or torch.distributed); an uneven split or an unknown rank is a clear ValueError."""
    import types

    import tqkv

    cu = types.ModuleType("transformers.cache_utils")
    cu.Cache = type("Cache", (), {"__init__": lambda self, *a, **k: None})
    cu.CacheLayerMixin = type("CacheLayerMixin", (), {"__init__": lambda self: None})
    stub = types.ModuleType("transformers")
    stub.cache_utils = cu
    saved = {k: sys.modules.get(k) for k in ("transformers", "transformers.cache_utils", "tqkv.hf")}
    sys.modules.update({"transformers": stub, "transformers.cache_utils": cu})
    sys.modules.pop("tqkv.hf", None)
    try:
        import importlib

        hf = importlib.import_module("tqkv.hf")
        assert hf._kv_head_offset(8, 8, None) == 0  # unsharded
        assert hf._kv_head_offset(4, 8, 1) == 4 and hf._kv_head_offset(2, 8, 3) == 6
        with pytest.raises(ValueError, match="not an even tensor-parallel split"):
            hf._kv_head_offset(3, 8, 0)
        if not torch.distributed.is_initialized():
            with pytest.raises(ValueError, match="torch.distributed is not initialized"):
                hf._kv_head_offset(4, 8, None)

        class Mesh:
            def __init__(self, rank):
                self.rank = rank

            def get_local_rank(self):
                return self.rank

        assert hf._tp_rank(types.SimpleNamespace(device_mesh=Mesh(1))) == 1
        assert hf._tp_rank(types.SimpleNamespace()) is None

        made = {}
        hf._gpu = types.SimpleNamespace(GpuLayerCache=lambda *a, **k: made.update(k))
        layer = hf.TqkvLayer(0, 2, None, 128, 64, n_total_kv_heads=8, tp_rank=1)
        layer.lazy_initialization(torch.zeros(1, 4, 1, 64))
        assert made["kv_head_offset"] == 4 and made["n_total_kv_heads"] == 8
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        if hasattr(tqkv, "hf") and saved["tqkv.hf"] is None:
            delattr(tqkv, "hf")
