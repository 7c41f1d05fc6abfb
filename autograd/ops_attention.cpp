// autograd/ops_attention.cpp - rope2d, nala_attention, softmax_attention:
// input checks, kernel dispatch and backward wiring. The math is in
// kernels/cpu/attention.h and kernels/cpu/rope.h.
//
// Shape letters: B batch, h heads, N = H * W tokens (row-major), d head dim.
#include <cmath>

#include "autograd/dispatch.h"
#include "autograd/ops.h"
#include "autograd/ops_util.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/rope.h"
#ifdef NALA_CUDA
#include "kernels/cuda/attention.h"
#include "kernels/cuda/rope.h"
#endif

namespace nala {

namespace {

// x: (..., N, d) with N = H * W and d % 4 == 0; f32 (or bf16 where bf16_ok).
void check_tokens(const char* op, const Tensor& x, int64_t H, int64_t W, bool bf16_ok = false) {
  NALA_CHECK(x.defined(), op, ": undefined input");
  NALA_CHECK(x.dtype() == DType::F32 || (bf16_ok && x.dtype() == DType::BF16), op,
             bf16_ok ? ": expected f32 or bf16, got " : ": expected f32, got ", x.desc());
  NALA_CHECK(x.dim() >= 2, op, ": expected (..., N, d), got ", x.desc());
  NALA_CHECK(H > 0 && W > 0, op, ": H and W must be positive, got H=", H, " W=", W);
  NALA_CHECK(x.size(-2) == H * W, op, ": N = ", x.size(-2), " in ", x.desc(), " is not H*W = ", H, "*", W);
  NALA_CHECK(x.size(-1) % 4 == 0, op, ": head dim d = ", x.size(-1), " in ", x.desc(),
             " must be divisible by 4");
}

// q, k, v: (B, h, N, d), all the same shape and dtype.
void check_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, int64_t H, int64_t W,
               bool bf16_ok = false) {
  for (const Tensor* t : {&q, &k, &v}) {
    NALA_CHECK(t->defined(), op, ": undefined input");
    NALA_CHECK(t->dim() == 4, op, ": expected q, k, v of shape (B, h, N, d), got ", t->desc());
  }
  NALA_CHECK(q.shape() == k.shape() && q.shape() == v.shape(), op, ": q, k, v shapes differ: ", q.desc(), ", ",
             k.desc(), ", ", v.desc());
  NALA_CHECK(q.dtype() == k.dtype() && q.dtype() == v.dtype(), op, ": q, k, v dtypes differ: ", q.desc(), ", ",
             k.desc(), ", ", v.desc());
  check_tokens(op, q, H, W, bf16_ok);
  common_device(op, {&q, &k, &v});
}

}  // namespace

Tensor rope2d(const Tensor& x_in, int64_t H, int64_t W) {
  check_tokens("rope2d", x_in, H, W);
  Tensor x = view::contiguous(x_in);
  const int64_t D = x.size(-1), R = x.numel() / (H * W * D);
  const Device dev = x.device();
  Tensor out = Tensor::empty(x.shape(), DType::F32, dev);
  NALA_DISPATCH(dev, rope2d_forward, x.f32(), out.f32(), R, H, W, D);
  return record(OpId::rope2d, out, {x_in}, [=](const Tensor& gout) -> std::vector<Tensor> {
    Tensor go = view::contiguous(gout);
    Tensor gx = Tensor::empty(go.shape(), DType::F32, dev);
    NALA_DISPATCH(dev, rope2d_backward, go.f32(), gx.f32(), R, H, W, D);
    return {gx};
  });
}

Tensor nala_attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, int64_t H, int64_t W) {
  check_qkv("nala_attention", q_in, k_in, v_in, H, W, true);
  Tensor q = view::contiguous(q_in), k = view::contiguous(k_in), v = view::contiguous(v_in);
  const Shape shp = q.shape();
  const int64_t G = shp[0] * shp[1], D = shp[3], F = 2 * D;
  const Device dev = q.device();
  const DType dt = q.dtype();  // of o and of dq, dk, dv; S and kmean are f32
  Tensor out = Tensor::empty(shp, dt, dev);
  Tensor S = Tensor::empty({G, F, D}, DType::F32, dev);  // the (2d, d) state of each (b, h)
  Tensor km = Tensor::empty({G, F}, DType::F32, dev);    // mean key feature of each (b, h)
  if (dt == DType::BF16)
    NALA_DISPATCH(dev, nala_attention_forward, q.bf16(), k.bf16(), v.bf16(), out.bf16(), S.f32(), km.f32(), G, H, W,
                  D, kNalaNormFloor, kNalaBf16OnePass);
  else
    NALA_DISPATCH(dev, nala_attention_forward, q.f32(), k.f32(), v.f32(), out.f32(), S.f32(), km.f32(), G, H, W, D,
                  kNalaNormFloor);
  if (!needs_grad({&q_in, &k_in, &v_in})) return out;
  q = q.detach(), k = k.detach(), v = v.detach();
  return record(OpId::nala_attention, out, {q_in, k_in, v_in}, [=](const Tensor& gout) -> std::vector<Tensor> {
    Tensor go = detail::cast_values(gout, dt, "nala_attention");  // contiguous, in the inputs' dtype
    Tensor dq = Tensor::empty(shp, dt, dev), dk = Tensor::empty(shp, dt, dev), dv = Tensor::empty(shp, dt, dev);
    if (dt == DType::BF16)
      NALA_DISPATCH(dev, nala_attention_backward, q.bf16(), k.bf16(), v.bf16(), S.f32(), km.f32(), go.bf16(),
                    dq.bf16(), dk.bf16(), dv.bf16(), G, H, W, D, kNalaNormFloor, kNalaBf16OnePass);
    else
      NALA_DISPATCH(dev, nala_attention_backward, q.f32(), k.f32(), v.f32(), S.f32(), km.f32(), go.f32(), dq.f32(),
                    dk.f32(), dv.f32(), G, H, W, D, kNalaNormFloor);
    return {dq, dk, dv};
  });
}

Tensor softmax_attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, int64_t H, int64_t W) {
  check_qkv("softmax_attention", q_in, k_in, v_in, H, W);
  Tensor q = view::contiguous(q_in), k = view::contiguous(k_in), v = view::contiguous(v_in);
  const Shape shp = q.shape();
  const int64_t G = shp[0] * shp[1], N = shp[2], D = shp[3];
  const Device dev = q.device();
  Tensor out = Tensor::empty(shp, DType::F32, dev);
  Tensor lse = Tensor::empty({G, N}, DType::F32, dev);  // log-sum-exp of each score row
  NALA_DISPATCH(dev, softmax_attention_forward, q.f32(), k.f32(), v.f32(), out.f32(), lse.f32(), G, H, W, D);
  if (!needs_grad({&q_in, &k_in, &v_in})) return out;
  q = q.detach(), k = k.detach(), v = v.detach();
  Tensor o = out.detach();
  return record(OpId::softmax_attention, out, {q_in, k_in, v_in}, [=](const Tensor& gout) -> std::vector<Tensor> {
    Tensor go = view::contiguous(gout);
    Tensor dq = Tensor::empty(shp, DType::F32, dev), dk = Tensor::empty(shp, DType::F32, dev),
           dv = Tensor::empty(shp, DType::F32, dev);
    NALA_DISPATCH(dev, softmax_attention_backward, q.f32(), k.f32(), v.f32(), o.f32(), lse.f32(), go.f32(), dq.f32(),
                  dk.f32(), dv.f32(), G, H, W, D);
    return {dq, dk, dv};
  });
}

}  // namespace nala
