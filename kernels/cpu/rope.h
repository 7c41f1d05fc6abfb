// kernels/cpu/rope.h - 2-D rotary position embedding (docs/SPEC.md §4).
// Same names and signatures as kernels/cuda/rope.h for the rope2d_* kernels.
//
// Shape letters: R independent (N, D) matrices (R = B * heads), N = H * W
// tokens in row-major order (token n = r * W + c), D head dim, D % 4 == 0.
//
// With m = D / 4, a_t = 10000^(-t / (m - 1)) (a_0 = 1 when m = 1), each angle
// repeated twice -> A (D/2 angles). Token (r, c) has
//   sin = [sin(r A), sin(c A)], cos = [cos(r A), cos(c A)]     (D values each)
//   rope(x) = x * cos + rot(x) * sin,  rot(x0, x1, x2, x3, ..) = (-x1, x0, -x3, x2, ..)
// i.e. each pair (x[2t], x[2t+1]) is rotated by one angle. The backward is
// the transposed rotation: rope with -sin.
//
// Backward saves nothing (the tables are derived from H, W, D). All kernels
// here overwrite (=) their outputs.
#pragma once
#include <cstdint>
#include <vector>

namespace nala {
namespace cpu {

// The (N, D) sin and cos tables of one (H, W, D), built once and cached for the
// life of the process (thread-safe). CPU helper: the attention kernels use it.
struct RopeTables {
  int64_t H = 0, W = 0, D = 0;
  std::vector<float> sin, cos;  // (N, D) each
};
const RopeTables& rope_tables(int64_t H, int64_t W, int64_t D);
// Fill caller-provided (N, D) tables (what rope_tables caches).
void rope_build_tables(int64_t H, int64_t W, int64_t D, float* sin, float* cos);

// y = rope(x) for R matrices (N, D); x and y may alias.
void rope2d_forward(const float* x, float* y, int64_t R, int64_t H, int64_t W, int64_t D);
// gx = rope^T(gy); gy and gx may alias.
void rope2d_backward(const float* gy, float* gx, int64_t R, int64_t H, int64_t W, int64_t D);

// Readable references: angles computed on the spot in double, no tables.
void rope2d_forward_naive(const float* x, float* y, int64_t R, int64_t H, int64_t W, int64_t D);
void rope2d_backward_naive(const float* gy, float* gx, int64_t R, int64_t H, int64_t W, int64_t D);

// One token's rotation with its table rows sn, cs (D values): y = x cos + sign * rot(x) sin.
// sign = +1 is rope, -1 its transpose. x and y must not alias.
inline void rope_row(const float* x, const float* sn, const float* cs, float* y, int64_t D, float sign) {
  for (int64_t e = 0; e < D; e += 2) {
    float x0 = x[e], x1 = x[e + 1];
    y[e] = x0 * cs[e] - sign * x1 * sn[e];
    y[e + 1] = x1 * cs[e + 1] + sign * x0 * sn[e + 1];
  }
}

}  // namespace cpu
}  // namespace nala
