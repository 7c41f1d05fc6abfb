// autograd/ops_elementwise.cpp - differentiable elementwise ops: the
// broadcasting binary ops (add, sub, mul, div, pow), the scalar-parameter ops
// (scale, add_scalar) and the unary activations and functions.
//
// Binary ops: the output shape is broadcast_shapes(a, b) (numpy rules); the
// kernels read a and b in place through a Layout (any strides, 0 on
// broadcast dims), so no broadcast copy is made. Backward computes each
// input's gradient in the output's shape and, when that input was broadcast,
// sums it down to the input's shape (sum_to). add/sub skip the first step.
//
// pow(x, p) requires x >= 0 (checked in debug builds): x^p for negative x and
// non-integer p is NaN. Its partials are defined as exactly 0 at x == 0
// (docs/SPEC.md §7), so ln 0 never reaches a gradient. sqrt's gradient is
// infinite at 0, as in the math.
#include "autograd/dispatch.h"
#include "autograd/ops.h"
#include "autograd/ops_util.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/shape.h"
#ifdef NALA_CUDA
#include "kernels/cuda/elementwise.h"
#endif

namespace nala {

using detail::contig;

namespace {

void check_f32(const char* op, const Tensor& x) {
  NALA_CHECK(x.defined(), op, ": undefined input");
  NALA_CHECK(x.dtype() == DType::F32, op, ": expected an f32 tensor, got ", x.desc());
}

Tensor binary(BinaryOp bop, OpId id, const Tensor& a, const Tensor& b) {
  const char* name = op_name(id);
  check_f32(name, a);
  check_f32(name, b);
  Device dev = common_device(name, {&a, &b});
  Shape os = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(os, DType::F32, dev);
  Layout L = make_layout(os, contiguous_strides(os), broadcast_strides(os, a.shape(), a.strides()),
                         broadcast_strides(os, b.shape(), b.strides()), name);
#ifndef NDEBUG
  if (bop == BinaryOp::Pow && dev == Device::CPU)
    for (float v : a.to_vector()) NALA_CHECK(v >= 0.0f, "pow: the base must be >= 0, found ", v, " in ", a.desc());
#endif
  if (out.numel()) NALA_DISPATCH(dev, binary_forward, bop, out.f32(), a.f32(), b.f32(), L);
  if (!needs_grad({&a, &b})) return out;

  bool need_a = a.requires_grad(), need_b = b.requires_grad();
  Shape as = a.shape(), bs = b.shape();
  Tensor sa = a.detach(), sb = b.detach();  // read by mul, div, pow
  if (bop == BinaryOp::Add || bop == BinaryOp::Sub) sa = sb = Tensor();
  // Captures shapes and detached inputs only: never a or b themselves (their
  // history must be released through the node, see autograd.h).
  return record(id, out, {a, b}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor gc = contig(g, name);
    Tensor ga, gb;
    if (bop == BinaryOp::Add || bop == BinaryOp::Sub) {
      // An input of the output's shape gets the incoming gradient itself, no
      // copy (the engine copies on write: autograd.cpp, add_grad_interior).
      if (need_a) ga = as == os ? gc : detail::sum_to_shape(gc, as, name);
      if (need_b) {
        if (bop == BinaryOp::Add) {
          gb = bs == os ? gc : detail::sum_to_shape(gc, bs, name);
        } else if (bs == os) {
          gb = Tensor::empty(bs, DType::F32, dev);
          if (gb.numel()) NALA_DISPATCH(dev, scale_forward, gb.f32(), gc.f32(), -1.0f, gb.numel());
        } else {
          gb = detail::sum_to_shape(gc, bs, name);
          NALA_DISPATCH(dev, scale_forward, gb.f32(), gb.f32(), -1.0f, gb.numel());
        }
      }
      return {ga, gb};
    }
    // Gradients in the output's shape, then summed down where broadcast.
    Tensor fa = need_a ? Tensor::empty(os, DType::F32, dev) : Tensor();
    Tensor fb = need_b ? Tensor::empty(os, DType::F32, dev) : Tensor();
    if (gc.numel())
      NALA_DISPATCH(dev, binary_backward, bop, need_a ? fa.f32() : nullptr, need_b ? fb.f32() : nullptr, gc.f32(),
                    sa.f32(), sb.f32(), L);
    if (need_a) ga = as == os ? fa : detail::sum_to_shape(fa, as, name);
    if (need_b) gb = bs == os ? fb : detail::sum_to_shape(fb, bs, name);
    return {ga, gb};
  });
}

// One unary op: out = fwd(x); dx = bwd(dout, saved), where saved is x or the
// output y (see kernels/cpu/elementwise.h for which).
enum class Saves { Input, Output };

template <class Fwd, class Bwd>
Tensor unary(OpId id, const Tensor& x, Saves saves, Fwd fwd, Bwd bwd) {
  const char* name = op_name(id);
  check_f32(name, x);
  Device dev = x.device();
  Tensor xc = contig(x, name);
  Tensor out = Tensor::empty(x.shape(), DType::F32, dev);
  int64_t n = out.numel();
  fwd(dev, out.f32(), xc.f32(), n);
  if (!needs_grad({&x})) return out;
  Tensor saved = saves == Saves::Input ? xc.detach() : out.detach();
  return record(id, out, {x}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor gc = contig(g, name);
    Tensor gx = Tensor::empty(saved.shape(), DType::F32, dev);
    bwd(dev, gx.f32(), gc.f32(), saved.f32(), n);
    return {gx};
  });
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Add, OpId::add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Sub, OpId::sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Mul, OpId::mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Div, OpId::div, a, b); }
Tensor pow(const Tensor& x, const Tensor& p) { return binary(BinaryOp::Pow, OpId::pow, x, p); }

