"""Tensor parallelism with tqkv's compressed KV cache (docs/tensor-parallel.md).

Megatron-style attention sharding for a Llama-style layer, as torch engines (transformers'
``tp_plan``, vLLM, ...) do it: rank ``r`` of ``world_size`` holds a contiguous block of the KV
heads and the query heads of their GQA groups (``tqkv.shard_heads``), i.e. the rows of
q_proj/k_proj/v_proj for those heads ("colwise") and the matching columns of o_proj ("rowwise").
It attends locally over its own compressed cache (``tqkv.LayerCache`` for its heads, whose
rotations are derived from the GLOBAL head index, so the codes are exactly those of the unsharded
cache) and returns its partial o_proj output. The engine's all-reduce (``torch.distributed.
all_reduce``) sums the partials; this module communicates nothing itself.

    import torch.distributed as dist
    import tqkv, tqkv.tp
    rank, world = dist.get_rank(), dist.get_world_size()
    attn = tqkv.tp.AttentionShard(layer=l, n_layers=L, n_heads=32, n_kv_heads=8, head_dim=128,
                                  rank=rank, world_size=world, config=tqkv.KVCacheConfig(...))
    wq, wk, wv, wo = attn.shard_weights(wq, wk, wv, wo)    # this rank's rows / columns
    partial = attn(x, wq, wk, wv, wo)                       # (m, dim), this rank's heads only
    dist.all_reduce(partial)                                # the engine's all-reduce: the layer output

Arrays are torch tensors on the CPU (any float dtype; the cache sees float32). On GPUs
``tqkv.gpu.GpuLayerCache(kv_head_offset=shard.kv_head_offset, n_total_kv_heads=...)`` holds a
shard the same way (bench/tp_bench.py).
"""
import torch

from . import _tqkv

__all__ = ["AttentionShard", "rope_neox", "rope_adjacent", "shard_heads"]

shard_heads = _tqkv.shard_heads


def _angles(positions, rope_dims, base):
    """(m, rope_dims / 2) angles pos * base^(-2i / rope_dims), in float64 on the positions' device."""
    i = torch.arange(0, rope_dims, 2, dtype=torch.float64, device=positions.device)
    return positions.to(torch.float64)[:, None] * (1.0 / base ** (i / rope_dims))[None, :]


def rope_neox(x, positions, base=10000.0, rope_dims=None):
    """RoPE of Hugging Face Llama (pairs (i, i + rope_dims/2)) on x (heads, m, head_dim) at the
    integer positions (m,); returns a new tensor of x's dtype."""
    d = x.shape[-1] if rope_dims is None else rope_dims
    ang = _angles(positions, d, base)
    cos, sin = torch.cos(ang).to(x.dtype), torch.sin(ang).to(x.dtype)
    a, b, rest = x[..., : d // 2], x[..., d // 2 : d], x[..., d:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin, rest], dim=-1)


def rope_adjacent(x, positions, base=10000.0, rope_dims=None):
    """RoPE of GGUF llama (pairs (2i, 2i + 1)); otherwise as rope_neox."""
    d = x.shape[-1] if rope_dims is None else rope_dims
    ang = _angles(positions, d, base)
    cos, sin = torch.cos(ang).to(x.dtype), torch.sin(ang).to(x.dtype)
    a, b = x[..., 0:d:2], x[..., 1:d:2]
    rot = torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2)
    return torch.cat([rot, x[..., d:]], dim=-1)


