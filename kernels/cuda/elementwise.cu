// kernels/cuda/elementwise.cu - unary, broadcasting binary and sum_to kernels
// on the GPU; the CPU side (kernels/cpu/elementwise.{h,cpp}) is the reference.
//
// n: element count. Layout (kernels/cpu/shape.h): size is the index space
// walked, so / sa / sb the element strides of the output (or gradient of the
// output), a and b; 0 on broadcast dims. For sum_to, so holds the output's
// strides in x's index space (0 on the dims summed over).
//
// Saved for backward: relu, gelu, silu, log, cube read the input x; tanh,
// sigmoid, exp, sqrt read the output y; binary ops read a and b.
// Every kernel overwrites (=) its output, except axpy (+=). Outputs may alias
// inputs elementwise (scale_forward(g, g, -1) runs in place).
//
// Paths:
//   - unary and contiguous same-shape binary: grid-stride loops with float4
//     loads/stores when every pointer is 16-byte aligned, a scalar tail;
//   - binary with at most two collapsed dims whose last dim is contiguous or
//     broadcast for every operand ((M, C) op (C), column and scalar
//     broadcasts): one division per element, coalesced along C;
//   - binary otherwise: the general strided path, one thread per element
//     decoding its n-d index (also binary_forward_strided);
//   - sum_to, deterministic (no float atomics), by where the reduced dims
//     are: last dim kept (per-channel (M, C) -> (C)): one thread per output
//     element and chunk of the reduced elements, coalesced along C, partials
//     added in a fixed order by a second pass (column_sum); last dim reduced (row sums,
//     scalar): one warp per output element and chunk, lanes stride over the
//     contiguous reduced elements, a fixed shuffle tree, and a second pass
//     over the chunk partials with one warp per output.
// Index arithmetic is 32-bit when the element count allows it.
//
// Math: erff, expf, tanhf, logf, sqrtf, powf of CUDA's library (the CPU uses
// its own vectorisable exp/erf, agreeing to ~1e-7; CPU exp saturates above
// 88 where expf gives inf).
#include <algorithm>
#include <cstdint>
#include <cuda_bf16.h>

#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/reduce_util.cuh"
#include "kernels/cuda/vec_io.cuh"
#include "kernels/cuda/shape.h"
#include "tensor/tensor.h"

namespace nala {
namespace cuda {

namespace {
constexpr int kThreads = 256;

unsigned blocks_for(int64_t work) {
  int64_t b = (work + kThreads - 1) / kThreads;
  return (unsigned)(b < 1 ? 1 : (b > (1 << 20) ? (1 << 20) : b));
}
bool aligned16(const void* p) { return ((uintptr_t)p & 15) == 0; }

// ---- maps ------------------------------------------------------------------

__global__ void fill_kernel(float* out, float v, int64_t n, bool vec) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x, tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  int64_t start = 0;
  if (vec) {
    const int64_t n4 = n / 4;
    for (int64_t i = tid; i < n4; i += stride) reinterpret_cast<float4*>(out)[i] = make_float4(v, v, v, v);
    start = 4 * n4;
  }
  for (int64_t i = start + tid; i < n; i += stride) out[i] = v;
}

// out[i] = f(x[i])
template <class F>
__global__ void map1_kernel(float* out, const float* x, int64_t n, bool vec, F f) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x, tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  int64_t start = 0;
  if (vec) {
    const int64_t n4 = n / 4;
    for (int64_t i = tid; i < n4; i += stride) {
      float4 v = reinterpret_cast<const float4*>(x)[i];
      v.x = f(v.x), v.y = f(v.y), v.z = f(v.z), v.w = f(v.w);
      reinterpret_cast<float4*>(out)[i] = v;
    }
    start = 4 * n4;
  }
  for (int64_t i = start + tid; i < n; i += stride) out[i] = f(x[i]);
}

// out[i] = f(g[i], x[i])
template <class F>
__global__ void map2_kernel(float* out, const float* g, const float* x, int64_t n, bool vec, F f) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x, tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  int64_t start = 0;
  if (vec) {
    const int64_t n4 = n / 4;
    for (int64_t i = tid; i < n4; i += stride) {
      float4 u = reinterpret_cast<const float4*>(g)[i], v = reinterpret_cast<const float4*>(x)[i];
      u.x = f(u.x, v.x), u.y = f(u.y, v.y), u.z = f(u.z, v.z), u.w = f(u.w, v.w);
      reinterpret_cast<float4*>(out)[i] = u;
    }
    start = 4 * n4;
  }
  for (int64_t i = start + tid; i < n; i += stride) out[i] = f(g[i], x[i]);
}

