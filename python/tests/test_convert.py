"""tqkv.convert: the GGUF -> transformers Llama mapping (numpy only, so it runs in CI).

The RoPE layout is checked against independent code: llama.cpp's converter permutation written out
here, and RoPE applied both ways (adjacent pairs on GGUF rows, rotate_half on transformers rows)
must give the same q.k scores.
"""
import numpy as np
import pytest

from conftest import MODEL


def llamacpp_permute(w, n_head):
    # llama.cpp convert_hf_to_gguf.py LlamaModel.permute, transcribed: HF rows -> GGUF rows.
    rows, cols = w.shape
    return w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def rope_adjacent(x, pos, theta):
    # pairs (2i, 2i+1), frequency theta^(-2i/d): tqkv's RopeStyle::kAdjacent / llama.cpp's NORM.
    d = x.shape[-1]
    f = pos * theta ** (-np.arange(0, d, 2) / d)
    c, s = np.cos(f), np.sin(f)
    y = x.copy()
    y[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
    y[..., 1::2] = x[..., 0::2] * s + x[..., 1::2] * c
    return y


def rope_half(x, pos, theta):
    # transformers' Llama: x * cos + rotate_half(x) * sin, cos/sin repeated over both halves.
    d = x.shape[-1]
    f = pos * theta ** (-np.arange(0, d, 2) / d)
    c, s = np.concatenate([np.cos(f)] * 2), np.concatenate([np.sin(f)] * 2)
    rot = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], axis=-1)
    return x * c + rot * s


def test_unpermute_inverts_llamacpp_permute():
    import tqkv.convert as cv
    rng = np.random.default_rng(3)
    for n_head, d, cols in [(4, 8, 5), (2, 128, 16), (8, 64, 3)]:
        w = rng.standard_normal((n_head * d, cols)).astype(np.float32)
        np.testing.assert_array_equal(cv.unpermute_rope_rows(llamacpp_permute(w, n_head), n_head), w)
    with pytest.raises(ValueError):
        cv.unpermute_rope_rows(np.zeros((10, 3)), 4)


def test_scores_equal_under_both_rope_layouts(tqkv):
    import tqkv.convert as cv
    m = tqkv.Model(str(MODEL))
    c = m.config
    assert c["rope_style"] == "adjacent"
    d, theta = c["head_dim"], c["rope_freq_base"]
    wq_g, wk_g = m.tensor("blk.0.attn_q.weight").astype(np.float64), m.tensor("blk.0.attn_k.weight").astype(np.float64)
    wq_h, wk_h = cv.unpermute_rope_rows(wq_g, c["n_heads"]), cv.unpermute_rope_rows(wk_g, c["n_kv_heads"])
    x = np.random.default_rng(5).standard_normal((2, c["dim"]))
    g = c["n_heads"] // c["n_kv_heads"]
    for pq, pk in [(7, 3), (100, 0), (31, 31)]:
        for h in range(c["n_heads"]):
            kh = h // g
            qg = rope_adjacent(wq_g[h * d:(h + 1) * d] @ x[0], pq, theta)
            kg = rope_adjacent(wk_g[kh * d:(kh + 1) * d] @ x[1], pk, theta)
            qh = rope_half(wq_h[h * d:(h + 1) * d] @ x[0], pq, theta)
            kk = rope_half(wk_h[kh * d:(kh + 1) * d] @ x[1], pk, theta)
            assert abs(qg @ kg - qh @ kk) <= 1e-9 * (np.linalg.norm(qg) * np.linalg.norm(kg))


def test_state_dict_names_and_shapes(tqkv):
    import tqkv.convert as cv
    m = tqkv.Model(str(MODEL))
    c = m.config
    sd = cv.llama_state_dict(m)
    hd = c["head_dim"]
    assert sd["model.embed_tokens.weight"].shape == (c["vocab_size"], c["dim"])
    assert sd["lm_head.weight"].shape == (c["vocab_size"], c["dim"])
    assert sd["model.layers.0.self_attn.q_proj.weight"].shape == (c["n_heads"] * hd, c["dim"])
    assert sd["model.layers.0.self_attn.k_proj.weight"].shape == (c["n_kv_heads"] * hd, c["dim"])
    assert sd["model.layers.0.mlp.gate_proj.weight"].shape == (c["hidden_dim"], c["dim"])
    assert len([k for k in sd if k.startswith("model.layers.")]) == 9 * c["n_layers"]
    assert all(v.dtype == np.float32 for v in sd.values())
    # The tensor() reader is tqkv's dequantizer: the norm weights are f32 in the file and come back exact.
    assert np.isfinite(sd["model.norm.weight"]).all()
    with pytest.raises(KeyError):
        m.tensor("no.such.tensor")
