// autograd/ops_conv.cpp - conv2d and dwconv2d: checks, dispatch, tape.
//
// Shape letters: B batch, H W input size, Ho Wo output size, Ci Co channels,
// C channels of a depthwise conv, k kernel size. x is (B, H, W, Ci)
// channels-last; w keeps the PyTorch layout. Backward saves x and w (made
// contiguous) and asks the kernels only for the gradients that are needed.
//
// dwconv2d also takes bf16 activations (x, add and so the output, all one
// dtype; taps and bias f32): on CUDA the stencil widens them as it loads and
// rounds its stores; on the CPU the float32 kernels run on the values and
// the results are rounded once. x's gradient is bf16 then, the taps' and
// bias's f32.
#include "autograd/dispatch.h"
#include "autograd/ops.h"
#include "autograd/ops_util.h"
#include "kernels/cpu/conv.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/norm.h"
#ifdef NALA_CUDA
#include "kernels/cuda/conv.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/norm.h"
#endif

namespace nala {

namespace {

void check_f32(const char* op, const char* what, const Tensor& t) {
  NALA_CHECK(t.dtype() == DType::F32, op, ": ", what, " must be f32, got ", t.desc());
}

void check_bias(const char* op, const Tensor& x, const Tensor& bias, int64_t n) {
  if (!bias.defined()) return;
  check_f32(op, "bias", bias);
  NALA_CHECK(bias.dim() == 1 && bias.size(0) == n, op, ": input ", x.desc(), " and bias ", bias.desc(),
             ": expected a bias of shape [", n, "]");
}

float* ptr_or_null(const Tensor& t) { return t.defined() ? t.f32() : nullptr; }

Tensor grad_like(const Tensor& t, bool wanted) {
  return wanted ? Tensor::empty(t.shape(), t.dtype(), t.device()) : Tensor();
}

// The depthwise stencil on bf16 activations (dwconv2d_add_forward_bf16 and
// dwconv2d_backward_bf16's contract, kernels/cuda/conv.h) on either device.
void dw_forward_bf16(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& add,
                     int64_t B, int64_t H, int64_t W, int64_t C, int64_t k) {
  const Device dev = x.device();
#ifdef NALA_CUDA
  if (dev == Device::CUDA) {
    ProfileScope prof("dwconv2d_forward_bf16", dev);
    cuda::dwconv2d_add_forward_bf16(out.bf16(), x.bf16(), w.f32(), ptr_or_null(bias),
                                    add.defined() ? add.bf16() : nullptr, B, H, W, C, k);
    return;
  }
#endif
  const char* op = "dwconv2d (bf16)";
  Tensor xf = detail::cast_values(x, DType::F32, op), of = Tensor::empty(out.shape(), DType::F32, dev);
  if (add.defined()) {
    Tensor af = detail::cast_values(add, DType::F32, op);
    NALA_DISPATCH(dev, dwconv2d_add_forward, of.f32(), xf.f32(), w.f32(), ptr_or_null(bias), af.f32(), B, H, W, C, k);
  } else {
    NALA_DISPATCH(dev, dwconv2d_forward, of.f32(), xf.f32(), w.f32(), ptr_or_null(bias), B, H, W, C, k);
  }
  NALA_DISPATCH(dev, cast_f32_bf16, out.bf16(), of.f32(), of.numel());
}

void dw_backward_bf16(const Tensor& dx, const Tensor& dw, const Tensor& db, const Tensor& g, const Tensor& x,
                      const Tensor& w, int64_t B, int64_t H, int64_t W, int64_t C, int64_t k, bool dx_add) {
  const Device dev = x.device();
#ifdef NALA_CUDA
  if (dev == Device::CUDA) {
    ProfileScope prof("dwconv2d_backward_bf16", dev);
    cuda::dwconv2d_backward_bf16(dx.defined() ? dx.bf16() : nullptr, dw.defined() ? dw.f32() : nullptr,
                                 db.defined() ? db.f32() : nullptr, g.bf16(), x.bf16(), w.f32(), B, H, W, C, k,
                                 dx_add ? g.bf16() : nullptr);
    return;
  }
#endif
  const char* op = "dwconv2d (bf16)";
  Tensor gf = detail::cast_values(g, DType::F32, op), xf = detail::cast_values(x, DType::F32, op);
  Tensor dxf = dx.defined() ? Tensor::empty(dx.shape(), DType::F32, dev) : Tensor();
  NALA_DISPATCH(dev, dwconv2d_backward, dxf.defined() ? dxf.f32() : nullptr, dw.defined() ? dw.f32() : nullptr,
                db.defined() ? db.f32() : nullptr, gf.f32(), xf.f32(), w.f32(), B, H, W, C, k,
                dx_add ? gf.f32() : nullptr);
  if (dx.defined()) NALA_DISPATCH(dev, cast_f32_bf16, dx.bf16(), dxf.f32(), dxf.numel());
}

}  // namespace

Tensor conv2d(const Tensor& x_, const Tensor& w_, const Tensor& bias_, int stride, int pad) {
  const char* op = "conv2d";
  NALA_CHECK(x_.dim() == 4, op, ": input ", x_.desc(), " must be (B, H, W, Cin)");
  NALA_CHECK(w_.dim() == 4, op, ": weight ", w_.desc(), " must be (Cout, Cin, k, k)");
  check_f32(op, "input", x_);
  check_f32(op, "weight", w_);
  NALA_CHECK(w_.size(2) == w_.size(3), op, ": weight ", w_.desc(), " must have a square kernel");
  NALA_CHECK(x_.size(3) == w_.size(1), op, ": input ", x_.desc(), " and weight ", w_.desc(),
             ": channel mismatch");
  NALA_CHECK(stride >= 1 && pad >= 0, op, ": stride ", stride, " and pad ", pad, " must be >= 1 and >= 0");
  const int64_t B = x_.size(0), H = x_.size(1), W = x_.size(2), Ci = x_.size(3), Co = w_.size(0),
                k = w_.size(2);
  NALA_CHECK(H + 2 * pad >= k && W + 2 * pad >= k, op, ": input ", x_.desc(), " with pad ", pad,
             " is smaller than the kernel of weight ", w_.desc());
  check_bias(op, x_, bias_, Co);
  const Device dev = common_device(op, {&x_, &w_, &bias_});
  const int64_t Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;

  Tensor x = view::contiguous(x_), w = view::contiguous(w_);
  Tensor bias = bias_.defined() ? view::contiguous(bias_) : Tensor();
  Tensor out = Tensor::empty({B, Ho, Wo, Co}, DType::F32, dev);
  NALA_DISPATCH(dev, conv2d_forward, out.f32(), x.f32(), w.f32(), ptr_or_null(bias), B, H, W, Ci, Co, k,
                stride, pad);
  if (!needs_grad({&x_, &w_, &bias_})) return out;
  Tensor xs = x.detach(), ws = w.detach();
  return record(OpId::conv2d, out, {x_, w_, bias_},
                [xs, ws, B, H, W, Ci, Co, k, stride, pad, dev, gx = x_.requires_grad(),
                 gw = w_.requires_grad(), gb = bias_.defined() && bias_.requires_grad()](const Tensor& gout) {
                  Tensor g = view::contiguous(gout);
                  Tensor dx = grad_like(xs, gx), dw = grad_like(ws, gw);
                  Tensor db = gb ? Tensor::empty({Co}, DType::F32, dev) : Tensor();
                  NALA_DISPATCH(dev, conv2d_backward, ptr_or_null(dx), ptr_or_null(dw), ptr_or_null(db),
                                g.f32(), xs.f32(), ws.f32(), B, H, W, Ci, Co, k, stride, pad);
                  return std::vector<Tensor>{dx, dw, db};
                });
}

namespace {
// The checks of the depthwise ops: x (B, H, W, C) f32 or bf16, w (C, 1, k, k)
// f32 with k odd, bias (C) f32 or undefined. Returns k.
int64_t check_depthwise(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias) {
  NALA_CHECK(x.dim() == 4, op, ": input ", x.desc(), " must be (B, H, W, C)");
  NALA_CHECK(x.dtype() == DType::F32 || x.dtype() == DType::BF16, op, ": input must be f32 or bf16, got ", x.desc());
  check_f32(op, "weight", w);
  const int64_t C = x.size(3);
  NALA_CHECK(w.dim() == 4 && w.size(0) == C && w.size(1) == 1 && w.size(2) == w.size(3), op, ": input ", x.desc(),
             " and weight ", w.desc(), ": expected a weight of shape [", C, ", 1, k, k]");
  NALA_CHECK(w.size(2) % 2 == 1, op, ": weight ", w.desc(), ": kernel size must be odd");
  check_bias(op, x, bias, C);
  return w.size(2);
}
}  // namespace

Tensor dwconv2d(const Tensor& x_, const Tensor& w_, const Tensor& bias_, const Tensor& add_) {
  const char* op = "dwconv2d";
  const int64_t k = check_depthwise(op, x_, w_, bias_);
  const DType dt = x_.dtype();
  const int64_t B = x_.size(0), H = x_.size(1), W = x_.size(2), C = x_.size(3);
  if (add_.defined()) {
    NALA_CHECK(add_.dtype() == dt, op, ": addend ", add_.desc(), " must have the input's dtype ", x_.desc());
    NALA_CHECK(add_.shape() == x_.shape(), op, ": addend ", add_.desc(), " must have the input's shape ", x_.desc());
  }
  const Device dev = common_device(op, {&x_, &w_, &bias_, &add_});

  Tensor x = view::contiguous(x_), w = view::contiguous(w_);
  Tensor bias = bias_.defined() ? view::contiguous(bias_) : Tensor();
  Tensor out = Tensor::empty({B, H, W, C}, dt, dev);
  if (dt == DType::BF16) {
    dw_forward_bf16(out, x, w, bias, add_.defined() ? view::contiguous(add_) : Tensor(), B, H, W, C, k);
  } else if (add_.defined()) {
    Tensor a = view::contiguous(add_);
    NALA_DISPATCH(dev, dwconv2d_add_forward, out.f32(), x.f32(), w.f32(), ptr_or_null(bias), a.f32(), B, H, W, C, k);
  } else {
    NALA_DISPATCH(dev, dwconv2d_forward, out.f32(), x.f32(), w.f32(), ptr_or_null(bias), B, H, W, C, k);
  }
  if (!needs_grad({&x_, &w_, &bias_, &add_})) return out;
  Tensor xs = x.detach(), ws = w.detach();
  // x + dwconv(x) (the addend is the input itself): x's two gradients, the
  // stencil's and dout, leave as one, added in the stencil's store.
  const bool self_add = add_.defined() && add_.impl() == x_.impl() && x_.requires_grad();
  return record(OpId::dwconv2d, out, {x_, w_, bias_, add_},
                [xs, ws, B, H, W, C, k, dev, self_add, gx = x_.requires_grad(), gw = w_.requires_grad(),
                 gb = bias_.defined() && bias_.requires_grad(),
                 ga = add_.defined() && add_.requires_grad()](const Tensor& gout) {
                  Tensor g = detail::cast_values(gout, xs.dtype(), "dwconv2d");  // contiguous, x's dtype
                  Tensor dx = grad_like(xs, gx), dw = grad_like(ws, gw);
                  Tensor db = gb ? Tensor::empty({C}, DType::F32, dev) : Tensor();
                  if (xs.dtype() == DType::BF16)
                    dw_backward_bf16(dx, dw, db, g, xs, ws, B, H, W, C, k, self_add);
                  else
                    NALA_DISPATCH(dev, dwconv2d_backward, ptr_or_null(dx), ptr_or_null(dw), ptr_or_null(db),
                                  g.f32(), xs.f32(), ws.f32(), B, H, W, C, k, self_add ? g.f32() : nullptr);
                  if (self_add) return std::vector<Tensor>{dx, dw, db, Tensor()};  // dx holds d(add) = dout too
                  return std::vector<Tensor>{dx, dw, db, ga ? g : Tensor()};       // d(add) = dout
                });
}

namespace {

// h = gelu(pre) in pre's dtype (bf16: gelu of the value, rounded once).
Tensor gelu_of(const Tensor& pre) {
  Tensor h = Tensor::empty(pre.shape(), pre.dtype(), pre.device());
  detail::gelu_values(h, pre, "dwconv2d_gelu_add");
  return h;
}

// dpre, dw, db (each nullable) from g = d(h + dwconv(h)) and pre (the CUDA
// kernels make h = gelu(pre) themselves; the CPU's takes it made).
void gelu_dw_backward(const Tensor& dpre, const Tensor& dw, const Tensor& db, const Tensor& g, const Tensor& pre,
                      const Tensor& w, int64_t B, int64_t H, int64_t W, int64_t C, int64_t k) {
  const Device dev = pre.device();
#ifdef NALA_CUDA
  if (dev == Device::CUDA) {
    if (pre.dtype() == DType::F32) {
      ProfileScope prof("dwconv2d_gelu_backward", dev);
      cuda::dwconv2d_gelu_backward(ptr_or_null(dpre), ptr_or_null(dw), ptr_or_null(db), g.f32(), nullptr, pre.f32(),
                                   w.f32(), B, H, W, C, k);
    } else {
      ProfileScope prof("dwconv2d_gelu_backward_bf16", dev);
      cuda::dwconv2d_gelu_backward_bf16(dpre.defined() ? dpre.bf16() : nullptr, ptr_or_null(dw), ptr_or_null(db),
                                        g.bf16(), nullptr, pre.bf16(), w.f32(), B, H, W, C, k);
    }
    return;
  }
#endif
  const Tensor h = gelu_of(pre);
  if (pre.dtype() == DType::F32) {
    NALA_DISPATCH(dev, dwconv2d_gelu_backward, ptr_or_null(dpre), ptr_or_null(dw), ptr_or_null(db), g.f32(), h.f32(),
                  pre.f32(), w.f32(), B, H, W, C, k);
    return;
  }
  const char* op = "dwconv2d_gelu_add";
  Tensor gf = detail::cast_values(g, DType::F32, op), hf = detail::cast_values(h, DType::F32, op);
  Tensor pf = detail::cast_values(pre, DType::F32, op);
  Tensor df = dpre.defined() ? Tensor::empty(dpre.shape(), DType::F32, dev) : Tensor();
  cpu::dwconv2d_gelu_backward(ptr_or_null(df), ptr_or_null(dw), ptr_or_null(db), gf.f32(), hf.f32(), pf.f32(),
                              w.f32(), B, H, W, C, k);
  if (df.defined()) cpu::cast_f32_bf16(dpre.bf16(), df.f32(), df.numel());
}

}  // namespace

Tensor dwconv2d_gelu_add(const Tensor& pre_, const Tensor& w_, const Tensor& bias_) {
  const char* op = "dwconv2d_gelu_add";
  const int64_t k = check_depthwise(op, pre_, w_, bias_);
  const int64_t B = pre_.size(0), H = pre_.size(1), W = pre_.size(2), C = pre_.size(3);
  const Device dev = common_device(op, {&pre_, &w_, &bias_});
  Tensor pre = view::contiguous(pre_), w = view::contiguous(w_);
  Tensor bias = bias_.defined() ? view::contiguous(bias_) : Tensor();
  Tensor out = Tensor::empty({B, H, W, C}, pre.dtype(), dev);
  {
    const Tensor h = gelu_of(pre);  // freed on return: pre is what backward keeps
    if (pre.dtype() == DType::BF16)
      dw_forward_bf16(out, h, w, bias, h, B, H, W, C, k);
    else
      NALA_DISPATCH(dev, dwconv2d_add_forward, out.f32(), h.f32(), w.f32(), ptr_or_null(bias), h.f32(), B, H, W, C,
                    k);
  }
  if (!needs_grad({&pre_, &w_, &bias_})) return out;
  // Saved: pre and the taps; backward makes h = gelu(pre) again for the taps' gradient
  // (on the GPU inside the pass that makes pre's gradient).
  return record(OpId::dwconv2d_gelu_add, out, {pre_, w_, bias_},
                [ps = pre.detach(), ws = w.detach(), B, H, W, C, k, dev, gp = pre_.requires_grad(),
                 gw = w_.requires_grad(), gb = bias_.defined() && bias_.requires_grad()](const Tensor& gout) {
                  Tensor g = detail::cast_values(gout, ps.dtype(), "dwconv2d_gelu_add");  // contiguous
                  Tensor dpre = grad_like(ps, gp), dw = grad_like(ws, gw);
                  Tensor db = gb ? Tensor::empty({C}, DType::F32, dev) : Tensor();
                  gelu_dw_backward(dpre, dw, db, g, ps, ws, B, H, W, C, k);
                  return std::vector<Tensor>{dpre, dw, db};
                });
}

Tensor conv2d_affine(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& scale, const Tensor& shift,
                     bool gelu_after, int stride, int pad) {
  const char* op = "conv2d_affine";
  NALA_CHECK(!needs_grad({&x, &w, &bias, &scale, &shift}), op,
             ": inference only (no gradient flows through it): an input requires grad");
  NALA_CHECK(w.defined() && w.dim() == 4, op, ": weight ", w.desc(), " must be (Cout, Cin, k, k)");
  const int64_t Co = w.size(0);
  for (const Tensor* t : {&scale, &shift}) {
    NALA_CHECK(t->defined() && t->dtype() == DType::F32 && t->dim() == 1 && t->size(0) == Co, op, ": scale ",
               scale.desc(), " and shift ", shift.desc(), " must be f32 of shape [", Co, "]");
  }
#ifdef NALA_CUDA
  if (x.device() == Device::CUDA && x.dim() == 4 && x.dtype() == DType::F32 && w.dtype() == DType::F32 &&
      x.size(3) == w.size(1) && w.size(2) == w.size(3) && (!bias.defined() || bias.dtype() == DType::F32) &&
      common_device(op, {&x, &w, &bias, &scale, &shift}) == Device::CUDA) {
    const int64_t B = x.size(0), H = x.size(1), W = x.size(2), Ci = x.size(3), k = w.size(2);
    if (stride >= 1 && pad >= 0 && H + 2 * pad >= k && W + 2 * pad >= k) {
      Tensor xc = view::contiguous(x), wc = view::contiguous(w), bc = bias.defined() ? view::contiguous(bias) : Tensor();
      Tensor sc = view::contiguous(scale), sh = view::contiguous(shift);
      const int64_t Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
      Tensor out = Tensor::empty({B, Ho, Wo, Co}, DType::F32, Device::CUDA);
      ProfileScope prof("conv2d_affine_forward", Device::CUDA);
      if (cuda::conv2d_affine_forward(out.f32(), xc.f32(), wc.f32(), ptr_or_null(bc), sc.f32(), sh.f32(), gelu_after,
                                      B, H, W, Ci, Co, k, stride, pad))
        return out;
    }
  }
#endif
  // Elsewhere the three passes: the convolution, the affine map (BatchNorm's
  // forward with mean 0 and rstd 1: y scale + shift exactly), GELU.
  const Tensor y = conv2d(x, w, bias, stride, pad);
  const Device dev = y.device();
  NALA_CHECK(scale.device() == dev && shift.device() == dev, op, ": scale ", scale.desc(), " and shift ",
             shift.desc(), " must be on the convolution's device");
  Tensor out = Tensor::empty(y.shape(), DType::F32, dev);
  Tensor zero = Tensor::full({Co}, 0.0f, dev), one = Tensor::full({Co}, 1.0f, dev);
  Tensor sc = view::contiguous(scale), sh = view::contiguous(shift);
  NALA_DISPATCH(dev, batchnorm_forward, out.f32(), y.f32(), zero.f32(), one.f32(), sc.f32(), sh.f32(),
                y.numel() / std::max<int64_t>(Co, 1), Co, 1);
  if (gelu_after) NALA_DISPATCH(dev, gelu_forward, out.f32(), out.f32(), out.numel());
  return out;
}

}  // namespace nala
