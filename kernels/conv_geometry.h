// kernels/conv_geometry.h - the im2col plan shared by the CPU and CUDA
// conv2d kernels: output size, unfolded row width, how many whole images
// fit one unfolding buffer of `budget_floats`, and whether the conv is a
// plain 1x1 (the input is its own unfolding).
#pragma once
#include <algorithm>
#include <cstdint>

namespace nala {

struct ConvGeom {
  int64_t Ho, Wo, K, per_image, chunk;
  bool direct;  // 1x1, stride 1, no padding: cols is x itself
};

inline ConvGeom conv_geometry(int64_t H, int64_t W, int64_t Ci, int64_t k, int64_t stride, int64_t pad,
                              int64_t budget_floats) {
  ConvGeom g;
  g.Ho = (H + 2 * pad - k) / stride + 1;
  g.Wo = (W + 2 * pad - k) / stride + 1;
  g.K = Ci * k * k;
  g.per_image = g.Ho * g.Wo;
  g.chunk = std::max<int64_t>(1, budget_floats / std::max<int64_t>(1, g.per_image * g.K));
  g.direct = (k == 1 && stride == 1 && pad == 0);
  return g;
}

}  // namespace nala
