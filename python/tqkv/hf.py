"""tqkv's compressed GPU KV cache in Hugging Face transformers (5.x), switched on in one line.

    import tqkv.hf
    cache = tqkv.hf.TqkvCache(model, "rvq1x2/tq2", max_cache_len=8192)   # the one line
    out = model.generate(**inputs, past_key_values=cache, max_new_tokens=64)

``TqkvCache(model, ...)`` registers the attention function ``"tqkv"`` through transformers'
``AttentionInterface`` and switches the model to it (``model.set_attn_implementation("tqkv")``).
Each layer of the cache is a ``tqkv.gpu.GpuLayerCache``: ``update`` encodes the new keys and values
into packed pages on the GPU and keeps nothing else; the attention function runs tqkv's fused
split-KV kernel on the packed codes (decode and causal prefill). The history is never
dequantized into an fp16/bf16 tensor (transformers' own ``QuantizedCache`` does that each step).

Limits: full-attention decoder layers (Llama-style; no sliding windows), no padding in a batch
(the "tqkv" implementation builds no attention mask: every item attends causally to all its
tokens, so batch items must have equal lengths), no beam search (the cache cannot reorder its
batch), inference only (no gradients through the cache), head_dim 64/128/256, query heads
= kv heads * g with g <= 8. With any other cache (e.g. ``use_cache=False`` or a
``DynamicCache``) the "tqkv" attention falls back to transformers' SDPA.

``llama_from_gguf(path)`` builds a ``LlamaForCausalLM`` from a GGUF read by ``tqkv.Model`` (no
download): the test model of python/tests/test_gpu_hf.py. ``load`` / ``generate`` /
``KVCacheBuilder`` / ``KVCacheConfig`` give the seed's quickstart names on the GPU (docs/python.md).
"""
import warnings

import torch
import transformers
from transformers.cache_utils import Cache, CacheLayerMixin

from . import _tqkv
from . import convert as _convert
from . import gpu as _gpu

ATTN_IMPLEMENTATION = "tqkv"
_TAG = "_tqkv_layer"  # attribute set on the key tensor update() returns: the layer that holds it
_warned_fallback = False


