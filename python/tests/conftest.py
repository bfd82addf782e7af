"""Shared fixtures of the tqkv Python tests (run by ctest: see python/CMakeLists.txt).

ctest sets PYTHONPATH to the built module, TQKV_CLI to the `tqkv` program and TQKV_SOURCE_DIR to
the source tree; the tests cross-check the module against the CLI.
"""
import json
import os
import pathlib
import subprocess

import pytest

SOURCE_DIR = pathlib.Path(os.environ.get("TQKV_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
MODEL = SOURCE_DIR / "models" / "tqkv-ref-d128.gguf"
MODEL_D64 = SOURCE_DIR / "models" / "tqkv-ref-d64.gguf"
HELDOUT = SOURCE_DIR / "models" / "eval" / "heldout.txt"


def cli_path():
    p = os.environ.get("TQKV_CLI")
    if not p:
        pytest.fail("TQKV_CLI is not set: run the tests through ctest (./scripts/test.sh)")
    return p


def run_cli(*args):
    """Runs `tqkv ARGS...`, returns stdout as bytes; fails the test with stderr on a non-zero exit."""
    r = subprocess.run([cli_path(), *map(str, args)], capture_output=True)
    if r.returncode != 0:
        pytest.fail(f"tqkv {' '.join(map(str, args))} exited {r.returncode}: {r.stderr.decode(errors='replace')}")
    return r.stdout


def run_cli_json(*args):
    return json.loads(run_cli(*args, "--json"))


@pytest.fixture(scope="session")
def tqkv():
    import tqkv as module
    return module


@pytest.fixture(scope="session")
def model(tqkv):
    return tqkv.Model(str(MODEL))
