"""tqkv.hf: transformers' LlamaForCausalLM built from our GGUF, with tqkv's compressed GPU cache.

Skipped unless torch with CUDA, transformers and a CUDA build of tqkv are present (the GPU machine:
scripts/gpu-python.sh). Checks:
- the model built from the GGUF (RoPE rows unpermuted) gives the log-probabilities `tqkv
  perplexity` writes (--kl-divergence-base with the whole vocabulary), both with transformers'
  own attention and with the "tqkv" attention over an f16 TqkvCache;
- greedy generation with TqkvCache f16/f16 gives transformers' default cache's tokens;
- compressed formats: KLD against the f16 run, prefill (one call) and decode (token by token) paths;
- the cache's errors and byte counts.
Figures go to $TQKV_GPU_RESULTS/hf_quality.json when that is set.
"""
import json
import math
import os
import struct

import numpy as np
import pytest

from conftest import HELDOUT, MODEL

try:
    import torch
    import transformers  # noqa: F401
    MISSING = None
except ImportError as e:  # CI: neither is installed; every test reports the skip
    torch, MISSING = None, str(e)


@pytest.fixture(autouse=True, scope="module")
def _need_torch_and_transformers():
    if MISSING:
        pytest.skip(f"the transformers tests need torch (CUDA) and transformers: {MISSING}")


@pytest.fixture(scope="module")
def env(tqkv):
    import tqkv.gpu
    ok, why = tqkv.gpu.available()
    if not ok:
        pytest.skip(f"no tqkv GPU backend here: {why}")
    import tqkv.hf
    m = tqkv.Model(str(MODEL))
    hf = tqkv.hf.llama_from_gguf(m, dtype=torch.float32, device="cuda")
    return m, hf


RESULTS = {}


def record(key, value):
    RESULTS[key] = value
    d = os.environ.get("TQKV_GPU_RESULTS")
    if d:
        with open(os.path.join(d, "hf_quality.json"), "w") as f:
            json.dump(RESULTS, f, indent=1, sort_keys=True)


def fnv1a64_u32(ids):
    h = 0xCBF29CE484222325
    for t in ids:
        for b in struct.pack("<I", t):
            h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def read_kld_base(path):
    """docs/format.md "KLD base file": header, then per position next_token, logprob_next, ids, logprobs."""
    raw = open(path, "rb").read()
    magic, version, vocab, top_k, ctx, n_chunks, fp, n_pos, tokens_hash = struct.unpack_from("<8sIIIIIIQQ", raw, 0)
    assert magic == b"TQKVKLD1" and version == 2
    rec = np.frombuffer(raw, dtype=np.uint8, offset=48).reshape(n_pos, 8 + 8 * top_k)
    ids = rec[:, 8:8 + 4 * top_k].copy().view(np.int32)
    lps = rec[:, 8 + 4 * top_k:].copy().view(np.float32)
    return dict(vocab=vocab, top_k=top_k, ctx=ctx, n_chunks=n_chunks, tokens_hash=tokens_hash, ids=ids, logprobs=lps)


def logprob_budget(m):
    # Heuristic budget, not a proof: the tqkv CPU f16 cache rounds K and V to f16 (2^-11 relative);
    # the GPU kernel adds f16 rounding of q and of the softmax weights (tests/cuda/cuda_test.cc);
    # allow 4 * 2^-11 relative per layer on the residual stream, doubled through the output head,
    # relative to the largest |logit| of the row (printed worst ratios show the margin).
    return 8 * m.config["n_layers"] * 2 ** -11