template <class F>
void map1(const char* op, float* out, const float* x, int64_t n, F f) {
  if (n <= 0) return;
  bool vec = aligned16(out) && aligned16(x);
  map1_kernel<<<blocks_for(vec ? (n + 3) / 4 : n), kThreads>>>(out, x, n, vec, f);
  CUDA_CHECK_LAUNCH(op);
}

template <class F>
void map2(const char* op, float* out, const float* g, const float* x, int64_t n, F f) {
  if (n <= 0) return;
  bool vec = aligned16(out) && aligned16(g) && aligned16(x);
  map2_kernel<<<blocks_for(vec ? (n + 3) / 4 : n), kThreads>>>(out, g, x, n, vec, f);
  CUDA_CHECK_LAUNCH(op);
}

using act::sigmoid;

struct Identity { __device__ float operator()(float v) const { return v; } };
struct Scale { float s; __device__ float operator()(float v) const { return v * s; } };
struct AddS { float s; __device__ float operator()(float v) const { return v + s; } };
struct Axpy { float a; __device__ float operator()(float y, float x) const { return y + a * x; } };

struct ReluF { __device__ float operator()(float v) const { return v > 0.0f ? v : 0.0f; } };
struct ReluB { __device__ float operator()(float g, float v) const { return v > 0.0f ? g : 0.0f; } };
struct GeluF { __device__ float operator()(float v) const { return act::gelu(v); } };
struct GeluB { __device__ float operator()(float g, float v) const { return act::gelu_backward(g, v); } };
struct SiluF { __device__ float operator()(float v) const { return act::silu(v); } };
struct SiluB { __device__ float operator()(float g, float v) const { return act::silu_backward(g, v); } };
struct TanhF { __device__ float operator()(float v) const { return tanhf(v); } };
struct TanhB { __device__ float operator()(float g, float t) const { return g * (1.0f - t * t); } };
struct SigmoidF { __device__ float operator()(float v) const { return sigmoid(v); } };
struct SigmoidB { __device__ float operator()(float g, float s) const { return g * s * (1.0f - s); } };
struct ExpF { __device__ float operator()(float v) const { return expf(v); } };
struct ExpB { __device__ float operator()(float g, float e) const { return g * e; } };
struct LogF { __device__ float operator()(float v) const { return logf(v); } };
struct LogB { __device__ float operator()(float g, float v) const { return g / v; } };
struct SqrtF { __device__ float operator()(float v) const { return sqrtf(v); } };
struct SqrtB { __device__ float operator()(float g, float r) const { return 0.5f * g / r; } };
struct CubeF { __device__ float operator()(float v) const { return v * v * v; } };
struct CubeB { __device__ float operator()(float g, float v) const { return 3.0f * v * v * g; } };
struct SinF { __device__ float operator()(float v) const { return sinf(v); } };
struct SinB { __device__ float operator()(float g, float v) const { return g * cosf(v); } };
struct CosF { __device__ float operator()(float v) const { return cosf(v); } };
struct CosB { __device__ float operator()(float g, float v) const { return -g * sinf(v); } };
struct EluF { __device__ float operator()(float v) const { return v > 0.0f ? v : expm1f(v); } };
struct EluB { __device__ float operator()(float g, float e) const { return e > 0.0f ? g : g * (e + 1.0f); } };
// out = x + (y * gamma[c]) * f (act::scale_add; f = row_scale[r / rows_per_scale],
// 1 without row_scale). float4 when C % 4 == 0 and the arrays are 16-byte
// aligned. out may be y.
// y stored as float (may be out: plain loads) or bf16 (read-only loads, widened).
__device__ __forceinline__ float4 ldy4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 ldy4(const __nv_bfloat16* p) { return vio::ld4(p); }
__device__ __forceinline__ float ldy1(const float* p) { return *p; }
__device__ __forceinline__ float ldy1(const __nv_bfloat16* p) { return vio::ld1(p); }

