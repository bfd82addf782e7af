"""tqkv.KVCacheConfig / KVCacheBuilder / Cache: the seed's fields and llama.cpp's cache types
resolve to the formats the CLI's flags give, bad combinations are ValueErrors, and the cache's
byte counts are what the CLI reports for the same run."""
import pytest

from conftest import MODEL, MODEL_D64, run_cli_json


def test_defaults_are_f16(tqkv):
    c = tqkv.KVCacheConfig()
    assert (c.key_format, c.value_format) == ("f16", "f16")
    assert c.method is None
    assert c.describe() == "k=f16 v=f16"


def test_seed_config(tqkv):
    c = tqkv.KVCacheConfig(method="turboquant_rvq", bits=1, value_bits=2, num_residuals=2, use_hadamard=True)
    assert (c.key_format, c.value_format) == ("rvq1x2", "tq2")
    assert (c.bits, c.value_bits, c.num_residuals, c.use_hadamard) == (1, 2, 2, True)
    assert tqkv.KVCacheConfig(method="turboquant_mse", bits=3, value_bits=4).key_format == "tq3"
    assert tqkv.KVCacheConfig(method="kivi", bits=2, value_bits=4).value_format == "kivi4"
    assert tqkv.KVCacheConfig(method="q8_0").describe() == "k=q8_0 v=q8_0"
    assert "no-hadamard" in tqkv.KVCacheConfig(method="turboquant_rvq", use_hadamard=False).describe()


def test_llama_cpp_cache_types_override_the_method(tqkv):
    c = tqkv.KVCacheConfig(cache_type_k="rvq2x2", cache_type_v="q8_0")
    assert (c.key_format, c.value_format) == ("rvq2x2", "q8_0")
    c = tqkv.KVCacheConfig(method="turboquant_rvq", cache_type_v="tq4", kv_window=16, boundary_layers=1)
    assert c.describe() == "k=rvq1x2 v=tq4 window=16 boundary=1xq8_0"


