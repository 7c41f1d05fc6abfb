// autograd/ops_shape.cpp - differentiable shape ops: reshape, permute,
// transpose, narrow, expand, contiguous, concat, split, chunk.
//
// reshape, permute, narrow and expand return views that share the input's
// storage (reshape copies only when the input is not contiguous). The
// gradients of reshape and contiguous are the incoming gradient itself (a
// view of it) when it is contiguous, the others fresh contiguous tensors;
// the engine copies a shared gradient before it adds into it in place
// (autograd.cpp). narrow also gives the engine a ScatterFn (autograd.h):
// parts of one tensor add their gradients into one buffer, in place. split
// and chunk are narrows and record narrow; transpose records permute. Copies go through the strided
// copy kernel of the tensor's device (kernels/cpu/shape.h).
//
// Also defines the small tensor helpers the elementwise ops share
// (namespace detail, declared in autograd/ops_util.h).
#include <numeric>

#include "autograd/dispatch.h"
#include "autograd/ops.h"
#include "autograd/ops_util.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/shape.h"
#include "tensor/device.h"
#ifdef NALA_CUDA
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/shape.h"
#endif

namespace nala {
namespace detail {

Tensor zeros_on(const Shape& shape, Device device) {
  Tensor t = Tensor::empty(shape, DType::F32, device);
  NALA_DISPATCH(device, fill, t.f32(), 0.0f, t.numel());
  return t;
}

void copy_into(const Tensor& dst, const Tensor& src, const char* op) {
  NALA_CHECK(dst.shape() == src.shape(), op, ": copy of ", src.desc(), " into ", dst.desc());
  if (src.numel() == 0) return;
  Layout L = make_layout(src.shape(), dst.strides(), src.strides(), {}, op);
  NALA_DISPATCH(src.device(), copy_strided, dst.f32(), src.f32(), L);
}

void add_into(const Tensor& dst, const Tensor& src, const char* op) {
  NALA_CHECK(dst.shape() == src.shape(), op, ": sum of ", src.desc(), " into ", dst.desc());
  if (src.numel() == 0) return;
  Layout L = make_layout(src.shape(), dst.strides(), dst.strides(), src.strides(), op);
  NALA_DISPATCH(src.device(), binary_forward, BinaryOp::Add, dst.f32(), dst.f32(), src.f32(), L);  // elementwise: in place is safe
}

// A bf16 copy into the contiguous `out` as 4-byte pairs, through the float
// copy kernel (it moves bits, never computes on them): where g's last dim is
// contiguous with an even length and every other stride and the offset are
// even (a head split or merge, (B, N, h, d) <-> (B, h, N, d)). False when it
// does not apply.
static bool copy_bf16_pairs(const Tensor& out, const Tensor& g, const char* op) {
  const Shape& sh = g.shape();
  const Shape& st = g.strides();
  if (dtype_size(g.dtype()) != 2 || sh.empty() || st.back() != 1 || sh.back() % 2 != 0 || g.offset() % 2 != 0 ||
      reinterpret_cast<uintptr_t>(g.raw()) % 4 != 0 || reinterpret_cast<uintptr_t>(out.raw()) % 4 != 0)
    return false;
  Shape size = sh, sa = st;
  for (size_t i = 0; i + 1 < st.size(); i++) {
    if (st[i] % 2 != 0) return false;
    sa[i] = st[i] / 2;
  }
  size.back() /= 2;
  Layout L = make_layout(size, contiguous_strides(size), sa, {}, op);
  NALA_DISPATCH(g.device(), copy_strided, static_cast<float*>(out.raw()), static_cast<const float*>(g.raw()), L);
  return true;
}

Tensor fresh_copy(const Tensor& g, const Shape& shape, const char* op) {
  NALA_CHECK(shape_numel(shape) == g.numel(), op, ": copy of ", g.desc(), " as ", shape_str(shape));
  if (g.dtype() != DType::F32) {  // bf16 gradients: an element copy (on the GPU a kernel, never a cudaMemcpy)
    Tensor out = Tensor::empty(g.shape(), g.dtype(), g.device());
    if (g.device() == Device::CPU) {
      out.copy_(g);
    } else if (g.numel() > 0 && !copy_bf16_pairs(out, g, op)) {
      const Shape os = out.strides(), gs = g.strides(), sh = g.shape();
      device::strided_copy(out.raw(), os.data(), g.raw(), gs.data(), sh.data(), (int)sh.size(), dtype_size(g.dtype()));
    }
    return view::reshape(out, shape);
  }
  Tensor out = Tensor::empty(shape, DType::F32, g.device());
  if (g.numel() == 0) return out;
  Layout L = make_layout(g.shape(), contiguous_strides(g.shape()), g.strides(), {}, op);
  NALA_DISPATCH(g.device(), copy_strided, out.f32(), g.f32(), L);
  return out;
}

Tensor contig(const Tensor& x, const char* op) {
  if (x.is_contiguous()) return x;
  if (x.dtype() != DType::F32) return view::contiguous(x);
  return fresh_copy(x, x.shape(), op);
}

Tensor sum_to_shape(const Tensor& g, const Shape& target, const char* op) {
  if (g.shape() == target) return fresh_copy(g, target, op);
  Tensor out = Tensor::empty(target, DType::F32, g.device());
  if (g.numel() == 0) {
    NALA_DISPATCH(g.device(), fill, out.f32(), 0.0f, out.numel());
    return out;
  }
  Tensor gc = contig(g, op);
  Layout L = make_layout(gc.shape(), broadcast_strides(gc.shape(), target, contiguous_strides(target)),
                         contiguous_strides(gc.shape()), {}, op);
  NALA_DISPATCH(g.device(), sum_to, out.f32(), gc.f32(), L);
  return out;
}

}  // namespace detail

using detail::contig;
using detail::fresh_copy;

Tensor reshape(const Tensor& x, const Shape& shape) {
  Tensor out = view::reshape(contig(x, "reshape"), shape);  // a view of x when x is contiguous
  Shape xs = x.shape();
  return record(OpId::reshape, out, {x}, [xs](const Tensor& g) -> std::vector<Tensor> {
    return {g.is_contiguous() ? view::reshape(g, xs) : fresh_copy(g, xs, "reshape")};
  });
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  Tensor out = view::permute(x, dims);  // checks dims
  std::vector<int64_t> inv(dims.size());
  for (size_t i = 0; i < dims.size(); i++) inv[wrap_dim(dims[i], x.dim(), "permute")] = (int64_t)i;
  Shape xs = x.shape();
  return record(OpId::permute, out, {x}, [xs, inv](const Tensor& g) -> std::vector<Tensor> {
    return {fresh_copy(view::permute(g, inv), xs, "permute")};
  });
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  std::vector<int64_t> dims(x.dim());
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[wrap_dim(d0, x.dim(), "transpose")], dims[wrap_dim(d1, x.dim(), "transpose")]);
  return permute(x, dims);
}

