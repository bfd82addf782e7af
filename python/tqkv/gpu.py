"""tqkv's GPU cache on torch tensors (needs a CUDA build of tqkv and torch with CUDA).

One ``GpuLayerCache`` is one layer's compressed KV cache in GPU memory (tqkv::CudaLayerCache,
include/tqkv/cuda.h): ``append`` encodes keys and values into the packed pages on the GPU (one
fused kernel), ``attend`` runs split-KV attention straight from the packed codes (decode, or causal
prefill of the last ``m`` tokens). Nothing is dequantized into a dense tensor.

The compiled module never links torch: this wrapper checks devices, dtypes, shapes and contiguity
(``ValueError`` with the reason) and hands ``data_ptr()``, the sizes and the current CUDA stream to
it as integers. Work is ordered after the current stream and the stream waits for it, so the usual
torch stream semantics hold.

    import torch, tqkv.gpu
    c = tqkv.gpu.GpuLayerCache(n_kv_heads=8, head_dim=128, key_format="rvq1x2", value_format="tq2",
                               max_seqs=2, max_tokens=4096)
    c.append(k, v)                 # k, v: [2, 8, n, 128] bfloat16/float32 CUDA tensors
    out = c.attend(q)              # q: [2, 32, m, 128] float32 -> [2, 32, m, 128] float32
"""
from . import _tqkv


def available():
    """(True, "") when tqkv was built with CUDA, torch sees a CUDA device and tqkv's backend accepts
    it (compute capability >= 9.0); otherwise (False, the reason)."""
    ok, why = _tqkv._cuda_available()
    if not ok:
        return False, why
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the machine
        return False, f"torch is not importable: {e}"
    if not torch.cuda.is_available():
        return False, "torch has no CUDA device (torch.cuda.is_available() is False)"
    return True, ""


def device_name():
    return _tqkv._cuda_device_name()


_DTYPES = None


def _dtype_name(t):
    import torch
    global _DTYPES
    if _DTYPES is None:
        _DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}
    return _DTYPES.get(t.dtype)


def _check_cuda(name, t, device):
    import torch
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cuda":
        raise ValueError(f"{name} must be on a CUDA device, got {t.device}")
    if t.device.index != device:
        raise ValueError(f"{name} is on {t.device}, the cache on cuda:{device}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous()); got strides {tuple(t.stride())} "
                         f"for shape {tuple(t.shape)}")


def _stream(device):
    import torch
    return torch.cuda.current_stream(device).cuda_stream


