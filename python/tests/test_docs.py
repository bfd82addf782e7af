"""Every ```python snippet of docs/python.md (and of the README) runs as written, in order, in one
namespace, from the repository root (the docs promise that)."""
import contextlib
import io
import os
import re

from conftest import SOURCE_DIR


def snippets(doc):
    text = (SOURCE_DIR / doc).read_text()
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def run_snippets(doc):
    namespace = {}
    cwd = os.getcwd()
    os.chdir(SOURCE_DIR)
    try:
        for i, code in enumerate(snippets(doc)):
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
