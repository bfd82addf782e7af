"""A seeded random Llama-shaped model (GQA, RoPE in the Hugging Face layout, SwiGLU MLP, RMSNorm)
whose attention reads a tqkv compressed cache, run two ways:

- ``Reference``: one process, unsharded: full weights, one tqkv.LayerCache holding every kv head
  per layer. Written here from the model's definition, without tqkv.tp's slicing.
- ``TensorParallel``: rank ``rank`` of a torch.distributed group: attention through
  tqkv.tp.AttentionShard (its kv heads, its query heads, its compressed cache), the MLP sharded the
  same way (gate/up rows, down columns), and torch.distributed.all_reduce summing the partial
  o_proj and down_proj outputs: the engine's all-reduce, nothing home-made.

The dense parts run in float64 and the cache sees float32 (q, k, v are rounded to float32 before
they reach it). Why float64: see python/tests/test_tp.py (the tolerance derivation).
Used by python/tests/test_tp.py and python/tests/tp_ranks.py (the gloo ranks).
"""
import hashlib

import torch

import tqkv

CFG = dict(vocab=512, dim=512, hidden=1024, n_layers=3, n_heads=8, n_kv_heads=4, head_dim=64,
           rope_base=10000.0, eps=1e-5)


def cache_configs():
    """(name, KVCacheConfig or None) pairs the tests run: f16 and compressed formats, one with an
    f16 window and sinks and q8_0 boundary layers."""
    return [
        ("f16", None),
        ("rvq1x2/tq2", tqkv.KVCacheConfig(method="turboquant_rvq", bits=1, value_bits=2)),
        ("tq4/tq4", tqkv.KVCacheConfig(cache_type_k="tq4", cache_type_v="tq4")),
        ("rvq1x2/tq4 window16 sinks4 boundary1",
         tqkv.KVCacheConfig(cache_type_k="rvq1x2", cache_type_v="tq4", kv_window=16, kv_sinks=4, boundary_layers=1)),
    ]


def make_weights(seed=1234, cfg=CFG):
    g = torch.Generator().manual_seed(seed)
    f = torch.float64

    def n(*shape, std):
        return torch.randn(*shape, generator=g, dtype=f) * std

    dim, hid, hd = cfg["dim"], cfg["hidden"], cfg["head_dim"]
    nq, nkv = cfg["n_heads"] * hd, cfg["n_kv_heads"] * hd
    w = {"emb": n(cfg["vocab"], dim, std=1.0), "norm": 1 + n(dim, std=0.1),
         "lm_head": n(cfg["vocab"], dim, std=3.0 / dim ** 0.5), "layers": []}
    for _ in range(cfg["n_layers"]):
        w["layers"].append({
            "attn_norm": 1 + n(dim, std=0.1), "ffn_norm": 1 + n(dim, std=0.1),
            "wq": n(nq, dim, std=2.0 / dim ** 0.5), "wk": n(nkv, dim, std=2.0 / dim ** 0.5),
            "wv": n(nkv, dim, std=1.0 / dim ** 0.5), "wo": n(dim, nq, std=1.0 / nq ** 0.5),
            "w_gate": n(hid, dim, std=1.0 / dim ** 0.5), "w_up": n(hid, dim, std=1.0 / dim ** 0.5),
            "w_down": n(dim, hid, std=1.0 / hid ** 0.5),
        })
    return w


def gguf_weights(path):
    """(weights, cfg) of a GGUF llama read by tqkv.Model, through tqkv.convert.llama_state_dict
    (transformers' names and RoPE layout, the one this file's rope() uses), as float64."""
    import tqkv.convert

    m = tqkv.Model(str(path))
    c = m.config
    cfg = dict(vocab=c["vocab_size"], dim=c["dim"], hidden=c["hidden_dim"], n_layers=c["n_layers"],
               n_heads=c["n_heads"], n_kv_heads=c["n_kv_heads"], head_dim=c["head_dim"],
               rope_base=float(c["rope_freq_base"]), eps=float(c["rms_eps"]))
    sd = {k: torch.from_numpy(v).to(torch.float64) for k, v in tqkv.convert.llama_state_dict(m).items()}
    w = {"emb": sd["model.embed_tokens.weight"], "norm": sd["model.norm.weight"], "lm_head": sd["lm_head.weight"],
         "layers": []}
    for i in range(cfg["n_layers"]):
        p = f"model.layers.{i}."
        w["layers"].append({
            "attn_norm": sd[p + "input_layernorm.weight"], "ffn_norm": sd[p + "post_attention_layernorm.weight"],
            "wq": sd[p + "self_attn.q_proj.weight"], "wk": sd[p + "self_attn.k_proj.weight"],
            "wv": sd[p + "self_attn.v_proj.weight"], "wo": sd[p + "self_attn.o_proj.weight"],
            "w_gate": sd[p + "mlp.gate_proj.weight"], "w_up": sd[p + "mlp.up_proj.weight"],
            "w_down": sd[p + "mlp.down_proj.weight"],
        })
    return w, cfg


def models(source_dir, world):
    """(name, weights, cfg, prompt) of the models a world of `world` ranks runs: the seeded random
    model (4 kv heads: 1, 2 and 4 ranks) and, when it shards, the shipped GGUF tqkv-ref-d64 (2 kv heads)."""
    out = [("random", make_weights(), CFG, prompt_tokens())]
    w, cfg = gguf_weights(f"{source_dir}/models/tqkv-ref-d64.gguf")
    if cfg["n_kv_heads"] % world == 0:
        m = tqkv.Model(f"{source_dir}/models/tqkv-ref-d64.gguf")
        out.append(("gguf-d64", w, cfg, m.tokenize("Once upon a time, in a small village by the sea,", True)))
    return out