Tensor scale_add(const Tensor& x, const Tensor& y, const Tensor& gamma) {
  const char* name = "scale_add";
  check_f32(name, x);
  check_f32(name, y);
  check_f32(name, gamma);
  Device dev = common_device(name, {&x, &y, &gamma});
  NALA_CHECK(x.dim() >= 1 && x.shape() == y.shape() && gamma.dim() == 1 && gamma.size(0) == x.size(-1), name,
             ": x ", x.desc(), ", y ", y.desc(), " and gamma ", gamma.desc(),
             ": expected x and y of one shape and gamma of their last dim");
  const Shape os = x.shape();
  const int64_t C = gamma.size(0), R = C > 0 ? x.numel() / C : 0;
  Tensor xc = contig(x, name), yc = contig(y, name), gc = contig(gamma, name);
  Tensor out = Tensor::empty(os, DType::F32, dev);
  if (out.numel()) NALA_DISPATCH(dev, scale_add_forward, out.f32(), xc.f32(), yc.f32(), gc.f32(), R, C);
  if (!needs_grad({&x, &y, &gamma})) return out;
  const bool need_x = x.requires_grad(), need_y = y.requires_grad(), need_g = gamma.requires_grad();
  Tensor sy = yc.detach(), sg = gc.detach();  // mul's backward reads both (as mul(y, gamma) saves them)
  return record(OpId::scale_add, out, {x, y, gamma}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor gcont = contig(g, name);
    Tensor gx = need_x ? gcont : Tensor();  // passed on without a copy (the engine copies on write)
    auto [dy, dgamma] = detail::scale_grads(gcont, sy, sg, need_y, need_g, name);
    return {gx, dy, dgamma};
  });
}

std::pair<Tensor, Tensor> detail::scale_grads(const Tensor& g, const Tensor& y, const Tensor& gamma, bool need_y,
                                              bool need_gamma, const char* op) {
  const Shape& os = y.shape();
  const Device dev = y.device();
  const int64_t C = gamma.numel();
  // mul's backward of y * gamma, gamma broadcast over the rows; gamma's summed down
  Tensor fy = need_y ? Tensor::empty(os, DType::F32, dev) : Tensor();
  Tensor fg = need_gamma ? Tensor::empty(os, DType::F32, dev) : Tensor();
  const Layout L = make_layout(os, contiguous_strides(os), contiguous_strides(os), broadcast_strides(os, {C}, {1}), op);
  if (g.numel() && (need_y || need_gamma))
    NALA_DISPATCH(dev, binary_backward, BinaryOp::Mul, need_y ? fy.f32() : nullptr, need_gamma ? fg.f32() : nullptr,
                  g.f32(), y.f32(), gamma.f32(), L);
  return {fy, need_gamma ? sum_to_shape(fg, {C}, op) : Tensor()};
}

