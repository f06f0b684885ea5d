// Throughput of the reduction kernels, to show they keep up with memory for every dtype and
// to catch a kernel that silently stopped vectorising. GB/s counts bytes read plus written
// (3 x count x size for reduceInto); memcpy of the same buffer size is the yardstick.
//
//   reduce_bench --benchmark_min_time=0.05 --benchmark_filter=64MiB
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/half.h"
#include "core/reduce.h"

namespace {

constexpr size_t kSizes[] = {4 << 10, 256 << 10, 64 << 20};

std::string sizeName(size_t bytes) {
  return bytes >= (1 << 20) ? std::to_string(bytes >> 20) + "MiB"
                            : std::to_string(bytes >> 10) + "KiB";
}

// One set of buffers, big enough for the largest size, touched once up front so page faults
// stay out of the timings. 0x3c bytes are ordinary normal values in every float type, so no
// subnormal slow paths.
struct Buffers {
  std::vector<unsigned char> a, b, d;
  Buffers() : a(kSizes[2], 0x3c), b(kSizes[2], 0x3c), d(kSizes[2], 0x3c) {}
};
Buffers& buffers() {
  static Buffers bufs;
  return bufs;
}

void reduceBench(benchmark::State& state, bcclDataType_t dt, bcclRedOp_t op, size_t bytes,
                 const char* isa, bool inPlace) {
  if (!bccl::setReduceIsa(isa)) {
    state.SkipWithError("ISA not supported on this CPU");
    return;
  }
  Buffers& bufs = buffers();
  const size_t count = bytes / bccl::dtypeSize(dt);
  void* dst = inPlace ? bufs.a.data() : bufs.d.data();
  for (auto _ : state) {
    bccl::reduceInto(dst, bufs.a.data(), bufs.b.data(), count, dt, op);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * 3 * int64_t(bytes));
  bccl::setReduceIsa("auto");
}

void memcpyBench(benchmark::State& state, size_t bytes) {
  Buffers& bufs = buffers();
  for (auto _ : state) {
    std::memcpy(bufs.d.data(), bufs.a.data(), bytes);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * 2 * int64_t(bytes));
}

// The scalar conversions from half.h, as any caller compiled without special flags gets them
// (bytes counted: 2 read + 4 written per element, or the reverse).
template <bool kBf16>
void toFloatBench(benchmark::State& state, size_t bytes) {
  const size_t n = bytes / 4;
  std::vector<uint16_t> in(n, 0x3c3c);
  std::vector<float> out(n);
  for (auto _ : state) {
    for (size_t i = 0; i < n; ++i) {
      out[i] = kBf16 ? bccl::bf16ToFloat(in[i]) : bccl::halfToFloat(in[i]);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * 6 * int64_t(n));
}

template <bool kBf16>
void fromFloatBench(benchmark::State& state, size_t bytes) {
  const size_t n = bytes / 4;
  std::vector<float> in(n);
  for (size_t i = 0; i < n; ++i) in[i] = float(i % 1000) * 0.37f - 100.0f;
  std::vector<uint16_t> out(n);
  for (auto _ : state) {
    for (size_t i = 0; i < n; ++i) {
      out[i] = kBf16 ? bccl::floatToBf16(in[i]) : bccl::floatToHalf(in[i]);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * 6 * int64_t(n));
}

void registerAll() {
  const char* isas[] = {"auto", "portable"};
  for (size_t bytes : kSizes) {
    const std::string sz = sizeName(bytes);
    benchmark::RegisterBenchmark(("memcpy/" + sz).c_str(), memcpyBench, bytes);
    for (const char* isa : isas) {
      for (int t = 0; t < bcclNumTypes; ++t) {
        const auto dt = bcclDataType_t(t);
        for (bcclRedOp_t op : {bcclSum, bcclMax}) {
          const std::string name = std::string("reduce/") + bccl::dtypeName(dt) + "/" +
                                   bccl::redOpName(op) + "/" + sz + "/" + isa;
          benchmark::RegisterBenchmark(name.c_str(), reduceBench, dt, op, bytes, isa, false);
        }
        // In place (dst == a) is how the collectives call it; it must not lose vectorisation.
        const std::string name =
            std::string("reduce/") + bccl::dtypeName(dt) + "/sum/" + sz + "/" + isa + "/inplace";
        benchmark::RegisterBenchmark(name.c_str(), reduceBench, dt, bcclSum, bytes, isa, true);
      }
    }
    benchmark::RegisterBenchmark(("convert/half_to_float/" + sz).c_str(), toFloatBench<false>,
                                 bytes);
    benchmark::RegisterBenchmark(("convert/float_to_half/" + sz).c_str(), fromFloatBench<false>,
                                 bytes);
    benchmark::RegisterBenchmark(("convert/bf16_to_float/" + sz).c_str(), toFloatBench<true>,
                                 bytes);
    benchmark::RegisterBenchmark(("convert/float_to_bf16/" + sz).c_str(), fromFloatBench<true>,
                                 bytes);
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  registerAll();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