def test_logits_match_tqkv_perplexity(env, tqkv, tmp_path):
    import tqkv.hf
    m, hf = env
    ctx, chunks = 128, 2
    text = tqkv.read_text_file(str(HELDOUT))
    V = m.config["vocab_size"]
    base = tmp_path / "f16.kld"
    r = m.perplexity(text, ctx=ctx, chunks=chunks, write_kld_base=str(base), kld_top_k=V)
    kb = read_kld_base(base)
    assert kb["top_k"] == V
    bos = m.tokenize("", add_bos=True)
    assert len(bos) == 1
    # Which tokenization did perplexity evaluate? The header's hash says (with or without BOS).
    for add_bos in (True, False):
        toks = m.tokenize(text, add_bos=add_bos)[: ctx * chunks]
        if fnv1a64_u32(toks) == kb["tokens_hash"]:
            break
    else:
        pytest.fail("could not reproduce the evaluated tokens of tqkv perplexity")
    budget = logprob_budget(m)
    worst = {}
    for attn in ("sdpa", "tqkv"):
        rows = []
        for c in range(chunks):
            ids = list(toks[c * ctx:(c + 1) * ctx])
            ids[0] = bos[0]
            x = torch.tensor([ids], device="cuda")
            with torch.no_grad():
                if attn == "sdpa":
                    hf.set_attn_implementation("sdpa")
                    logits = hf(input_ids=x, use_cache=False).logits[0]
                else:
                    cache = tqkv.hf.TqkvCache(hf, "f16/f16", max_cache_len=ctx)
                    logits = hf(input_ids=x, past_key_values=cache, use_cache=True).logits[0]
            rows.append(torch.log_softmax(logits.double(), -1)[ctx // 2: ctx - 1].cpu().numpy())
        lp = np.concatenate(rows)
        ref = np.zeros_like(lp)
        np.put_along_axis(ref, kb["ids"].astype(np.int64), kb["logprobs"].astype(np.float64), axis=1)
        err = np.abs(lp - ref).max(axis=1)
        scale = np.abs(ref).max(axis=1)
        ratio = float((err / (budget * scale)).max())
        worst[attn] = dict(max_abs_logprob_err=float(err.max()), worst_ratio_to_budget=ratio)
        assert ratio <= 1, f"{attn}: log-prob error {err.max():.3g} exceeds the budget (ratio {ratio:.3f})"
    record("logits_vs_tqkv_perplexity", dict(ctx=ctx, chunks=chunks, ppl_tqkv=r["ppl"], budget_rel=budget, **worst))


def greedy(hf, ids, cache, n):
    x = torch.tensor([ids], device="cuda")
    out = hf.generate(input_ids=x, attention_mask=torch.ones_like(x), past_key_values=cache, max_new_tokens=n,
                      do_sample=False, min_new_tokens=n)
    return out[0, len(ids):].tolist()


def test_greedy_tokens_identical_f16(env, tqkv):
    import tqkv.hf
    from transformers import DynamicCache
    m, hf = env
    prompt = m.tokenize("Once upon a time, in a small village by the sea,", add_bos=True)
    n = 48
    hf.set_attn_implementation("sdpa")
    ref = greedy(hf, prompt, DynamicCache(), n)
    cache = tqkv.hf.TqkvCache(hf, "f16/f16", max_cache_len=len(prompt) + n)
    got = greedy(hf, prompt, cache, n)
    record("greedy_f16", dict(n=n, identical=got == ref, text=m.detokenize(got)))
    assert got == ref
    assert cache.get_seq_length() == len(prompt) + n - 1  # the last token is sampled, never fed back


def kld_rows(ref_logits, logits):
    p = torch.log_softmax(ref_logits.double(), -1)
    q = torch.log_softmax(logits.double(), -1)
    return (p.exp() * (p - q)).sum(-1)


@pytest.mark.parametrize("fmt", ["rvq1x2/tq2", "tq4/tq4", "q8_0/q8_0"])
def test_kld_compressed(env, tqkv, fmt):
    import tqkv.hf
    m, hf = env
    text = tqkv.read_text_file(str(HELDOUT))
    ids = m.tokenize(text, add_bos=True)[:512]
    n_dec = 64
    x = torch.tensor([ids], device="cuda")
    with torch.no_grad():
        hf.set_attn_implementation("sdpa")
        ref = hf(input_ids=x, use_cache=False).logits[0]
        # prefill path: the whole sequence in one call (every query reads the packed codes)
        c1 = tqkv.hf.TqkvCache(hf, fmt, max_cache_len=len(ids))
        pre = hf(input_ids=x, past_key_values=c1, use_cache=True).logits[0]
        # decode path: prefill all but the last n_dec tokens, then one token per call
        c2 = tqkv.hf.TqkvCache(hf, fmt, max_cache_len=len(ids))
        head = hf(input_ids=x[:, :-n_dec], past_key_values=c2, use_cache=True).logits[0]
        dec = [hf(input_ids=x[:, i:i + 1], past_key_values=c2, use_cache=True).logits[0, -1]
               for i in range(len(ids) - n_dec, len(ids))]
        dec = torch.cat([head, torch.stack(dec)])
    k_pre, k_dec = kld_rows(ref, pre), kld_rows(ref, dec)
    assert torch.isfinite(k_pre).all() and torch.isfinite(k_dec).all()
    # Prefill and decode read the same codes: only the kernel's f16 rounding differs between them.
    agree = float((pre.argmax(-1) == dec.argmax(-1)).double().mean())
    top1 = float((pre.argmax(-1) == ref.argmax(-1)).double().mean())
    f16b, resident = c2.f16_bytes, c2.bytes_resident
    res = dict(kld_mean_prefill=float(k_pre.mean()), kld_mean_decode=float(k_dec.mean()),
               kld_p99_prefill=float(k_pre.quantile(0.99)), kld_max_prefill=float(k_pre.max()),
               top1_agreement=top1, prefill_decode_top1_agreement=agree, tokens=len(ids),
               bytes_resident=resident, f16_bytes=f16b)
    print(fmt, res)
    record(f"kld_{fmt.replace('/', '_')}", res)
    assert res["kld_mean_prefill"] < {"rvq1x2/tq2": 0.5, "tq4/tq4": 0.1, "q8_0/q8_0": 0.01}[fmt]
    assert agree > 0.97
    assert abs(res["kld_mean_decode"] - res["kld_mean_prefill"]) < 0.2 * res["kld_mean_prefill"] + 1e-3


def test_cache_errors_and_bytes(env, tqkv):
    import tqkv.hf
    m, hf = env
    cache = tqkv.hf.TqkvCache(hf, "rvq1x2/tq2", max_cache_len=64)
    x = torch.randint(0, m.config["vocab_size"], (2, 40), device="cuda")
    with torch.no_grad():
        hf(input_ids=x, past_key_values=cache, use_cache=True)
        with pytest.raises(ValueError, match="batch"):
            hf(input_ids=x[:1, :1], past_key_values=cache, use_cache=True)
        with pytest.raises(ValueError, match="max_cache_len"):
            hf(input_ids=x[:, :30], past_key_values=cache, use_cache=True)
    assert cache.get_seq_length() == 40
    assert cache.f16_bytes == m.config["n_layers"] * 2 * 40 * m.config["n_kv_heads"] * m.config["head_dim"] * 4
    with pytest.raises(ValueError, match="KEY/VALUE"):
        tqkv.hf.TqkvCache(hf, "rvq1x2", max_cache_len=8)
    with pytest.raises(ValueError):
        tqkv.hf.TqkvCache(hf, "rvq1x2/tq9", max_cache_len=8)
    cache.crop(10)
    assert cache.get_seq_length() == 10