def prompt_tokens(n=60, seed=7, cfg=CFG):
    return torch.randint(0, cfg["vocab"], (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def rmsnorm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope(x, pos, base):
    """Hugging Face layout (pairs (i, i + d/2)) on (heads, m, d), float64."""
    d = x.shape[-1]
    inv = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = pos.to(torch.float64)[:, None] * inv[None, :]
    c, s = torch.cos(ang), torch.sin(ang)
    a, b = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([a * c - b * s, b * c + a * s], dim=-1)


def stored_digests(caches, heads_of):
    """{(layer, global kv head): sha256 of every byte the cache stores for that head}."""
    out = {}
    for layer, cache in enumerate(caches):
        for local, glob in enumerate(heads_of(cache)):
            out[(layer, glob)] = hashlib.sha256(cache.stored_bytes(local)).hexdigest()
    return out


class Reference:
    """Unsharded, single process."""

    def __init__(self, w, config, cfg=CFG):
        self.w, self.cfg = w, cfg
        self.caches = [tqkv.LayerCache(cfg["n_kv_heads"], cfg["head_dim"], config, layer=l, n_layers=cfg["n_layers"])
                       for l in range(cfg["n_layers"])]

    def forward(self, tokens):
        c, w = self.cfg, self.w
        m, hd, H, KV = len(tokens), c["head_dim"], c["n_heads"], c["n_kv_heads"]
        x = w["emb"][torch.tensor(tokens)]
        for l, L in enumerate(w["layers"]):
            cache = self.caches[l]
            h = rmsnorm(x, L["attn_norm"], c["eps"])
            q = (h @ L["wq"].T).view(m, H, hd).transpose(0, 1)
            k = (h @ L["wk"].T).view(m, KV, hd).transpose(0, 1)
            v = (h @ L["wv"].T).view(m, KV, hd).transpose(0, 1)
            pos = torch.arange(cache.n_tokens(), cache.n_tokens() + m)
            q, k = rope(q, pos, c["rope_base"]), rope(k, pos, c["rope_base"])
            cache.append(k.to(torch.float32).numpy(), v.to(torch.float32).numpy())
            a = torch.from_numpy(cache.attend(q.to(torch.float32).numpy())).to(torch.float64)
            x = x + a.transpose(0, 1).reshape(m, H * hd) @ L["wo"].T
            h = rmsnorm(x, L["ffn_norm"], c["eps"])
            x = x + (torch.nn.functional.silu(h @ L["w_gate"].T) * (h @ L["w_up"].T)) @ L["w_down"].T
        return rmsnorm(x[-1], w["norm"], c["eps"]) @ w["lm_head"].T

    def digests(self):
        return stored_digests(self.caches, lambda cache: range(cache.n_kv_heads))


class TensorParallel:
    """Rank `rank` of the default torch.distributed group."""

    def __init__(self, w, config, rank, world_size, cfg=CFG):
        import torch.distributed as dist
        import tqkv.tp

        self.dist, self.cfg, self.w = dist, cfg, w
        self.attn, self.wts = [], []
        for l, L in enumerate(w["layers"]):
            a = tqkv.tp.AttentionShard(layer=l, n_layers=cfg["n_layers"], n_heads=cfg["n_heads"],
                                       n_kv_heads=cfg["n_kv_heads"], head_dim=cfg["head_dim"], rank=rank,
                                       world_size=world_size, config=config, rope_base=cfg["rope_base"],
                                       threads=1)
            # The MLP is sharded like the heads: this rank's block of the hidden features.
            hid, r = cfg["hidden"], rank
            f = slice(hid * r // world_size, hid * (r + 1) // world_size)
            self.attn.append(a)
            self.wts.append((a.shard_weights(L["wq"], L["wk"], L["wv"], L["wo"]),
                             (L["w_gate"][f], L["w_up"][f], L["w_down"][:, f].contiguous())))

    def forward(self, tokens):
        c, w = self.cfg, self.w
        x = w["emb"][torch.tensor(tokens)]
        for l, L in enumerate(w["layers"]):
            (wq, wk, wv, wo), (wg, wu, wd) = self.wts[l]
            part = self.attn[l](rmsnorm(x, L["attn_norm"], c["eps"]), wq, wk, wv, wo)
            self.dist.all_reduce(part)  # the engine's all-reduce of the row-parallel o_proj
            x = x + part
            h = rmsnorm(x, L["ffn_norm"], c["eps"])
            part = (torch.nn.functional.silu(h @ wg.T) * (h @ wu.T)) @ wd.T
            self.dist.all_reduce(part)  # row-parallel down_proj
            x = x + part
        return rmsnorm(x[-1], w["norm"], c["eps"]) @ w["lm_head"].T

    def digests(self):
        # Keyed by the heads the rank is MEANT to hold (its shard), whatever its cache believes.
        shard = self.attn[0].shard
        return stored_digests([a.cache for a in self.attn],
                              lambda cache: range(shard.kv_head_offset, shard.kv_head_offset + shard.n_kv_heads))


def greedy(model, prompt, n_new):
    """Prefill the prompt in one forward, then n_new greedy steps. Returns (tokens, logits (n_new, vocab))."""
    logits = model.forward(prompt)
    toks, rows = [], []
    for i in range(n_new):
        rows.append(logits)
        t = int(torch.argmax(logits))
        toks.append(t)
        if i + 1 < n_new:
            logits = model.forward([t])
    return toks, torch.stack(rows)
