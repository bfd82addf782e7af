"""tqkv.LayerCache and tqkv.shard_heads (numpy; no torch needed): a cache for a subset of kv heads
stores exactly the unsharded cache's bytes for those heads and attends bit-identically; the
arrays' layouts and dtypes; hostile arguments give one clear ValueError / TypeError."""
import numpy as np
import pytest

CONFIGS = [None, dict(method="turboquant_rvq", bits=1, value_bits=2), dict(cache_type_k="tq4", cache_type_v="tq4"),
           dict(cache_type_k="rvq1x2", cache_type_v="tq2", kv_window=16, kv_sinks=4)]


def config_of(tqkv, c):
    return None if c is None else tqkv.KVCacheConfig(**c)


def data(H, n, d, seed):
    g = np.random.default_rng(seed)
    return (g.standard_normal((H, n, d)).astype(np.float32), g.standard_normal((H, n, d)).astype(np.float32))


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("world", [2, 4])
def test_shards_equal_unsharded(tqkv, cfg, world):
    H, G, d, n = 4, 2, 64, 150
    config = config_of(tqkv, cfg)
    full = tqkv.LayerCache(H, d, config, layer=2)
    k, v = data(H, n, d, 3)
    shards = [tqkv.shard_heads(H, H * G, r, world) for r in range(world)]
    parts = [tqkv.LayerCache(s.n_kv_heads, d, config, layer=2, kv_head_offset=s.kv_head_offset, n_total_kv_heads=H)
             for s in shards]
    for t0, t1 in [(0, 37), (37, 100), (100, 101), (101, n)]:
        full.append(k[:, t0:t1], v[:, t0:t1])
        for s, p in zip(shards, parts):
            o = s.kv_head_offset
            p.append(k[o:o + s.n_kv_heads, t0:t1], v[o:o + s.n_kv_heads, t0:t1])
    q = np.random.default_rng(4).standard_normal((H * G, 3, d)).astype(np.float32)
    ref = full.attend(q)
    for s, p in zip(shards, parts):
        assert p.n_tokens() == n and p.kv_head_offset == s.kv_head_offset and p.n_total_kv_heads == H
        for h in range(s.n_kv_heads):
            assert p.stored_bytes(h) == full.stored_bytes(s.kv_head_offset + h)
            a, b = p.read(h), full.read(s.kv_head_offset + h)
            assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        out = p.attend(q[s.q_head_offset:s.q_head_offset + s.n_q_heads])
        assert np.array_equal(out, ref[s.q_head_offset:s.q_head_offset + s.n_q_heads])  # bit for bit
    # A shard whose offset is wrong (0 instead of its own) holds other codes: the seeds follow the global head.
    if cfg is not None:
        s = shards[-1]
        wrong = tqkv.LayerCache(s.n_kv_heads, d, config, layer=2, kv_head_offset=0, n_total_kv_heads=H)
        o = s.kv_head_offset
        wrong.append(k[o:o + s.n_kv_heads], v[o:o + s.n_kv_heads])
        assert wrong.stored_bytes(0) != full.stored_bytes(o)


def test_shard_heads(tqkv):
    s = tqkv.shard_heads(8, 32, 1, 2)
    assert (s.kv_head_offset, s.n_kv_heads, s.n_total_kv_heads, s.q_head_offset, s.n_q_heads, s.n_total_q_heads) == \
        (4, 4, 8, 16, 16, 32)
    assert repr(s) == "<tqkv.HeadShard kv_heads=[4, 8) of 8 q_heads=[16, 32)>"
    # Uneven: 5 kv heads on 3 ranks -> 2, 2, 1.
    assert [(tqkv.shard_heads(5, 10, r, 3).kv_head_offset, tqkv.shard_heads(5, 10, r, 3).n_kv_heads)
            for r in range(3)] == [(0, 2), (2, 2), (4, 1)]
    with pytest.raises(ValueError, match="world_size 16 exceeds the 8 kv heads"):
        tqkv.shard_heads(8, 32, 0, 16)
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\)"):
        tqkv.shard_heads(8, 32, 2, 2)
    with pytest.raises(ValueError, match="positive multiple of the 8 kv heads"):
        tqkv.shard_heads(8, 12, 0, 2)


