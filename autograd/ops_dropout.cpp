// autograd/ops_dropout.cpp - dropout and drop_path (stochastic depth).
//
// Shape letters: B samples (dim 0 of x), D elements per sample, n = B * D.
// The mask is drawn on the host with the caller's Rng, in x's logical
// element order (dropout: n draws; drop_path: B draws), so a seed gives the
// same mask on every machine, thread count and device (for a CUDA tensor
// the host mask is copied over). It holds 0 (dropped) or 1/(1-p) (kept); the
// kernel multiplies, and backward multiplies the gradient by the same saved
// mask. With !training or p == 0 the op is the identity and returns x
// itself (no node, no draws). p must be in [0, 1).
#include "autograd/dispatch.h"
#include "autograd/ops.h"
#include "kernels/cpu/dropout.h"
#ifdef NALA_CUDA
#include "kernels/cuda/dropout.h"
#endif

namespace nala {

namespace {

void check_args(const char* op, const Tensor& x, float p) {
  NALA_CHECK(p >= 0.0f && p < 1.0f, op, ": p must be in [0, 1), got ", p);
  NALA_CHECK(x.defined(), op, ": undefined input tensor");
  NALA_CHECK(x.dtype() == DType::F32, op, ": expected an f32 tensor, got ", x.desc());
}

thread_local MaskFeed* g_feed = nullptr;

// n values, each 0 with probability p and 1/(1-p) otherwise, drawn on the
// host (the same draws whatever the device) and copied to dev.
Tensor draw_mask(const Shape& shape, float p, Rng& rng, Device dev) {
  if (dev != Device::CPU && g_feed) return g_feed->device_mask(shape, p, rng, dev);
  Tensor m = Tensor::empty(shape);
  draw_mask_values(m.f32(), m.numel(), p, rng);
  return m.to(dev);
}

}  // namespace

void draw_mask_values(float* out, int64_t n, float p, Rng& rng) {
  const float keep = 1.0f / (1.0f - p);
  for (int64_t j = 0; j < n; j++) out[j] = rng.uniform() < p ? 0.0f : keep;
}

void set_mask_feed(MaskFeed* feed) { g_feed = feed; }

Tensor drop_path_mask(int64_t B, float p, Rng& rng, Device dev) {
  NALA_CHECK(p >= 0.0f && p < 1.0f && B >= 0, "drop_path_mask: p must be in [0, 1), got ", p);
  return draw_mask({B}, p, rng, dev);
}

Tensor dropout(const Tensor& x, float p, Rng& rng, bool training) {
  check_args("dropout", x, p);
  if (!training || p == 0.0f) return x;
  const Device dev = x.device();
  const int64_t n = x.numel();
  Tensor mask = draw_mask(x.shape(), p, rng, dev);
  Tensor xc = view::contiguous(x);
  Tensor out = Tensor::empty(x.shape(), DType::F32, dev);
  NALA_DISPATCH(dev, dropout_apply, out.f32(), xc.f32(), mask.f32(), n);
  return record(OpId::dropout, out, {x}, [mask, n, dev](const Tensor& gout) -> std::vector<Tensor> {
    Tensor g = view::contiguous(gout);
    Tensor gx = Tensor::empty(mask.shape(), DType::F32, dev);
    NALA_DISPATCH(dev, dropout_apply, gx.f32(), g.f32(), mask.f32(), n);
    return {gx};
  });
}

Tensor drop_path(const Tensor& x, float p, Rng& rng, bool training) {
  check_args("drop_path", x, p);
  if (!training || p == 0.0f) return x;
  NALA_CHECK(x.dim() >= 1, "drop_path: expected a tensor with a batch dim, got ", x.desc());
  const Device dev = x.device();
  const int64_t B = x.size(0), D = B > 0 ? x.numel() / B : 0;
  Tensor mask = draw_mask({B}, p, rng, dev);
  Tensor xc = view::contiguous(x);
  Tensor out = Tensor::empty(x.shape(), DType::F32, dev);
  NALA_DISPATCH(dev, drop_path_apply, out.f32(), xc.f32(), mask.f32(), B, D);
  Shape xshape = x.shape();
  return record(OpId::drop_path, out, {x}, [mask, xshape, B, D, dev](const Tensor& gout) -> std::vector<Tensor> {
    Tensor g = view::contiguous(gout);
    Tensor gx = Tensor::empty(xshape, DType::F32, dev);
    NALA_DISPATCH(dev, drop_path_apply, gx.f32(), g.f32(), mask.f32(), B, D);
    return {gx};
  });
}

}  // namespace nala