template <class TY>
__global__ void scale_add_kernel(float* out, const float* x, const TY* y, const float* gamma, int64_t n, int64_t C,
                                 bool vec, const float* row_scale, int64_t rows_per_scale) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  auto factor = [&](int64_t i) { return row_scale ? row_scale[i / C / rows_per_scale] : 1.0f; };
  if (vec) {
    for (int64_t i = tid; i < n / 4; i += stride) {
      const float4 a = reinterpret_cast<const float4*>(x)[i], b = ldy4(y + 4 * i);
      const float4 g = *reinterpret_cast<const float4*>(gamma + (4 * i) % C);
      const float f = factor(4 * i);  // C % 4 == 0: the four share a row
      reinterpret_cast<float4*>(out)[i] = make_float4(act::scale_add(a.x, b.x, g.x, f), act::scale_add(a.y, b.y, g.y, f),
                                                      act::scale_add(a.z, b.z, g.z, f), act::scale_add(a.w, b.w, g.w, f));
    }
    return;
  }
  for (int64_t i = tid; i < n; i += stride) out[i] = act::scale_add(x[i], ldy1(y + i), gamma[i % C], factor(i));
}

template <class TY>
void scale_add_launch(float* out, const float* x, const TY* y, const float* gamma, int64_t R, int64_t C,
                      const float* row_scale, int64_t rows_per_scale) {
  const int64_t n = R * C;
  if (n == 0) return;
  const bool vec = C % 4 == 0 && aligned16(out) && aligned16(x) && aligned16(y) && aligned16(gamma);
  scale_add_kernel<<<blocks_for(vec ? n / 4 : n), kThreads>>>(out, x, y, gamma, n, C, vec, row_scale, rows_per_scale);
  CUDA_CHECK_LAUNCH("scale_add");
}

}  // namespace

void axpy(float* y, const float* x, float a, int64_t n) { map2("axpy", y, y, x, n, Axpy{a}); }
void fill(float* out, float v, int64_t n) {
  if (n <= 0) return;
  bool vec = aligned16(out);
  fill_kernel<<<blocks_for(vec ? (n + 3) / 4 : n), kThreads>>>(out, v, n, vec);
  CUDA_CHECK_LAUNCH("fill");
}
void copy(float* out, const float* x, int64_t n) { map1("copy", out, x, n, Identity{}); }

// Casts: cvt.rn.bf16.f32 (to nearest even; NaN to 0x7fff, as tensor/bf16.h on the host).
// A grid-stride loop, two elements a step when both pointers allow 4-byte pairs.
namespace {
__global__ void cast_f32_bf16_kernel(__nv_bfloat16* out, const float* x, int64_t n, bool pairs) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (pairs) {
    for (; 2 * i + 1 < n; i += stride)
      ((__nv_bfloat162*)out)[i] = __float22bfloat162_rn(((const float2*)x)[i]);
    if (i == n / 2 && n % 2) out[n - 1] = __float2bfloat16_rn(x[n - 1]);
  } else {
    for (; i < n; i += stride) out[i] = __float2bfloat16_rn(x[i]);
  }
}
__global__ void cast_bf16_f32_kernel(float* out, const __nv_bfloat16* x, int64_t n, bool pairs) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (pairs) {
    for (; 2 * i + 1 < n; i += stride) ((float2*)out)[i] = __bfloat1622float2(((const __nv_bfloat162*)x)[i]);
    if (i == n / 2 && n % 2) out[n - 1] = __bfloat162float(x[n - 1]);
  } else {
    for (; i < n; i += stride) out[i] = __bfloat162float(x[i]);
  }
}
bool pair_aligned(const void* a, const void* b) { return ((uintptr_t)a % 8 == 0) && ((uintptr_t)b % 4 == 0); }
}  // namespace

