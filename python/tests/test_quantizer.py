"""tqkv.Quantizer / TurboQuantRVQ on numpy arrays: shapes, sizes, dtypes, layouts, and the quality
figures of `tqkv quant-eval` computed on the same data."""
import math
import threading
import time
import tracemalloc

import numpy as np
import pytest

from conftest import run_cli_json


def expected_code_size(fmt, d):
    """Bytes per vector from docs/format.md's table (written independently of format.cc)."""
    blocks = math.ceil(d / 32)
    if fmt == "f32":
        return 4 * d
    if fmt == "f16":
        return 2 * d
    if fmt == "q8_0":
        return 34 * blocks
    if fmt == "q4_0":
        return 18 * blocks
    if fmt.startswith("kivi"):
        return (4 + 4 * int(fmt[4:])) * blocks
    if fmt.startswith("tq"):
        return 4 + int(fmt[2:]) * math.ceil(d / 8)
    b, p = map(int, fmt[3:].split("x"))
    return 4 + p * b * math.ceil(d / 8)


FORMATS = ["f32", "f16", "q8_0", "q4_0", "kivi2", "kivi4", "tq1", "tq2", "tq3", "tq4", "rvq1x2", "rvq2x2", "rvq1x3"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("d", [128, 64, 97])
def test_honest_sizes(tqkv, fmt, d):
    q = tqkv.Quantizer(fmt, head_dim=d)
    cs = expected_code_size(fmt, d)
    assert q.code_size == cs == tqkv.code_size(fmt, d)
    assert q.bits_per_element == pytest.approx(8 * cs / d, rel=0, abs=1e-12)
    assert tqkv.bits_per_element(fmt, d) == q.bits_per_element
    x = np.random.default_rng(0).standard_normal((3, 5, d)).astype(np.float32)
    enc = q.encode(x)
    assert enc.codes.dtype == np.uint8
    assert enc.codes.shape == (3, 5, cs)
    assert enc.codes.flags["C_CONTIGUOUS"]
    assert enc.nbytes == enc.codes.nbytes == 15 * cs
    assert enc.shape == (3, 5, d)
    assert enc.format == fmt and enc.head_dim == d and enc.n_vectors == 15


@pytest.mark.parametrize("shape", [(128,), (7, 128), (2, 3, 5, 128), (1, 2, 1, 3, 128), (0, 128), (2, 0, 128)])
def test_round_trip_shapes(tqkv, shape):
    q = tqkv.TurboQuantRVQ(bits=1, num_residuals=2, use_hadamard=True)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    enc = q.encode(x)
    assert enc.shape == shape
    assert enc.codes.shape == shape[:-1] + (q.code_size,)
    y = q.decode(enc)
    assert y.shape == shape and y.dtype == np.float32
    if x.size:
        cos = tqkv.cosine(x, y)
        assert np.all(np.asarray(cos) > 0.8)


def test_lossless_formats_round_trip(tqkv):
    x = np.random.default_rng(2).standard_normal((4, 9, 64)).astype(np.float32)
    assert np.array_equal(tqkv.Quantizer("f32", head_dim=64).decode(tqkv.Quantizer("f32", head_dim=64).encode(x)), x)
    q16 = tqkv.Quantizer("f16", head_dim=64)
    assert np.array_equal(q16.decode(q16.encode(x)), x.astype(np.float16).astype(np.float32))
    # f16 codes are the IEEE binary16 values themselves (docs/format.md).
    assert q16.encode(x).codes.tobytes() == x.astype("<f2").tobytes()


def test_float16_input_is_converted(tqkv):
    q = tqkv.Quantizer("rvq1x2", head_dim=128)
    x16 = np.random.default_rng(3).standard_normal((6, 128)).astype(np.float16)
    assert np.array_equal(q.encode(x16).codes, q.encode(x16.astype(np.float32)).codes)


def test_dtype_and_shape_errors(tqkv):
    q = tqkv.Quantizer("rvq1x2", head_dim=128)
    with pytest.raises(TypeError, match="float32 or float16.*float64"):
        q.encode(np.zeros((2, 128)))
    with pytest.raises(TypeError, match="int32"):
        q.encode(np.zeros((2, 128), dtype=np.int32))
    with pytest.raises(ValueError, match="last axis has 64 elements.*head_dim is 128"):
        q.encode(np.zeros((2, 64), dtype=np.float32))
    with pytest.raises(ValueError, match="0-d"):
        q.encode(np.float32(1.0))
    with pytest.raises(ValueError, match="unknown format 'rvq'"):
        tqkv.Quantizer("rvq", head_dim=128)
    with pytest.raises(ValueError, match="rvq bits and passes must be in 1..4"):
        tqkv.Quantizer("rvq5x2")
    with pytest.raises(ValueError, match="head_dim must be >= 1"):
        tqkv.Quantizer("tq2", head_dim=0)
    with pytest.raises(ValueError, match="num_residuals"):
        tqkv.TurboQuantRVQ(bits=1, num_residuals=0)
    with pytest.raises(ValueError, match="value_bits must be 2 or 4"):
        tqkv.TurboQuantRVQ(value_bits=3)
    with pytest.raises(ValueError, match="residual codebook|residual_codebook|unknown"):
        tqkv.Quantizer("rvq1x2", residual_codebook="nope")
    enc = q.encode(np.ones((2, 128), dtype=np.float32))
    with pytest.raises(ValueError, match="different quantizer"):
        tqkv.Quantizer("rvq1x2", head_dim=128, seed=9).decode(enc)
    with pytest.raises(ValueError, match="different quantizer"):
        tqkv.Quantizer("tq2", head_dim=128).decode(enc)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 36\)"):
        q.decode(np.zeros((2, 35), dtype=np.uint8))
    with pytest.raises(TypeError, match="float32"):
        q.decode(enc, out=np.zeros((2, 128)))
    with pytest.raises(ValueError, match="out has shape"):
        q.decode(enc, out=np.zeros((3, 128), dtype=np.float32))
    with pytest.raises(ValueError, match="shapes differ"):
        tqkv.cosine(np.zeros((2, 4), np.float32), np.zeros((3, 4), np.float32))


