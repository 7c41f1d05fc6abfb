// autograd/ops.h - every differentiable op, forward + backward wiring.
//
// Each op checks its inputs (shape and dtype errors name the op and the
// shapes), computes with the kernels of the tensor's device (kernels/cpu or
// kernels/cuda, same function names), and records itself on the tape
// (autograd.h). Names match autograd/op_table.h.
//
// Layout convention for images: activations are channels-last, (B, H, W, C),
// which is the token layout (B, N, C) with N = H*W, so Linear, LayerNorm and
// the attention ops see tokens without a permute. Conv weights keep the
// PyTorch layout (Cout, Cin/groups, k, k) so checkpoints load unchanged.
#pragma once
#include <functional>
#include <vector>

#include "autograd/autograd.h"
#include "tensor/rng.h"

namespace nala {

// ---- shape (ops_shape.cpp) ------------------------------------------------
Tensor reshape(const Tensor& x, const Shape& shape);  // one -1 allowed
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);  // a permute
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
Tensor expand(const Tensor& x, const Shape& shape);
Tensor contiguous(const Tensor& x);
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);  // narrows
std::vector<Tensor> chunk(const Tensor& x, int64_t n, int64_t dim);                         // equal parts

// ---- elementwise (ops_elementwise.cpp) ------------------------------------
// Binary ops broadcast (numpy rules). pow: x^p with the docs/SPEC.md §7
// conventions at x = 0 (d/dx and d/dp are 0 there); x must be >= 0.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
// x + y * gamma, gamma (C) over the last dim of x and y (one shape): LayerScale
// and the residual add in one pass, bit for bit add(x, mul(y, gamma)); x's
// gradient is the incoming one, y's and gamma's those of mul.
Tensor scale_add(const Tensor& x, const Tensor& y, const Tensor& gamma);
Tensor div(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& x, const Tensor& p);
Tensor scale(const Tensor& x, float s);       // x * s
Tensor add_scalar(const Tensor& x, float s);  // x + s
Tensor sqrt(const Tensor& x);
Tensor cube(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor gelu(const Tensor& x);  // erf form
Tensor silu(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sin(const Tensor& x);
Tensor cos(const Tensor& x);
Tensor elu(const Tensor& x);  // x for x > 0, exp(x) - 1 otherwise (alpha 1)
// x's values in dtype `to`, f32 or bf16 (tensor/bf16.h: to nearest even);
// the gradient is cast back to x's dtype (the rounding's derivative taken as
// 1). x itself when it already has that dtype.
Tensor cast(const Tensor& x, DType to);
inline Tensor neg(const Tensor& x) { return scale(x, -1.0f); }

// ---- reductions and losses (ops_reduce.cpp) -------------------------------
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor sum(const Tensor& x);  // all elements -> scalar
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
// sqrt(sum x^2) over dim, floored at `floor` so that an all-zero row gives
// `floor` and a zero gradient instead of 0/0.
Tensor l2norm(const Tensor& x, int64_t dim, bool keepdim = false, float floor = 0.0f);
Tensor global_avg_pool(const Tensor& x);  // (B, H, W, C) or (B, N, C) -> (B, C)
Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);
// logits (B, K), labels i64 (B) in [0, K): mean over the batch of the
// label-smoothed cross-entropy; target = (1-s) onehot + s/K. Fused and stable.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, float smoothing = 0.0f);

// ---- matrix products (ops_matmul.cpp) -------------------------------------
// a (..., M, K) [or (..., K, M) with trans_a], b (..., K, N) [or (..., N, K)
// with trans_b]. Batch dims broadcast; a 2-D b is shared by every batch.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// x (..., in) W^T + bias; w (out, in), bias (out) or undefined. out_dtype: the
// result's, f32 or bf16 (rounded once).
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias, DType out_dtype = DType::F32);
// gelu(linear(x, w, bias)) in one pass (the activation in the product's store).
// x f32 or bf16 (in the three linear ops); out_dtype bf16: the product is
// rounded to bf16 and the result is gelu of it, rounded (without a gradient,
// gelu of the float32 product, rounded; ops_matmul.cpp).
Tensor linear_gelu(const Tensor& x, const Tensor& w, const Tensor& bias, DType out_dtype = DType::F32);
// res + linear(x, w, bias) * gamma (gamma (out)), scale_add's bits, in one pass.
// With sample_mask (res.size(0) values, no gradient; drop_path_mask): res +
// (linear * gamma) * sample_mask[sample], the bits of add(res, drop_path(mul)).
Tensor linear_scale_add(const Tensor& res, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& gamma,
                        const Tensor& sample_mask = Tensor());