@pytest.mark.parametrize("kwargs,message", [
    (dict(method="turboquant_rvq", value_bits=3), "value bits must be 2 or 4"),
    (dict(method="turboquant_rvq", bits=5), "rvq bits and passes must be in 1..4"),
    (dict(method="turboquant_rvq", num_residuals=0), "rvq bits and passes must be in 1..4"),
    (dict(method="kivi", bits=3), "kivi bits must be 2 or 4"),
    (dict(method="turbo"), "unknown cache method 'turbo'"),
    (dict(cache_type_k="rvq9x9"), r"cache_type_k \(--cache-type-k\)"),
    (dict(cache_type_v="q5_0"), r"cache_type_v.*unknown format 'q5_0'"),
    (dict(kv_window=-1), "kv_window .* must be >= 0"),
    (dict(kv_sinks=-2), "kv_sinks .* must be >= 0"),
    (dict(boundary_layers=-1), "boundary_layers .* must be >= 0"),
    (dict(boundary_type="nope"), "boundary_type"),
    (dict(residual_codebook="best"), "residual_codebook"),
    (dict(cache_type_k="pk2", pk_calib=0), r"pk_calib \(--pk-calib\) must be >= 1, got 0"),
    (dict(cache_type_k="pk2", pk_calib=-1), r"pk_calib \(--pk-calib\) must be >= 1, got -1"),
    (dict(cache_type_k="pk2", pk_basis="pca"), r"invalid pk_basis \(--pk-basis\) 'pca'"),
    (dict(cache_type_k="pk2", pk_basis=""), r"invalid pk_basis \(--pk-basis\) ''"),
])
def test_bad_combinations_are_value_errors(tqkv, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tqkv.KVCacheConfig(**kwargs)


def test_pk_calib_and_basis(tqkv, model):
    """pk_calib / pk_basis mean what --pk-calib / --pk-basis mean: the same description and bytes as
    the CLI (test_model.py's pk case checks that the generated text is the CLI's, basis on)."""
    c = tqkv.KVCacheConfig(cache_type_k="pk2", cache_type_v="tq2", pk_calib=16, pk_basis="weights")
    assert (c.pk_calib, c.pk_basis) == (16, "weights")
    assert c.describe() == "k=pk2 v=tq2 pk-calib=16 pk-basis=weights"
    plain = tqkv.KVCacheConfig(cache_type_k="pk2", cache_type_v="tq2")
    assert (plain.pk_calib, plain.pk_basis) == (128, "none")
    assert plain.describe() == "k=pk2 v=tq2 pk-calib=128"
    assert tqkv.KVCacheConfig(cache_type_k="pk2", pk_basis="none").pk_basis == "none"
    b16 = tqkv.KVCacheConfig(cache_type_k="pk3", cache_type_v="tq3", pk_basis="weights:16")
    assert b16.pk_basis == "weights:16"
    assert b16.describe() == "k=pk3 v=tq3 pk-calib=128 pk-basis=weights:16"
    prompt = "It is a truth universally acknowledged"
    cache = tqkv.KVCacheBuilder.build(model, c)
    model.generate(prompt, max_tokens=24, kv_cache=cache)
    cli = run_cli_json("generate", "-m", MODEL, "-p", prompt, "-n", 24, "-ctk", "pk2", "-ctv", "tq2",
                       "--pk-calib", 16, "--pk-basis", "weights")
    assert cache.config.describe() == cli["cache"]
    assert cache.bytes_resident == cli["kv_bytes"]


def test_unknown_field_is_a_type_error(tqkv):
    with pytest.raises(TypeError):
        tqkv.KVCacheConfig(method="turboquant_rvq", bitz=1)


def test_builder_and_byte_counts_match_the_cli(tqkv, model):
    config = tqkv.KVCacheConfig(method="turboquant_rvq", bits=1, value_bits=2, num_residuals=2)
    cache = tqkv.KVCacheBuilder.build(model, config)
    assert cache.n_tokens == 0 and cache.f16_bytes == 0
    assert cache.max_tokens == model.config["context_length"]
    text = model.generate("It is a truth universally acknowledged", max_tokens=24, kv_cache=cache)
    assert text
    cli = run_cli_json("generate", "-m", MODEL, "-p", "It is a truth universally acknowledged", "-n", 24,
                       "--method", "turboquant_rvq", "--key-bits", 1, "--residuals", 2, "--value-bits", 2)
    assert cache.bytes_resident == cli["kv_bytes"]
    assert cache.f16_bytes == cli["kv_f16_bytes"]
    assert cache.config.describe() == cli["cache"]
    # f16 baseline from the model's shape: 2 (K and V) x 2 bytes per element.
    cfg = model.config
    assert cache.f16_bytes == cache.n_tokens * cfg["n_layers"] * cfg["n_kv_heads"] * cfg["head_dim"] * 2 * 2
    assert cache.n_tokens == cli["prompt_tokens"] + cli["generated_tokens"] - 1  # the last token is never run
    assert cache.bytes_resident < cache.f16_bytes / 3
    cache.clear()
    assert cache.n_tokens == 0
    assert tqkv.KVCacheBuilder.for_model(model, config, max_tokens=64).max_tokens == 64


def test_cache_of_another_model_is_refused(tqkv, model):
    other = tqkv.Model(str(MODEL_D64))
    cache = tqkv.KVCacheBuilder.build(other, tqkv.KVCacheConfig())
    with pytest.raises(ValueError, match="another model"):
        model.generate("hi", max_tokens=2, kv_cache=cache)
    with pytest.raises(TypeError, match="kv_cache must be"):
        model.generate("hi", max_tokens=2, kv_cache="rvq1x2")
    with pytest.raises(ValueError, match="max_tokens must be >= 0"):
        tqkv.KVCacheBuilder.build(model, None, max_tokens=-1)
