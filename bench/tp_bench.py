#!/usr/bin/env python3
"""Tensor-parallel decode with tqkv's compressed cache (issue 13; docs/tensor-parallel.md).

Launch one process per GPU with torchrun; every rank holds its kv heads' compressed cache
(tqkv.tp's sharding: rotations from the GLOBAL head index), runs attention locally, and NCCL's
all-reduce (torch.distributed) sums the row-parallel o_proj / down_proj outputs:

  torchrun --standalone --nproc_per_node 2 bench/tp_bench.py --out bench/results/tp-2gpu.json
  torchrun --standalone --nproc_per_node 1 bench/tp_bench.py --out bench/results/tp-1gpu.json

Two parts, both in one run:
  generate  a small Llama (random weights by default, or --gguf PATH through tqkv.convert)
            decodes greedily with each cache format, sharded over the ranks, and rank 0 repeats it
            unsharded on its own GPU (no collectives): identical greedy tokens for f16, and the
            KLD of each compressed format against the f16 logits, sharded vs single-GPU.
  decode    an 8B-shaped random-weight Llama (32 layers, dim 4096, 32 q / 8 kv heads, d=128,
            hidden 14336, vocab 128256, bf16 weights sharded over the ranks) with the cache filled
            to --contexts tokens (random K/V appended on the GPU): decode tok/s (CUDA events,
            median of --steps steps after warm-up) and per-GPU KV memory for each format, plus
            torch's dense bf16 cache + SDPA (transformers' default cache) as the baseline.

--device cpu runs the same code over tqkv.LayerCache with the gloo backend (tiny shapes): the
smoke test of this script on a machine without GPUs (docs/tensor-parallel.md). Debian's torchrun
(torch 1.13 on Python 3.11) needs `--redirects 1 --tee 1` (its default "0" fails to parse).
`--backend gloo --same-gpu` puts every rank on cuda:0: the sharded GPU path on a one-GPU machine
(correctness only). `tp_bench.py --summarize A.json B.json` prints the table and the goals.

NCCL's NVLink multicast stays off (the machines' rule): the three variables below are set before
torch.distributed is imported, whatever the environment says.
"""
import os