void cast_f32_bf16(bf16_t* out, const float* x, int64_t n) {
  if (n <= 0) return;
  const bool pairs = pair_aligned(x, out);
  cast_f32_bf16_kernel<<<blocks_for(pairs ? (n + 1) / 2 : n), kThreads>>>((__nv_bfloat16*)out, x, n, pairs);
  CUDA_CHECK_LAUNCH("cast_f32_bf16");
}
void cast_bf16_f32(float* out, const bf16_t* x, int64_t n) {
  if (n <= 0) return;
  const bool pairs = pair_aligned(out, x);
  cast_bf16_f32_kernel<<<blocks_for(pairs ? (n + 1) / 2 : n), kThreads>>>(out, (const __nv_bfloat16*)x, n, pairs);
  CUDA_CHECK_LAUNCH("cast_bf16_f32");
}
// bf16 maps: eight elements a step (16-byte loads and stores) when every
// pointer is 16-byte aligned, else one; f on float32 values.
namespace {
template <class F>
__global__ void map_bf16_kernel(__nv_bfloat16* out, const __nv_bfloat16* g, const __nv_bfloat16* x, int64_t n,
                                bool vec, F f) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x, tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  auto one = [&](int64_t i) {
    const float v = __bfloat162float(x[i]);
    out[i] = __float2bfloat16_rn(g ? f(__bfloat162float(g[i]), v) : f(0.0f, v));
  };
  if (!vec) {
    for (int64_t i = tid; i < n; i += stride) one(i);
    return;
  }
  for (int64_t i = tid; i < n / 8; i += stride) {
    uint4 xv = reinterpret_cast<const uint4*>(x)[i], gv = g ? reinterpret_cast<const uint4*>(g)[i] : xv, ov;
    const __nv_bfloat162* x2 = reinterpret_cast<const __nv_bfloat162*>(&xv);
    const __nv_bfloat162* g2 = reinterpret_cast<const __nv_bfloat162*>(&gv);
    __nv_bfloat162* o2 = reinterpret_cast<__nv_bfloat162*>(&ov);
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const float2 a = __bfloat1622float2(x2[j]), b = g ? __bfloat1622float2(g2[j]) : make_float2(0.0f, 0.0f);
      o2[j] = __floats2bfloat162_rn(f(b.x, a.x), f(b.y, a.y));
    }
    reinterpret_cast<uint4*>(out)[i] = ov;
  }
  for (int64_t i = n / 8 * 8 + tid; i < n; i += stride) one(i);
}
template <class F>
void map_bf16(const char* op, bf16_t* out, const bf16_t* g, const bf16_t* x, int64_t n, F f) {
  if (n <= 0) return;
  const bool vec = aligned16(out) && aligned16(x) && (!g || aligned16(g));
  map_bf16_kernel<<<blocks_for(vec ? (n + 7) / 8 : n), kThreads>>>(
      (__nv_bfloat16*)out, (const __nv_bfloat16*)g, (const __nv_bfloat16*)x, n, vec, f);
  CUDA_CHECK_LAUNCH(op);
}
// A unary map's functor as map_bf16's f(g, v), g unused.
template <class F>
struct OnValue {
  F f;
  __device__ float operator()(float, float v) const { return f(v); }
};
}  // namespace

void add_bf16(bf16_t* out, const bf16_t* a, const bf16_t* b, int64_t n) {
  map_bf16("add (bf16)", out, a, b, n, Axpy{1.0f});  // a + b, as the f32 accumulation (axpy)
}

void gelu_forward_bf16(bf16_t* out, const bf16_t* x, int64_t n) {
  map_bf16("gelu (bf16)", out, nullptr, x, n, OnValue<GeluF>{});
}
void gelu_backward_bf16(bf16_t* dx, const bf16_t* dout, const bf16_t* x, int64_t n) {
  map_bf16("gelu backward (bf16)", dx, dout, x, n, GeluB{});
}

void scale_forward(float* out, const float* x, float s, int64_t n) { map1("scale", out, x, n, Scale{s}); }
void add_scalar_forward(float* out, const float* x, float s, int64_t n) { map1("add_scalar", out, x, n, AddS{s}); }

void scale_add_forward(float* out, const float* x, const float* y, const float* gamma, int64_t R, int64_t C,
                       const float* row_scale, int64_t rows_per_scale) {
  scale_add_launch(out, x, y, gamma, R, C, row_scale, rows_per_scale);
}
void scale_add_forward_bf16(float* out, const float* x, const bf16_t* y, const float* gamma, int64_t R, int64_t C,
                            const float* row_scale, int64_t rows_per_scale) {
  scale_add_launch(out, x, reinterpret_cast<const __nv_bfloat16*>(y), gamma, R, C, row_scale, rows_per_scale);
}