// ---- convolutions (ops_conv.cpp) ------------------------------------------
// x (B, H, W, Cin) channels-last; w (Cout, Cin, k, k); bias (Cout) or undefined.
// Output (B, Ho, Wo, Cout), Ho = (H + 2 pad - k) / stride + 1.
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int pad);
// Depthwise (groups = C): x (B, H, W, C), w (C, 1, k, k), any odd k, stride 1,
// padding k/2; output (B, H, W, C). With `add` (the output's shape): add +
// dwconv(x) in one pass, e.g. the residual x + dwconv(x) of NaLaFormer's
// positional encodings, whose separate add would read and write the
// activation once more. x and add f32, or both bf16 (the output then bf16;
// taps and bias f32).
Tensor dwconv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& add = Tensor());
// h + dwconv(h) with h = gelu(pre) (rounded to pre's dtype): the FFN's hidden
// path (gelu after fc1, then h + dwconv(h)) as one op that saves pre alone,
// not pre and h (h is a temporary, made again in backward for the taps'
// gradient). Same rules as dwconv2d; pre's gradient is gelu'(pre) times h's,
// applied in the store of the stencil that makes h's (on CUDA).
Tensor dwconv2d_gelu_add(const Tensor& pre, const Tensor& w, const Tensor& bias);
// Inference only (refuses inputs that require grad; not on the tape):
// conv2d, then y scale + shift per output channel (scale, shift: (Cout)),
// then GELU when gelu_after: a convolution followed by a BatchNorm in eval
// mode (BatchNorm::eval_affine gives its scale and shift) and its
// activation. On CUDA in bf16 mode, where the direct 3x3 kernels take the
// convolution, one kernel with the map and GELU in its store; elsewhere the
// three passes.
Tensor conv2d_affine(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& scale, const Tensor& shift,
                     bool gelu_after, int stride, int pad);

// ---- normalisation (ops_norm.cpp) -----------------------------------------
// LayerNorm over dimension `dim` (-1: token layout; 1 on (B, C, H, W): the
// per-pixel layout). weight, bias of size C (either may be undefined). x is
// f32; over the last dim the result may be bf16 (out_dtype: the values of
// the f32 result, rounded; a bf16 product's input stored once, at half the
// bytes), whose gradient may then arrive in bf16.
Tensor layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps, int64_t dim = -1,
                 DType out_dtype = DType::F32);
// layernorm(x, weight, bias, eps) over the last dim, times silu(g) (g of x's
// shape): NaLaFormer's attention gate, one pass forward, the bits of the three
// ops. x and g both f32 or both bf16 (computed in f32 from their values; the
// gradients in their dtypes), the result f32 or bf16 (out_dtype, rounded
// once). Saves x and g; on CUDA backward makes the LayerNorm output again in
// its one fused pass, elsewhere that output is saved too.
Tensor layernorm_gate(const Tensor& x, const Tensor& g, const Tensor& weight, const Tensor& bias, float eps,
                      DType out_dtype = DType::F32);
