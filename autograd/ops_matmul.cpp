// autograd/ops_matmul.cpp - matrix products on the tape: matmul and linear.
//
// Letters: M, N the rows and columns of a product, K the summed size; R the
// rows of a linear layer's input (all leading dims folded), I its in
// features, O its out features.
//
// matmul(a, b, trans_a, trans_b): C = op(a) op(b) per batch, batch dims
//   broadcast. When b is 2-D (or its batch dims are all 1) and a is not
//   transposed, the batch is folded into the rows of one GEMM (forward and
//   both gradients). Otherwise one GEMM per batch; on the CPU the batches run
//   in parallel when there are many small ones (each GEMM then runs on one
//   thread); on CUDA the batches that are evenly spaced in memory go to one
//   strided-batched launch (gemm_batched). Saved for backward: a and b
//   (contiguous). Gradients of broadcast batch dims are summed in a fixed
//   order (beta = 0 for the first batch, 1 after), so they are deterministic.
//   Backward:  d op(a) = dC op(b)^T,  d op(b) = op(a)^T dC.
//
// linear(x, w, bias): Y[R, O] = X[R, I] W[O, I]^T + bias, one GEMM over all
//   rows. Saved: x and w. Backward: dX = dY W, dW = dY^T X (one GEMM summed
//   over all rows), dbias = column sums of dY.
//
// Fused linear layers (LinearEpilogue, kernels/cpu/matmul.h; on CUDA in the
// GEMM's store), the same bits as the ops they replace:
//   linear_gelu(x, w, bias) = gelu(linear(x, w, bias)): the FFN's fc1 and its
//     activation. Saved: the product (gelu's input), when a gradient is needed.
//   linear_scale_add(res, x, w, bias, gamma) = scale_add(res, linear(x, w,
//     bias), gamma): a block's last product, LayerScale and the residual add;
//     with a drop-path mask, add(res, drop_path(mul(linear, gamma))). Saved:
//     the product (gamma's gradient reads it), when a gradient is needed.
//
// bf16 activations (the FFN's hidden layer in `--precision bf16`): x may be
// bf16 in all three, and linear_gelu may return bf16 (out_dtype). A
// product with a bf16 operand or result runs on CUDA as the bf16 GEMM
// (cuda::gemm_bf16_mixed: float32 operands are rounded to bf16, as in bf16
// mode); on the CPU it is the float32 product of the operands' values, the
// result rounded once. linear_gelu with a bf16 result keeps its input, the
// product, in bf16 (rounded once) and takes gelu of that (without a
// gradient nothing is kept: gelu of the float32 product, in the product's
// store, rounded once). Gradients have
// their tensor's dtype: a bf16 x gets a bf16 gradient; weights and biases
// float32.
#include <algorithm>
#include <tuple>

#include "autograd/dispatch.h"
#include "autograd/ops.h"
#include "autograd/ops_util.h"
#include "kernels/cpu/dropout.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/matmul.h"

