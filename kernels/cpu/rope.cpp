// kernels/cpu/rope.cpp - 2-D RoPE tables and kernels (see rope.h).
#include "kernels/cpu/rope.h"

#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

namespace nala {
namespace cpu {

// Angle t of the m = D/4 distinct ones (docs/SPEC.md §4), in double.
static double rope_angle(int64_t t, int64_t D) {
  int64_t m = D / 4;
  if (m == 1) return 1.0;
  return std::pow(10000.0, -(double)t / (double)(m - 1));
}

void rope_build_tables(int64_t H, int64_t W, int64_t D, float* sin, float* cos) {
  const int64_t half = D / 2;
  for (int64_t r = 0; r < H; r++)
    for (int64_t c = 0; c < W; c++) {
      int64_t n = r * W + c;
      for (int64_t e = 0; e < half; e++) {
        double a = rope_angle(e / 2, D);  // each angle repeated twice
        sin[n * D + e] = (float)std::sin(r * a);
        cos[n * D + e] = (float)std::cos(r * a);
        sin[n * D + half + e] = (float)std::sin(c * a);
        cos[n * D + half + e] = (float)std::cos(c * a);
      }
    }
}

const RopeTables& rope_tables(int64_t H, int64_t W, int64_t D) {
  static std::mutex mu;
  static std::map<std::tuple<int64_t, int64_t, int64_t>, std::unique_ptr<RopeTables>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[std::make_tuple(H, W, D)];
  if (!slot) {
    auto t = std::make_unique<RopeTables>();
    t->H = H, t->W = W, t->D = D;
    t->sin.resize(H * W * D);
    t->cos.resize(H * W * D);
    rope_build_tables(H, W, D, t->sin.data(), t->cos.data());
    slot = std::move(t);
  }
  return *slot;
}

static void rope_apply(const float* x, float* y, int64_t R, int64_t H, int64_t W, int64_t D, float sign) {
  const RopeTables& T = rope_tables(H, W, D);
  const int64_t N = H * W;
#pragma omp parallel for schedule(static) if (R * N * D > 32768)
  for (int64_t rn = 0; rn < R * N; rn++) {
    const int64_t n = rn % N;
    const float* sn = T.sin.data() + n * D;
    const float* cs = T.cos.data() + n * D;
    const float* xr = x + rn * D;
    float* yr = y + rn * D;
    for (int64_t e = 0; e < D; e += 2) {  // x and y may alias: read the pair first
      float x0 = xr[e], x1 = xr[e + 1];
      yr[e] = x0 * cs[e] - sign * x1 * sn[e];
      yr[e + 1] = x1 * cs[e + 1] + sign * x0 * sn[e + 1];
    }
  }
}

void rope2d_forward(const float* x, float* y, int64_t R, int64_t H, int64_t W, int64_t D) {
  rope_apply(x, y, R, H, W, D, 1.0f);
}
void rope2d_backward(const float* gy, float* gx, int64_t R, int64_t H, int64_t W, int64_t D) {
  rope_apply(gy, gx, R, H, W, D, -1.0f);
}

static void rope_naive(const float* x, float* y, int64_t R, int64_t H, int64_t W, int64_t D, double sign) {
  const int64_t N = H * W, half = D / 2;
  for (int64_t m = 0; m < R; m++)
    for (int64_t n = 0; n < N; n++) {
      const float* xr = x + (m * N + n) * D;
      float* yr = y + (m * N + n) * D;
      for (int64_t e = 0; e < D; e += 2) {
        double pos = e < half ? (double)(n / W) : (double)(n % W);  // row angles, then column angles
        double th = pos * rope_angle((e % half) / 2, D);
        double x0 = xr[e], x1 = xr[e + 1];
        yr[e] = (float)(x0 * std::cos(th) - sign * x1 * std::sin(th));
        yr[e + 1] = (float)(x1 * std::cos(th) + sign * x0 * std::sin(th));
      }
    }
}

void rope2d_forward_naive(const float* x, float* y, int64_t R, int64_t H, int64_t W, int64_t D) {
  rope_naive(x, y, R, H, W, D, 1.0);
}
void rope2d_backward_naive(const float* gy, float* gx, int64_t R, int64_t H, int64_t W, int64_t D) {
  rope_naive(gy, gx, R, H, W, D, -1.0);
}

}  // namespace cpu
}  // namespace nala
