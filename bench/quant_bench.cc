// Encode/decode throughput of every quantizer format at head_dim 128, at each SIMD level, next
// to memcpy of the same fp32 buffer measured in the same run (the bandwidth reference).
//
// Working set: n = 16384 vectors * 128 floats = 8 MiB of fp32 (more than the L2 of the machines
// we measure on). bytes_per_second counts the fp32 side only: the input of encode, the output
// of decode, the bytes copied by memcpy (memcpy itself reads and writes them: 2x traffic).
// The SIMD level is the benchmark argument: 0 = scalar, 1 = avx2, 2 = avx512; a level the CPU
// lacks is reported as skipped.
#include <benchmark/benchmark.h>

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tqkv/quantizer.h"
#include "tqkv/simd.h"
#include "tqkv/synthetic.h"

namespace tqkv {
namespace {

constexpr int kDim = 128;
constexpr size_t kVectors = 16384;

const std::vector<float>& input() {
  static const std::vector<float> x = [] {
    std::vector<float> v(kVectors * kDim);
    generate_gaussian(v.data(), kVectors, kDim, 2024);
    return v;
  }();
  return x;
}

const Quantizer& quantizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Quantizer>> cache;
  auto it = cache.find(name);
  if (it == cache.end()) {
    auto q = make_quantizer(*parse_format(name), kDim);
    it = cache.emplace(name, std::move(q).value()).first;
  }
  return *it->second;
}

// Sets the benchmark's SIMD level for its lifetime; false (and the benchmark skipped) if the
// CPU lacks it.
class ScopedLevel {
 public:
  explicit ScopedLevel(benchmark::State& st) : saved_(active_simd_level()) {
    const auto want = static_cast<SimdLevel>(st.range(0));
    ok_ = static_cast<int>(want) <= static_cast<int>(detected_simd_level());
    if (!ok_) {
      st.SkipWithError((std::string("CPU lacks ") + simd_level_name(want)).c_str());
      return;
    }
    set_simd_level(want);
    st.SetLabel(simd_level_name(want));
  }
  ~ScopedLevel() { set_simd_level(saved_); }
  bool ok() const { return ok_; }

 private:
  SimdLevel saved_;
  bool ok_ = false;
};

void BM_Encode(benchmark::State& st, const char* format) {
  const Quantizer& q = quantizer(format);
  const std::vector<float>& x = input();
  std::vector<uint8_t> codes(kVectors * q.code_size());
  ScopedLevel level(st);
  if (!level.ok()) return;
  for (auto _ : st) {
    q.encode(x.data(), kVectors, codes.data());
    benchmark::DoNotOptimize(codes.data());
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * kVectors * kDim * sizeof(float));
}

void BM_Decode(benchmark::State& st, const char* format) {
  const Quantizer& q = quantizer(format);
  const std::vector<float>& x = input();
  std::vector<uint8_t> codes(kVectors * q.code_size());
  q.encode(x.data(), kVectors, codes.data());
  std::vector<float> y(kVectors * kDim);
  ScopedLevel level(st);
  if (!level.ok()) return;
  for (auto _ : st) {
    q.decode(codes.data(), kVectors, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * kVectors * kDim * sizeof(float));
}

void BM_Memcpy(benchmark::State& st) {
  const std::vector<float>& x = input();
  std::vector<float> y(x.size());
  for (auto _ : st) {
    std::memcpy(y.data(), x.data(), x.size() * sizeof(float));
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * x.size() * sizeof(float));
}

BENCHMARK(BM_Memcpy)->Unit(benchmark::kMicrosecond);

#define TQKV_QUANT_BENCH(fmt)                                                                \
  BENCHMARK_CAPTURE(BM_Encode, fmt, #fmt)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond); \
  BENCHMARK_CAPTURE(BM_Decode, fmt, #fmt)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond)

TQKV_QUANT_BENCH(f16);
TQKV_QUANT_BENCH(q8_0);
TQKV_QUANT_BENCH(q4_0);
TQKV_QUANT_BENCH(kivi2);
TQKV_QUANT_BENCH(kivi4);
TQKV_QUANT_BENCH(tq2);
TQKV_QUANT_BENCH(tq4);
TQKV_QUANT_BENCH(rvq1x2);
TQKV_QUANT_BENCH(rvq2x2);

}  // namespace
}  // namespace tqkv