#ifdef NALA_CUDA
#include "kernels/cuda/dropout.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm_bf16.h"
#include "kernels/cuda/matmul.h"
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace nala {

namespace {

// One GEMM of a batch: pointers into a, b and c.
struct GemmJob {
  const float* a;
  const float* b;
  float* c;
};

// Jobs that write different C's, on a GPU: one strided-batched launch when
// the jobs are evenly spaced in a, b and c (the usual case), else one by one.
void run_gemms_device(Device dev, bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb,
                      int64_t ldc, float beta, const std::vector<GemmJob>& js) {
  if (js.empty()) return;
  int64_t n = (int64_t)js.size();
  int64_t sa = n > 1 ? js[1].a - js[0].a : 0, sb = n > 1 ? js[1].b - js[0].b : 0, sc = n > 1 ? js[1].c - js[0].c : 0;
  bool even = true;
  for (int64_t i = 1; i < n && even; i++)
    even = js[i].a == js[0].a + i * sa && js[i].b == js[0].b + i * sb && js[i].c == js[0].c + i * sc;
  if (even) {
    NALA_DISPATCH(dev, gemm_batched, ta, tb, M, N, K, 1.0f, js[0].a, lda, sa, js[0].b, ldb, sb, beta, js[0].c, ldc,
                  sc, n);
    return;
  }
  for (const GemmJob& j : js)
    NALA_DISPATCH(dev, gemm, ta, tb, M, N, K, 1.0f, j.a, lda, j.b, ldb, beta, j.c, ldc);
}

// Runs groups of GEMMs of one geometry. The jobs of one group write the same
// C and run in order (beta for the first, 1 after); groups are independent.
// On CUDA, round r issues the r-th job of every group (one launch when
// evenly spaced); the rounds run in order on the stream.
void run_gemms(Device dev, bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc,
               float beta, const std::vector<std::vector<GemmJob>>& groups) {
  if (dev != Device::CPU) {
    size_t rounds = 0;
    for (const auto& g : groups) rounds = std::max(rounds, g.size());
    for (size_t r = 0; r < rounds; r++) {
      std::vector<GemmJob> js;
      for (const auto& g : groups)
        if (r < g.size()) js.push_back(g[r]);
      run_gemms_device(dev, ta, tb, M, N, K, lda, ldb, ldc, r == 0 ? beta : 1.0f, js);
    }
    return;
  }
  auto run_group = [&](const std::vector<GemmJob>& g) {
    for (size_t i = 0; i < g.size(); i++)
      NALA_DISPATCH(dev, gemm, ta, tb, M, N, K, 1.0f, g[i].a, lda, g[i].b, ldb, i == 0 ? beta : 1.0f, g[i].c, ldc);
  };
  int64_t ng = (int64_t)groups.size();
  int nt = 1;
#ifdef _OPENMP
  nt = omp_in_parallel() ? 1 : omp_get_max_threads();
#endif
  // Many groups, or small GEMMs: one GEMM per thread beats splitting each.
  // A handful of tiny GEMMs: not worth waking the threads.
  double work = (double)M * N * K;
  bool across = nt > 1 && ng > 1 && work * ng >= 64.0 * 64 * 64 &&
                (ng >= 4 * nt || work <= 96.0 * 96 * 96);
  if (!across) {
    for (const auto& g : groups) run_group(g);
    return;
  }
#pragma omp parallel for schedule(dynamic)
  for (int64_t i = 0; i < ng; i++) run_group(groups[i]);
}

// Batch index (flattened) into a tensor of batch shape `from` for each index
// of the broadcast batch shape `to` (from is right-aligned, size-1 dims repeat).
std::vector<int64_t> batch_map(const Shape& from, const Shape& to) {
  int64_t n = shape_numel(to);
  std::vector<int64_t> idx(n);
  size_t off = to.size() - from.size();
  for (int64_t o = 0; o < n; o++) {
    int64_t rem = o, src = 0, stride = 1;
    for (int64_t d = (int64_t)to.size() - 1; d >= 0; d--) {
      int64_t i = rem % to[d];
      rem /= to[d];
      if (d >= (int64_t)off) {
        int64_t fd = from[d - off];
        src += (fd == 1 ? 0 : i) * stride;
        stride *= fd;
      }
    }
    idx[o] = src;
  }
  return idx;
}

// Groups of output batches by the input batch they map to (in order).
std::vector<std::vector<int64_t>> group_by(const std::vector<int64_t>& map, int64_t nsrc) {
  std::vector<std::vector<int64_t>> g(nsrc);
  for (int64_t o = 0; o < (int64_t)map.size(); o++) g[map[o]].push_back(o);
  return g;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  NALA_CHECK(a.defined() && b.defined(), "matmul: undefined input");
  Device dev = common_device("matmul", {&a, &b});
  std::string shapes = shape_str(a.shape()) + " and " + shape_str(b.shape()) + " (trans_a " +
                       (trans_a ? "true" : "false") + ", trans_b " + (trans_b ? "true" : "false") + ")";
  NALA_CHECK(a.dtype() == DType::F32 && b.dtype() == DType::F32, "matmul: expected f32 inputs, got ", a.desc(),
             " and ", b.desc());
  NALA_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: inputs need at least 2 dims, got ", shapes);
  int64_t M = a.size(trans_a ? -1 : -2), K = a.size(trans_a ? -2 : -1);
  int64_t Kb = b.size(trans_b ? -1 : -2), N = b.size(trans_b ? -2 : -1);
  NALA_CHECK(K == Kb, "matmul: inner sizes differ (", K, " vs ", Kb, ") for ", shapes);
  Shape ab(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  Shape ob(std::max(ab.size(), bb.size()));
  for (size_t i = 0; i < ob.size(); i++) {
    int64_t x = i + ab.size() >= ob.size() ? ab[i + ab.size() - ob.size()] : 1;
    int64_t y = i + bb.size() >= ob.size() ? bb[i + bb.size() - ob.size()] : 1;
    NALA_CHECK(x == y || x == 1 || y == 1, "matmul: batch dims do not broadcast for ", shapes);
    ob[i] = x == 1 ? y : x;
  }
  Shape oshape = ob;
  oshape.push_back(M);
  oshape.push_back(N);

  Tensor ac = view::contiguous(a).detach(), bc = view::contiguous(b).detach();
  bool ag = a.requires_grad(), bg = b.requires_grad();
  Tensor out = Tensor::empty(oshape, DType::F32, dev);
  int64_t lda = trans_a ? M : K, ldb = trans_b ? K : N;
  int64_t nb = shape_numel(ob), na = shape_numel(ab), nbb = shape_numel(bb);
  // b shared by all batches (2-D, or batch dims all 1) and a's rows stacked:
  // one GEMM of na*M rows (na == nb here).
  bool fold = nbb == 1 && !trans_a;
  if (fold) {
    NALA_DISPATCH(dev, gemm, false, trans_b, na * M, N, K, 1.0f, ac.f32(), K, bc.f32(), ldb, 0.0f, out.f32(), N);
  } else {
    std::vector<int64_t> amap = batch_map(ab, ob), bmap = batch_map(bb, ob);
    std::vector<std::vector<GemmJob>> jobs(nb);
    for (int64_t o = 0; o < nb; o++)
      jobs[o] = {{ac.f32() + amap[o] * M * K, bc.f32() + bmap[o] * K * N, out.f32() + o * M * N}};
    run_gemms(dev, trans_a, trans_b, M, N, K, lda, ldb, N, 0.0f, jobs);
  }

  return record(OpId::matmul, out, {a, b},
                [ac, bc, ab, bb, ob, M, N, K, lda, ldb, na, nb, nbb, fold, trans_a, trans_b, ag, bg,
                 dev](const Tensor& gout) -> std::vector<Tensor> {
                  Tensor g = view::contiguous(gout);
                  Tensor da, db;
                  if (ag) da = Tensor::empty(ac.shape(), DType::F32, dev);
                  if (bg) db = Tensor::empty(bc.shape(), DType::F32, dev);
                  if (fold) {
                    // dA[naM, K] = dC op(b)^T;  d op(b) = A^T dC summed over all rows.
                    if (ag)
                      NALA_DISPATCH(dev, gemm, false, !trans_b, na * M, K, N, 1.0f, g.f32(), N, bc.f32(), ldb, 0.0f,
                                    da.f32(), K);
                    if (!bg) {
                    } else if (!trans_b)
                      NALA_DISPATCH(dev, gemm, true, false, K, N, na * M, 1.0f, ac.f32(), K, g.f32(), N, 0.0f,
                                    db.f32(), N);
                    else
                      NALA_DISPATCH(dev, gemm, true, false, N, K, na * M, 1.0f, g.f32(), N, ac.f32(), K, 0.0f,
                                    db.f32(), K);
                    return {da, db};
                  }
                  std::vector<int64_t> amap = batch_map(ab, ob), bmap = batch_map(bb, ob);
                  // Gradient of a, grouped by a's batch.
                  if (ag) {
                    auto groups = group_by(amap, na);
                    std::vector<std::vector<GemmJob>> jobs(na);
                    for (int64_t s = 0; s < na; s++)
                      for (int64_t o : groups[s]) {
                        const float* go = g.f32() + o * M * N;
                        const float* bp = bc.f32() + bmap[o] * K * N;
                        float* dst = da.f32() + s * M * K;
                        // !trans_a: dA[M,K] = dC op(b)^T; trans_a: dA[K,M] = op(b) dC^T.
                        jobs[s].push_back(trans_a ? GemmJob{bp, go, dst} : GemmJob{go, bp, dst});
                      }
                    if (!trans_a)
                      run_gemms(dev, false, !trans_b, M, K, N, N, ldb, K, 0.0f, jobs);
                    else
                      run_gemms(dev, trans_b, true, K, M, N, ldb, N, M, 0.0f, jobs);
                  }
                  // Gradient of b, grouped by b's batch.
                  if (bg) {
                    auto groups = group_by(bmap, nbb);
                    std::vector<std::vector<GemmJob>> jobs(nbb);
                    for (int64_t s = 0; s < nbb; s++)
                      for (int64_t o : groups[s]) {
                        const float* go = g.f32() + o * M * N;
                        const float* ap = ac.f32() + amap[o] * M * K;
                        float* dst = db.f32() + s * K * N;
                        // !trans_b: dB[K,N] = op(a)^T dC; trans_b: dB[N,K] = dC^T op(a).
                        jobs[s].push_back(trans_b ? GemmJob{go, ap, dst} : GemmJob{ap, go, dst});
                      }
                    if (!trans_b)
                      run_gemms(dev, !trans_a, false, K, N, M, lda, N, N, 0.0f, jobs);
                    else
                      run_gemms(dev, true, trans_a, N, K, M, N, lda, K, 0.0f, jobs);
                  }
                  return {da, db};
                });
}

namespace {

// A linear layer's checked operands: x folded to R rows of I, w (O, I), bias (O) or undefined.
struct LinearArgs {
  Tensor xc, wc, bc;  // contiguous, detached
  int64_t R, I, O;
  Shape oshape;  // x's shape with O last
  Device dev;
};

LinearArgs linear_args(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias) {
  NALA_CHECK(x.defined() && w.defined(), op, ": undefined input");
  LinearArgs a;
  a.dev = common_device(op, {&x, &w, &bias});
  std::string shapes = "x " + shape_str(x.shape()) + " and weight " + shape_str(w.shape()) +
                       (bias.defined() ? " and bias " + shape_str(bias.shape()) : std::string());
  NALA_CHECK((x.dtype() == DType::F32 || x.dtype() == DType::BF16) && w.dtype() == DType::F32 &&
                 (!bias.defined() || bias.dtype() == DType::F32),
             op, ": expected x f32 or bf16 and f32 weights, got ", x.desc(), " and ", w.desc());
  NALA_CHECK(x.dim() >= 1 && w.dim() == 2, op, ": expected x (..., in) and weight (out, in), got ", shapes);
  a.I = x.size(-1), a.O = w.size(0);
  NALA_CHECK(w.size(1) == a.I, op, ": in features differ (", a.I, " vs ", w.size(1), ") for ", shapes);
  NALA_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == a.O), op, ": bias must be [", a.O, "], got ",
             shapes);
  a.R = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  a.oshape = x.shape();
  a.oshape.back() = a.O;
  a.xc = view::contiguous(x).detach(), a.wc = view::contiguous(w).detach();
  a.bc = bias.defined() ? view::contiguous(bias).detach() : Tensor();
  return a;
}

const float* ptr_or_null(const Tensor& t) { return t.defined() ? t.f32() : nullptr; }

// db[n] = the column sums of g (R, N), g f32 or bf16.
void bias_grad_any(const Tensor& db, const Tensor& g, int64_t R, int64_t N) {
  if (g.dtype() == DType::F32) {
    NALA_DISPATCH(g.device(), linear_bias_backward, db.f32(), g.f32(), R, N);
    return;
  }
#ifdef NALA_CUDA
  if (g.device() == Device::CUDA) {
    ProfileScope prof("linear_bias_backward_bf16", g.device());
    cuda::linear_bias_backward_bf16(db.f32(), g.bf16(), R, N);
    return;
  }
#endif
  Tensor gf = detail::cast_values(g, DType::F32, "linear (bf16)");
  NALA_DISPATCH(g.device(), linear_bias_backward, db.f32(), gf.f32(), R, N);
}

// What a linear layer's backward needs: x if w needs its gradient, w if x does.
struct LinearSaved {
  Tensor xs, ws;
  Shape xshape;
  DType xdtype;
  int64_t R, I, O;
  bool xg, wg, bg, has_bias;
  Device dev;
};

LinearSaved linear_saved(const LinearArgs& a, const Tensor& x, const Tensor& w, const Tensor& bias) {
  LinearSaved s;
  s.xg = x.requires_grad(), s.wg = w.requires_grad(), s.bg = bias.defined() && bias.requires_grad();
  s.xs = s.wg ? a.xc : Tensor(), s.ws = s.xg ? a.wc : Tensor();  // save only what backward reads
  s.xshape = x.shape(), s.xdtype = x.dtype();
  s.R = a.R, s.I = a.I, s.O = a.O, s.has_bias = bias.defined(), s.dev = a.dev;
  return s;
}

// C (f32 or bf16) = op(A) op(B) (+ bias, + gelu), for products with a bf16
// operand or result (else the float32 paths below): on CUDA the bf16 GEMM,
// on the CPU the float32 product of the values, rounded into C. All three
// contiguous with leading dims lda, ldb, N.
void product_mixed(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const Tensor& A, int64_t lda, const Tensor& B,
                   int64_t ldb, const Tensor& C, const Tensor& bias = Tensor(), bool gelu = false) {
  const Device dev = C.device();
  if (M <= 0 || N <= 0) return;
#ifdef NALA_CUDA
  if (dev == Device::CUDA) {
    ProfileScope prof("gemm_bf16_mixed", dev);
    cuda::GemmEpilogue epi;
    epi.bias = bias.defined() ? bias.f32() : nullptr;
    if (gelu) epi.act = cuda::GemmAct::gelu;
    cuda::gemm_bf16_mixed(ta, tb, M, N, K, {A.raw(), A.dtype() == DType::BF16, lda},
                          {B.raw(), B.dtype() == DType::BF16, ldb}, C.raw(), N, C.dtype() == DType::BF16,
                          epi);
    return;
  }
#endif
  const char* op = "linear (bf16)";
  Tensor a = detail::cast_values(A, DType::F32, op), b = detail::cast_values(B, DType::F32, op);
  Tensor c = C.dtype() == DType::F32 ? C : Tensor::empty(C.shape(), DType::F32, dev);
  NALA_DISPATCH(dev, gemm, ta, tb, M, N, K, 1.0f, a.f32(), lda, b.f32(), ldb, 0.0f, c.f32(), N);
  if (bias.defined()) NALA_DISPATCH(dev, linear_bias_forward, c.f32(), bias.f32(), M, N);
  if (gelu) NALA_DISPATCH(dev, gelu_forward, c.f32(), c.f32(), M * N);
  if (C.dtype() == DType::BF16) NALA_DISPATCH(dev, cast_f32_bf16, C.bf16(), c.f32(), M * N);
}

// Y (f32 or bf16, R x O) = X W^T + bias (+ gelu) for any dtypes of X and Y.
void linear_product(const LinearArgs& a, const Tensor& Y, bool gelu = false) {
  const bool f32 = a.xc.dtype() == DType::F32 && Y.dtype() == DType::F32;
  if (f32 && !gelu) {
    NALA_DISPATCH(a.dev, linear_forward, Y.f32(), a.xc.f32(), a.wc.f32(), ptr_or_null(a.bc), a.R, a.O, a.I);
    return;
  }
  product_mixed(false, true, a.R, a.O, a.I, a.xc, a.I, a.wc, a.I, Y, a.bc, gelu);
}

// dx, dw (and db when there is a bias) from the gradient g (contiguous) of the
// product Y; dx has x's dtype. A bf16 g or x takes product_mixed.
std::vector<Tensor> linear_grads(const LinearSaved& s, const Tensor& g) {
  const int64_t R = s.R, I = s.I, O = s.O;
  const Device dev = s.dev;
  const bool f32 = g.dtype() == DType::F32 && (!s.xs.defined() || s.xs.dtype() == DType::F32) &&
                   s.xdtype == DType::F32;
  Tensor dx, dw, db;
  if (s.xg) {  // dX[R, I] = dY[R, O] W[O, I]
    dx = Tensor::empty(s.xshape, s.xdtype, dev);
    if (f32)
      NALA_DISPATCH(dev, gemm, false, false, R, I, O, 1.0f, g.f32(), O, s.ws.f32(), I, 0.0f, dx.f32(), I);
    else
      product_mixed(false, false, R, I, O, g, O, s.ws, I, dx);
  }
  if (s.wg) dw = Tensor::empty({O, I}, DType::F32, dev);
  if (s.bg) db = Tensor::empty({O}, DType::F32, dev);
  if (!f32) {
    if (s.wg) product_mixed(true, false, O, I, R, g, O, s.xs, I, dw);  // dW[O, I] = dY^T X
    if (s.bg) bias_grad_any(db, g, R, O);
  } else if (s.wg && s.bg) {  // both from one pass over dY
    NALA_DISPATCH(dev, linear_backward_weight_bias, dw.f32(), db.f32(), g.f32(), s.xs.f32(), R, O, I);
  } else if (s.wg) {  // dW[O, I] = dY^T X, summed over all R rows
    NALA_DISPATCH(dev, gemm, true, false, O, I, R, 1.0f, g.f32(), O, s.xs.f32(), I, 0.0f, dw.f32(), I);
  } else if (s.bg) {
    NALA_DISPATCH(dev, linear_bias_backward, db.f32(), g.f32(), R, O);
  }
  std::vector<Tensor> grads = {dx, dw};
  if (s.has_bias) grads.push_back(db);
  return grads;
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias, DType out_dtype) {
  const char* op = "linear";
  const LinearArgs a = linear_args(op, x, w, bias);
  NALA_CHECK(out_dtype == DType::F32 || out_dtype == DType::BF16, op, ": result dtype f32 or bf16, got ",
             dtype_name(out_dtype));
  Tensor out = Tensor::empty(a.oshape, out_dtype, a.dev);
  linear_product(a, out);
  std::vector<Tensor> inputs = {x, w};
  if (bias.defined()) inputs.push_back(bias);
  return record(OpId::linear, out, inputs, [s = linear_saved(a, x, w, bias), out_dtype, op](const Tensor& gout) {
    return linear_grads(s, detail::cast_values(gout, out_dtype, op));  // contiguous, in the result's dtype
  });
}

Tensor linear_gelu(const Tensor& x, const Tensor& w, const Tensor& bias, DType out_dtype) {
  const char* op = "linear_gelu";
  const LinearArgs a = linear_args(op, x, w, bias);
  NALA_CHECK(out_dtype == DType::F32 || out_dtype == DType::BF16, op, ": result dtype f32 or bf16, got ",
             dtype_name(out_dtype));
  const bool grad = needs_grad({&x, &w, &bias});
  Tensor out = Tensor::empty(a.oshape, out_dtype, a.dev);
  Tensor pre = grad ? Tensor::empty(a.oshape, out_dtype, a.dev) : Tensor();  // gelu's input, for backward
  if (out_dtype == DType::BF16 || a.xc.dtype() != DType::F32) {
    if (!grad) {
      linear_product(a, out, true);  // gelu in the product's store
      return out;
    }
    linear_product(a, pre);  // gelu of the rounded product, as backward sees it
    detail::gelu_values(out, pre, op);
  } else {
    LinearEpilogue e;
    e.gelu = true;
    if (grad) e.pre = pre.f32();
    NALA_DISPATCH(a.dev, linear_forward_epilogue, out.f32(), a.xc.f32(), a.wc.f32(), ptr_or_null(a.bc), a.R, a.O,
                  a.I, e);
  }
  if (!grad) return out;
  std::vector<Tensor> inputs = {x, w};
  if (bias.defined()) inputs.push_back(bias);
  return record(OpId::linear_gelu, out, inputs, [s = linear_saved(a, x, w, bias), pre, op](const Tensor& gout) {
    Tensor g = detail::cast_values(gout, pre.dtype(), op);  // contiguous, in the result's dtype
    Tensor dpre = Tensor::empty(pre.shape(), pre.dtype(), s.dev);
    if (!dpre.numel()) return linear_grads(s, dpre);
    if (pre.dtype() == DType::F32) {
      NALA_DISPATCH(s.dev, gelu_backward, dpre.f32(), g.f32(), pre.f32(), dpre.numel());
      return linear_grads(s, dpre);
    }
#ifdef NALA_CUDA
    if (s.dev == Device::CUDA) {
      {
        ProfileScope prof("gelu_backward_bf16", s.dev);  // the kernel alone, not the product's gradients
        cuda::gelu_backward_bf16(dpre.bf16(), g.bf16(), pre.bf16(), dpre.numel());
      }
      return linear_grads(s, dpre);
    }
#endif
    Tensor gf = detail::cast_values(g, DType::F32, op), pf = detail::cast_values(pre, DType::F32, op);
    NALA_DISPATCH(s.dev, gelu_backward, gf.f32(), gf.f32(), pf.f32(), gf.numel());
    NALA_DISPATCH(s.dev, cast_f32_bf16, dpre.bf16(), gf.f32(), gf.numel());
    return linear_grads(s, dpre);
  });
}

Tensor linear_scale_add(const Tensor& res, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& gamma,
                        const Tensor& sample_mask) {
  const char* op = "linear_scale_add";
  const LinearArgs a = linear_args(op, x, w, bias);
  NALA_CHECK(res.defined() && gamma.defined(), op, ": undefined input");
  NALA_CHECK(res.dtype() == DType::F32 && gamma.dtype() == DType::F32, op, ": expected f32 inputs, got ",
             res.desc(), " and ", gamma.desc());
  NALA_CHECK(res.shape() == a.oshape && gamma.dim() == 1 && gamma.size(0) == a.O, op, ": res ", res.desc(),
             " and gamma ", gamma.desc(), ": expected res ", shape_str(a.oshape), " and gamma [", a.O, "]");
  NALA_CHECK(common_device(op, {&res, &x, &gamma, &sample_mask}) == a.dev, op, ": inputs on different devices");
  const int64_t S = res.dim() >= 1 ? res.size(0) : 1;  // samples (the drop-path mask's length)
  NALA_CHECK(!sample_mask.defined() || (sample_mask.dtype() == DType::F32 && sample_mask.dim() == 1 &&
                                        sample_mask.size(0) == S && !sample_mask.requires_grad() && res.dim() >= 2),
             op, ": sample_mask ", sample_mask.desc(), ": expected [", S,
             "] f32 without gradient, for a res with a batch dim and more (", res.desc(), ")");
  const bool grad = needs_grad({&res, &x, &w, &bias, &gamma});
  Tensor rc = view::contiguous(res).detach(), gc = view::contiguous(gamma).detach();
  Tensor out = Tensor::empty(a.oshape, DType::F32, a.dev);
  Tensor mc = sample_mask.defined() ? view::contiguous(sample_mask).detach() : Tensor();
  const int64_t rows_per_scale = S > 0 ? std::max<int64_t>(1, a.R / S) : 1;
  LinearEpilogue e;
  e.res = rc.f32(), e.gamma = gc.f32();
  if (mc.defined()) e.row_scale = mc.f32(), e.rows_per_scale = rows_per_scale;
  // y: the product, saved for gamma's gradient. With a bf16 x (bf16 mode) it
  // is stored in bf16, as the products of bf16 activations are: the residual
  // add reads it rounded, and half the bytes are saved.
  const bool y16 = a.xc.dtype() == DType::BF16;
  Tensor y = grad ? Tensor::empty(a.oshape, y16 ? DType::BF16 : DType::F32, a.dev) : Tensor();
  if (!y16) {
    if (grad) e.pre = y.f32();
    NALA_DISPATCH(a.dev, linear_forward_epilogue, out.f32(), a.xc.f32(), a.wc.f32(), ptr_or_null(a.bc), a.R, a.O,
                  a.I, e);
  } else {  // the bf16 product, then the residual add as one pass
    Tensor p = grad ? y : Tensor::empty(a.oshape, DType::BF16, a.dev);
    linear_product(a, p);
#ifdef NALA_CUDA
    if (a.dev == Device::CUDA)
      cuda::scale_add_forward_bf16(out.f32(), rc.f32(), p.bf16(), gc.f32(), a.R, a.O, e.row_scale, e.rows_per_scale);
    else
#endif
    {
      Tensor pf = detail::cast_values(p, DType::F32, op);
      NALA_DISPATCH(a.dev, linear_epilogue_apply, out.f32(), pf.f32(), e, a.R, a.O);
    }
  }
  if (!grad) return out;
  std::vector<Tensor> inputs = {res, x, w};
  if (bias.defined()) inputs.push_back(bias);
  inputs.push_back(gamma);
  const bool need_res = res.requires_grad(), need_g = gamma.requires_grad();
  return record(OpId::linear_scale_add, out, inputs,
                [s = linear_saved(a, x, w, bias), y, gc, mc, S, rows_per_scale, need_res, need_g,
                 op](const Tensor& gout) {
                  Tensor g = view::contiguous(gout);
                  const bool need_y = s.xg || s.wg || s.bg;
                  Tensor dy, dgamma;  // the gradients of y (y's dtype) and gamma
#ifdef NALA_CUDA
                  if (s.dev == Device::CUDA) {  // drop path, mul's backward and gamma's sum in one pass
                    if (need_y) dy = Tensor::empty(y.shape(), y.dtype(), s.dev);
                    if (need_g) dgamma = Tensor::empty(gc.shape(), DType::F32, s.dev);
                    if (need_y || need_g)
                      cuda::scale_rows_backward(need_y ? dy.raw() : nullptr, y.dtype() == DType::BF16,
                                                need_g ? dgamma.f32() : nullptr, g.f32(), y.raw(),
                                                y.dtype() == DType::BF16, gc.f32(),
                                                mc.defined() ? mc.f32() : nullptr, rows_per_scale, s.R, s.O);
                  } else
#endif
                  {
                    Tensor gd = g;  // the gradient of y * gamma: drop_path's backward of g
                    if (mc.defined() && g.numel()) {
                      gd = Tensor::empty(g.shape(), DType::F32, s.dev);
                      NALA_DISPATCH(s.dev, drop_path_apply, gd.f32(), g.f32(), mc.f32(), S, g.numel() / S);
                    }
                    // y's and gamma's gradients: mul's backward of y * gamma (as scale_add)
                    std::tie(dy, dgamma) =
                        detail::scale_grads(gd, detail::cast_values(y, DType::F32, op), gc, need_y, need_g, op);
                    if (need_y) dy = detail::cast_values(dy, y.dtype(), op);
                  }
                  std::vector<Tensor> grads = {need_res ? g : Tensor()};
                  std::vector<Tensor> lg = need_y ? linear_grads(s, dy) : std::vector<Tensor>(s.has_bias ? 3 : 2);
                  grads.insert(grads.end(), lg.begin(), lg.end());
                  grads.push_back(dgamma);
                  return grads;
                });
}

}  // namespace nala
