"""`cmake --install` of the Python package (component "python"): the installed package imports
from the install prefix alone (not the build tree) and works."""
import os
import pathlib
import subprocess
import sys

import pytest


def test_install_into_prefix_and_import(tmp_path):
    build, cmake, rel = (os.environ.get(k) for k in ("TQKV_BUILD_DIR", "TQKV_CMAKE", "TQKV_PYTHON_INSTALL_DIR"))
    if not (build and cmake and rel):
        pytest.fail("TQKV_BUILD_DIR / TQKV_CMAKE / TQKV_PYTHON_INSTALL_DIR are not set: run through ctest")
    prefix = tmp_path / "prefix"
    r = subprocess.run([cmake, "--install", build, "--prefix", str(prefix), "--component", "python"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    pkg = prefix / rel / "tqkv"
    files = sorted(p.name for p in pkg.iterdir())
    assert "__init__.py" in files and "gpu.py" in files and "hf.py" in files and "convert.py" in files
    assert any(f.startswith("_tqkv.") and f.endswith(".so") for f in files), files
    # Only the prefix on the path: the build tree's package must not be what gets imported.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(prefix / rel)
    code = (
        "import numpy as np, tqkv, tqkv.convert\n"
        "print(tqkv.__file__)\n"
        "q = tqkv.Quantizer('rvq1x2', head_dim=64)\n"
        "x = tqkv.gaussian(100, 64, seed=1)\n"
        "assert q.encode(x).nbytes == 100 * q.code_size\n"
        "ok, why = tqkv._tqkv._cuda_available()\n"
        "print('cuda', ok, why)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    first = r.stdout.splitlines()[0]
    assert pathlib.Path(first).resolve().is_relative_to(prefix.resolve()), first
