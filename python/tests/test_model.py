"""tqkv.Model: generate / stream produce what `tqkv generate` prints for the same settings, and
perplexity returns what `tqkv perplexity --json` reports."""
import pytest

from conftest import HELDOUT, MODEL, run_cli, run_cli_json

PROMPT = "It is a truth universally acknowledged"

# (KVCacheConfig kwargs, the same cache as CLI flags)
CACHES = [
    ({}, []),
    (dict(method="turboquant_rvq", bits=1, value_bits=2, num_residuals=2),
     ["--method", "turboquant_rvq", "--key-bits", 1, "--residuals", 2, "--value-bits", 2]),
    (dict(cache_type_k="q8_0", cache_type_v="tq4", kv_window=8),
     ["-ctk", "q8_0", "-ctv", "tq4", "--kv-window", 8]),
    # pk keys with the weight basis and a short calibration: the prompt's 8 tokens give the statistics
    (dict(cache_type_k="pk2", cache_type_v="tq2", pk_calib=8, pk_basis="weights"),
     ["-ctk", "pk2", "-ctv", "tq2", "--pk-calib", 8, "--pk-basis", "weights"]),
]


@pytest.mark.parametrize("cache_kwargs,flags", CACHES)
@pytest.mark.parametrize("temperature,seed", [(0.0, 42), (0.9, 1234)])
def test_generate_equals_the_cli(tqkv, model, cache_kwargs, flags, temperature, seed):
    cli = run_cli("generate", "-m", MODEL, "-p", PROMPT, "-n", 48, "--temp", temperature, "--seed", seed, *flags)
    assert cli.endswith(b"\n")
    want = cli[:-1].decode("utf-8", errors="replace")
    cache = tqkv.KVCacheBuilder.build(model, tqkv.KVCacheConfig(**cache_kwargs))
    got = model.generate(PROMPT, max_tokens=48, temperature=temperature, seed=seed, kv_cache=cache, echo=True)
    assert got == want
    assert got.startswith(PROMPT)
    # Without echo: only the generated part; a KVCacheConfig works in place of a built cache.
    gen = model.generate(PROMPT, max_tokens=48, temperature=temperature, seed=seed,
                         kv_cache=tqkv.KVCacheConfig(**cache_kwargs))
    assert want.endswith(gen) and len(gen) > 0


def test_stream_yields_the_generated_text(tqkv, model):
    config = tqkv.KVCacheConfig(method="turboquant_rvq")
    whole = model.generate(PROMPT, max_tokens=40, temperature=0.8, seed=7, kv_cache=config)
    stream = model.stream(PROMPT, max_tokens=40, temperature=0.8, seed=7, kv_cache=config)
    pieces = list(stream)
    assert len(pieces) > 5 and all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == whole
    assert 0 < stream.generated <= 40
    assert "".join(model.stream(PROMPT, max_tokens=10, echo=True)) == model.generate(PROMPT, max_tokens=10, echo=True)


def test_stream_holds_its_cache(tqkv, model):
    cache = tqkv.KVCacheBuilder.build(model, tqkv.KVCacheConfig(method="turboquant_rvq"))
    stream = model.stream(PROMPT, max_tokens=20, kv_cache=cache)
    first = next(stream)
    assert first
    with pytest.raises(RuntimeError, match="in use"):
        model.generate(PROMPT, max_tokens=2, kv_cache=cache)
    with pytest.raises(RuntimeError, match="in use"):
        cache.clear()
    rest = "".join(stream)
    assert first + rest == model.generate(PROMPT, max_tokens=20, kv_cache=tqkv.KVCacheConfig(method="turboquant_rvq"))
    model.generate(PROMPT, max_tokens=2, kv_cache=cache)  # free again once the stream ended


def test_steps_match_llama2c_semantics_of_the_cli(tqkv, model):
    want = run_cli("generate", "-m", MODEL, "-p", "Once upon a time", "--steps", 30)[:-1].decode("utf-8", "replace")
    assert model.generate("Once upon a time", steps=30, echo=True) == want


def test_generate_errors(tqkv, model):
    with pytest.raises(ValueError, match="max_tokens .* must be >= 0"):
        model.generate(PROMPT, max_tokens=-1)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(PROMPT, top_p=0)
    with pytest.raises(ValueError, match="temperature .* finite"):
        model.generate(PROMPT, temperature=float("nan"))
    with pytest.raises(ValueError, match="steps"):
        list(model.stream(PROMPT, steps=-1))
    with pytest.raises(ValueError, match="longer than the context"):
        model.generate("word " * 3000, max_tokens=1)
    with pytest.raises((FileNotFoundError, OSError)):
        tqkv.Model("/nonexistent/model.gguf")


def test_tokenize_round_trip(tqkv, model):
    ids = model.tokenize("Hello world", add_bos=False)
    assert all(isinstance(i, int) for i in ids)
    assert model.detokenize(ids) == " Hello world"  # SentencePiece: the text's leading space prefix
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.detokenize([model.config["vocab_size"]])


def compare_ppl(got, cli):
    assert set(got) == set(cli)
    for k in cli:
        if k != "seconds":
            assert got[k] == cli[k], k


@pytest.mark.parametrize("cache_kwargs,flags", CACHES[:2])
def test_perplexity_equals_the_cli_json(tqkv, model, cache_kwargs, flags):
    text = tqkv.read_text_file(str(HELDOUT))
    cli = run_cli_json("perplexity", "-m", MODEL, "-f", HELDOUT, "-c", 128, "--chunks", 3, "-t", 2, *flags)
    got = model.perplexity(text, ctx=128, chunks=3, threads=2, kv_cache=tqkv.KVCacheConfig(**cache_kwargs))
    compare_ppl(got, cli)
    assert got["kld_mean"] is None and got["chunks"] == 3 and got["ctx"] == 128


def test_kld_against_a_base_equals_the_cli(tqkv, model, tmp_path):
    text = tqkv.read_text_file(str(HELDOUT))
    base = tmp_path / "f16.kld"
    f16 = model.perplexity(text, ctx=128, chunks=2, threads=2, write_kld_base=str(base))
    assert base.stat().st_size > 0
    cfg = tqkv.KVCacheConfig(method="turboquant_rvq", bits=1, num_residuals=2, value_bits=2)
    got = model.perplexity(text, ctx=128, chunks=2, threads=2, kv_cache=cfg, kld_base=str(base))
    cli = run_cli_json("perplexity", "-m", MODEL, "-f", HELDOUT, "-c", 128, "--chunks", 2, "-t", 2,
                       "--method", "turboquant_rvq", "--kl-divergence", base)
    compare_ppl(got, cli)
    assert got["kld_mean"] > 0 and 0 < got["top1_agreement"] <= 1
    # The base run against itself: no divergence.
    same = model.perplexity(text, ctx=128, chunks=2, threads=2, kld_base=str(base))
    assert same["kld_max"] == pytest.approx(0, abs=1e-9) and same["ppl"] == f16["ppl"]
    with pytest.raises(ValueError, match="ctx must be >= 2"):
        model.perplexity(text, ctx=1)
