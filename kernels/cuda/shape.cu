// kernels/cuda/shape.cu - the strided copy: out[so . i] = x[sa . i] over the
// index space of a collapsed Layout (kernels/cpu/shape.h). Overwrites (=).
//
// Used by contiguous(), reshape of a non-contiguous view, concat (writing
// into a slice of the output) and the gradients of narrow/concat/permute.
// Two paths:
//   - both sides contiguous (one collapsed dim, unit strides): a vector copy
//     with float4 loads/stores when the pointers are 16-byte aligned;
//   - rows of 4k floats contiguous on both sides (a head split or merge), the
//     pointers and other strides allowing it: the strided copy over float4s;
//   - anything else: one thread per element in the output's row-major order
//     (consecutive threads walk the last dim, so a slice copy is coalesced on
//     both sides; a transposing copy is coalesced on one side only).
// Index arithmetic is 32-bit when the element count allows it.
#include <cstdint>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/shape.h"

namespace nala {
namespace cuda {

namespace {
constexpr int kThreads = 256;

int64_t blocks_for(int64_t work) {
  int64_t b = (work + kThreads - 1) / kThreads;
  return b < 1 ? 1 : (b > (1 << 20) ? (1 << 20) : b);
}

bool aligned16(const void* p) { return ((uintptr_t)p & 15) == 0; }

__global__ void copy_vec_kernel(float* __restrict__ out, const float* __restrict__ x, int64_t n) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const int64_t n4 = n / 4;
  for (int64_t i = tid; i < n4; i += stride) reinterpret_cast<float4*>(out)[i] = reinterpret_cast<const float4*>(x)[i];
  for (int64_t i = 4 * n4 + tid; i < n; i += stride) out[i] = x[i];
}

__global__ void copy_scalar_kernel(float* __restrict__ out, const float* __restrict__ x, int64_t n) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += stride) out[i] = x[i];
}

// Element e (row-major over L.size) -> offsets in out and x.
template <typename I>
__device__ __forceinline__ void decode2(const Layout& L, I e, int64_t& po, int64_t& pa) {
  po = 0, pa = 0;
  for (int d = L.nd - 1; d > 0; d--) {
    I s = (I)L.size[d];
    I i = e % s;
    e /= s;
    po += (int64_t)i * L.so[d], pa += (int64_t)i * L.sa[d];
  }
  po += (int64_t)e * L.so[0], pa += (int64_t)e * L.sa[0];
}

// T = float4: L counts float4s (vector_layout).
template <typename I, typename T = float>
__global__ void copy_strided_kernel(T* out, const T* __restrict__ x, Layout L, I n) {
  const I stride = (I)gridDim.x * blockDim.x;
  for (I e = (I)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
    int64_t po, pa;
    decode2<I>(L, e, po, pa);
    out[po] = x[pa];
  }
}

// L over float4s, when its last dim is contiguous on both sides, 4 | its size,
// every other stride a multiple of 4 and both pointers 16-byte aligned (a head
// split or merge: rows of d floats moved whole): a quarter of the elements
// and of the index divisions.
bool vector_layout(const Layout& L, const float* out, const float* x, Layout& L4) {
  const int last = L.nd - 1;
  if (!aligned16(out) || !aligned16(x) || L.so[last] != 1 || L.sa[last] != 1 || L.size[last] % 4 != 0) return false;
  for (int d = 0; d < last; d++)
    if (L.so[d] % 4 != 0 || L.sa[d] % 4 != 0) return false;
  L4 = L;
  L4.size[last] /= 4;
  for (int d = 0; d < last; d++) L4.so[d] /= 4, L4.sa[d] /= 4;
  return true;
}
}  // namespace

void copy_strided(float* out, const float* x, Layout L) {
  const int64_t n = layout_numel(L);
  if (n == 0) return;
  if (L.nd == 1 && L.so[0] == 1 && L.sa[0] == 1) {
    if (aligned16(out) && aligned16(x))
      copy_vec_kernel<<<(unsigned)blocks_for((n + 3) / 4), kThreads>>>(out, x, n);
    else
      copy_scalar_kernel<<<(unsigned)blocks_for(n), kThreads>>>(out, x, n);
  } else if (Layout L4; n < (int64_t)1 << 31 && vector_layout(L, out, x, L4)) {
    copy_strided_kernel<uint32_t, float4><<<(unsigned)blocks_for(n / 4), kThreads>>>(
        reinterpret_cast<float4*>(out), reinterpret_cast<const float4*>(x), L4, (uint32_t)(n / 4));
  } else if (n < (int64_t)1 << 31) {
    copy_strided_kernel<uint32_t><<<(unsigned)blocks_for(n), kThreads>>>(out, x, L, (uint32_t)n);
  } else {
    copy_strided_kernel<int64_t><<<(unsigned)blocks_for(n), kThreads>>>(out, x, L, n);
  }
  CUDA_CHECK_LAUNCH("copy_strided");
}

}  // namespace cuda
}  // namespace nala