#define NALA_UNARY(name, F, B)                                                                                 \
  void name##_forward(float* out, const float* x, int64_t n) { map1(#name, out, x, n, F{}); }                 \
  void name##_backward(float* dx, const float* dout, const float* s, int64_t n) {                              \
    map2(#name " backward", dx, dout, s, n, B{});                                                              \
  }
NALA_UNARY(relu, ReluF, ReluB)
NALA_UNARY(gelu, GeluF, GeluB)
NALA_UNARY(silu, SiluF, SiluB)
NALA_UNARY(tanh, TanhF, TanhB)
NALA_UNARY(sigmoid, SigmoidF, SigmoidB)
NALA_UNARY(exp, ExpF, ExpB)
NALA_UNARY(log, LogF, LogB)
NALA_UNARY(sqrt, SqrtF, SqrtB)
NALA_UNARY(cube, CubeF, CubeB)
NALA_UNARY(sin, SinF, SinB)
NALA_UNARY(cos, CosF, CosB)
NALA_UNARY(elu, EluF, EluB)
#undef NALA_UNARY

// ---- broadcasting binary --------------------------------------------------
// Each op: f (forward), da and db (dout times the partial derivative).

namespace {
struct AddOp {
  static __device__ float f(float a, float b) { return a + b; }
  static __device__ float da(float g, float, float) { return g; }
  static __device__ float db(float g, float, float) { return g; }
};
struct SubOp {
  static __device__ float f(float a, float b) { return a - b; }
  static __device__ float da(float g, float, float) { return g; }
  static __device__ float db(float g, float, float) { return -g; }
};
struct MulOp {
  static __device__ float f(float a, float b) { return a * b; }
  static __device__ float da(float g, float, float b) { return g * b; }
  static __device__ float db(float g, float a, float) { return g * a; }
};
struct DivOp {
  static __device__ float f(float a, float b) { return a / b; }
  static __device__ float da(float g, float, float b) { return g / b; }
  static __device__ float db(float g, float a, float b) { return -g * a / (b * b); }
};
// x^p for x >= 0. Both partials are defined as 0 at x == 0 (never ln 0).
struct PowOp {
  static __device__ float f(float x, float p) { return powf(x, p); }
  static __device__ float da(float g, float x, float p) { return x == 0.0f ? 0.0f : g * p * powf(x, p - 1.0f); }
  static __device__ float db(float g, float x, float p) { return x == 0.0f ? 0.0f : g * powf(x, p) * logf(x); }
};

#define NALA_BINARY_SWITCH(op, CALL)        \
  switch (op) {                             \
    case BinaryOp::Add: CALL(AddOp); break; \
    case BinaryOp::Sub: CALL(SubOp); break; \
    case BinaryOp::Mul: CALL(MulOp); break; \
    case BinaryOp::Div: CALL(DivOp); break; \
    case BinaryOp::Pow: CALL(PowOp); break; \
  }

// The work at one element, given the operands' offsets (po for out / dout /
// da / db, pa for a, pb for b).
template <class Op>
struct Fwd {
  float* out;
  const float *a, *b;
  __device__ void operator()(int64_t po, int64_t pa, int64_t pb) const { out[po] = Op::f(a[pa], b[pb]); }
};
template <class Op>
struct Bwd {
  float *da, *db;
  const float *g, *a, *b;
  __device__ void operator()(int64_t po, int64_t pa, int64_t pb) const {
    const float gv = g[po], av = a[pa], bv = b[pb];
    if (da) da[po] = Op::da(gv, av, bv);
    if (db) db[po] = Op::db(gv, av, bv);
  }
};

// Contiguous same shape, float4 when aligned.
template <class Op>
__global__ void fwd_same_kernel(float* out, const float* a, const float* b, int64_t n, bool vec) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x, tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  int64_t start = 0;
  if (vec) {
    const int64_t n4 = n / 4;
    for (int64_t i = tid; i < n4; i += stride) {
      float4 u = reinterpret_cast<const float4*>(a)[i], v = reinterpret_cast<const float4*>(b)[i];
      u.x = Op::f(u.x, v.x), u.y = Op::f(u.y, v.y), u.z = Op::f(u.z, v.z), u.w = Op::f(u.w, v.w);
      reinterpret_cast<float4*>(out)[i] = u;
    }
    start = 4 * n4;
  }
  for (int64_t i = start + tid; i < n; i += stride) out[i] = Op::f(a[i], b[i]);
}