def test_hostile_arguments(tqkv):
    with pytest.raises(ValueError, match=r"kv heads \[6, 9\) lie outside the layer's 8 kv heads"):
        tqkv.LayerCache(3, 64, kv_head_offset=6, n_total_kv_heads=8)
    with pytest.raises(ValueError, match="at least one kv head"):
        tqkv.LayerCache(0, 64, n_total_kv_heads=8)
    with pytest.raises(ValueError, match="kv_head_offset must be >= 0"):
        tqkv.LayerCache(2, 64, kv_head_offset=-1, n_total_kv_heads=8)
    with pytest.raises(ValueError, match="pass n_layers"):
        tqkv.LayerCache(2, 64, tqkv.KVCacheConfig(method="turboquant_rvq", boundary_layers=1))
    c = tqkv.LayerCache(2, 64)
    k, v = data(2, 5, 64, 1)
    with pytest.raises(ValueError, match=r"k and v must both be \(n_kv_heads=2, n, head_dim=64\)"):
        c.append(k[:1], v[:1])
    with pytest.raises(ValueError, match="3-D"):
        c.append(k[0], v[0])
    with pytest.raises(TypeError, match="float32 or float16"):
        c.append(k.astype(np.int32), v)
    c.append(k, v)
    with pytest.raises(ValueError, match="positive multiple of the cache's 2 kv heads"):
        c.attend(np.zeros((3, 1, 64), np.float32))
    with pytest.raises(ValueError, match="the sequence holds 5"):
        c.attend(np.zeros((2, 6, 64), np.float32))
    with pytest.raises(ValueError, match="the sequence holds 0"):
        c.attend(np.zeros((2, 1, 64), np.float32), seq=1)
    with pytest.raises(ValueError, match="local head"):
        c.stored_bytes(2)
    with pytest.raises(ValueError, match="outside the sequence"):
        c.read(0, 0, 6)


def test_layouts_and_dtypes(tqkv):
    """A [tokens, heads, d] tensor transposed to [heads, tokens, d] is read in place; float16 is
    converted; the results equal those of contiguous float32 input; `out` is filled."""
    H, n, d = 2, 40, 64
    k, v = data(H, n, d, 5)
    a, b = tqkv.LayerCache(H, d, tqkv.KVCacheConfig(method="turboquant_rvq")), \
        tqkv.LayerCache(H, d, tqkv.KVCacheConfig(method="turboquant_rvq"))
    a.append(k, v)
    kt = np.ascontiguousarray(k.transpose(1, 0, 2)).transpose(1, 0, 2)  # strided view
    b.append(kt, v.astype(np.float16).astype(np.float32))
    q = np.random.default_rng(6).standard_normal((4, 2, d)).astype(np.float32)
    out = np.empty((4, 2, d), np.float32)
    r = b.attend(q.astype(np.float16), out=out)
    assert r is not None and np.array_equal(r, out)
    a2 = tqkv.LayerCache(H, d, tqkv.KVCacheConfig(method="turboquant_rvq"))
    a2.append(kt, v)
    assert a2.stored_bytes(0) == a.stored_bytes(0) and a2.stored_bytes(1) == a.stored_bytes(1)
    assert np.array_equal(a2.attend(q), a.attend(q))
    assert a.bytes_resident > 0 and a.f16_bytes() == H * n * d * 2 * 2
    assert "kv_heads=[0, 2) of 2" in repr(a)


def test_gpu_cache_refuses_hostile_shards_without_a_gpu(tqkv):
    """The GPU binding checks the shard before it touches CUDA (so this runs in CI without a GPU)."""
    from tqkv import _tqkv

    with pytest.raises(ValueError, match=r"kv heads \[6, 9\) lie outside the layer's 8 kv heads"):
        _tqkv._GpuLayerCache(n_kv_heads=3, head_dim=128, max_tokens=64, kv_head_offset=6, n_total_kv_heads=8)
    with pytest.raises(ValueError, match="kv_head_offset must be >= 0"):
        _tqkv._GpuLayerCache(n_kv_heads=2, head_dim=128, max_tokens=64, kv_head_offset=-2, n_total_kv_heads=8)