def test_codes_array_decodes_like_encoded(tqkv):
    q = tqkv.Quantizer("tq3", head_dim=64)
    x = np.random.default_rng(4).standard_normal((5, 64)).astype(np.float32)
    enc = q.encode(x)
    saved = np.array(enc.codes)  # e.g. written to disk and read back
    assert np.array_equal(q.decode(saved), q.decode(enc))


def test_strided_inputs_read_in_place_give_the_same_codes(tqkv):
    q = tqkv.Quantizer("rvq1x2", head_dim=128)
    base = np.random.default_rng(5).standard_normal((2, 3, 10, 128)).astype(np.float32)
    views = {
        "every other token (one row stride)": base[:, :, ::2, :],
        "transposed heads/tokens (4-D strides)": base.transpose(0, 2, 1, 3),
        "3-D transposed (copied)": base[0].transpose(1, 0, 2),
        "reversed tokens (4-D, negative strides)": base[:, :, ::-1, :],
        "padded rows": np.pad(base, ((0, 0), (0, 0), (0, 0), (0, 16)))[..., :128],
        "broadcast heads (4-D, stride 0)": np.broadcast_to(base[:, :1], base.shape),
        "strided last axis (copied)": np.repeat(base, 2, axis=-1)[..., ::2],
    }
    for name, v in views.items():
        got = q.encode(v)
        want = q.encode(np.ascontiguousarray(v))
        assert got.shape == v.shape, name
        assert np.array_equal(got.codes, want.codes), name