template <class Op>
__global__ void bwd_same_kernel(float* da, float* db, const float* g, const float* a, const float* b, int64_t n,
                                bool vec) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x, tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  int64_t start = 0;
  if (vec) {
    const int64_t n4 = n / 4;
    for (int64_t i = tid; i < n4; i += stride) {
      const float4 q = reinterpret_cast<const float4*>(g)[i], u = reinterpret_cast<const float4*>(a)[i],
                   v = reinterpret_cast<const float4*>(b)[i];
      if (da)
        reinterpret_cast<float4*>(da)[i] =
            make_float4(Op::da(q.x, u.x, v.x), Op::da(q.y, u.y, v.y), Op::da(q.z, u.z, v.z), Op::da(q.w, u.w, v.w));
      if (db)
        reinterpret_cast<float4*>(db)[i] =
            make_float4(Op::db(q.x, u.x, v.x), Op::db(q.y, u.y, v.y), Op::db(q.z, u.z, v.z), Op::db(q.w, u.w, v.w));
    }
    start = 4 * n4;
  }
  for (int64_t i = start + tid; i < n; i += stride) {
    if (da) da[i] = Op::da(g[i], a[i], b[i]);
    if (db) db[i] = Op::db(g[i], a[i], b[i]);
  }
}

// At most two dims; the last has stride 1 in the output and 0 or 1 in a, b.
// Element e = r * C + c.
template <class Body, typename I>
__global__ void rows_kernel(Body body, I C, I n, int64_t so0, int64_t sa0, int64_t sb0, int64_t sa1, int64_t sb1) {
  const I stride = (I)gridDim.x * blockDim.x;
  for (I e = (I)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
    const I r = e / C, c = e - r * C;
    body((int64_t)r * so0 + c, (int64_t)r * sa0 + c * sa1, (int64_t)r * sb0 + c * sb1);
  }
}

// Any Layout: element e in row-major order -> the three offsets.
template <class Body, typename I>
__global__ void strided_kernel(Body body, Layout L, I n) {
  const I stride = (I)gridDim.x * blockDim.x;
  for (I e = (I)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
    I r = e;
    int64_t po = 0, pa = 0, pb = 0;
    for (int d = L.nd - 1; d > 0; d--) {
      const I s = (I)L.size[d], i = r % s;
      r /= s;
      po += (int64_t)i * L.so[d], pa += (int64_t)i * L.sa[d], pb += (int64_t)i * L.sb[d];
    }
    po += (int64_t)r * L.so[0], pa += (int64_t)r * L.sa[0], pb += (int64_t)r * L.sb[0];
    body(po, pa, pb);
  }
}

bool is_rows(const Layout& L) {
  const int l = L.nd - 1;
  return L.nd <= 2 && L.so[l] == 1 && (L.sa[l] == 0 || L.sa[l] == 1) && (L.sb[l] == 0 || L.sb[l] == 1);
}

// The rows or the general path for one element body.
template <class Body>
void launch_layout(Body body, const Layout& L, int64_t n, bool general_only) {
  const bool small = n < ((int64_t)1 << 31);
  if (!general_only && is_rows(L)) {
    const int l = L.nd - 1;
    const int64_t so0 = L.nd == 2 ? L.so[0] : 0, sa0 = L.nd == 2 ? L.sa[0] : 0, sb0 = L.nd == 2 ? L.sb[0] : 0;
    if (small)
      rows_kernel<Body, uint32_t><<<blocks_for(n), kThreads>>>(body, (uint32_t)L.size[l], (uint32_t)n, so0, sa0, sb0,
                                                               L.sa[l], L.sb[l]);
    else
      rows_kernel<Body, int64_t><<<blocks_for(n), kThreads>>>(body, L.size[l], n, so0, sa0, sb0, L.sa[l], L.sb[l]);
  } else if (small) {
    strided_kernel<Body, uint32_t><<<blocks_for(n), kThreads>>>(body, L, (uint32_t)n);
  } else {
    strided_kernel<Body, int64_t><<<blocks_for(n), kThreads>>>(body, L, n);
  }
}

bool is_same(const Layout& L) { return L.nd == 1 && L.so[0] == 1 && L.sa[0] == 1 && L.sb[0] == 1; }