class GpuLayerCache:
    """One layer's compressed KV cache on the GPU.

    Formats: ``key_format`` / ``value_format`` names (rvq1x2, tq2, rvq2x2, tq4, rvq1x4, q4_0, q8_0,
    f16), or ``config=tqkv.KVCacheConfig(...)`` (with ``layer`` and ``n_layers`` for
    ``boundary_layers``). ``max_seqs`` sequences of up to ``max_tokens`` tokens each; the page pool
    is allocated whole here (``bytes_resident``). ``layer`` is mixed into the rotation seeds
    exactly as in the CPU cache, so the codes are bit-identical to the CPU quantizer's.
    Tensor parallelism: ``kv_head_offset`` / ``n_total_kv_heads`` make it the cache of the global
    kv heads [kv_head_offset, kv_head_offset + n_kv_heads) of a layer (``tqkv.shard_heads``): each
    head's rotation is that of its GLOBAL index, as in ``tqkv.LayerCache`` (docs/tensor-parallel.md).
    Attention needs head_dim 64, 128 or 256 and n_q_heads = n_kv_heads * g with g in 1..8.
    """

    def __init__(self, n_kv_heads, head_dim, key_format=None, value_format=None, *, config=None, layer=0,
                 n_layers=0, max_seqs=1, max_tokens, page_tokens=64, device=None, use_hadamard=True,
                 seed=0x5EED, kv_head_offset=0, n_total_kv_heads=0):
        ok, why = available()
        if not ok:
            raise RuntimeError(f"tqkv GPU cache unavailable: {why}")
        import torch
        if device is None:
            device = torch.cuda.current_device()
        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError(f"device must be a CUDA device, got {device}")
        self.device = device.index if device.index is not None else torch.cuda.current_device()
        if config is None and key_format is None and value_format is None:
            key_format, value_format = "rvq1x2", "tq2"
        self._c = _tqkv._GpuLayerCache(
            n_kv_heads=int(n_kv_heads), head_dim=int(head_dim), config=config, key_format=key_format,
            value_format=value_format, layer=int(layer), n_layers=int(n_layers), max_seqs=int(max_seqs),
            max_tokens=int(max_tokens), page_tokens=int(page_tokens), device=self.device,
            use_hadamard=bool(use_hadamard), seed=int(seed), kv_head_offset=int(kv_head_offset),
            n_total_kv_heads=int(n_total_kv_heads))

    # --- properties -------------------------------------------------------------------------
    key_format = property(lambda self: self._c.key_format)
    value_format = property(lambda self: self._c.value_format)
    n_kv_heads = property(lambda self: self._c.n_kv_heads)
    kv_head_offset = property(lambda self: self._c.kv_head_offset,
                              doc="global index of the first kv head held (tensor parallelism; 0 unsharded)")
    head_dim = property(lambda self: self._c.head_dim)
    max_seqs = property(lambda self: self._c.max_seqs)
    max_tokens = property(lambda self: self._c.max_tokens)
    bytes_resident = property(lambda self: self._c.bytes_resident,
                              doc="GPU bytes of the page pools and page table (allocated at construction)")
    bytes_per_token_head = property(lambda self: self._c.bytes_per_token_head,
                                    doc="bytes one token of one kv head takes (key + value, codes + scales)")

    def n_tokens(self, seq=0):
        return self._c.n_tokens(int(seq))

    def _seqs(self, seqs, batch):
        if seqs is None:
            if batch > self.max_seqs:
                raise ValueError(f"batch {batch} exceeds max_seqs {self.max_seqs}")
            return list(range(batch))
        seqs = [int(s) for s in seqs]
        if len(seqs) != batch:
            raise ValueError(f"seqs has {len(seqs)} entries for a batch of {batch}")
        return seqs

    def append(self, k, v, seqs=None):
        """Appends k, v ([batch, n_kv_heads, n, head_dim], float32 or bfloat16, contiguous, on the
        cache's device) to sequences ``seqs`` (default 0..batch-1): the packed codes are written on
        the GPU, nothing else is kept."""
        _check_cuda("k", k, self.device)
        _check_cuda("v", v, self.device)
        if k.dim() != 4 or tuple(k.shape) != tuple(v.shape):
            raise ValueError(f"k and v must both be [batch, n_kv_heads, n, head_dim]; got {tuple(k.shape)} and "
                             f"{tuple(v.shape)}")
        b, h, n, d = k.shape
        if h != self.n_kv_heads or d != self.head_dim:
            raise ValueError(f"k has {h} heads of dim {d}; the cache holds {self.n_kv_heads} heads of dim "
                             f"{self.head_dim}")
        dt = _dtype_name(k)
        if dt is None or k.dtype != v.dtype:
            raise ValueError(f"k and v must be float32 or bfloat16 (the same), got {k.dtype} and {v.dtype}")
        if n < 1:
            raise ValueError("append needs at least one token")
        self._c.append(self._seqs(seqs, b), int(n), k.data_ptr(), v.data_ptr(), dt, _stream(self.device))

    def attend(self, q, seqs=None, scale=None, out=None, n_splits=0):
        """Attention of q ([batch, n_q_heads, m, head_dim] float32, contiguous) over the cached
        sequences: query j of item i sits at position n_tokens(seqs[i]) - m + j and attends causally
        to 0 .. that position. Returns (or fills) ``out``, float32 of q's shape. ``scale`` defaults
        to 1/sqrt(head_dim)."""
        import torch
        _check_cuda("q", q, self.device)
        if q.dtype != torch.float32:
            raise ValueError(f"q must be float32, got {q.dtype} (use q.float())")
        if q.dim() != 4 or q.shape[-1] != self.head_dim:
            raise ValueError(f"q must be [batch, n_q_heads, m, {self.head_dim}], got {tuple(q.shape)}")
        b, hq, m, _ = q.shape
        if hq % self.n_kv_heads or not 1 <= hq // self.n_kv_heads <= 8:
            raise ValueError(f"n_q_heads ({hq}) must be n_kv_heads ({self.n_kv_heads}) * g with g in 1..8")
        if out is None:
            out = torch.empty_like(q)
        else:
            _check_cuda("out", out, self.device)
            if out.dtype != torch.float32 or out.shape != q.shape:
                raise ValueError(f"out must be float32 of shape {tuple(q.shape)}, got {out.dtype} {tuple(out.shape)}")
        self._c.attend(self._seqs(seqs, b), int(m), int(hq), q.data_ptr(), out.data_ptr(),
                       float(scale or 0.0), int(n_splits), _stream(self.device))
        return out

    def truncate(self, seq, n):
        """Keeps the first n tokens of sequence seq (pages past them go back to the pool)."""
        self._c.truncate(int(seq), int(n), _stream(self.device))

    def read_codes(self, seq, head, value, t0, t1):
        """numpy uint8 [t1 - t0, code_size]: the per-vector codes of tokens [t0, t1) of one head, in
        the CPU quantizer's format (tqkv.Quantizer(...).decode reads them)."""
        return self._c.read_codes(int(seq), int(head), bool(value), int(t0), int(t1))

    def decode(self, seq, head, value, t0, t1):
        """numpy float32 [t1 - t0, head_dim]: the stored tokens [t0, t1) of one head, decoded on the
        host by the CPU quantizer from the GPU's codes (the keys/values attention reads)."""
        return self._c.decode(int(seq), int(head), bool(value), int(t0), int(t1))

    def __repr__(self):
        return (f"<tqkv.gpu.GpuLayerCache k={self.key_format} v={self.value_format} heads={self.n_kv_heads} "
                f"d={self.head_dim} max_seqs={self.max_seqs} max_tokens={self.max_tokens} "
                f"bytes_resident={self.bytes_resident}>")
