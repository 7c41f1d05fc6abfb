// autograd/ops_reduce.cpp - sum, mean, l2norm, global_avg_pool, softmax,
// log_softmax and cross_entropy: checks, kernel dispatch and tape records.
//
// Every reduction is computed on a contiguous (O, R, I) view of its input
// (letters in kernels/cpu/reduce.h): O the kept dims before the reduced
// block, R the reduced dims, I the kept dims after. Reduced dims that are not
// adjacent are first permuted to the end (a copy), so O holds every kept dim
// and I = 1; the gradient is permuted back the same way.
//
// Conventions: dims may be negative; a dim listed twice is an error, and so is
// an empty dim list (use sum(x) / mean(x) for every element).
// l2norm's gradient is x / n where n > floor and 0 where the floor is
// active (so an all-zero row gives n = floor and a zero gradient, never NaN).
#include <algorithm>
#include <cmath>

#include "autograd/dispatch.h"
#include "autograd/ops.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/reduce.h"
#ifdef NALA_CUDA
#include "kernels/cuda/loss.h"
#include "kernels/cuda/reduce.h"
#endif

namespace nala {

namespace {

void check_f32(const char* op, const Tensor& x) {
  NALA_CHECK(x.defined(), op, ": undefined input tensor");
  NALA_CHECK(x.dtype() == DType::F32, op, ": expected an f32 tensor, got ", x.desc());
}

// How a reduction over `dims` (already wrapped, any order) sees x.
struct ReducePlan {
  int64_t O = 1, R = 1, I = 1;
  std::vector<int64_t> perm;  // empty: x is used as it is; else permute x by it first
  Shape perm_shape;           // x's shape after the permute
  Shape out_shape;
};

ReducePlan plan_reduce(const char* op, const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  const int64_t nd = x.dim();
  std::vector<int64_t> dims;
  for (int64_t d : dims_in) dims.push_back(wrap_dim(d, nd, op));
  std::sort(dims.begin(), dims.end());
  for (size_t i = 1; i < dims.size(); i++)
    NALA_CHECK(dims[i] != dims[i - 1], op, ": dim ", dims[i], " repeated in the dims of ", x.desc());
  std::vector<bool> red(nd, false);
  for (int64_t d : dims) red[d] = true;

  ReducePlan p;
  const Shape& s = x.shape();
  for (int64_t d = 0; d < nd; d++) {
    if (!red[d]) p.out_shape.push_back(s[d]);
    else if (keepdim) p.out_shape.push_back(1);
  }
  const bool adjacent = dims.empty() || dims.back() - dims.front() + 1 == (int64_t)dims.size();
  if (adjacent) {
    const int64_t first = dims.empty() ? nd : dims.front(), last = dims.empty() ? nd - 1 : dims.back();
    for (int64_t d = 0; d < first; d++) p.O *= s[d];
    for (int64_t d = first; d <= last; d++) p.R *= s[d];
    for (int64_t d = last + 1; d < nd; d++) p.I *= s[d];
    return p;
  }
  for (int64_t d = 0; d < nd; d++)
    if (!red[d]) p.perm.push_back(d), p.O *= s[d];
  for (int64_t d : dims) p.perm.push_back(d), p.R *= s[d];
  for (int64_t d : p.perm) p.perm_shape.push_back(s[d]);
  return p;
}

// The contiguous (O, R, I) input of a plan.
Tensor plan_input(const ReducePlan& p, const Tensor& x) {
  return view::contiguous(p.perm.empty() ? x : view::permute(x, p.perm));
}

// A gradient computed in the plan's layout, returned in x's layout.
Tensor plan_unpermute(const ReducePlan& p, const Tensor& g) {
  if (p.perm.empty()) return g;
  std::vector<int64_t> inv(p.perm.size());
  for (size_t i = 0; i < p.perm.size(); i++) inv[p.perm[i]] = (int64_t)i;
  return view::contiguous(view::permute(g, inv));
}

// O, R, I for a reduction (or softmax) along one dim.
void split_at(const Tensor& x, int64_t d, int64_t& O, int64_t& R, int64_t& I) {
  O = R = I = 1;
  for (int64_t i = 0; i < x.dim(); i++) (i < d ? O : i == d ? R : I) *= x.shape()[i];
}

Tensor sum_or_mean(const char* op, OpId id, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim,
                   bool mean) {
  check_f32(op, x);
  const Device dev = x.device();
  ReducePlan p = plan_reduce(op, x, dims, keepdim);
  const float alpha = mean ? 1.0f / (float)p.R : 1.0f;
  Tensor xc = plan_input(p, x);
  Tensor out = Tensor::empty(p.out_shape, DType::F32, dev);
  NALA_DISPATCH(dev, reduce_sum, out.f32(), xc.f32(), p.O, p.R, p.I, alpha);
  Shape xshape = x.shape();
  return record(id, out, {x}, [p, alpha, xshape, dev](const Tensor& gout) -> std::vector<Tensor> {
    Tensor g = view::contiguous(gout);
    Tensor gx = Tensor::empty(p.perm.empty() ? xshape : p.perm_shape, DType::F32, dev);
    NALA_DISPATCH(dev, reduce_sum_backward, gx.f32(), g.f32(), p.O, p.R, p.I, alpha);
    return {plan_unpermute(p, gx)};
  });
}

std::vector<int64_t> all_dims(const Tensor& x) {
  std::vector<int64_t> d(x.dim());
  for (int64_t i = 0; i < x.dim(); i++) d[i] = i;
  return d;
}

}  // namespace

// ---- sum, mean -------------------------------------------------------------

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  NALA_CHECK(!dims.empty(), "sum: no dims given for ", x.desc(), " (use sum(x) to sum every element)");
  return sum_or_mean("sum", OpId::sum, x, dims, keepdim, false);
}
Tensor sum(const Tensor& x) { return sum_or_mean("sum", OpId::sum, x, all_dims(x), false, false); }

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  NALA_CHECK(!dims.empty(), "mean: no dims given for ", x.desc(), " (use mean(x) to average every element)");
  return sum_or_mean("mean", OpId::mean, x, dims, keepdim, true);
}
Tensor mean(const Tensor& x) { return sum_or_mean("mean", OpId::mean, x, all_dims(x), false, true); }