os.environ["NCCL_NVLS_ENABLE"] = "0"
os.environ["TORCH_SYMM_MEM_DISABLE_MULTICAST"] = "1"
os.environ["NVSHMEM_DISABLE_NVLS"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402

tqkv = None  # imported in main() (--summarize needs no build)

FORMATS = {  # name -> (key format, value format); "sdpa" = torch dense bf16 cache, no tqkv
    "f16": ("f16", "f16"),
    "rvq1x2/tq2": ("rvq1x2", "tq2"),
    "tq4/tq4": ("tq4", "tq4"),
    "sdpa-bf16": None,
}
SHAPE_8B = dict(n_layers=32, dim=4096, n_heads=32, n_kv_heads=8, head_dim=128, hidden=14336, vocab=128256,
                rope_base=500000.0, eps=1e-5)
SHAPE_SMALL = dict(n_layers=4, dim=1024, n_heads=16, n_kv_heads=8, head_dim=64, hidden=2816, vocab=4096,
                   rope_base=10000.0, eps=1e-5)
SHAPE_TINY = dict(n_layers=2, dim=256, n_heads=8, n_kv_heads=4, head_dim=64, hidden=512, vocab=512,
                  rope_base=10000.0, eps=1e-5)


# ---- caches: one interface over the GPU cache (tqkv.gpu), the CPU cache and a dense baseline ----

class TqkvGpuCache:
    """tqkv.gpu.GpuLayerCache for this rank's heads (kv_head_offset = the shard's global offset)."""

    def __init__(self, fmt, shard, head_dim, layer, max_tokens, device):
        import tqkv.gpu
        kf, vf = FORMATS[fmt]
        self.c = tqkv.gpu.GpuLayerCache(shard.n_kv_heads, head_dim, kf, vf, layer=layer, max_seqs=1,
                                        max_tokens=max_tokens, device=device, kv_head_offset=shard.kv_head_offset,
                                        n_total_kv_heads=shard.n_total_kv_heads)

    def append(self, k, v):  # (h, n, d)
        self.c.append(k.to(torch.bfloat16).unsqueeze(0).contiguous(), v.to(torch.bfloat16).unsqueeze(0).contiguous())

    def attend(self, q):  # (hq, m, d) -> float32
        return self.c.attend(q.float().unsqueeze(0).contiguous())[0]

    @property
    def bytes(self):
        return self.c.bytes_resident


class TqkvCpuCache:
    def __init__(self, fmt, shard, head_dim, layer, max_tokens, device):
        kf, vf = FORMATS[fmt]
        self.c = tqkv.LayerCache(shard.n_kv_heads, head_dim, tqkv.KVCacheConfig(cache_type_k=kf, cache_type_v=vf),
                                 layer=layer, kv_head_offset=shard.kv_head_offset,
                                 n_total_kv_heads=shard.n_total_kv_heads)

    def append(self, k, v):
        self.c.append(k.float().numpy(), v.float().numpy())

    def attend(self, q):
        return torch.from_numpy(self.c.attend(q.float().numpy()))

    @property
    def bytes(self):
        return self.c.bytes_resident


class DenseCache:
    """transformers' default cache: dense K/V tensors (bf16 on GPU), grown by appending, SDPA with GQA."""

    def __init__(self, fmt, shard, head_dim, layer, max_tokens, device):
        dt = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.k = torch.empty(shard.n_kv_heads, max_tokens, head_dim, dtype=dt, device=device)
        self.v = torch.empty_like(self.k)
        self.n, self.g = 0, shard.n_q_heads // shard.n_kv_heads

    def append(self, k, v):
        m = k.shape[1]
        self.k[:, self.n:self.n + m] = k
        self.v[:, self.n:self.n + m] = v
        self.n += m

    def attend(self, q):
        m = q.shape[1]
        k, v = self.k[:, :self.n], self.v[:, :self.n]
        mask = None
        if m > 1:  # causal for the last m positions
            i = torch.arange(m, device=q.device)[:, None] + self.n - m
            mask = torch.arange(self.n, device=q.device)[None, :] <= i
        if hasattr(F, "scaled_dot_product_attention"):
            try:  # torch >= 2.5: grouped-query attention without copying K/V per query head
                return F.scaled_dot_product_attention(q.to(k.dtype)[None], k[None], v[None], attn_mask=mask,
                                                      enable_gqa=True)[0].float()
            except TypeError:
                pass
        # Older torch (Debian's 1.13 in the CPU smoke test): kv heads repeated, softmax written out.
        k, v = k.repeat_interleave(self.g, 0).float(), v.repeat_interleave(self.g, 0).float()
        s = (q.float() @ k.transpose(1, 2)) / q.shape[-1] ** 0.5
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        return torch.softmax(s, -1) @ v

    @property
    def bytes(self):  # what holding n tokens takes (transformers' DynamicCache grows to exactly this)
        return 2 * self.k.shape[0] * self.n * self.k.shape[2] * self.k.element_size()


def make_cache(fmt, shard, head_dim, layer, max_tokens, device):
    if FORMATS[fmt] is None:
        return DenseCache(fmt, shard, head_dim, layer, max_tokens, device)
    cls = TqkvGpuCache if device.type == "cuda" else TqkvCpuCache
    return cls(fmt, shard, head_dim, layer, max_tokens, device)


# ---- the model: Llama, Megatron-sharded; the all-reduce is torch.distributed's ----

def _seed(*parts):
    """A generator seed from (seed, tensor name, row block): the same on every rank and process
    (Python's hash() of strings is salted per process, so it is not used)."""
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


def random_weights(shape, device, dtype, rank, world, seed=1234):
    """This rank's shard of a random-weight Llama. Every matrix is drawn in blocks of 128 rows, each
    from its own generator seeded by (seed, name, block), on `device`: a rank draws only the row
    blocks it holds (column shards draw the whole matrix and slice it), and a world of 1 draws the
    very matrices the shards are slices of. An 8B shape never exists whole on one GPU unless world
    is 1."""
    s = shape
    hd, nq, nkv, dim = s["head_dim"], s["n_heads"], s["n_kv_heads"], s["dim"]
    shard = tqkv.shard_heads(nkv, nq, rank, world)
    qf = slice(shard.q_head_offset * hd, (shard.q_head_offset + shard.n_q_heads) * hd)
    kvf = slice(shard.kv_head_offset * hd, (shard.kv_head_offset + shard.n_kv_heads) * hd)
    hf = slice(s["hidden"] * rank // world, s["hidden"] * (rank + 1) // world)

    def mat(name, rows, cols, std, row_sl=None, col_sl=None):
        r0, r1 = (row_sl.start, row_sl.stop) if row_sl else (0, rows)
        blocks = []
        for b0 in range(r0 // 128 * 128, r1, 128):
            g = torch.Generator(device=device).manual_seed(_seed(seed, name, b0))
            blk = torch.randn(min(128, rows - b0), cols, generator=g, device=device)
            blocks.append(blk[max(r0 - b0, 0):min(r1 - b0, blk.shape[0])].to(dtype))
        w = torch.cat(blocks)
        return (w[:, col_sl] if col_sl is not None else w).mul_(std).contiguous()

    w = {"emb": mat("emb", s["vocab"], dim, 1.0), "norm": torch.ones(dim, device=device, dtype=dtype),
         "lm_head": mat("lm_head", s["vocab"], dim, 3.0 / dim ** 0.5), "layers": []}
    for l in range(s["n_layers"]):
        w["layers"].append({
            "attn_norm": torch.ones(dim, device=device, dtype=dtype),
            "ffn_norm": torch.ones(dim, device=device, dtype=dtype),
            "wq": mat(f"wq{l}", nq * hd, dim, 2.0 / dim ** 0.5, qf),
            "wk": mat(f"wk{l}", nkv * hd, dim, 2.0 / dim ** 0.5, kvf),
            "wv": mat(f"wv{l}", nkv * hd, dim, 1.0 / dim ** 0.5, kvf),
            "wo": mat(f"wo{l}", dim, nq * hd, 1.0 / (nq * hd) ** 0.5, None, qf),
            "w_gate": mat(f"wg{l}", s["hidden"], dim, 1.0 / dim ** 0.5, hf),
            "w_up": mat(f"wu{l}", s["hidden"], dim, 1.0 / dim ** 0.5, hf),
            "w_down": mat(f"wd{l}", dim, s["hidden"], 1.0 / s["hidden"] ** 0.5, None, hf),
        })
    return w, shard


def gguf_weights(path, shape, device, dtype, rank, world):
    """A GGUF model's weights (tqkv.Model + tqkv.convert.llama_state_dict: transformers' Llama names
    and RoPE layout, no transformers needed), sliced for this rank."""
    import tqkv.convert
    m = tqkv.Model(path)
    sd = {k: torch.from_numpy(v) for k, v in tqkv.convert.llama_state_dict(m).items()}
    c = m.config
    shape.update(n_layers=c["n_layers"], dim=c["dim"], n_heads=c["n_heads"], n_kv_heads=c["n_kv_heads"],
                 head_dim=c["head_dim"], hidden=c["hidden_dim"], vocab=c["vocab_size"],
                 rope_base=float(c["rope_freq_base"]), eps=float(c.get("rms_eps", 1e-5)))
    s = shape
    shard = tqkv.shard_heads(s["n_kv_heads"], s["n_heads"], rank, world)
    hd = s["head_dim"]
    qf = slice(shard.q_head_offset * hd, (shard.q_head_offset + shard.n_q_heads) * hd)
    kvf = slice(shard.kv_head_offset * hd, (shard.kv_head_offset + shard.n_kv_heads) * hd)
    hfs = slice(s["hidden"] * rank // world, s["hidden"] * (rank + 1) // world)
    t = lambda x: x.to(device=device, dtype=dtype).contiguous()  # noqa: E731
    w = {"emb": t(sd["model.embed_tokens.weight"]), "norm": t(sd["model.norm.weight"]),
         "lm_head": t(sd["lm_head.weight"]), "layers": []}
    for l in range(s["n_layers"]):
        g = lambda n: sd[f"model.layers.{l}.{n}"]  # noqa: E731
        w["layers"].append({
            "attn_norm": t(g("input_layernorm.weight")), "ffn_norm": t(g("post_attention_layernorm.weight")),
            "wq": t(g("self_attn.q_proj.weight")[qf]), "wk": t(g("self_attn.k_proj.weight")[kvf]),
            "wv": t(g("self_attn.v_proj.weight")[kvf]), "wo": t(g("self_attn.o_proj.weight")[:, qf]),
            "w_gate": t(g("mlp.gate_proj.weight")[hfs]), "w_up": t(g("mlp.up_proj.weight")[hfs]),
            "w_down": t(g("mlp.down_proj.weight")[:, hfs]),
        })
    return w, shard


def rmsnorm(x, w, eps):
    xf = x.float()
    return (xf * torch.rsqrt((xf * xf).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


class Model:
    """A Llama whose rank holds `shard` (its weights already sliced) and one cache per layer.
    all_reduce=False: no collectives (the single-GPU reference, world 1)."""

    def __init__(self, w, shard, shape, fmt, max_tokens, device, all_reduce):
        self.w, self.s, self.shard, self.all_reduce = w, shape, shard, all_reduce
        self.caches = [make_cache(fmt, shard, shape["head_dim"], l, max_tokens, device)
                       for l in range(shape["n_layers"])]
        self.n = 0
        self.device = device

    def reduce(self, x):
        if self.all_reduce:
            dist.all_reduce(x)  # the engine's all-reduce (NCCL on GPUs, gloo on CPUs)
        return x

    def forward(self, tokens):
        s, w, hd = self.s, self.w, self.s["head_dim"]
        nq, nkv = self.shard.n_q_heads, self.shard.n_kv_heads
        m = len(tokens)
        x = w["emb"][torch.tensor(tokens, device=self.device)]
        pos = torch.arange(self.n, self.n + m, device=self.device)
        for l, L in enumerate(w["layers"]):
            h = rmsnorm(x, L["attn_norm"], s["eps"])
            q = (h @ L["wq"].T).view(m, nq, hd).transpose(0, 1)
            k = (h @ L["wk"].T).view(m, nkv, hd).transpose(0, 1)
            v = (h @ L["wv"].T).view(m, nkv, hd).transpose(0, 1)
            q = tqkv.tp.rope_neox(q.float(), pos, s["rope_base"])
            k = tqkv.tp.rope_neox(k.float(), pos, s["rope_base"])
            c = self.caches[l]
            c.append(k, v)
            a = c.attend(q).to(x.dtype)
            x = x + self.reduce(a.transpose(0, 1).reshape(m, nq * hd) @ L["wo"].T)
            h = rmsnorm(x, L["ffn_norm"], s["eps"])
            x = x + self.reduce((F.silu(h @ L["w_gate"].T) * (h @ L["w_up"].T)) @ L["w_down"].T)
        self.n += m
        return (rmsnorm(x[-1:], w["norm"], s["eps"]) @ w["lm_head"].T)[0].float()

    def fill(self, n_tokens, chunk=8192, seed=0):
        """Random K/V for n_tokens positions appended straight into every layer's cache (the decode
        benchmark's context; a prefill of a random-weight model would only cost time)."""
        g = torch.Generator(device=self.device).manual_seed(seed)
        hd, nkv = self.s["head_dim"], self.shard.n_kv_heads
        for t0 in range(0, n_tokens, chunk):
            m = min(chunk, n_tokens - t0)
            for c in self.caches:
                k = torch.randn(nkv, m, hd, generator=g, device=self.device)
                v = torch.randn(nkv, m, hd, generator=g, device=self.device)
                c.append(k, v)
        self.n += n_tokens

    @property
    def kv_bytes(self):
        return sum(c.bytes for c in self.caches)


def greedy(model, prompt, n_new):
    logits = model.forward(prompt)
    toks, rows = [], []
    for i in range(n_new):
        rows.append(logits.cpu())
        t = int(torch.argmax(logits))
        toks.append(t)
        if i + 1 < n_new:
            logits = model.forward([t])
    return toks, torch.stack(rows)


def kld(p_logits, q_logits):
    """Mean over steps of KL(softmax(p) || softmax(q)), in float64."""
    lp = torch.log_softmax(p_logits.double(), -1)
    lq = torch.log_softmax(q_logits.double(), -1)
    return float((lp.exp() * (lp - lq)).sum(-1).mean())


def forced(model, prompt, tokens):
    """Logits (len(tokens), vocab) of the model fed prompt + tokens (teacher forcing): row i
    predicts tokens[i]. KLD between formats compares the same contexts."""
    rows = [model.forward(prompt).cpu()]
    for t in tokens[:-1]:
        rows.append(model.forward([t]).cpu())
    return torch.stack(rows)


def part_generate(args, rank, world, device):
    """Greedy generation, sharded vs single-GPU (rank 0, no collectives), for every format; then
    every format teacher-forced on the sharded f16 run's tokens for the KLD against f16."""
    shape = dict(SHAPE_TINY if args.device == "cpu" else SHAPE_SMALL)
    dtype = torch.float32
    load = (lambda r, wld: gguf_weights(args.gguf, shape, device, dtype, r, wld)) if args.gguf else \
        (lambda r, wld: random_weights(shape, device, dtype, r, wld))
    max_tokens = args.prompt + args.new + 64
    w, shard = load(rank, world)
    full = load(0, 1) if rank == 0 else None
    prompt = torch.randint(0, shape["vocab"], (args.prompt,), generator=torch.Generator().manual_seed(7)).tolist()
    tp = lambda fmt: Model(w, shard, shape, fmt, max_tokens, device, world > 1)  # noqa: E731
    one = lambda fmt: Model(full[0], full[1], shape, fmt, max_tokens, device, False)  # noqa: E731
    out = {"shape": shape, "prompt_tokens": args.prompt, "new_tokens": args.new, "formats": {}}
    forcing = None
    for fmt in args.formats:
        tp_toks, tp_logits = greedy(tp(fmt), prompt, args.new)
        forcing = forcing or tp_toks  # the first format's (f16's) sharded tokens
        r = {"tp_tokens": tp_toks}
        if rank == 0:
            one_toks, one_logits = greedy(one(fmt), prompt, args.new)
            r.update(single_tokens=one_toks, identical_tokens=tp_toks == one_toks,
                     max_abs_logit_diff=float((tp_logits - one_logits).abs().max()))
        out["formats"][fmt] = r
    base = None
    for fmt in args.formats:
        tp_l = forced(tp(fmt), prompt, forcing)  # every rank runs its shard (the all-reduces need all)
        if rank == 0:
            one_l = forced(one(fmt), prompt, forcing)
            if base is None:
                base = (tp_l, one_l)
                continue
            r = out["formats"][fmt]
            r["kld_vs_%s_tp" % args.formats[0]] = kld(base[0], tp_l)
            r["kld_vs_%s_single" % args.formats[0]] = kld(base[1], one_l)
    return out


def timed(fn, device):
    if device.type == "cuda":
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) / 1e3
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def part_decode(args, rank, world, device):
    shape = dict(SHAPE_8B if args.device == "cuda" else SHAPE_TINY)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    w, shard = random_weights(shape, device, dtype, rank, world)
    rows = []
    for ctx in args.contexts:
        for fmt in args.formats + ["sdpa-bf16"]:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            model = Model(w, shard, shape, fmt, ctx + args.steps + args.warmup + 1, device, world > 1)
            model.fill(ctx)
            times = []
            tok = [1]
            for i in range(args.warmup + args.steps):
                dt = timed(lambda: model.forward(tok), device)
                if i >= args.warmup:
                    times.append(dt)
            med = statistics.median(times)
            row = {"context": ctx, "format": fmt, "world": world, "batch": 1, "decode_s_median": med,
                   "decode_tok_s": 1.0 / med, "kv_bytes_per_gpu": model.kv_bytes,
                   "kv_bytes_per_token_per_gpu": model.kv_bytes / (ctx + args.warmup + args.steps)}
            if device.type == "cuda":
                row["peak_gpu_bytes"] = torch.cuda.max_memory_allocated(device)
            t = torch.tensor([row["decode_s_median"]], dtype=torch.float64)
            if world > 1:  # slowest rank decides the step time (they all wait on the all-reduce anyway)
                t = t.to(device) if device.type == "cuda" else t
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
            row["decode_s_median_max_rank"] = float(t.cpu()[0])
            rows.append(row)
            if rank == 0:
                print(f"ctx {ctx:>7} {fmt:12s} world {world}: {1.0 / row['decode_s_median_max_rank']:8.2f} tok/s, "
                      f"KV {row['kv_bytes_per_gpu'] / 2**20:10.2f} MiB per GPU", flush=True)
            del model
    return {"shape": shape, "rows": rows}


def summarize(paths):
    """A markdown table of result files (world 1 and world 2 of the same contexts) and the issue's
    goals: per-GPU KV bytes per token (2 GPUs hold 2x the context at the same per-GPU memory), tokens
    per GPU vs the dense bf16 cache (>= 5x), and decode tok/s of 2 GPUs vs 1 at the longest context
    (>= 1.7x)."""
    runs = [json.load(open(p)) for p in paths]
    rows = [r for run in runs for r in run.get("decode", {}).get("rows", [])]
    lines = ["| world | context | format | decode tok/s | KV GiB per GPU | KV bytes/token per GPU |", "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["context"], r["format"], r["world"])):
        lines.append(f"| {r['world']} | {r['context']} | {r['format']} | {1 / r['decode_s_median_max_rank']:.2f} | "
                     f"{r['kv_bytes_per_gpu'] / 2**30:.3f} | {r['kv_bytes_per_token_per_gpu']:.0f} |")
    key = {(r["world"], r["context"], r["format"]): r for r in rows}
    ctx = max((r["context"] for r in rows), default=None)
    lines.append("")
    for fmt in sorted({r["format"] for r in rows}):
        one, two = key.get((1, ctx, fmt)), key.get((2, ctx, fmt))
        if one and two:
            lines.append(f"- {fmt} at {ctx}: 2 GPUs {one['decode_s_median_max_rank'] / two['decode_s_median_max_rank']:.2f}x "
                         f"the tok/s of 1 (goal >= 1.7x); per-GPU KV bytes/token "
                         f"{one['kv_bytes_per_token_per_gpu'] / two['kv_bytes_per_token_per_gpu']:.2f}x less (goal 2x)")
        dense = key.get((1, ctx, "sdpa-bf16"))
        if one and dense and fmt != "sdpa-bf16":
            lines.append(f"- {fmt} at {ctx}, 1 GPU: {dense['kv_bytes_per_token_per_gpu'] / one['kv_bytes_per_token_per_gpu']:.2f}x "
                         "the tokens of the dense bf16 cache per byte (goal >= 5x for rvq1x2/tq2)")
    for run in runs:
        for fmt, g in run.get("generate", {}).get("formats", {}).items():
            kl = ", ".join(f"{k} {v:.5f}" for k, v in g.items() if k.startswith("kld"))
            lines.append(f"- generate, world {run['world']}, {fmt}: identical greedy tokens {g.get('identical_tokens')}, "
                         f"max |logit diff| {g.get('max_abs_logit_diff', float('nan')):.3e}" + (f", {kl}" if kl else ""))
    return "\n".join(lines)


def main():
    if len(os.sys.argv) > 1 and os.sys.argv[1] == "--summarize":
        print(summarize(os.sys.argv[2:]))
        return
    global tqkv
    import tqkv
    import tqkv.tp  # noqa: F401
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--parts", default="generate,decode")
    ap.add_argument("--formats", default="f16,rvq1x2/tq2,tq4/tq4")
    ap.add_argument("--contexts", default=None, help="decode contexts (default 32768,131072 on cuda, 256 on cpu)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=48)
    ap.add_argument("--new", type=int, default=24)
    ap.add_argument("--gguf", default=None, help="generate part: a GGUF model instead of random weights")
    ap.add_argument("--out", default=None)
    ap.add_argument("--backend", choices=["nccl", "gloo"], default=None,
                    help="process-group backend (default nccl on cuda, gloo on cpu)")
    ap.add_argument("--same-gpu", action="store_true",
                    help="every rank on cuda:0 (with --backend gloo: the sharded GPU path on a one-GPU machine; "
                         "timings then mean nothing)")
    args = ap.parse_args()
    args.formats = [f for f in args.formats.split(",") if f]
    args.contexts = [int(c) for c in (args.contexts or ("32768,131072" if args.device == "cuda" else "256")).split(",")]

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if args.device == "cuda":
        local = 0 if args.same_gpu else int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        if world > 1:
            if (args.backend or "nccl") == "nccl":
                dist.init_process_group("nccl", device_id=device)
            else:
                dist.init_process_group("gloo")
    else:
        device = torch.device("cpu")
        torch.set_num_threads(1)
        tqkv.set_threads(1)
        if world > 1:
            dist.init_process_group(args.backend or "gloo")

    res = {"world": world, "device": args.device,
           "env": {k: os.environ[k] for k in ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST",
                                              "NVSHMEM_DISABLE_NVLS")},
           "torch": torch.__version__, "host": platform.node()}
    try:
        res["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                       cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        pass
    if args.device == "cuda":
        res["gpu"] = torch.cuda.get_device_name(device)
    parts = args.parts.split(",")
    if "generate" in parts:
        res["generate"] = part_generate(args, rank, world, device)
        if rank == 0:
            for fmt, r in res["generate"]["formats"].items():
                kl = {k: v for k, v in r.items() if k.startswith("kld")}
                print(f"generate {fmt:12s}: identical tokens {r['identical_tokens']}, max |dlogit| "
                      f"{r['max_abs_logit_diff']:.3e} " + " ".join(f"{k} {v:.5f}" for k, v in kl.items()), flush=True)
    if "decode" in parts:
        res["decode"] = part_decode(args, rank, world, device)
    if rank == 0 and args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
