// autograd/ops_norm.cpp - layernorm, batchnorm and synchronised batchnorm:
// checks, dispatch, tape.
//
// Shape letters: x is viewed as (O, C, I) around the normalised / channel
// dimension `dim` (O = product of the sizes before it, I = after it), so one
// kernel serves the token layout (dim -1, I = 1) and the per-pixel / NCHW
// layout (dim 1 of (B, C, H, W), I = H*W). Backward saves x (contiguous),
// the weight, and the mean and rstd the forward pass used.
#include "autograd/dispatch.h"
#include "autograd/ops.h"
#include "autograd/ops_util.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/norm.h"
#ifdef NALA_CUDA
#include "kernels/cuda/elementwise.h"
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

// The checks batchnorm and batchnorm_sync share; returns the (O, C, I) view.
Dims check_batchnorm(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias,
                     const Tensor& running_mean, const Tensor& running_var, int64_t dim) {
  NALA_CHECK(x.dtype() == DType::F32, op, ": input must be f32, got ", x.desc());
  NALA_CHECK(x.dim() >= 2, op, ": input ", x.desc(), " needs a channel dimension and at least one other");
  const int64_t d = wrap_dim(dim, x.dim(), op);
  const Dims s = split_at(x, d);
  check_vec(op, "weight", x, weight, s.C, d);
  check_vec(op, "bias", x, bias, s.C, d);
  check_vec(op, "running_mean", x, running_mean, s.C, d);
  check_vec(op, "running_var", x, running_var, s.C, d);
  NALA_CHECK(running_mean.defined() == running_var.defined(), op,
             ": running_mean and running_var must be both given or both undefined");
  if (running_mean.defined())
    NALA_CHECK(running_mean.is_contiguous() && running_var.is_contiguous(), op, ": running statistics ",
               running_mean.desc(), " and ", running_var.desc(), " must be contiguous (updated in place)");
  return s;
}

}  // namespace

Tensor layernorm(const Tensor& x_, const Tensor& weight_, const Tensor& bias_, float eps, int64_t dim,
                 DType out_dtype) {
  const char* op = "layernorm";
  NALA_CHECK(x_.dtype() == DType::F32, op, ": input must be f32, got ", x_.desc());
  NALA_CHECK(x_.dim() >= 1, op, ": input ", x_.desc(), " has no dimension to normalise");
  const int64_t d = wrap_dim(dim, x_.dim(), op);
  NALA_CHECK(out_dtype == DType::F32 || (out_dtype == DType::BF16 && d == x_.dim() - 1), op,
             ": the result is f32, or bf16 over the last dim, not ", dtype_name(out_dtype), " over dim ", d, " of ",
             x_.desc());
  const Dims s = split_at(x_, d);
  NALA_CHECK(s.C > 0, op, ": input ", x_.desc(), " has an empty dimension ", d);
  check_vec(op, "weight", x_, weight_, s.C, d);
  check_vec(op, "bias", x_, bias_, s.C, d);
  const Device dev = common_device(op, {&x_, &weight_, &bias_});

  Tensor x = view::contiguous(x_).detach();
  Tensor w = contig_or_undef(weight_), b = contig_or_undef(bias_);
  Tensor out = Tensor::empty(x_.shape(), out_dtype, dev);
  Tensor mean = Tensor::empty({s.O * s.I}, DType::F32, dev), rstd = Tensor::empty({s.O * s.I}, DType::F32, dev);
  bool done = false;  // a bf16 result: stored by the kernel where it can (CUDA rows), else rounded after
#ifdef NALA_CUDA
  if (out_dtype == DType::BF16 && dev == Device::CUDA)
    done = cuda::layernorm_rows_forward(out.raw(), true, mean.f32(), rstd.f32(), x.raw(), nullptr, false,
                                        ptr_or_null(w), ptr_or_null(b), s.O, s.C, eps);
#endif
  if (!done) {
    Tensor of = out_dtype == DType::F32 ? out : Tensor::empty(x_.shape(), DType::F32, dev);
    NALA_DISPATCH(dev, layernorm_forward, of.f32(), mean.f32(), rstd.f32(), x.f32(), ptr_or_null(w),
                  ptr_or_null(b), s.O, s.C, s.I, eps);
    if (out_dtype == DType::BF16) NALA_DISPATCH(dev, cast_f32_bf16, out.bf16(), of.f32(), of.numel());
  }
  if (!needs_grad({&x_, &weight_, &bias_})) return out;
  return record(OpId::layernorm, out, {x_, weight_, bias_},
                [x, w, mean, rstd, s, dev, op, gx = x_.requires_grad(),
                 gw = weight_.defined() && weight_.requires_grad(),
                 gb = bias_.defined() && bias_.requires_grad()](const Tensor& gout) {
                  Tensor g = view::contiguous(gout);
                  Tensor dx = gx ? Tensor::empty(x.shape(), DType::F32, dev) : Tensor();
                  Tensor dw = gw ? Tensor::empty({s.C}, DType::F32, dev) : Tensor();
                  Tensor db = gb ? Tensor::empty({s.C}, DType::F32, dev) : Tensor();
                  if (g.dtype() == DType::BF16) {  // the gradient of a bf16 result
#ifdef NALA_CUDA
                    if (dev == Device::CUDA && s.I == 1 &&
                        cuda::layernorm_rows_backward(dx.defined() ? dx.raw() : nullptr, nullptr, ptr_or_null(dw),
                                                      ptr_or_null(db), g.raw(), true, x.raw(), nullptr, false,
                                                      mean.f32(), rstd.f32(), ptr_or_null(w), nullptr, s.O, s.C))
                      return std::vector<Tensor>{dx, dw, db};
#endif
                    g = detail::cast_values(g, DType::F32, op);
                  }
                  NALA_DISPATCH(dev, layernorm_backward, ptr_or_null(dx), ptr_or_null(dw), ptr_or_null(db),
                                g.f32(), x.f32(), mean.f32(), rstd.f32(), ptr_or_null(w), s.O, s.C, s.I);
                  return std::vector<Tensor>{dx, dw, db};
                });
}