// ---- l2norm ------------------------------------------------------------------

Tensor l2norm(const Tensor& x, int64_t dim, bool keepdim, float floor) {
  check_f32("l2norm", x);
  NALA_CHECK(floor >= 0.0f && std::isfinite(floor), "l2norm: floor must be finite and >= 0, got ", floor);
  const Device dev = x.device();
  const int64_t d = wrap_dim(dim, x.dim(), "l2norm");
  int64_t O, R, I;
  split_at(x, d, O, R, I);
  Shape out_shape = x.shape();
  if (keepdim) out_shape[d] = 1;
  else out_shape.erase(out_shape.begin() + d);
  // detach: the backward closure must not hold x's history (the tape frees
  // chains iteratively only through Node::inputs).
  Tensor xc = view::contiguous(x).detach();
  Tensor out = Tensor::empty(out_shape, DType::F32, dev);
  NALA_DISPATCH(dev, l2norm_forward, out.f32(), xc.f32(), O, R, I, floor);
  Tensor y = out.detach();
  return record(OpId::l2norm, out, {x}, [xc, y, O, R, I, floor, dev](const Tensor& gout) -> std::vector<Tensor> {
    Tensor g = view::contiguous(gout);
    Tensor gx = Tensor::empty(xc.shape(), DType::F32, dev);
    NALA_DISPATCH(dev, l2norm_backward, gx.f32(), g.f32(), xc.f32(), y.f32(), O, R, I, floor);
    return {gx};
  });
}

// ---- global_avg_pool -------------------------------------------------------
// (B, H, W, C) or (B, N, C) -> (B, C): O = B, R = H*W (or N), I = C.

Tensor global_avg_pool(const Tensor& x) {
  check_f32("global_avg_pool", x);
  NALA_CHECK(x.dim() == 3 || x.dim() == 4, "global_avg_pool: expected (B, H, W, C) or (B, N, C), got ", x.desc());
  const Device dev = x.device();
  const int64_t B = x.size(0), C = x.size(-1);
  int64_t R = 1;
  for (int64_t d = 1; d + 1 < x.dim(); d++) R *= x.shape()[d];
  NALA_CHECK(R > 0, "global_avg_pool: no tokens to average in ", x.desc());
  const float alpha = 1.0f / (float)R;
  Tensor xc = view::contiguous(x);
  Tensor out = Tensor::empty({B, C}, DType::F32, dev);
  NALA_DISPATCH(dev, reduce_sum, out.f32(), xc.f32(), B, R, C, alpha);
  Shape xshape = x.shape();
  return record(OpId::global_avg_pool, out, {x},
                [xshape, B, R, C, alpha, dev](const Tensor& gout) -> std::vector<Tensor> {
                  Tensor g = view::contiguous(gout);
                  Tensor gx = Tensor::empty(xshape, DType::F32, dev);
                  NALA_DISPATCH(dev, reduce_sum_backward, gx.f32(), g.f32(), B, R, C, alpha);
                  return {gx};
                });
}

