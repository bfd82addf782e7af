"""Tensor parallelism on CPU with torch.distributed's gloo backend: 2 and 4 ranks decode a seeded
random Llama-shaped model (python/tests/tiny_llama.py: 3 layers, 8 query / 4 kv heads, d=64) with
tqkv.tp's sharded compressed cache and the engine's all-reduce, against the same model in one
process with the unsharded cache.

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

HERE = os.path.dirname(os.path.abspath(__file__))
N_NEW = 20
REL_TOL = 1e-9  # derived in the module docstring


@pytest.fixture(scope="module")
def reference():
    import tqkv

    torch.set_num_threads(1)
    tqkv.set_threads(1)
    w = tiny_llama.make_weights()
    prompt = tiny_llama.prompt_tokens()
    out = {}
    for name, config in tiny_llama.cache_configs():
        model = tiny_llama.Reference(w, config)
        toks, logits = tiny_llama.greedy(model, prompt, N_NEW)
        out[name] = {"tokens": toks, "logits": logits, "digests": model.digests()}
    return out


def run_ranks(world, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]))
    t0 = time.time()
    r = subprocess.run([sys.executable, os.path.join(HERE, "tp_ranks.py"), str(world), str(tmp_path), str(N_NEW)],
                       env=env, capture_output=True, timeout=600)
    assert r.returncode == 0, f"tp_ranks.py {world} failed:\n{r.stdout.decode()}\n{r.stderr.decode()}"
    print(f"{world} gloo ranks: {time.time() - t0:.1f} s")
    return [torch.load(os.path.join(tmp_path, f"rank{i}.pt")) for i in range(world)]


def test_reference_compresses(reference):
    """The compressed formats really change the logits (else the comparison below proves little)."""
    f16 = reference["f16"]["logits"]
    for name in reference:
        if name != "f16":
            assert (reference[name]["logits"] - f16).abs().max() > 1e-3, name


@pytest.mark.parametrize("world", [2, 4])
def test_gloo_ranks_match_single_process(world, tmp_path, reference):
    ranks = run_ranks(world, tmp_path)
    for name, ref in reference.items():
        tol = REL_TOL * max(1.0, float(ref["logits"].abs().max()))
        digests = {}
        for r, res in enumerate(ranks):
            got = res[name]
            # Every rank holds its own heads: 4 kv heads over `world` ranks, in rank order.
            per = 4 // world
            assert got["shards"][0] == (f"<tqkv.HeadShard kv_heads=[{r * per}, {(r + 1) * per}) of 4 "
                                        f"q_heads=[{2 * r * per}, {2 * (r + 1) * per})>"), got["shards"][0]
            assert got["tokens"] == ref["tokens"], f"{name}, rank {r}/{world}: greedy tokens differ"
            diff = float((got["logits"] - ref["logits"]).abs().max())
            print(f"{name:40s} world {world} rank {r}: max |logit diff| {diff:.3e} (tol {tol:.1e})")
            assert diff <= tol, f"{name}, rank {r}/{world}: logits differ by {diff:.3e} > {tol:.1e}"
            assert not set(digests) & set(got["digests"]), "two ranks hold the same head"
            digests.update(got["digests"])
        # Sharded caches concatenated == the unsharded cache, bit for bit, in every layer.
        assert digests.keys() == ref["digests"].keys()
        bad = [k for k in digests if digests[k] != ref["digests"][k]]
        assert not bad, f"{name}, world {world}: stored bytes differ for (layer, kv head) {bad}"