class AttentionShard:
    """One rank's share of one Llama-style attention layer: its heads, their compressed cache, and
    the slices of the projection weights it needs.

    layer, n_layers: the layer index (mixed into the rotation seeds) and the model's layer count
        (for configs with boundary_layers).
    n_heads, n_kv_heads, head_dim: the WHOLE layer's shape.
    rank, world_size: this rank (e.g. torch.distributed.get_rank() / get_world_size()).
    config: a tqkv.KVCacheConfig (None = f16 cache).
    rope_base, rope_dims, rope_style: the model's RoPE ("neox" = Hugging Face layout, "adjacent" =
        GGUF layout); applied to q and k here, or by the attention to stored keys when the cache
        keeps keys before RoPE (pk formats).
    split_tokens, threads: passed to LayerCache.attend (0 = automatic / all threads).
    """

    def __init__(self, *, layer, n_heads, n_kv_heads, head_dim, rank, world_size, config=None, n_layers=0,
                 rope_base=10000.0, rope_dims=None, rope_style="neox", split_tokens=0, threads=0):
        if rope_style not in ("neox", "adjacent"):
            raise ValueError(f"rope_style must be 'neox' or 'adjacent', got {rope_style!r}")
        self.shard = _tqkv.shard_heads(n_kv_heads, n_heads, rank, world_size)
        self.rank, self.world_size = rank, world_size
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.cache = _tqkv.LayerCache(self.shard.n_kv_heads, head_dim, config, layer=layer, n_layers=n_layers,
                                      kv_head_offset=self.shard.kv_head_offset, n_total_kv_heads=n_kv_heads)
        self.rope_base = float(rope_base)
        self.rope_dims = head_dim if rope_dims is None else int(rope_dims)
        self.rope_style = rope_style
        self._rope = rope_neox if rope_style == "neox" else rope_adjacent
        self.split_tokens, self.threads = split_tokens, threads

    # ---- which rows / columns of the weights this rank holds (features, not heads) ----
    @property
    def q_features(self):
        """Rows of q_proj (out features) and columns of o_proj (in features) of this rank."""
        s, d = self.shard, self.head_dim
        return slice(s.q_head_offset * d, (s.q_head_offset + s.n_q_heads) * d)

    @property
    def kv_features(self):
        """Rows of k_proj and v_proj of this rank."""
        s, d = self.shard, self.head_dim
        return slice(s.kv_head_offset * d, (s.kv_head_offset + s.n_kv_heads) * d)

    def shard_weights(self, wq, wk, wv, wo):
        """This rank's slices of the full (out, in) weights: wq/wk/wv rows ("colwise" in
        transformers' tp_plan), wo columns ("rowwise")."""
        q, kv = self.q_features, self.kv_features
        return wq[q].contiguous(), wk[kv].contiguous(), wv[kv].contiguous(), wo[:, q].contiguous()

    def attend(self, q, k, v, seq=0):
        """Appends this rank's k, v (n_kv_heads_local, m, head_dim) for the sequence's next m tokens
        (after RoPE, or before it when self.cache.keys_pre_rope) and attends q (n_q_heads_local, m,
        head_dim, after RoPE) over the whole sequence (causal). Returns float32 (n_q_local, m, d)."""
        self.cache.append(k.detach().to(torch.float32).numpy(), v.detach().to(torch.float32).numpy(), seq)
        out = self.cache.attend(q.detach().to(torch.float32).numpy(), seq, split_tokens=self.split_tokens,
                                threads=self.threads, rope_dims=self.rope_dims if self.cache.keys_pre_rope else 0,
                                rope_base=self.rope_base, rope_neox=self.rope_style == "neox")
        return torch.from_numpy(out)

    def __call__(self, x, wq, wk, wv, wo, seq=0, bq=None, bk=None, bv=None):
        """Layer forward of this rank for m new tokens x (m, dim) of sequence `seq` (positions
        n_tokens(seq) ..): projections with this rank's weight slices (shard_weights), RoPE, cache
        append + local attention, and this rank's PARTIAL o_proj output (m, dim) in x's dtype. The
        engine all-reduces (sums) the partials of all ranks to get the layer's output."""
        m, d = x.shape[0], self.head_dim
        nq, nkv = self.shard.n_q_heads, self.shard.n_kv_heads
        q, k, v = x @ wq.T, x @ wk.T, x @ wv.T
        if bq is not None:
            q, k, v = q + bq[self.q_features], k + bk[self.kv_features], v + bv[self.kv_features]
        q = q.view(m, nq, d).transpose(0, 1)
        k = k.view(m, nkv, d).transpose(0, 1)
        v = v.view(m, nkv, d).transpose(0, 1)
        start = self.cache.n_tokens(seq)
        pos = torch.arange(start, start + m, device=x.device)
        q = self._rope(q, pos, self.rope_base, self.rope_dims)
        if not self.cache.keys_pre_rope:
            k = self._rope(k, pos, self.rope_base, self.rope_dims)
        a = self.attend(q, k, v, seq).to(x.dtype)  # (nq, m, d)
        return a.transpose(0, 1).reshape(m, nq * d) @ wo.T

    def __repr__(self):
        return f"<tqkv.tp.AttentionShard rank {self.rank}/{self.world_size} {self.shard!r} {self.cache!r}>"