// ---- softmax, log_softmax ----------------------------------------------------

Tensor softmax(const Tensor& x, int64_t dim) {
  check_f32("softmax", x);
  const Device dev = x.device();
  int64_t O, R, I;
  split_at(x, wrap_dim(dim, x.dim(), "softmax"), O, R, I);
  Tensor xc = view::contiguous(x);
  Tensor out = Tensor::empty(x.shape(), DType::F32, dev);
  NALA_DISPATCH(dev, softmax_forward, out.f32(), xc.f32(), O, R, I);
  Tensor y = out.detach();
  return record(OpId::softmax, out, {x}, [y, O, R, I, dev](const Tensor& gout) -> std::vector<Tensor> {
    Tensor g = view::contiguous(gout);
    Tensor gx = Tensor::empty(y.shape(), DType::F32, dev);
    NALA_DISPATCH(dev, softmax_backward, gx.f32(), g.f32(), y.f32(), O, R, I);
    return {gx};
  });
}

Tensor log_softmax(const Tensor& x, int64_t dim) {
  check_f32("log_softmax", x);
  const Device dev = x.device();
  int64_t O, R, I;
  split_at(x, wrap_dim(dim, x.dim(), "log_softmax"), O, R, I);
  Tensor xc = view::contiguous(x);
  Tensor out = Tensor::empty(x.shape(), DType::F32, dev);
  NALA_DISPATCH(dev, log_softmax_forward, out.f32(), xc.f32(), O, R, I);
  Tensor y = out.detach();
  return record(OpId::log_softmax, out, {x}, [y, O, R, I, dev](const Tensor& gout) -> std::vector<Tensor> {
    Tensor g = view::contiguous(gout);
    Tensor gx = Tensor::empty(y.shape(), DType::F32, dev);
    NALA_DISPATCH(dev, log_softmax_backward, gx.f32(), g.f32(), y.f32(), O, R, I);
    return {gx};
  });
}

// ---- cross_entropy -----------------------------------------------------------
// logits (B, K) f32, labels (B) i64 -> scalar. Saves the per-row logsumexp.

Tensor cross_entropy(const Tensor& logits, const Tensor& labels, float smoothing) {
  NALA_CHECK(logits.defined() && labels.defined(), "cross_entropy: undefined input tensor");
  NALA_CHECK(logits.dtype() == DType::F32 && logits.dim() == 2,
             "cross_entropy: logits must be f32 (B, K), got ", logits.desc());
  NALA_CHECK(labels.dtype() == DType::I64 && labels.dim() == 1,
             "cross_entropy: labels must be i64 (B), got ", labels.desc(), " for logits ", logits.desc());
  const int64_t B = logits.size(0), K = logits.size(1);
  NALA_CHECK(labels.size(0) == B, "cross_entropy: ", labels.size(0), " labels ", labels.desc(), " for logits ",
             logits.desc());
  NALA_CHECK(B > 0 && K > 0, "cross_entropy: empty logits ", logits.desc());
  NALA_CHECK(smoothing >= 0.0f && smoothing <= 1.0f, "cross_entropy: smoothing must be in [0, 1], got ",
             smoothing);
  const Device dev = common_device("cross_entropy", {&logits, &labels});
  Tensor z = view::contiguous(logits).detach();  // saved without history (see l2norm)
  Tensor lab = view::contiguous(labels).detach();
  Tensor lse = Tensor::empty({B}, DType::F32, dev);
  Tensor out = Tensor::empty({}, DType::F32, dev);
  int64_t bad[2] = {-1, 0};
  NALA_DISPATCH(dev, cross_entropy_forward, out.f32(), lse.f32(), z.f32(), lab.i64(), B, K, smoothing, bad);
  NALA_CHECK(bad[0] < 0, "cross_entropy: label ", bad[1], " at position ", bad[0], " is outside [0, ", K,
             ") for logits ", logits.desc());
  return record(OpId::cross_entropy, out, {logits, labels},
                [z, lab, lse, B, K, smoothing, dev](const Tensor& gout) -> std::vector<Tensor> {
                  Tensor g = view::contiguous(gout);
                  Tensor gz = Tensor::empty({B, K}, DType::F32, dev);
                  NALA_DISPATCH(dev, cross_entropy_backward, gz.f32(), g.f32(), z.f32(), lab.i64(), lse.f32(), B,
                                K, smoothing);
                  return {gz, Tensor()};
                });
}

}  // namespace nala