def test_decode_into_strided_out(tqkv):
    q = tqkv.Quantizer("rvq1x2", head_dim=128)
    x = np.random.default_rng(9).standard_normal((2, 10, 3, 128)).astype(np.float32)
    enc = q.encode(x)
    dense = q.decode(enc)
    for out in [np.zeros((2, 3, 10, 128), np.float32).transpose(0, 2, 1, 3),  # 4-D strides
                np.zeros((2, 10, 3, 160), np.float32)[..., :128]]:            # one row stride
        r = q.decode(enc, out=out)
        assert r is out
        assert np.array_equal(out, dense)
    with pytest.raises(ValueError, match="constant stride"):
        q.decode(q.encode(x[0]), out=np.zeros((3, 10, 128), np.float32).transpose(1, 0, 2))


def test_decode_into_out_is_in_place(tqkv):
    q = tqkv.Quantizer("tq2", head_dim=128)
    x = np.random.default_rng(6).standard_normal((4, 128)).astype(np.float32)
    out = np.empty((4, 128), dtype=np.float32)
    r = q.decode(q.encode(x), out=out)
    assert r is out
    assert np.array_equal(out, q.decode(q.encode(x)))


def test_values_quantizer_of_the_seed_api(tqkv):
    q = tqkv.TurboQuantRVQ(bits=1, num_residuals=2, use_hadamard=True, value_bits=4)
    assert q.format == "rvq1x2" and q.value_format == "tq4"
    v = np.random.default_rng(7).standard_normal((1, 2, 8, 128)).astype(np.float32)
    ev = q.encode_values(v)
    assert ev.format == "tq4" and ev.nbytes == 16 * tqkv.code_size("tq4", 128)
    assert np.array_equal(q.decode_values(ev), tqkv.Quantizer("tq4", head_dim=128).decode(ev.codes))
    assert tqkv.TurboQuantMSE(bits=3).format == "tq3"


def cosines_numpy(x, y):
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    return np.sum(x * y, axis=-1) / (np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1))


def test_cosine_matches_numpy(tqkv):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 50, 64)).astype(np.float32)
    y = (x + 0.3 * rng.standard_normal(x.shape)).astype(np.float32)
    c = tqkv.cosine(x, y)
    assert c.shape == (3, 50) and c.dtype == np.float64
    np.testing.assert_allclose(c, cosines_numpy(x, y), rtol=1e-12, atol=0)
    assert isinstance(tqkv.cosine(x[0, 0], y[0, 0]), float)


@pytest.mark.parametrize("method,bits,residuals,fmt", [
    ("turboquant_rvq", 1, 2, "rvq1x2"),
    ("turboquant_rvq", 2, 2, "rvq2x2"),
    ("turboquant_mse", 2, 1, "tq2"),
    ("q8_0", 8, 1, "q8_0"),
    ("kivi", 2, 1, "kivi2"),
])
def test_quality_equals_quant_eval_on_gaussian_data(tqkv, method, bits, residuals, fmt):
    n, d, seed = 3000, 128, 11
    cli = run_cli_json("quant-eval", "--method", method, "--bits", bits, "--residuals", residuals,
                       "--head-dim", d, "--n", n, "--data", "gaussian", "--seed", seed)
    assert cli["format"] == fmt
    x = tqkv.gaussian(n, d, seed=seed)  # the data quant-eval generates for --seed
    q = tqkv.Quantizer(fmt, head_dim=d, seed=seed)  # quant-eval's rotation seed is --seed too
    y = q.decode(q.encode(x))
    got = tqkv.quality(x, y)
    for k in ["mse", "cosine_mean", "cosine_min", "snr_db", "ip_rel_err", "vectors"]:
        assert got[k] == cli[k], k  # the same computation on the same data: equal to the last bit
    assert q.bits_per_element == cli["bits_per_element"]
    # The seed's way of measuring (numpy, float64): the same mean cosine up to summation order.
    assert np.mean(cosines_numpy(x, y)) == pytest.approx(cli["cosine_mean"], rel=1e-12)
    assert np.mean(tqkv.cosine(x, y)) == pytest.approx(cli["cosine_mean"], rel=1e-12)


