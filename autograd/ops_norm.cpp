// autograd/ops_norm.cpp - layernorm and batchnorm: checks, dispatch, tape.
//
// Shape letters: x is viewed as (O, C, I) around the normalised / channel
// dimension `dim` (O = product of the sizes before it, I = after it), so one
// kernel serves the token layout (dim -1, I = 1) and the per-pixel / NCHW
// layout (dim 1 of (B, C, H, W), I = H*W). Backward saves x (contiguous),
// the weight, and the mean and rstd the forward pass used.
#include "autograd/dispatch.h"
#include "autograd/ops.h"
#include "kernels/cpu/norm.h"
#ifdef NALA_CUDA
#include "kernels/cuda/norm.h"
#endif

namespace nala {

namespace {

struct Dims {
  int64_t O = 1, C = 1, I = 1;
};

Dims split_at(const Tensor& x, int64_t d) {
  Dims r;
  for (int64_t j = 0; j < x.dim(); j++) {
    if (j < d) r.O *= x.size(j);
    else if (j > d) r.I *= x.size(j);
  }
  r.C = x.size(d);
  return r;
}

void check_vec(const char* op, const char* what, const Tensor& x, const Tensor& t, int64_t C, int64_t d) {
  if (!t.defined()) return;
  NALA_CHECK(t.dtype() == DType::F32, op, ": ", what, " must be f32, got ", t.desc());
  NALA_CHECK(t.dim() == 1 && t.size(0) == C, op, ": input ", x.desc(), " and ", what, " ", t.desc(),
             ": expected shape [", C, "] (size of dim ", d, ")");
}

float* ptr_or_null(const Tensor& t) { return t.defined() ? t.f32() : nullptr; }
Tensor contig_or_undef(const Tensor& t) { return t.defined() ? view::contiguous(t).detach() : Tensor(); }

}  // namespace

Tensor layernorm(const Tensor& x_, const Tensor& weight_, const Tensor& bias_, float eps, int64_t dim) {
  const char* op = "layernorm";
  NALA_CHECK(x_.dtype() == DType::F32, op, ": input must be f32, got ", x_.desc());
  NALA_CHECK(x_.dim() >= 1, op, ": input ", x_.desc(), " has no dimension to normalise");
  const int64_t d = wrap_dim(dim, x_.dim(), op);
  const Dims s = split_at(x_, d);
  NALA_CHECK(s.C > 0, op, ": input ", x_.desc(), " has an empty dimension ", d);
  check_vec(op, "weight", x_, weight_, s.C, d);
  check_vec(op, "bias", x_, bias_, s.C, d);
  const Device dev = common_device(op, {&x_, &weight_, &bias_});

  Tensor x = view::contiguous(x_).detach();
  Tensor w = contig_or_undef(weight_), b = contig_or_undef(bias_);
  Tensor out = Tensor::empty(x_.shape(), DType::F32, dev);
  Tensor mean = Tensor::empty({s.O * s.I}, DType::F32, dev), rstd = Tensor::empty({s.O * s.I}, DType::F32, dev);
  NALA_DISPATCH(dev, layernorm_forward, out.f32(), mean.f32(), rstd.f32(), x.f32(), ptr_or_null(w),
                ptr_or_null(b), s.O, s.C, s.I, eps);
  if (!needs_grad({&x_, &weight_, &bias_})) return out;
  return record(OpId::layernorm, out, {x_, weight_, bias_},
                [x, w, mean, rstd, s, dev, gx = x_.requires_grad(),
                 gw = weight_.defined() && weight_.requires_grad(),
                 gb = bias_.defined() && bias_.requires_grad()](const Tensor& gout) {
                  Tensor g = view::contiguous(gout);
                  Tensor dx = gx ? Tensor::empty(x.shape(), DType::F32, dev) : Tensor();
                  Tensor dw = gw ? Tensor::empty({s.C}, DType::F32, dev) : Tensor();
                  Tensor db = gb ? Tensor::empty({s.C}, DType::F32, dev) : Tensor();
                  NALA_DISPATCH(dev, layernorm_backward, ptr_or_null(dx), ptr_or_null(dw), ptr_or_null(db),
                                g.f32(), x.f32(), mean.f32(), rstd.f32(), ptr_or_null(w), s.O, s.C, s.I);
                  return std::vector<Tensor>{dx, dw, db};
                });
}

Tensor batchnorm(const Tensor& x_, const Tensor& weight_, const Tensor& bias_, Tensor& running_mean,
                 Tensor& running_var, bool training, float momentum, float eps, int64_t dim) {
  const char* op = "batchnorm";
  NALA_CHECK(x_.dtype() == DType::F32, op, ": input must be f32, got ", x_.desc());
  NALA_CHECK(x_.dim() >= 2, op, ": input ", x_.desc(), " needs a channel dimension and at least one other");
  const int64_t d = wrap_dim(dim, x_.dim(), op);
  const Dims s = split_at(x_, d);
  check_vec(op, "weight", x_, weight_, s.C, d);
  check_vec(op, "bias", x_, bias_, s.C, d);
  check_vec(op, "running_mean", x_, running_mean, s.C, d);
  check_vec(op, "running_var", x_, running_var, s.C, d);
  NALA_CHECK(running_mean.defined() == running_var.defined(), op,
             ": running_mean and running_var must be both given or both undefined");
  if (running_mean.defined())
    NALA_CHECK(running_mean.is_contiguous() && running_var.is_contiguous(), op, ": running statistics ",
               running_mean.desc(), " and ", running_var.desc(), " must be contiguous (updated in place)");
  NALA_CHECK(training || running_mean.defined(), op, ": eval mode needs running statistics (input ",
             x_.desc(), ")");
  NALA_CHECK(!training || s.O * s.I > 1, op, ": input ", x_.desc(),
             ": training needs more than one value per channel");
  const Device dev = common_device(op, {&x_, &weight_, &bias_, &running_mean, &running_var});

  Tensor x = view::contiguous(x_).detach();
  Tensor w = contig_or_undef(weight_), b = contig_or_undef(bias_);
  Tensor out = Tensor::empty(x_.shape(), DType::F32, dev);
  Tensor mean = Tensor::empty({s.C}, DType::F32, dev), rstd = Tensor::empty({s.C}, DType::F32, dev);
  if (training) {
    NALA_DISPATCH(dev, batchnorm_train_stats, mean.f32(), rstd.f32(), ptr_or_null(running_mean),
                  ptr_or_null(running_var), x.f32(), s.O, s.C, s.I, momentum, eps);
  } else {
    NALA_DISPATCH(dev, batchnorm_eval_stats, mean.f32(), rstd.f32(), running_mean.f32(), running_var.f32(), s.C,
                  eps);
  }
  NALA_DISPATCH(dev, batchnorm_forward, out.f32(), x.f32(), mean.f32(), rstd.f32(), ptr_or_null(w),
                ptr_or_null(b), s.O, s.C, s.I);
  if (!needs_grad({&x_, &weight_, &bias_})) return out;
  return record(OpId::batchnorm, out, {x_, weight_, bias_},
                [x, w, mean, rstd, s, dev, training, gx = x_.requires_grad(),
                 gw = weight_.defined() && weight_.requires_grad(),
                 gb = bias_.defined() && bias_.requires_grad()](const Tensor& gout) {
                  Tensor g = view::contiguous(gout);
                  Tensor dx = gx ? Tensor::empty(x.shape(), DType::F32, dev) : Tensor();
                  Tensor dw = gw ? Tensor::empty({s.C}, DType::F32, dev) : Tensor();
                  Tensor db = gb ? Tensor::empty({s.C}, DType::F32, dev) : Tensor();
                  NALA_DISPATCH(dev, batchnorm_backward, ptr_or_null(dx), ptr_or_null(dw), ptr_or_null(db),
                                g.f32(), x.f32(), mean.f32(), rstd.f32(), ptr_or_null(w), s.O, s.C, s.I,
                                training);
                  return std::vector<Tensor>{dx, dw, db};
                });
}

}  // namespace nala
