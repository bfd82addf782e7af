"""GGUF tensors (read by tqkv.Model) under transformers' Llama parameter names, as numpy float32.

No torch and no transformers needed here (tested in CI: python/tests/test_convert.py);
tqkv.hf.llama_from_gguf builds the model from this.

RoPE layout: llama.cpp's converter permutes the rows of each q/k head so that RoPE rotates adjacent
pairs (2i, 2i+1) (tqkv's RopeStyle kAdjacent, the GGUF llama convention); transformers' Llama
rotates (i, i + head_dim/2) (rotate_half). ``unpermute_rope_rows`` undoes the permutation: row
h*d + 2i + j of the GGUF matrix becomes row h*d + j*d/2 + i. q.k products are unchanged by it
(the same permutation applies to q and k), so attention scores are the model's own.
"""
import numpy as np


def unpermute_rope_rows(w, n_heads):
    """[n_heads * head_dim, cols] GGUF (adjacent-pair) q/k rows -> transformers' (half-split) order."""
    w = np.asarray(w)
    rows, cols = w.shape
    if rows % n_heads or (rows // n_heads) % 2:
        raise ValueError(f"{rows} rows do not split into {n_heads} heads of even size")
    d = rows // n_heads
    return np.ascontiguousarray(w.reshape(n_heads, d // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols))


def llama_state_dict(model):
    """{transformers LlamaForCausalLM parameter name: numpy float32 array} of a tqkv.Model whose
    arch is llama. lm_head.weight is the embedding when the GGUF ties them (no output.weight)."""
    c = model.config
    if c["arch"] != "llama":
        raise ValueError(f"only arch 'llama' maps onto transformers' Llama, got {c['arch']!r}")
    names = set(model.tensor_names)
    t = model.tensor
    adjacent = c["rope_style"] == "adjacent"
    sd = {"model.embed_tokens.weight": t("token_embd.weight"), "model.norm.weight": t("output_norm.weight")}
    sd["lm_head.weight"] = t("output.weight") if "output.weight" in names else sd["model.embed_tokens.weight"]
    for i in range(c["n_layers"]):
        p, g = f"model.layers.{i}.", f"blk.{i}."
        wq, wk = t(g + "attn_q.weight"), t(g + "attn_k.weight")
        if adjacent:
            wq, wk = unpermute_rope_rows(wq, c["n_heads"]), unpermute_rope_rows(wk, c["n_kv_heads"])
        sd[p + "self_attn.q_proj.weight"] = wq
        sd[p + "self_attn.k_proj.weight"] = wk
        sd[p + "self_attn.v_proj.weight"] = t(g + "attn_v.weight")
        sd[p + "self_attn.o_proj.weight"] = t(g + "attn_output.weight")
        sd[p + "input_layernorm.weight"] = t(g + "attn_norm.weight")
        sd[p + "post_attention_layernorm.weight"] = t(g + "ffn_norm.weight")
        sd[p + "mlp.gate_proj.weight"] = t(g + "ffn_gate.weight")
        sd[p + "mlp.up_proj.weight"] = t(g + "ffn_up.weight")
        sd[p + "mlp.down_proj.weight"] = t(g + "ffn_down.weight")
    return sd
