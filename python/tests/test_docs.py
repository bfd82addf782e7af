"""Every ```python snippet of docs/python.md (and of the README) runs as written, in order, in one
namespace, from the repository root (the docs promise that)."""
import contextlib
import io
import os
import re

import pytest

from conftest import SOURCE_DIR


def snippets(doc, tag=""):
    """```python blocks (tag "") or ```python gpu blocks (tag "gpu")."""
    text = (SOURCE_DIR / doc).read_text()
    return re.findall(r"^```python" + (" " + tag if tag else "") + r"\n(.*?)^```$", text, flags=re.S | re.M)


def run_snippets(doc, tag=""):
    namespace = {}
    cwd = os.getcwd()
    os.chdir(SOURCE_DIR)
    try:
        for i, code in enumerate(snippets(doc, tag)):
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(code, f"{doc} snippet {i + 1}", "exec"), namespace)
    finally:
        os.chdir(cwd)
    return namespace


def test_python_md_snippets_run(tqkv):
    assert len(snippets("docs/python.md")) >= 8, "docs/python.md lost its snippets"
    ns = run_snippets("docs/python.md")
    # The seed's quickstart generated text and its quantizer snippet measured the cosine.
    assert ns["response"]
    assert 0.935 < ns["cos_sim"] < 0.946


def test_readme_python_snippet_runs(tqkv):
    assert len(snippets("README.md")) >= 1
    ns = run_snippets("README.md")
    assert ns["cache"].n_tokens > 0


def test_python_md_gpu_snippets_run(tqkv):
    """The ```python gpu blocks (the quickstart on transformers + the GPU cache): only where the
    GPU backend, torch and transformers are present (scripts/gpu-python.sh); skipped elsewhere."""
    assert len(snippets("docs/python.md", "gpu")) >= 4, "docs/python.md lost its GPU snippets"
    try:
        import tqkv.gpu
        import transformers  # noqa: F401
    except ImportError as e:
        pytest.skip(f"the GPU snippets need torch (CUDA) and transformers: {e}")
    ok, why = tqkv.gpu.available()
    if not ok:
        pytest.skip(f"the GPU snippets need tqkv's GPU backend: {why}")
    ns = run_snippets("docs/python.md", "gpu")
    assert ns["response"]
    assert ns["cache"].get_seq_length() > 0 and ns["c"].n_tokens(1) == 1000
