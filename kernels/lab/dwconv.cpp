// kernels/lab/dwconv.cpp - the depthwise 7x7 convolution lab, CPU, on the
// channels-last activations the engine uses. Walkthrough: docs/kernels.md.
//
// Shape letters: B images of H x W pixels, C channels, k = 7 taps a side,
// p = k / 2. x and out are (B, H, W, C); w keeps PyTorch's (C, 1, k, k).
//
//   out[b, y, x, c] = bias[c] + sum_{ky, kx} w[c, ky, kx] x[b, y + ky - p, x + kx - p, c]
//   (zero padding: taps outside the image are skipped)
//
//   build/release-nocuda/lab/dwconv [VERSION] [--size S] [--check] [--csv]
//     default B = 2, 9 x 11 pixels, C = 40 (a channel tail past 32);
//     --size S: B = 4, S x S pixels, C = 64 (docs/kernels.md times S = 56)
//
// Versions:
//   1  naive                   the definition; weights and pixels read with strides
//   2  row reuse               weights tap-major, whole rows streamed, scalar
//   3  SIMD over channels      version 2's loops, the channel loop vectorised
//   4  production              cpu::dwconv2d_forward (kernels/cpu/conv.cpp): channel
//                              accumulators in registers across the 49 taps, threads
// The reference is cpu::dwconv2d_forward_naive (double accumulation).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/conv.h"
#include "kernels/lab/lab.h"

using namespace nala;

namespace {

constexpr int64_t K = 7;

struct Problem {
  int64_t B, H, W, C;
  std::vector<float> x, w, bias, out, ref;
  std::vector<float> wt;  // (K*K, C): w with the taps first, built by versions 2 and 3
};

// ---- 1. naive: one output value at a time, 49 taps each, in the loop order
// of the formula. The taps of a channel are C floats apart in x and its
// weights k*k apart in w's (C, k, k) layout: every load is a separate cache
// line touch, and a bounds test runs per tap.
void v1_naive(Problem& p) {
  const int64_t H = p.H, W = p.W, C = p.C, pd = K / 2;
  for (int64_t b = 0; b < p.B; b++)
    for (int64_t y = 0; y < H; y++)
      for (int64_t xx = 0; xx < W; xx++)
        for (int64_t c = 0; c < C; c++) {
          float acc = p.bias[c];
          for (int64_t ky = 0; ky < K; ky++)
            for (int64_t kx = 0; kx < K; kx++) {
              const int64_t iy = y + ky - pd, ix = xx + kx - pd;
              if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
              acc += p.w[(c * K + ky) * K + kx] * p.x[((b * H + iy) * W + ix) * C + c];
            }
          p.out[((b * H + y) * W + xx) * C + c] = acc;
        }
}

// w (C, k*k) -> wt (k*k, C): the C weights of one tap become contiguous.
void transpose_taps(Problem& p) {
  for (int64_t c = 0; c < p.C; c++)
    for (int64_t t = 0; t < K * K; t++) p.wt[t * p.C + c] = p.w[c * K * K + t];
}

// ---- 2. row reuse: turn the loops inside out. For one output row, each
// of its 7 input rows and each of the 7 horizontal shifts is one contiguous
// sweep: out_row[x, c] += wt[tap, c] * in_row[x + kx - p, c]. The bounds are
// now loop limits, the weights of a tap are C contiguous floats, and the
// output row (W C floats) stays in L1 across all 49 sweeps. Compiled without
// auto-vectorisation to show the effect of the loop order alone.
__attribute__((optimize("no-tree-vectorize"))) void v2_row_reuse(Problem& p) {
  const int64_t H = p.H, W = p.W, C = p.C, pd = K / 2;
  transpose_taps(p);
  for (int64_t b = 0; b < p.B; b++)
    for (int64_t y = 0; y < H; y++) {
      float* o = &p.out[(b * H + y) * W * C];
      for (int64_t xx = 0; xx < W; xx++)
        for (int64_t c = 0; c < C; c++) o[xx * C + c] = p.bias[c];
      for (int64_t ky = std::max<int64_t>(0, pd - y); ky < std::min<int64_t>(K, H + pd - y); ky++) {
        const float* in = &p.x[(b * H + y + ky - pd) * W * C];
        for (int64_t kx = 0; kx < K; kx++) {
          const float* wv = &p.wt[(ky * K + kx) * C];
          const int64_t x0 = std::max<int64_t>(0, pd - kx), x1 = std::min<int64_t>(W, W + pd - kx);
          for (int64_t xx = x0; xx < x1; xx++) {
            const float* src = in + (xx + kx - pd) * C;
            for (int64_t c = 0; c < C; c++) o[xx * C + c] += wv[c] * src[c];
          }
        }
      }
    }
}

// ---- 3. SIMD over channels: version 2, line for line, with the channel loop
// vectorised (`omp simd`): 16 channels per AVX-512 FMA. Channels-last is what
// makes this free: the C values of a pixel are contiguous, and every channel
// does the same arithmetic. Each tap still loads and stores the output row.
void v3_simd(Problem& p) {
  const int64_t H = p.H, W = p.W, C = p.C, pd = K / 2;
  transpose_taps(p);
  for (int64_t b = 0; b < p.B; b++)
    for (int64_t y = 0; y < H; y++) {
      float* o = &p.out[(b * H + y) * W * C];
      for (int64_t xx = 0; xx < W; xx++)
#pragma omp simd
        for (int64_t c = 0; c < C; c++) o[xx * C + c] = p.bias[c];
      for (int64_t ky = std::max<int64_t>(0, pd - y); ky < std::min<int64_t>(K, H + pd - y); ky++) {
        const float* in = &p.x[(b * H + y + ky - pd) * W * C];
        for (int64_t kx = 0; kx < K; kx++) {
          const float* wv = &p.wt[(ky * K + kx) * C];
          const int64_t x0 = std::max<int64_t>(0, pd - kx), x1 = std::min<int64_t>(W, W + pd - kx);
          for (int64_t xx = x0; xx < x1; xx++) {
            const float* src = in + (xx + kx - pd) * C;
#pragma omp simd
            for (int64_t c = 0; c < C; c++) o[xx * C + c] += wv[c] * src[c];
          }
        }
      }
    }
}

// ---- 4. production: cpu::dwconv2d_forward. Per output pixel, a block of 32
// channels is accumulated in registers over all 49 taps and stored once (no
// load and store of the output per tap), and the (b, y) output rows are
// spread over the threads.
void v4_production(Problem& p) {
  cpu::dwconv2d_forward(p.out.data(), p.x.data(), p.w.data(), p.bias.data(), p.B, p.H, p.W, p.C, K);
}

}  // namespace

