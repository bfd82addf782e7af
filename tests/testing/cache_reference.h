// What a LayerKVCache must hold, computed from the ORIGINAL K/V with the public quantizer API
// only (never the cache's own read()): the independent truth for the cache and attention tests.
//
// docs/format.md, "KV cache pages": per sequence and kv head, position t is
//   t < S                        a sink:       f16(x_t)
//   S <= t < S + n_comp          compressed:   decode(encode(x_t))          when W == 0
//                                              decode(encode(f16(x_t)))     when W > 0 (a token
//                                              is compressed from its f16 window copy)
//   S + n_comp <= t < n          the window:   f16(x_t)
// with n_comp = max(0, n - S - W). Layers with a tqo{h}x{l} stream (per-sequence channel set):
// nothing is compressed before N = pk_calib_tokens tokens exist; then tokens S..N-1, which waited
// as f16 pending rows, are compressed from their f16 copies. The quantizer of (layer, head, key|value) is make_quantizer()
// with the seed cache_rotation_seed(base, layer, head, stream) (tqkv/cache_seed.h).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "tqkv/cache_seed.h"
#include "tqkv/kv_cache.h"
#include "tqkv/outlier_split.h"
#include "tqkv/quantizer.h"

namespace tqkv::testing {

inline std::unique_ptr<Quantizer> cache_quantizer(const KVCacheOptions& o, int head_dim, int layer, int head,
                                                  CacheStream stream) {
  QuantOptions q = o.quant;
  q.seed = cache_rotation_seed(o.quant.seed, layer, head, stream);
  q.value_stream = stream == CacheStream::kValue;
  auto r = make_quantizer(stream == CacheStream::kKey ? o.key_format : o.value_format, head_dim, q);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? std::move(r).value() : nullptr;
}

// f16 round trip through the public f16 quantizer.
inline void f16_round_trip(const float* x, int n, int d, float* y) {
  auto q = std::move(make_quantizer(FormatSpec{FormatKind::kF16, 16, 1}, d)).value();
  std::vector<uint8_t> c(static_cast<size_t>(n) * q->code_size());
  q->encode(x, n, c.data());
  q->decode(c.data(), n, y);
}

// tqo{h}x{l} (tqkv/outlier_split.h): the sequence's quantizer. Its channel set comes from the f16
// copies of the sequence's first N = pk_calib_tokens tokens (rows 0..N-1 of y, the f16 round trip).
inline std::unique_ptr<Quantizer> outlier_cache_quantizer(const KVCacheOptions& o, int d, int layer, int head,
                                                          CacheStream stream, const float* y16) {
  const FormatSpec f = stream == CacheStream::kKey ? o.key_format : o.value_format;
  auto mask = select_outlier_channels(y16, o.pk_calib_tokens, d, 0);
  EXPECT_TRUE(mask.ok()) << mask.status().to_string();
  QuantOptions q = o.quant;
  q.seed = cache_rotation_seed(o.quant.seed, layer, head, stream);
  q.value_stream = stream == CacheStream::kValue;
  auto r = make_outlier_split_quantizer(f, d, q, *mask);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? std::move(r).value() : nullptr;
}

// x: (n, d) contiguous original vectors of one kv head and one stream. Returns (n, d): what the
// cache must give back for them.
inline std::vector<float> expected_contents(const KVCacheOptions& o, int d, int layer, int head, CacheStream stream,
                                            const float* x, int n) {
  const int S = o.sink_tokens, W = o.recent_window;
  const int n_comp = std::max(0, n - S - W);
  std::vector<float> y(static_cast<size_t>(n) * d);
  f16_round_trip(x, n, d, y.data());  // sinks and window
  const FormatSpec f = stream == CacheStream::kKey ? o.key_format : o.value_format;
  const bool tqo = f.kind == FormatKind::kTqo || (stream == CacheStream::kKey ? o.value_format : o.key_format).kind == FormatKind::kTqo;
  if (tqo && n < o.pk_calib_tokens) return y;  // no channel set yet: every token waits in f16
  if (tqo && n_comp > 0) {
    // Tokens S..N-1 were pending f16 rows and were compressed from those copies (tokens >= N as
    // usual: the original when W == 0). A non-tqo stream of the same layer waits with it.
    auto q = f.kind == FormatKind::kTqo ? outlier_cache_quantizer(o, d, layer, head, stream, y.data())
                                        : cache_quantizer(o, d, layer, head, stream);
    std::vector<float> src(x + static_cast<size_t>(S) * d, x + static_cast<size_t>(S + n_comp) * d);
    const int from16 = W > 0 ? n_comp : std::min(n_comp, std::max(0, o.pk_calib_tokens - S));
    std::copy(y.begin() + static_cast<size_t>(S) * d, y.begin() + static_cast<size_t>(S + from16) * d, src.begin());
    std::vector<uint8_t> c(static_cast<size_t>(n_comp) * q->code_size());
    q->encode(src.data(), n_comp, c.data());
    q->decode(c.data(), n_comp, y.data() + static_cast<size_t>(S) * d);
    return y;
  }
  if (n_comp > 0) {
    auto q = cache_quantizer(o, d, layer, head, stream);
    // W > 0: the compressed token came from its f16 copy (already in y); W == 0: the original.
    std::vector<float> src(x + static_cast<size_t>(S) * d, x + static_cast<size_t>(S + n_comp) * d);
    if (W > 0) src.assign(y.begin() + static_cast<size_t>(S) * d, y.begin() + static_cast<size_t>(S + n_comp) * d);
    std::vector<uint8_t> c(static_cast<size_t>(n_comp) * q->code_size());
    q->encode(src.data(), n_comp, c.data());
    q->decode(c.data(), n_comp, y.data() + static_cast<size_t>(S) * d);
  }
  return y;
}

}  // namespace tqkv::testing