// The gradients of narrow and expand are sums in f32: a bf16 input that
// needs a gradient is refused here, by name, rather than in backward.
static void check_grad_f32(const char* op, const Tensor& x) {
  NALA_CHECK(x.dtype() == DType::F32 || !x.requires_grad(), op, ": the gradient of ", x.desc(),
             " is not supported (f32 only; cast to f32 first)");
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  check_grad_f32("narrow", x);
  Tensor out = view::narrow(x, dim, start, length);  // checks the range
  int64_t d = wrap_dim(dim, x.dim(), "narrow");
  Shape xs = x.shape();
  Device dev = x.device();
  // g added into the slice of x's gradient so far (zeros when there is none):
  // the engine calls this directly (see autograd.h, ScatterFn); the backward
  // function is the same from nothing.
  ScatterFn scatter = [xs, dev, d, start, length](Tensor& slot, const Tensor& g) {
    if (!slot.defined()) {
      slot = detail::zeros_on(xs, dev);
      detail::copy_into(view::narrow(slot, d, start, length), g, "narrow");
    } else {
      detail::add_into(view::narrow(slot, d, start, length), g, "narrow");
    }
  };
  out = record(OpId::narrow, out, {x}, [scatter](const Tensor& g) -> std::vector<Tensor> {
    Tensor gx;
    scatter(gx, g);
    return {gx};
  });
  if (out.grad_fn()) out.grad_fn()->scatter = scatter;
  return out;
}