template <class Op>
void forward_impl(float* out, const float* a, const float* b, const Layout& L, bool fast) {
  const int64_t n = layout_numel(L);
  if (n == 0) return;
  if (fast && is_same(L)) {
    const bool vec = aligned16(out) && aligned16(a) && aligned16(b);
    fwd_same_kernel<Op><<<blocks_for(vec ? (n + 3) / 4 : n), kThreads>>>(out, a, b, n, vec);
  } else {
    launch_layout(Fwd<Op>{out, a, b}, L, n, !fast);
  }
}

template <class Op>
void backward_impl(float* da, float* db, const float* g, const float* a, const float* b, const Layout& L) {
  const int64_t n = layout_numel(L);
  if (n == 0 || (!da && !db)) return;
  if (is_same(L)) {
    const bool vec = (!da || aligned16(da)) && (!db || aligned16(db)) && aligned16(g) && aligned16(a) && aligned16(b);
    bwd_same_kernel<Op><<<blocks_for(vec ? (n + 3) / 4 : n), kThreads>>>(da, db, g, a, b, n, vec);
  } else {
    launch_layout(Bwd<Op>{da, db, g, a, b}, L, n, false);
  }
}
}  // namespace

void binary_forward(BinaryOp op, float* out, const float* a, const float* b, Layout L) {
#define NALA_CALL(OP) forward_impl<OP>(out, a, b, L, true)
  NALA_BINARY_SWITCH(op, NALA_CALL)
#undef NALA_CALL
  CUDA_CHECK_LAUNCH(binary_op_name(op));
}

void binary_forward_strided(BinaryOp op, float* out, const float* a, const float* b, Layout L) {
#define NALA_CALL(OP) forward_impl<OP>(out, a, b, L, false)
  NALA_BINARY_SWITCH(op, NALA_CALL)
#undef NALA_CALL
  CUDA_CHECK_LAUNCH(binary_op_name(op));
}

void binary_backward(BinaryOp op, float* da, float* db, const float* dout, const float* a, const float* b,
                     Layout L) {
#define NALA_CALL(OP) backward_impl<OP>(da, db, dout, a, b, L)
  NALA_BINARY_SWITCH(op, NALA_CALL)
#undef NALA_CALL
  CUDA_CHECK_LAUNCH(binary_op_name(op));
}
#undef NALA_BINARY_SWITCH

// ---- sum_to ---------------------------------------------------------------

namespace {
// The kept (summed into) or the reduced dims of a sum_to Layout, in order:
// sizes, x strides and (kept only) output strides.
struct Dims {
  int nd = 0;
  int64_t size[kMaxDims], sx[kMaxDims], so[kMaxDims];
};

// Element e of D (row-major) -> its offsets in x and in out.
__device__ __forceinline__ void decode(const Dims& D, int64_t e, int64_t& px, int64_t& po) {
  px = 0, po = 0;
  if (D.nd == 0) return;
  for (int d = D.nd - 1; d > 0; d--) {
    const int64_t i = e % D.size[d];
    e /= D.size[d];
    px += i * D.sx[d], po += i * D.so[d];
  }
  px += e * D.sx[0], po += e * D.so[0];
}

// Last dim kept: thread j of chunk g sums x over the reduced elements
// [R g / G, R (g+1) / G) for output element j. G == 1: straight into out;
// else into part[g M + j].
__global__ void sum_cols_kernel(float* out, float* part, const float* __restrict__ x, Dims K, Dims Rd, int64_t M,
                                int64_t R, int G) {
  const int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (j >= M) return;
  const int g = blockIdx.y;
  const int64_t r0 = R * g / G, r1 = R * (g + 1) / G;
  int64_t xj, oj, xr, unused;
  decode(K, j, xj, oj);
  float acc = 0.0f;
  for (int64_t r = r0; r < r1; r++) {
    decode(Rd, r, xr, unused);
    acc += x[xj + xr];
  }
  if (G == 1) out[oj] = acc;
  else part[(int64_t)g * M + j] = acc;
}

// out[j] = sum over g of part[g M + j], in a fixed order (reduce_util::column_sum).
__global__ void sum_cols_finish_kernel(float* out, const float* __restrict__ part, Dims K, int64_t M, int G) {
  const int64_t j = reduce_util::col_index();
  const double acc = reduce_util::column_sum(part + (j < M ? j : 0), G, M, j < M);
  if (threadIdx.y != 0 || j >= M) return;
  int64_t xj, oj;
  decode(K, j, xj, oj);
  out[oj] = (float)acc;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Last dim reduced: warp w = j G + g sums its chunk of output j's reduced
// elements with the lanes striding by 32, then a shuffle tree. G == 1:
// into out; else into part[j G + g].
__global__ void sum_rows_kernel(float* out, float* part, const float* __restrict__ x, Dims K, Dims Rd, int64_t M,
                                int64_t R, int G) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
  for (int64_t w = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32; w < M * G; w += warps) {
    const int64_t j = w / G;
    const int g = (int)(w - j * G);
    const int64_t r0 = R * g / G, r1 = R * (g + 1) / G;
    int64_t xj, oj, xr, unused;
    decode(K, j, xj, oj);
    float acc = 0.0f;
    for (int64_t r = r0 + lane; r < r1; r += 32) {
      decode(Rd, r, xr, unused);
      acc += x[xj + xr];
    }
    acc = warp_sum(acc);
    if (lane == 0) {
      if (G == 1) out[oj] = acc;
      else part[w] = acc;
    }
  }
}

// out[j] = sum of part[j G .. j G + G), one warp per j, fixed order.
__global__ void sum_rows_finish_kernel(float* out, const float* __restrict__ part, Dims K, int64_t M, int G) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
  for (int64_t j = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32; j < M; j += warps) {
    float acc = 0.0f;
    for (int g = lane; g < G; g += 32) acc += part[j * G + g];
    acc = warp_sum(acc);
    if (lane == 0) {
      int64_t xj, oj;
      decode(K, j, xj, oj);
      out[oj] = acc;
    }
  }
}