def _sdpa(*args, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    return sdpa_attention_forward(*args, **kwargs)


def tqkv_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function ``"tqkv"``: query [batch, n_q_heads, m, head_dim]; ``key``
    is the tensor a TqkvCache layer returned from ``update`` (it carries the layer), ``value``
    is unused. Returns ([batch, m, n_q_heads, head_dim] in query's dtype, None)."""
    global _warned_fallback
    layer = getattr(key, _TAG, None)
    if layer is None:
        if not _warned_fallback:
            warnings.warn("tqkv attention: the cache is not a tqkv.hf.TqkvCache; falling back to SDPA", stacklevel=2)
            _warned_fallback = True
        return _sdpa(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    if module.training and dropout:
        raise ValueError("tqkv attention is for inference: dropout must be 0 (call model.eval())")
    if kwargs.get("output_attentions"):
        raise ValueError("tqkv attention cannot return attention weights (output_attentions=True)")
    b, hq, m, d = query.shape
    q = query.to(torch.float32).contiguous()
    out = layer.gpu.attend(q, scale=scaling)
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def register():
    """Registers the ``"tqkv"`` attention function (idempotent). No mask function is registered on
    purpose: transformers then builds no mask for "tqkv" (the kernel is causal by construction)."""
    transformers.AttentionInterface.register(ATTN_IMPLEMENTATION, tqkv_attention)


def enable(model):
    """Registers the attention function and switches ``model`` to it."""
    register()
    setter = getattr(model, "set_attn_implementation", None)
    try:
        setter(ATTN_IMPLEMENTATION)
    except (TypeError, ValueError, AttributeError):  # older transformers, or a model that refuses the check
        try:
            model.config._attn_implementation = ATTN_IMPLEMENTATION
        except AttributeError:  # a read-only property (transformers 5 keeps the value here)
            model.config._attn_implementation_internal = ATTN_IMPLEMENTATION
    return model


def _kv_config(spec):
    if spec is None:
        return _tqkv.KVCacheConfig(method="turboquant_rvq", bits=1, value_bits=2)
    if isinstance(spec, _tqkv.KVCacheConfig):
        return spec
    if isinstance(spec, str):
        k, sep, v = spec.partition("/")
        if not sep or not k or not v:
            raise ValueError(f"cache formats as 'KEY/VALUE' (e.g. 'rvq1x2/tq2'), got {spec!r}")
        return _tqkv.KVCacheConfig(cache_type_k=k, cache_type_v=v)
    raise ValueError(f"kv_config must be a tqkv.KVCacheConfig, a 'KEY/VALUE' string or None, got {type(spec).__name__}")


def _to_cache_dtype(t):
    if t.dtype not in (torch.bfloat16, torch.float32):
        t = t.to(torch.float32)  # float16 -> float32 is exact
    return t.contiguous()


def _tp_rank(model):
    """The model's rank in its tensor-parallel group (transformers' tp_plan keeps a device mesh on the
    model), or None when the model does not say (then torch.distributed's rank is used)."""
    mesh = getattr(model, "device_mesh", None) or getattr(model, "_device_mesh", None)
    if mesh is None:
        return None
    for get in (lambda: mesh.get_local_rank(), lambda: mesh["tp"].get_local_rank()):
        try:
            return int(get())
        except Exception:  # noqa: BLE001 - meshes of other shapes: try the next form
            continue
    return None


def _kv_head_offset(h, n_total, tp_rank):
    """Tensor parallelism (docs/tensor-parallel.md): a layer that sees h of the model's n_total kv
    heads holds rank r's block of them (tqkv.shard_heads: contiguous, in rank order, as transformers'
    colwise plans split k_proj/v_proj). Its cache takes their GLOBAL offset, so every head keeps the
    rotation it has in the unsharded cache. 0 when unsharded."""
    if not n_total or h == n_total:
        return 0
    if h > n_total or n_total % h:
        raise ValueError(f"the layer sees {h} of the model's {n_total} kv heads: not an even tensor-parallel split")
    world = n_total // h
    if tp_rank is None:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise ValueError(f"the layer sees {h} of the model's {n_total} kv heads (tensor parallel?) but "
                             "torch.distributed is not initialized: the rank is unknown")
        tp_rank = torch.distributed.get_rank() % world
    shard = _tqkv.shard_heads(n_total, n_total, int(tp_rank), world)
    if shard.n_kv_heads != h:
        raise ValueError(f"rank {tp_rank} of {world} should hold {shard.n_kv_heads} kv heads, the layer sees {h}")
    return shard.kv_head_offset


class TqkvLayer(CacheLayerMixin):
    """One decoder layer's cache: a tqkv.gpu.GpuLayerCache created on the first update (when the
    batch size, heads, head_dim and device are known)."""

    is_compileable = False
    is_sliding = False
    supports_early_init = False

    def __init__(self, layer_idx, n_layers, kv_config, max_cache_len, page_tokens=64, n_total_kv_heads=0,
                 tp_rank=None):
        super().__init__()
        self.n_total_kv_heads = int(n_total_kv_heads or 0)
        self.tp_rank = tp_rank
        self.layer_idx = layer_idx
        self.n_layers = n_layers
        self.kv_config = kv_config
        self.max_cache_len = int(max_cache_len)
        self.page_tokens = page_tokens
        self.gpu = None
        self.n = 0
        self.batch = 0

    def lazy_initialization(self, key_states, value_states=None, *args, **kwargs):
        b, h, _, d = key_states.shape
        self.dtype, self.device = key_states.dtype, key_states.device
        self.batch = b
        offset = _kv_head_offset(h, self.n_total_kv_heads, self.tp_rank)
        self.gpu = _gpu.GpuLayerCache(h, d, config=self.kv_config, layer=self.layer_idx, n_layers=self.n_layers,
                                      max_seqs=b, max_tokens=self.max_cache_len, page_tokens=self.page_tokens,
                                      device=key_states.device, kv_head_offset=offset,
                                      n_total_kv_heads=self.n_total_kv_heads or h)
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if key_states.shape[0] != self.batch:
            raise ValueError(f"tqkv cache was created for batch {self.batch}, got {key_states.shape[0]} "
                             "(beam search / batch changes are not supported)")
        n = key_states.shape[-2]
        if self.n + n > self.gpu.max_tokens:
            raise ValueError(f"tqkv cache holds at most {self.gpu.max_tokens} tokens (max_cache_len); "
                             f"{self.n} cached + {n} new")
        self.gpu.append(_to_cache_dtype(key_states), _to_cache_dtype(value_states))
        self.n += n
        setattr(key_states, _TAG, self)
        return key_states, value_states

    def get_seq_length(self, *args, **kwargs):
        return self.n

    def get_mask_sizes(self, query_length, *args, **kwargs):
        q = query_length if isinstance(query_length, int) else int(query_length.shape[0])
        return self.n + q, 0

    def get_max_length(self, *args, **kwargs):
        return self.max_cache_len

    def get_max_cache_shape(self, *args, **kwargs):
        return self.max_cache_len

    def crop(self, max_length):
        if max_length < 0:
            max_length = self.n - abs(max_length)
        if self.gpu is None or max_length >= self.n:
            return
        for s in range(self.batch):
            self.gpu.truncate(s, max_length)
        self.n = max_length

    def reset(self):
        if self.gpu is not None:
            for s in range(self.batch):
                self.gpu.truncate(s, 0)
        self.n = 0

    def _unsupported(self, *args, **kwargs):
        raise NotImplementedError("tqkv's GPU cache cannot reorder, repeat or offload its batch "
                                  "(beam search, contrastive search and offloading are not supported)")

    reorder_cache = batch_repeat_interleave = batch_select_indices = offload = prefetch = _unsupported

    @property
    def bytes_resident(self):
        return self.gpu.bytes_resident if self.gpu is not None else 0

    @property
    def max_batch_size(self):
        return self.batch


class TqkvCache(Cache):
    """A transformers ``Cache`` whose layers hold tqkv's compressed pages in GPU memory.

    ``TqkvCache(model, kv_config="rvq1x2/tq2", max_cache_len=N)``: ``model`` is a transformers
    model (switched to the "tqkv" attention unless ``switch_model=False``) or its config;
    ``kv_config`` a tqkv.KVCacheConfig, a 'KEY/VALUE' format string, or None (rvq1x2/tq2, the
    seed's default). Every layer reserves ``batch * ceil(max_cache_len / page_tokens)`` pages on the
    first forward (``bytes_resident``)."""

    def __init__(self, model, kv_config=None, *, max_cache_len, page_tokens=64, switch_model=True):
        config = getattr(model, "config", model)
        text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        n_layers = int(text.num_hidden_layers)
        layer_types = getattr(text, "layer_types", None) or ["full_attention"] * n_layers
        if any(t != "full_attention" for t in layer_types) or getattr(text, "sliding_window", None):
            raise ValueError("tqkv's GPU cache supports full-attention layers only (no sliding windows)")
        if max_cache_len < 1:
            raise ValueError(f"max_cache_len must be >= 1, got {max_cache_len}")
        self.kv_config = _kv_config(kv_config)
        self.max_cache_len_ = int(max_cache_len)
        # Under a tensor-parallel plan each rank's layers see only its kv heads: they learn their
        # global offset on the first update (_kv_head_offset).
        n_kv = int(getattr(text, "num_key_value_heads", None) or getattr(text, "num_attention_heads", 0) or 0)
        tp_rank = _tp_rank(model) if hasattr(model, "config") else None
        layers = [TqkvLayer(i, n_layers, self.kv_config, max_cache_len, page_tokens, n_kv, tp_rank)
                  for i in range(n_layers)]
        super().__init__(layers=layers)
        if switch_model and hasattr(model, "config"):
            enable(model)
        else:
            register()

    # Cache-level queries answered here (not through the base class), so they do not depend on
    # how a transformers version routes them to the layers.
    def get_seq_length(self, layer_idx=0, *args, **kwargs):
        return self.layers[layer_idx].n if layer_idx < len(self.layers) else 0

    def get_mask_sizes(self, query_length, layer_idx=0, *args, **kwargs):
        q = query_length if isinstance(query_length, int) else int(query_length.shape[0])
        return self.get_seq_length(layer_idx) + q, 0

    def get_query_offset(self, layer_idx=0, *args, **kwargs):
        return self.get_seq_length(layer_idx)

    def get_max_length(self, *args, **kwargs):
        return self.max_cache_len_

    def get_max_cache_shape(self, *args, **kwargs):
        return self.max_cache_len_

    def crop(self, max_length):
        for layer in self.layers:
            layer.crop(max_length)

    def reset(self):
        for layer in self.layers:
            layer.reset()

    @property
    def max_cache_len(self):
        return self.max_cache_len_

    @property
    def is_compileable(self):
        return False

    @property
    def bytes_resident(self):
        """GPU bytes the cache's page pools and tables take (all layers)."""
        return sum(layer.bytes_resident for layer in self.layers)

    @property
    def f16_bytes(self):
        """Bytes the cached tokens would take as f16/bf16 keys and values (all layers, the batch)."""
        total = 0
        for layer in self.layers:
            if layer.gpu is not None:
                total += layer.batch * layer.n * layer.gpu.n_kv_heads * layer.gpu.head_dim * 2 * 2
        return total

    def describe(self):
        return self.kv_config.describe()

    def __repr__(self):
        return (f"<tqkv.hf.TqkvCache {self.describe()} layers={len(self.layers)} tokens={self.get_seq_length()} "
                f"bytes_resident={self.bytes_resident}>")


# ---------------------------------------------------------------------------------------------
# A LlamaForCausalLM from a GGUF (no download)
# ---------------------------------------------------------------------------------------------

def llama_state_dict_from_gguf(model):
    """{transformers Llama parameter name: float32 torch tensor} from a tqkv.Model (tqkv.convert)."""
    return {k: torch.from_numpy(v) for k, v in _convert.llama_state_dict(model).items()}


def llama_config_from_gguf(model, **overrides):
    """A transformers LlamaConfig with the hyper-parameters of a tqkv.Model (arch llama only)."""
    import inspect
    c = model.config
    if c["arch"] != "llama":
        raise ValueError(f"llama_from_gguf supports arch 'llama', got {c['arch']!r}")
    if c["qkv_bias"] or c["qk_norm"] or c["has_rope_freqs"] or c["rope_scale"] != 1.0 or c["rope_dim"] not in (
            0, c["head_dim"]):
        raise ValueError("llama_from_gguf: qkv bias, q/k norms, rope_freqs, RoPE scaling and partial RoPE are not "
                         "mapped")
    kw = dict(vocab_size=c["vocab_size"], hidden_size=c["dim"], intermediate_size=c["hidden_dim"],
              num_hidden_layers=c["n_layers"], num_attention_heads=c["n_heads"],
              num_key_value_heads=c["n_kv_heads"], head_dim=c["head_dim"], rms_norm_eps=c["rms_eps"],
              max_position_embeddings=c["context_length"], tie_word_embeddings="output.weight" not in
              set(model.tensor_names), attention_bias=False, mlp_bias=False, hidden_act="silu")
    if "rope_parameters" in inspect.signature(transformers.LlamaConfig.__init__).parameters:
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": float(c["rope_freq_base"])}
    else:  # pragma: no cover - transformers 4.x
        kw["rope_theta"] = float(c["rope_freq_base"])
    kw.update(overrides)
    return transformers.LlamaConfig(**kw)


def llama_from_gguf(model, dtype=torch.float32, device="cuda", attn_implementation="sdpa"):
    """LlamaForCausalLM (eval mode) with the weights of a GGUF (a path or a tqkv.Model)."""
    if isinstance(model, str):
        model = _tqkv.Model(model)
    config = llama_config_from_gguf(model)
    try:
        config._attn_implementation = attn_implementation
    except AttributeError:  # pragma: no cover
        pass
    hf = transformers.LlamaForCausalLM(config)  # small models only: built on the host, then moved
    missing, unexpected = hf.load_state_dict(llama_state_dict_from_gguf(model), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"llama_from_gguf: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        hf.tie_weights()
    return hf.to(device=device, dtype=dtype).eval()


# ---------------------------------------------------------------------------------------------
# The seed's quickstart names (mlx_lm.load / generate, KVCacheBuilder.build) on the GPU, so the
# quickstart of docs/python.md runs here with only the import lines changed.
# ---------------------------------------------------------------------------------------------

KVCacheConfig = _tqkv.KVCacheConfig


def load(path, dtype=torch.float32, device="cuda"):
    """(model, tokenizer) like mlx_lm.load: a transformers LlamaForCausalLM on the GPU built from
    the GGUF (llama_from_gguf) and the tqkv.Model of the file as its tokenizer."""
    tok = _tqkv.Model(path)
    return llama_from_gguf(tok, dtype=dtype, device=device), tok


class KVCacheBuilder:
    """KVCacheBuilder.build(model, config=None, max_tokens=0) -> TqkvCache holding up to max_tokens
    tokens per sequence (0 = the model's max_position_embeddings)."""

    @staticmethod
    def build(model, config=None, max_tokens=0):
        n = int(max_tokens) or int(model.config.max_position_embeddings)
        return TqkvCache(model, config, max_cache_len=n)

    for_model = build


def generate(model, tokenizer=None, *, prompt, max_tokens=128, kv_cache=None, temperature=0.0, seed=42):
    """mlx_lm.generate's shape on transformers' generate: the text generated after ``prompt``
    (greedy when temperature is 0). kv_cache: a TqkvCache (KVCacheBuilder.build; emptied first), a
    KVCacheConfig (a cache is built for this call), or None (transformers' default cache + SDPA)."""
    tok = tokenizer
    if tok is None:
        raise ValueError("generate needs the tokenizer that load() returned")
    ids = tok.tokenize(prompt, add_bos=True)
    cache = kv_cache
    if isinstance(cache, _tqkv.KVCacheConfig):
        cache = TqkvCache(model, cache, max_cache_len=len(ids) + max_tokens)
    if isinstance(cache, TqkvCache):
        cache.reset()
        enable(model)
    elif cache is None:
        model.set_attn_implementation("sdpa")
    else:
        raise ValueError(f"kv_cache must be a tqkv.hf.TqkvCache, a KVCacheConfig or None, got {type(cache).__name__}")
    device = next(model.parameters()).device
    x = torch.tensor([ids], device=device)
    kw = dict(do_sample=False)
    if temperature > 0:
        torch.manual_seed(seed)
        kw = dict(do_sample=True, temperature=float(temperature), top_k=0, top_p=1.0)
    with torch.no_grad():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), past_key_values=cache,
                             max_new_tokens=int(max_tokens), **kw)
    return tok.detokenize(out[0, len(ids):].tolist())