Tensor layernorm_gate(const Tensor& x_, const Tensor& g_, const Tensor& weight_, const Tensor& bias_, float eps,
                      DType out_dtype) {
  const char* op = "layernorm_gate";
  NALA_CHECK(x_.defined() && g_.defined() && (x_.dtype() == DType::F32 || x_.dtype() == DType::BF16) &&
                 g_.dtype() == x_.dtype(),
             op, ": inputs must be both f32 or both bf16, got ", x_.desc(), " and ", g_.desc());
  NALA_CHECK(out_dtype == DType::F32 || out_dtype == DType::BF16, op, ": result dtype f32 or bf16, got ",
             dtype_name(out_dtype));
  NALA_CHECK(x_.dim() >= 1 && x_.shape() == g_.shape(), op, ": x ", x_.desc(), " and gate ", g_.desc(),
             " must have one shape");
  const Dims s = split_at(x_, x_.dim() - 1);
  NALA_CHECK(s.C > 0, op, ": input ", x_.desc(), " has an empty last dimension");
  check_vec(op, "weight", x_, weight_, s.C, x_.dim() - 1);
  check_vec(op, "bias", x_, bias_, s.C, x_.dim() - 1);
  const Device dev = common_device(op, {&x_, &g_, &weight_, &bias_});
  const bool grad = needs_grad({&x_, &g_, &weight_, &bias_});

  Tensor x = view::contiguous(x_).detach(), g = view::contiguous(g_).detach();
  Tensor w = contig_or_undef(weight_), b = contig_or_undef(bias_);
  Tensor out = Tensor::empty(x_.shape(), out_dtype, dev);
  Tensor mean = Tensor::empty({s.O}, DType::F32, dev), rstd = Tensor::empty({s.O}, DType::F32, dev);
  // On CUDA the row kernels take the inputs and the result in their dtypes,
  // and backward makes the LayerNorm output y again from x (nothing more is
  // saved than x and g). Elsewhere (the CPU, rows the kernels do not take)
  // float32 values through layernorm_gate_forward, which keeps y for backward.
  bool fused = false;
#ifdef NALA_CUDA
  if (dev == Device::CUDA && s.C <= 512)
    fused = cuda::layernorm_rows_forward(out.raw(), out_dtype == DType::BF16, mean.f32(), rstd.f32(), x.raw(),
                                         g.raw(), x.dtype() == DType::BF16, ptr_or_null(w), ptr_or_null(b), s.O, s.C,
                                         eps);
#endif
  Tensor y;
  if (!fused) {
    Tensor xf = detail::cast_values(x, DType::F32, op), gf = detail::cast_values(g, DType::F32, op);
    Tensor of = out_dtype == DType::F32 ? out : Tensor::empty(x_.shape(), DType::F32, dev);
    y = grad || dev == Device::CPU ? Tensor::empty(x_.shape(), DType::F32, dev) : Tensor();  // the CPU's buffer
    NALA_DISPATCH(dev, layernorm_gate_forward, of.f32(), y.defined() ? y.f32() : nullptr, mean.f32(), rstd.f32(),
                  xf.f32(), gf.f32(), ptr_or_null(w), ptr_or_null(b), s.O, s.C, eps);
    if (out_dtype == DType::BF16) NALA_DISPATCH(dev, cast_f32_bf16, out.bf16(), of.f32(), of.numel());
  }
  if (!grad) return out;
  return record(OpId::layernorm_gate, out, {x_, g_, weight_, bias_},
                [x, g, y, w, b, mean, rstd, s, dev, op, fused, eps, gx = x_.requires_grad(), gg = g_.requires_grad(),
                 gw = weight_.defined() && weight_.requires_grad(),
                 gb = bias_.defined() && bias_.requires_grad()](const Tensor& gout) {
                  Tensor d = view::contiguous(gout);
                  Tensor dx = gx ? Tensor::empty(x.shape(), x.dtype(), dev) : Tensor();
                  Tensor dg = gg ? Tensor::empty(x.shape(), g.dtype(), dev) : Tensor();
                  Tensor dw = gw ? Tensor::empty({s.C}, DType::F32, dev) : Tensor();
                  Tensor db = gb ? Tensor::empty({s.C}, DType::F32, dev) : Tensor();
#ifdef NALA_CUDA
                  if (fused && cuda::layernorm_rows_backward(
                                   dx.defined() ? dx.raw() : nullptr, dg.defined() ? dg.raw() : nullptr,
                                   ptr_or_null(dw), ptr_or_null(db), d.raw(), d.dtype() == DType::BF16, x.raw(),
                                   g.raw(), x.dtype() == DType::BF16, mean.f32(), rstd.f32(), ptr_or_null(w),
                                   ptr_or_null(b), s.O, s.C))
                    return std::vector<Tensor>{dx, dg, dw, db};
#endif
                  Tensor xf = detail::cast_values(x, DType::F32, op), gf = detail::cast_values(g, DType::F32, op);
                  Tensor df = detail::cast_values(d, DType::F32, op), yf = y;
                  if (!yf.defined()) {  // a gradient the fused kernel could not take (misaligned): y again
                    yf = Tensor::empty(x.shape(), DType::F32, dev);
                    Tensor m2 = Tensor::empty({s.O}, DType::F32, dev), r2 = Tensor::empty({s.O}, DType::F32, dev);
                    NALA_DISPATCH(dev, layernorm_forward, yf.f32(), m2.f32(), r2.f32(), xf.f32(), ptr_or_null(w),
                                  ptr_or_null(b), s.O, s.C, 1, eps);
                  }
                  Tensor dy = Tensor::empty(x.shape(), DType::F32, dev);  // the LayerNorm's incoming gradient
                  Tensor dgf = gg ? Tensor::empty(x.shape(), DType::F32, dev) : Tensor();
                  NALA_DISPATCH(dev, gate_backward, dy.f32(), gg ? dgf.f32() : nullptr, df.f32(), yf.f32(), gf.f32(),
                                x.numel());
                  Tensor dxf = gx ? Tensor::empty(x.shape(), DType::F32, dev) : Tensor();
                  if (gx || gw || gb)
                    NALA_DISPATCH(dev, layernorm_backward, ptr_or_null(dxf), ptr_or_null(dw), ptr_or_null(db),
                                  dy.f32(), xf.f32(), mean.f32(), rstd.f32(), ptr_or_null(w), s.O, s.C, 1);
                  if (gx) dx = detail::cast_values(dxf, x.dtype(), op);
                  if (gg) dg = detail::cast_values(dgf, g.dtype(), op);
                  return std::vector<Tensor>{dx, dg, dw, db};
                });
}

