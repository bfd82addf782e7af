"""tqkv: KV-cache quantization (TurboQuant RVQ and peers) and a GGUF runtime whose attention reads
the compressed cache. Quickstart: docs/python.md.

The compiled core is the extension ``tqkv._tqkv`` (pybind11, numpy); everything in it is
re-exported here. Two pure-Python submodules build on it and are imported on demand:

- ``tqkv.gpu``: the GPU cache (CUDA build) on torch tensors;
- ``tqkv.hf``: a transformers integration (a ``Cache`` subclass and an attention function that
  reads the packed codes), plus ``llama_from_gguf`` to build a ``LlamaForCausalLM`` from a GGUF.
"""
from ._tqkv import *  # noqa: F401,F403  (the whole compiled API)
from ._tqkv import __doc__ as _core_doc, __version__  # noqa: F401

__all__ = [name for name in dir() if not name.startswith("_")]
