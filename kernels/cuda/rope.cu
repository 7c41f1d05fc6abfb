// kernels/cuda/rope.cu - 2-D RoPE on the GPU (see kernels/cpu/rope.h).
//
// Shape letters: R matrices (N, D), N = H * W tokens, D % 4 == 0.
// The sin/cos tables are the CPU's (cpu::rope_build_tables), copied to the
// device once per (H, W, D), so both backends rotate by the same floats.
// One thread rotates four consecutive values (two pairs) with float4 loads:
// consecutive threads touch consecutive addresses. Backward saves nothing
// (it is the rotation by -angle). Every kernel here overwrites (=).
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "kernels/cpu/rope.h"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/rope.h"

namespace nala {
namespace cuda {

void rope_tables_device(int64_t H, int64_t W, int64_t D, const float** sin, const float** cos) {
  struct Pair {
    float* sin = nullptr;
    float* cos = nullptr;
  };
  static std::mutex mu;
  static std::map<std::tuple<int64_t, int64_t, int64_t>, Pair> cache;  // never freed: a few KB per shape
  std::lock_guard<std::mutex> lock(mu);
  Pair& p = cache[std::make_tuple(H, W, D)];
  if (!p.sin) {
    const size_t n = (size_t)(H * W * D);
    std::vector<float> hs(n), hc(n);
    cpu::rope_build_tables(H, W, D, hs.data(), hc.data());
    CUDA_CHECK(cudaMalloc(&p.sin, n * sizeof(float)), "rope2d tables");
    CUDA_CHECK(cudaMalloc(&p.cos, n * sizeof(float)), "rope2d tables");
    CUDA_CHECK(cudaMemcpy(p.sin, hs.data(), n * sizeof(float), cudaMemcpyHostToDevice), "rope2d tables");
    CUDA_CHECK(cudaMemcpy(p.cos, hc.data(), n * sizeof(float), cudaMemcpyHostToDevice), "rope2d tables");
  }
  *sin = p.sin;
  *cos = p.cos;
}

const float* rope_pair_table_device(int64_t H, int64_t W, int64_t D) {
  static std::mutex mu;
  static std::map<std::tuple<int64_t, int64_t, int64_t>, float*> cache;  // never freed: a few KB per shape
  std::lock_guard<std::mutex> lock(mu);
  float*& p = cache[std::make_tuple(H, W, D)];
  if (!p) {
    const cpu::RopeTables& T = cpu::rope_tables(H, W, D);
    const int64_t Q = D / 4, half = D / 2;
    const int64_t X = H + W, Q4 = (Q + 3) / 4 * 4;
    std::vector<float> h((size_t)((2 * X * Q + W * Q4) * 2));  // position-major, pair-major, fragment-major
    for (int64_t x = 0; x < X; x++) {
      // Row x: token (x, 0), features 2i; column c = x - H: token (0, c), features half + 2i.
      const int64_t at = x < H ? x * W * D : (x - H) * D + half;
      for (int64_t i = 0; i < Q; i++)
        for (int64_t j = 0; j < 2; j++) {
          const float y = j == 0 ? T.cos[at + 2 * i] : T.sin[at + 2 * i];
          h[(size_t)(x * Q + i) * 2 + j] = y;
          h[(size_t)(X * Q + i * X + x) * 2 + j] = y;
          if (x >= H) h[(size_t)(2 * X * Q + ((i / 4) * W + x - H) * 4 + i % 4) * 2 + j] = y;
        }
    }
    CUDA_CHECK(cudaMalloc(&p, h.size() * sizeof(float)), "rope pair table");
    CUDA_CHECK(cudaMemcpy(p, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice), "rope pair table");
  }
  return p;
}

namespace {

// Four values of one token: pairs (x0, x1) and (x2, x3), y = x cos + sign rot(x) sin.
__global__ void rope_kernel(const float4* x, float4* y, const float4* tsin, const float4* tcos, int64_t n4,
                            int64_t ND4, float sign) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t t = i % ND4;  // position inside the (N, D) table
    const float4 v = x[i], s = tsin[t], c = tcos[t];
    float4 r;
    r.x = v.x * c.x - sign * v.y * s.x;
    r.y = v.y * c.y + sign * v.x * s.y;
    r.z = v.z * c.z - sign * v.w * s.z;
    r.w = v.w * c.w + sign * v.z * s.w;
    y[i] = r;  // x and y may alias: each thread reads its values before writing them
  }
}

void rope_apply(const float* x, float* y, int64_t R, int64_t H, int64_t W, int64_t D, float sign, const char* op) {
  NALA_CHECK(D % 4 == 0, op, ": head dim ", D, " must be divisible by 4");
  const int64_t n4 = R * H * W * D / 4;
  if (n4 == 0) return;
  const float *ts, *tc;
  rope_tables_device(H, W, D, &ts, &tc);
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((n4 + threads - 1) / threads, 1 << 20);
  rope_kernel<<<(unsigned)blocks, threads>>>((const float4*)x, (float4*)y, (const float4*)ts, (const float4*)tc, n4,
                                            H * W * D / 4, sign);
  CUDA_CHECK_LAUNCH(op);
}

}  // namespace

void rope2d_forward(const float* x, float* y, int64_t R, int64_t H, int64_t W, int64_t D) {
  rope_apply(x, y, R, H, W, D, 1.0f, "rope2d_forward");
}
void rope2d_backward(const float* gy, float* gx, int64_t R, int64_t H, int64_t W, int64_t D) {
  rope_apply(gy, gx, R, H, W, D, -1.0f, "rope2d_backward");
}

}  // namespace cuda
}  // namespace nala