Tensor batchnorm(const Tensor& x_, const Tensor& weight_, const Tensor& bias_, Tensor& running_mean,
                 Tensor& running_var, bool training, float momentum, float eps, int64_t dim) {
  const char* op = "batchnorm";
  const Dims s = check_batchnorm(op, x_, weight_, bias_, running_mean, running_var, dim);
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

// Synchronised BatchNorm. Forward: this rank's shifted sums and count, one
// sum over the ranks, then the global mean / rstd / running statistics on the
// device (kernels/*/norm.h: batchnorm_sums, batchnorm_sync_stats). The shift is
// the running mean when there is one (the same on every rank, since every rank
// updates it with the same global statistics), else 0: it keeps S2/N - (S1/N)^2
// away from cancellation once the running mean has tracked the data.
// Backward: this rank's [sum dy*xhat, sum dy] from batchnorm_backward (its
// dweight, dbias), a copy summed over the ranks for dx. The global count N
// stays in the forward's summed buffer on the device (no host round trip on
// CUDA); the CPU path checks N > 1. The backward sums over the ranks only when
// dx is wanted (every rank's x requires grad alike in data-parallel training).
Tensor batchnorm_sync(const Tensor& x_, const Tensor& weight_, const Tensor& bias_, Tensor& running_mean,
                      Tensor& running_var, float momentum, float eps, int64_t dim, const RankSum& sum_over_ranks) {
  const char* op = "batchnorm_sync";
  const Dims s = check_batchnorm(op, x_, weight_, bias_, running_mean, running_var, dim);
  NALA_CHECK(static_cast<bool>(sum_over_ranks), op, ": input ", x_.desc(), ": sum_over_ranks is empty");
  const Device dev = common_device(op, {&x_, &weight_, &bias_, &running_mean, &running_var});

  Tensor x = view::contiguous(x_).detach();
  Tensor w = contig_or_undef(weight_), b = contig_or_undef(bias_);
  const int64_t C = s.C;
  Tensor sums = Tensor::empty({2 * C + 1}, DType::F32, dev);  // [S1 (C), S2 (C), count]
  const float* shift = running_mean.defined() ? running_mean.f32() : nullptr;
  NALA_DISPATCH(dev, batchnorm_sums, sums.f32(), x.f32(), shift, s.O, C, s.I);
  sum_over_ranks(sums.f32(), 2 * C + 1, dev);
  if (dev == Device::CPU) {
    NALA_CHECK(sums.f32()[2 * C] > 1.0f, op, ": input ", x_.desc(), ": training needs more than one value per",
               " channel over all ranks, got ", sums.f32()[2 * C]);
  }
  Tensor out = Tensor::empty(x_.shape(), DType::F32, dev);
  Tensor mean = Tensor::empty({C}, DType::F32, dev), rstd = Tensor::empty({C}, DType::F32, dev);
  NALA_DISPATCH(dev, batchnorm_sync_stats, mean.f32(), rstd.f32(), ptr_or_null(running_mean),
                ptr_or_null(running_var), sums.f32(), shift, C, momentum, eps);
  NALA_DISPATCH(dev, batchnorm_forward, out.f32(), x.f32(), mean.f32(), rstd.f32(), ptr_or_null(w),
                ptr_or_null(b), s.O, C, s.I);
  if (!needs_grad({&x_, &weight_, &bias_})) return out;
  return record(OpId::batchnorm_sync, out, {x_, weight_, bias_},
                [x, w, mean, rstd, sums, s, dev, sum_over_ranks, gx = x_.requires_grad(),
                 gw = weight_.defined() && weight_.requires_grad(),
                 gb = bias_.defined() && bias_.requires_grad()](const Tensor& gout) {
                  const int64_t C = s.C;
                  Tensor g = view::contiguous(gout);
                  Tensor local = Tensor::empty({2 * C}, DType::F32, dev);  // [sum dy*xhat, sum dy]
                  NALA_DISPATCH(dev, batchnorm_backward, nullptr, local.f32(), local.f32() + C, g.f32(), x.f32(),
                                mean.f32(), rstd.f32(), ptr_or_null(w), s.O, C, s.I, true);
                  Tensor dx;
                  if (gx) {
                    Tensor global = local.clone();
                    sum_over_ranks(global.f32(), 2 * C, dev);
                    dx = Tensor::empty(x.shape(), DType::F32, dev);
                    NALA_DISPATCH(dev, batchnorm_backward_dx_global, dx.f32(), g.f32(), x.f32(), mean.f32(),
                                  rstd.f32(), ptr_or_null(w), global.f32(), sums.f32() + 2 * C, s.O, C, s.I);
                  }
                  Tensor dw = gw ? view::narrow(local, 0, 0, C).clone() : Tensor();
                  Tensor db = gb ? view::narrow(local, 0, C, C).clone() : Tensor();
                  return std::vector<Tensor>{dx, dw, db};
                });
}

}  // namespace nala