int main(int argc, char** argv) {
  const char* usage =
      "usage: dwconv [VERSION] [--size S] [--check] [--csv] [--threaded] [--min-time S]\n"
      "  depthwise 7x7 conv, channels-last: default B = 2, 9 x 11, C = 40; --size S: B = 4, S x S, C = 64\n"
      "  (docs/kernels.md times S = 56)\n";
  lab::Options opt = lab::parse(argc, argv, usage);
  Problem p;
  p.B = opt.size ? 4 : 2, p.H = opt.size ? opt.size : 9, p.W = opt.size ? opt.size : 11, p.C = opt.size ? 64 : 40;
  const int64_t n = p.B * p.H * p.W * p.C;
  p.x.resize(n), p.out.resize(n), p.ref.resize(n), p.w.resize(p.C * K * K), p.wt.resize(p.C * K * K);
  p.bias.resize(p.C);
  lab::fill_normal(p.x, 1, 1.0f);
  lab::fill_normal(p.w, 2, 0.2f);
  lab::fill_uniform(p.bias, 3, -0.5f, 0.5f);
  cpu::dwconv2d_forward_naive(p.ref.data(), p.x.data(), p.w.data(), p.bias.data(), p.B, p.H, p.W, p.C, K);

  lab::Task t;
  t.name = "forward";
  t.flops = 2.0 * K * K * n;  // (the padded border does a little less)
  t.bytes = 8.0 * n + 4.0 * p.C * (K * K + 1);
  t.clear = [&] { std::fill(p.out.begin(), p.out.end(), NAN); };
  t.check = [&] { return lab::compare("out", p.out.data(), p.ref.data(), n, 1e-5, 1e-4); };

  using lab::Isa;
  std::vector<lab::Version> v = {
      {"naive", 0, false, Isa::any, [&] { v1_naive(p); }},
      {"row reuse, taps-major weights, scalar", 0, false, Isa::any, [&] { v2_row_reuse(p); }},
      {"SIMD over channels", 0, false, Isa::any, [&] { v3_simd(p); }},
      {"cpu::dwconv2d_forward (production)", 0, true, Isa::any, [&] { v4_production(p); }},
  };
  char desc[160];
  std::snprintf(desc, sizeof desc, "depthwise %lldx%lld conv, B = %lld, %lld x %lld pixels, C = %lld, channels-last",
                (long long)K, (long long)K, (long long)p.B, (long long)p.H, (long long)p.W, (long long)p.C);
  return lab::run("dwconv", desc, {t}, v, opt);
}