def test_quality_equals_quant_eval_on_numpy_data(tqkv, tmp_path):
    # Data made by numpy (independent of tqkv's generator), handed to the CLI as .npy.
    x = np.random.default_rng(12).standard_normal((2000, 96)).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x)
    cli = run_cli_json("quant-eval", "--method", "turboquant_rvq", "--bits", 1, "--residuals", 2,
                       "--data", path, "--seed", 5)
    q = tqkv.TurboQuantRVQ(bits=1, num_residuals=2, head_dim=96, seed=5)
    got = tqkv.quality(x, q.decode(q.encode(x)))
    assert got["cosine_mean"] == cli["cosine_mean"]
    assert got["mse"] == cli["mse"]
    assert cli["head_dim"] == 96


def test_gil_is_released_during_encode_and_decode(tqkv):
    # A thread runs encode/decode and records when its call starts and ends; the main thread keeps
    # taking timestamps. If the call held the GIL, the main thread could not run Python during it:
    # no timestamp inside the call (the middle half of it, to leave out the thread switches at its
    # edges). Released, the main thread runs whenever the OS schedules it.
    q = tqkv.Quantizer("rvq2x2", head_dim=128)
    x = tqkv.gaussian(200_000, 128, seed=1)
    enc = q.encode(x)
    for name, work in [("encode", lambda: q.encode(x)), ("decode", lambda: q.decode(enc))]:
        span = {}

        def timed():
            span["start"] = time.perf_counter()
            work()
            span["end"] = time.perf_counter()

        t = threading.Thread(target=timed)
        stamps = []
        t.start()
        while t.is_alive():
            stamps.append(time.perf_counter())
            time.sleep(0.0005)
        t.join()
        length = span["end"] - span["start"]
        lo, hi = span["start"] + 0.25 * length, span["end"] - 0.25 * length
        inside = sum(lo < s < hi for s in stamps)
        assert inside > 0, f"the main thread did not run during the middle of a {length:.3f} s {name}"


def test_contiguous_and_4d_inputs_are_not_copied(tqkv):
    # numpy reports its buffers to tracemalloc: the peak allocation of an encode that reads x in
    # place is the codes (1/14 of x for rvq1x2), while a copy of x would show up in full.
    q = tqkv.Quantizer("rvq1x2", head_dim=128)
    base = tqkv.gaussian(2 * 8 * 2048, 128, seed=2).reshape(2, 8, 2048, 128)

    def peak(fn):
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    codes = base.size // 128 * q.code_size
    for name, v in [("contiguous", base), ("every other token", base[:, :, ::2]),
                    ("heads/tokens transposed", base.transpose(0, 2, 1, 3))]:
        assert peak(lambda: q.encode(v)) < codes + v.nbytes / 4, name
    # A layout that must be copied is seen as one (the measurement can see a copy).
    copied = base[0].transpose(1, 0, 2)
    assert peak(lambda: q.encode(copied)) > copied.nbytes
    # decode into `out` allocates nothing of the output's size.
    enc = q.encode(base)
    out = np.empty(base.shape, np.float32)
    assert peak(lambda: q.decode(enc, out=out)) < base.nbytes / 8


@pytest.mark.parametrize("fmt", FORMATS)
def test_decode_of_arbitrary_bytes_is_safe(tqkv, fmt):
    # Codes are plain bytes a user can edit or load from anywhere: any bytes decode (non-finite
    # scales give non-finite vectors), nothing reads or writes outside the arrays.
    for d in (64, 97):
        q = tqkv.Quantizer(fmt, head_dim=d)
        codes = np.random.default_rng(13).integers(0, 256, (50, q.code_size), dtype=np.uint8)
        y = q.decode(codes)
        assert y.shape == (50, d) and y.dtype == np.float32