int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }
}  // namespace

void sum_to(float* out, const float* x, Layout L) {
  const int64_t N = layout_numel(L);
  if (N == 0) return;
  Dims K, Rd;
  for (int d = 0; d < L.nd; d++) {
    Dims& D = L.so[d] != 0 ? K : Rd;
    D.size[D.nd] = L.size[d], D.sx[D.nd] = L.sa[d], D.so[D.nd] = L.so[d];
    D.nd++;
  }
  int64_t M = 1;
  for (int d = 0; d < K.nd; d++) M *= K.size[d];
  if (M == N) {  // nothing summed: a copy
    copy_strided(out, x, L);
    return;
  }
  const int64_t R = N / M;
  if (L.so[L.nd - 1] != 0) {
    // About 2^18 threads in flight, at least 32 reduced elements per thread.
    const int G = (int)clamp64(std::min(((int64_t)1 << 18) / M, R / 32), 1, 1024);
    Tensor part = G > 1 ? Tensor::empty({(int64_t)G * M}, DType::F32, Device::CUDA) : Tensor();
    float* pp = G > 1 ? part.f32() : nullptr;
    dim3 grid((unsigned)((M + kThreads - 1) / kThreads), (unsigned)G);
    sum_cols_kernel<<<grid, kThreads>>>(out, pp, x, K, Rd, M, R, G);
    CUDA_CHECK_LAUNCH("sum_to");
    if (G > 1) {
      sum_cols_finish_kernel<<<reduce_util::col_blocks(M), reduce_util::col_block(G)>>>(out, pp, K, M, G);
      CUDA_CHECK_LAUNCH("sum_to");
    }
  } else {
    // About 2^13 warps in flight, at least 256 reduced elements per warp.
    const int G = (int)clamp64(std::min(((int64_t)1 << 13) / M, R / 256), 1, 4096);
    Tensor part = G > 1 ? Tensor::empty({(int64_t)G * M}, DType::F32, Device::CUDA) : Tensor();
    float* pp = G > 1 ? part.f32() : nullptr;
    const int wpb = kThreads / 32;
    sum_rows_kernel<<<(unsigned)clamp64((M * G + wpb - 1) / wpb, 1, 1 << 20), kThreads>>>(out, pp, x, K, Rd, M, R, G);
    CUDA_CHECK_LAUNCH("sum_to");
    if (G > 1) {
      sum_rows_finish_kernel<<<(unsigned)clamp64((M + wpb - 1) / wpb, 1, 1 << 20), kThreads>>>(out, pp, K, M, G);
      CUDA_CHECK_LAUNCH("sum_to");
    }
  }
}

}  // namespace cuda
}  // namespace nala