Tensor expand(const Tensor& x, const Shape& shape) {
  check_grad_f32("expand", x);
  Tensor out = view::expand(x, shape);  // checks the shapes
  Shape xs = x.shape();
  return record(OpId::expand, out, {x}, [xs](const Tensor& g) -> std::vector<Tensor> {
    return {detail::sum_to_shape(g, xs, "expand")};
  });
}

Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  Tensor out = fresh_copy(x, x.shape(), "contiguous");  // f32 or bf16, no cudaMemcpy
  Shape xs = x.shape();
  return record(OpId::contiguous, out, {x}, [xs](const Tensor& g) -> std::vector<Tensor> {
    return {g.is_contiguous() ? g : fresh_copy(g, xs, "contiguous")};
  });
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  NALA_CHECK(!xs.empty(), "concat: no tensors to concatenate");
  const Tensor& x0 = xs[0];
  int64_t d = wrap_dim(dim, x0.dim(), "concat");
  Shape os = x0.shape();
  os[d] = 0;
  for (const Tensor& x : xs) {
    NALA_CHECK(x.dtype() == DType::F32, "concat: expected f32 tensors, got ", x.desc());
    NALA_CHECK(x.device() == x0.device(), "concat: inputs on different devices (", x0.desc(), " and ", x.desc(),
               ")");
    bool ok = x.dim() == x0.dim();
    for (int64_t k = 0; ok && k < x.dim(); k++) ok = k == d || x.shape()[k] == x0.shape()[k];
    NALA_CHECK(ok, "concat: shapes ", x0.desc(), " and ", x.desc(), " differ outside dim ", d);
    os[d] += x.shape()[d];
  }
  Tensor out = Tensor::empty(os, DType::F32, x0.device());
  std::vector<int64_t> starts;
  int64_t at = 0;
  for (const Tensor& x : xs) {
    starts.push_back(at);
    detail::copy_into(view::narrow(out, d, at, x.shape()[d]), x, "concat");
    at += x.shape()[d];
  }
  std::vector<Shape> shapes;
  for (const Tensor& x : xs) shapes.push_back(x.shape());
  return record(OpId::concat, out, xs, [d, starts, shapes](const Tensor& g) -> std::vector<Tensor> {
    std::vector<Tensor> gs;
    for (size_t i = 0; i < shapes.size(); i++)
      gs.push_back(fresh_copy(view::narrow(g, d, starts[i], shapes[i][d]), shapes[i], "concat"));
    return gs;
  });
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  int64_t d = wrap_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    NALA_CHECK(s >= 0, "split: negative size in ", shape_str(sizes), " for ", x.desc());
    total += s;
  }
  NALA_CHECK(total == x.shape()[d], "split: sizes ", shape_str(sizes), " do not add up to dim ", d, " of ",
             x.desc());
  std::vector<Tensor> parts;
  int64_t at = 0;
  for (int64_t s : sizes) {
    parts.push_back(narrow(x, d, at, s));
    at += s;
  }
  return parts;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t n, int64_t dim) {
  int64_t d = wrap_dim(dim, x.dim(), "chunk");
  NALA_CHECK(n > 0 && x.shape()[d] % n == 0, "chunk: dim ", d, " of ", x.desc(), " (size ", x.shape()[d],
             ") does not divide into ", n, " equal chunks");
  return split(x, std::vector<int64_t>(n, x.shape()[d] / n), d);
}

}  // namespace nala
