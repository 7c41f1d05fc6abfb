// kernels/lab/reduce_sum.cpp - the reduction lab, CPU: the sum of a large
// float array, from one chain of adds to memory bandwidth. Walkthrough:
// docs/kernels.md.
//
//   s = sum_i x[i]        x: n floats, uniform in [0, 1)
//
//   build/release-nocuda/lab/reduce_sum [VERSION] [--size n] [--check] [--csv]
//     default n = 1,000,003; docs/kernels.md times n = 65,536 (256 KiB, in L2)
//     and n = 16,777,216 (64 MiB, from memory)
//
// Versions:
//   1  naive                   one accumulator: one add per FP-add latency
//   2  unrolled, 8 accumulators eight independent chains (instruction-level parallelism)
//   3  SIMD                    64 partial sums in 4 AVX-512 (8 AVX2) registers
//   4  threads                 version 3 per thread on fixed chunks, summed in order
//   5  cpu::reduce_sum         the production kernel (kernels/cpu/reduce.cpp):
//                              fixed chunks over the threads, double accumulators
// The reference is the sum in double. The "max err" column is each version's
// rounding error: the order of the additions decides it (docs/kernels.md).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/reduce.h"
#include "kernels/lab/lab.h"

using namespace nala;

namespace {

// ---- 1. naive: each add waits for the previous one (3-4 cycles of FP-add
// latency), so the loop runs at a quarter of an add per cycle or less. The
// compiler may not reorder float additions (they are not associative), so it
// can neither unroll the chain nor vectorise it.
float v1_naive(const float* x, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; i++) s += x[i];
  return s;
}

// ---- 2. unrolled, 8 accumulators: eight independent chains keep the adder
// busy while each chain waits for its own previous add. We reorder the sum
// by hand, which the compiler was not allowed to do. (Compiled without
// auto-vectorisation, so this step shows the instruction-level parallelism
// alone; otherwise the compiler packs the 8 chains into one vector.)
__attribute__((optimize("no-tree-vectorize"))) float v2_unrolled(const float* x, int64_t n) {
  float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; l++) a[l] += x[i + l];
  for (; i < n; i++) a[0] += x[i];
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// ---- 3. SIMD: 64 partial sums, lane l summing x[l], x[l + 64], ... The
// compiler keeps them in 4 AVX-512 registers (8 AVX2): 4 independent vector
// chains of 16 adds each. One vector add per cycle is already faster than
// memory can feed, so out of cache this step meets the bandwidth roof.
float lanes_sum(const float* x, int64_t n) {
  float acc[64] = {};
  int64_t i = 0;
  for (; i + 64 <= n; i += 64)
#pragma omp simd
    for (int l = 0; l < 64; l++) acc[l] += x[i + l];
  for (; i < n; i++) acc[i % 64] += x[i];
  for (int w = 32; w > 0; w /= 2)  // pairwise combination of the lanes
    for (int l = 0; l < w; l++) acc[l] += acc[l + w];
  return acc[0];
}
float v3_simd(const float* x, int64_t n) { return lanes_sum(x, n); }

// ---- 4. threads: one core cannot use the whole memory bandwidth of the
// chip (a core has only so many outstanding cache misses). Fixed chunks of
// 64 Ki floats go to the threads, and the partial sums are added in chunk
// order: the result does not depend on the thread count.
float v4_threads(const float* x, int64_t n) {
  constexpr int64_t kChunk = 1 << 16;
  const int64_t nc = (n + kChunk - 1) / kChunk;
  std::vector<float> part(nc);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < nc; c++) part[c] = lanes_sum(x + c * kChunk, std::min(kChunk, n - c * kChunk));
  return lanes_sum(part.data(), nc);
}

// ---- 5. production: cpu::reduce_sum on the (O, R, I) = (1, n, 1) view.
// The same chunk-and-combine plan over the threads; each chunk sums in double
// (converted lanes; in memory this costs nothing, the loop is bandwidth-
// bound), which makes it the most accurate version.
float v5_production(const float* x, int64_t n) {
  float y = 0.0f;
  cpu::reduce_sum(&y, x, 1, n, 1, 1.0f);
  return y;
}

}  // namespace

int main(int argc, char** argv) {
  const char* usage =
      "usage: reduce_sum [VERSION] [--size n] [--check] [--csv] [--threaded] [--min-time S]\n"
      "  the sum of n floats (default 1000003; docs/kernels.md times 65536 and 16777216)\n";
  lab::Options opt = lab::parse(argc, argv, usage);
  const int64_t n = opt.size ? opt.size : 1000003;
  std::vector<float> x(n);
  lab::fill_uniform(x, 1, 0.0f, 1.0f);
  double ref_d = 0;
  for (float e : x) ref_d += e;
  const float ref = (float)ref_d;
  float out = 0.0f;

  lab::Task t;
  t.name = "forward";
  t.flops = (double)n;
  t.bytes = 4.0 * n;
  t.clear = [&] { out = NAN; };
  // A float sum of n values in [0, 1) keeps ~ 1e-7 sqrt(n)-ish relative
  // rounding when summed in a good order; the naive order is far worse. The
  // check asks for 1e-3 relative: a lost chunk or a doubled element fails.
  t.check = [&] { return lab::compare("sum", &out, &ref, 1, 1e-6, 1e-3); };

  const float* px = x.data();
  using lab::Isa;
  std::vector<lab::Version> v = {
      {"naive", 0, false, Isa::any, [&] { out = v1_naive(px, n); }},
      {"unrolled, 8 accumulators", 0, false, Isa::any, [&] { out = v2_unrolled(px, n); }},
      {"SIMD, 64 lanes", 0, false, Isa::any, [&] { out = v3_simd(px, n); }},
      {"threads, fixed chunks", 0, true, Isa::any, [&] { out = v4_threads(px, n); }},
      {"cpu::reduce_sum (production)", 0, true, Isa::any, [&] { out = v5_production(px, n); }},
  };
  char desc[128];
  std::snprintf(desc, sizeof desc, "sum of %lld floats (%.1f MiB), reference %.3f (double)", (long long)n,
                4.0 * n / (1 << 20), ref_d);
  return lab::run("reduce_sum", desc, {t}, v, opt);
}