namespace detail {
Tensor cast_values(const Tensor& x, DType to, const char* op) {
  const DType from = x.dtype();
  NALA_CHECK((from == DType::F32 || from == DType::BF16) && (to == DType::F32 || to == DType::BF16), op,
             ": casts between f32 and bf16 only, got ", x.desc(), " to ", dtype_name(to));
  Tensor xc = contig(x, op);
  if (from == to) return xc;
  Tensor out = Tensor::empty(x.shape(), to, x.device());
  if (to == DType::BF16) NALA_DISPATCH(x.device(), cast_f32_bf16, out.bf16(), xc.f32(), out.numel());
  else NALA_DISPATCH(x.device(), cast_bf16_f32, out.f32(), xc.bf16(), out.numel());
  return out;
}

void gelu_values(const Tensor& out, const Tensor& x, const char* op) {
  const Device dev = x.device();
  if (x.dtype() == DType::F32) {
    NALA_DISPATCH(dev, gelu_forward, out.f32(), x.f32(), out.numel());
    return;
  }
#ifdef NALA_CUDA
  if (dev == Device::CUDA) {
    ProfileScope prof("gelu_forward_bf16", dev);
    cuda::gelu_forward_bf16(out.bf16(), x.bf16(), out.numel());
    return;
  }
#endif
  Tensor f = cast_values(x, DType::F32, op);
  NALA_DISPATCH(dev, gelu_forward, f.f32(), f.f32(), f.numel());
  NALA_DISPATCH(dev, cast_f32_bf16, out.bf16(), f.f32(), f.numel());
}
}  // namespace detail

Tensor cast(const Tensor& x, DType to) {
  NALA_CHECK(x.defined(), "cast: undefined input");
  const DType from = x.dtype();
  if (from == to) return x;
  Tensor out = detail::cast_values(x, to, "cast");
  return record(OpId::cast, out, {x}, [from](const Tensor& g) -> std::vector<Tensor> {
    return {detail::cast_values(g, from, "cast")};
  });
}

Tensor scale(const Tensor& x, float s) {
  check_f32("scale", x);
  Device dev = x.device();
  Tensor xc = contig(x, "scale");
  Tensor out = Tensor::empty(x.shape(), DType::F32, dev);
  NALA_DISPATCH(dev, scale_forward, out.f32(), xc.f32(), s, out.numel());
  return record(OpId::scale, out, {x}, [dev, s](const Tensor& g) -> std::vector<Tensor> {
    Tensor gc = contig(g, "scale");
    Tensor gx = Tensor::empty(g.shape(), DType::F32, dev);
    NALA_DISPATCH(dev, scale_forward, gx.f32(), gc.f32(), s, gx.numel());
    return {gx};
  });
}

Tensor add_scalar(const Tensor& x, float s) {
  check_f32("add_scalar", x);
  Device dev = x.device();
  Tensor xc = contig(x, "add_scalar");
  Tensor out = Tensor::empty(x.shape(), DType::F32, dev);
  NALA_DISPATCH(dev, add_scalar_forward, out.f32(), xc.f32(), s, out.numel());
  return record(OpId::add_scalar, out, {x}, [](const Tensor& g) -> std::vector<Tensor> {
    return {g};  // passed on without a copy (the engine copies on write)
  });
}

// The unary ops differ only in their kernels and what they save.
#define NALA_UNARY_OP(name, saves)                                                                   \
  Tensor name(const Tensor& x) {                                                                     \
    return unary(                                                                                    \
        OpId::name, x, saves,                                                                        \
        [](Device d, float* o, const float* v, int64_t n) { NALA_DISPATCH(d, name##_forward, o, v, n); }, \
        [](Device d, float* dx, const float* g, const float* s, int64_t n) {                         \
          NALA_DISPATCH(d, name##_backward, dx, g, s, n);                                            \
        });                                                                                          \
  }

NALA_UNARY_OP(sqrt, Saves::Output)
NALA_UNARY_OP(cube, Saves::Input)
NALA_UNARY_OP(relu, Saves::Input)
NALA_UNARY_OP(gelu, Saves::Input)
NALA_UNARY_OP(silu, Saves::Input)
NALA_UNARY_OP(tanh, Saves::Output)
NALA_UNARY_OP(sigmoid, Saves::Output)
NALA_UNARY_OP(exp, Saves::Output)
NALA_UNARY_OP(log, Saves::Input)
NALA_UNARY_OP(sin, Saves::Input)
NALA_UNARY_OP(cos, Saves::Input)
NALA_UNARY_OP(elu, Saves::Output)
#undef NALA_UNARY_OP

}  // namespace nala