// BatchNorm over channel dimension `dim` (-1: channels-last; 1: NCHW).
// training: normalise with the biased batch variance and update running_mean
// and running_var in place (running = (1-m) running + m batch, unbiased batch
// variance); eval: normalise with the running statistics.
Tensor batchnorm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                 Tensor& running_var, bool training, float momentum, float eps, int64_t dim = -1);
// Sum over the processes of a data-parallel run: replaces n floats at data
// (on `device`) by their sum over every rank, in place. Every rank calls it
// the same number of times in the same order.
using RankSum = std::function<void(float* data, int64_t n, Device device)>;
// BatchNorm in training mode whose batch statistics cover every rank: the
// mean and biased variance over all ranks' values of a channel, the running
// statistics updated with them (unbiased variance over the global count), and
// a backward whose dx uses the global sums of dy and dy*xhat. dweight and
// dbias are this rank's own sums (the data-parallel gradient averaging adds
// them up). With a sum_over_ranks that does nothing it equals
// batchnorm(..., training=true, ...). Ranks may hold different batch sizes.
Tensor batchnorm_sync(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                      Tensor& running_var, float momentum, float eps, int64_t dim, const RankSum& sum_over_ranks);

// ---- attention (ops_attention.cpp) ----------------------------------------
// q, k, v: (B, heads, N, d) with N = H*W tokens in row-major order, d % 4 == 0.
Tensor rope2d(const Tensor& x, int64_t H, int64_t W);  // docs/SPEC.md §4
// NaLa attention, docs/SPEC.md §2 (released-code form). O(N d^2) time, O(N d)
// extra memory; the query norm is floored at kNalaNormFloor (see docs/SPEC.md §7).
// q, k, v f32, or all three bf16: then o and dq, dk, dv are bf16 too (half the
// memory of each); the output gradient is cast to bf16 if it arrives as f32.
// On the CPU the bf16 op is the float32 op on the inputs' values, each output
// rounded once. On the GPU its six matrix products take one tensor-core pass
// each (kNalaBf16OnePass, kernels/cuda/attention.h), as the bf16 GEMMs do:
// about 4e-3 of each output normwise from the CPU's, where float32 inputs
// keep float32 accuracy element by element.
constexpr float kNalaNormFloor = 1e-12f;
constexpr bool kNalaBf16OnePass = true;
Tensor nala_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t H, int64_t W);
// softmax(rope(q) rope(k)^T / sqrt(d)) v, docs/SPEC.md §3.
Tensor softmax_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t H, int64_t W);

// ---- regularisation (ops_dropout.cpp) -------------------------------------
// Identity when !training or p == 0. dropout: each element kept with
// probability 1-p and scaled by 1/(1-p). drop_path: each sample (dim 0) kept
// with probability 1-p and scaled by 1/(1-p).
Tensor dropout(const Tensor& x, float p, Rng& rng, bool training);
Tensor drop_path(const Tensor& x, float p, Rng& rng, bool training);
// The host draws of a mask: n values, 0 with probability p, else 1/(1-p).
void draw_mask_values(float* out, int64_t n, float p, Rng& rng);
// The mask drop_path(x) with x.size(0) == B would draw (the same Rng draws, on
// dev; through the MaskFeed below when one is set), for ops that apply it
// themselves (linear_scale_add).
Tensor drop_path_mask(int64_t B, float p, Rng& rng, Device dev);
// A GPU mask is drawn on the host and copied over, which a CUDA graph cannot
// capture. While a MaskFeed is set (on this thread), dropout and drop_path on
// a device tensor ask it for the device tensor that will hold the mask
// instead; the feed draws the values (draw_mask_values, same Rng, same
// order) and copies them in before every replay (models/train/graph_step.h).
struct MaskFeed {
  virtual ~MaskFeed() = default;
  virtual Tensor device_mask(const Shape& shape, float p, Rng& rng, Device dev) = 0;
};
void set_mask_feed(MaskFeed* feed);  // null: masks are copied eagerly

}  // namespace nala
