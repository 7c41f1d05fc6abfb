// models/attention_kind.h - the attention kinds a stage can use
// (docs/SPEC.md §11): the released NaLa, the paper's form of NaLa, three
// other linear attentions (ReLU, ELU + 1, FLatten's focused map) and
// softmax attention, with one entry point for the model and one for
// analysis tools.
//
// Shape letters: B batch, h heads, N = H * W tokens (row-major), d head
// dim, F the feature width of a kind (d or 2d).
//
// Every linear kind shares the released NaLa's structure (docs/SPEC.md
// §2.1) and differs only in its feature maps phi_q and phi_k:
//   rq_i, rk_j = RoPE of each d-wide part of phi_q(q_i), phi_k(k_j)
//   z_i = 1 / (phi_q(q_i) . mean_j phi_k(k_j) + 1e-6)     (un-rotated)
//   S = (1/N) sum_j rk_j^T v_j,   o_i = z_i (rq_i S)
// `nala` runs the fused kernels of autograd/ops.h (nala_attention); the other
// linear kinds are composed from differentiable ops, so every op they use
// runs on the CPU and on CUDA with its own backward. `softmax` is
// softmax_attention. Adding a kind: an enum entry, its name, its feature
// maps in attention_kind.cpp (and the reference in tests/reference/).
//
// What this file does not do: choose kinds per stage (NalaConfig, in
// models/nalaformer.h) or read command lines (tools/).
#pragma once
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace nala {

enum class AttnKind { nala, nala_paper, relu, elu1, flatten, softmax };

// "nala", "nala-paper", "relu", "elu1", "flatten", "softmax". parse throws
// an Error that lists the names.
AttnKind parse_attn_kind(const std::string& name);
const char* attn_kind_name(AttnKind kind);
std::vector<std::string> attn_kind_names();  // every kind, the default (nala) first
inline bool attn_kind_is_linear(AttnKind kind) { return kind != AttnKind::softmax; }

// The feature maps of a linear kind (throws for softmax): x (..., N, d) ->
// the d-wide parts of phi(x), to be concatenated along the last dim (one part:
// F = d; two: F = 2d). `query` picks phi_q, else phi_k. Differentiable.
std::vector<Tensor> attn_features(AttnKind kind, const Tensor& x, bool query);

// The attention core of one layer: q, k, v (B, h, N, d), N = H * W, d % 4 == 0
// -> (B, h, N, d). Differentiable, on the device of q, k and v.
Tensor attention_core(AttnKind kind, const Tensor& q, const Tensor& k, const Tensor& v, int64_t H, int64_t W);

// Attention weights of one head, for analysis (CPU, no autograd, double sums).
// q, k: (N, d) float32 on the CPU, as they enter attention_core (before the
// feature map and before RoPE). queries: token indices in [0, N). Returns
// (queries.size(), N); row r holds the weights of query queries[r]:
//   linear kinds: phi_q(q_i) . phi_k(k_j) / sum_j' phi_q(q_i) . phi_k(k_j'),
//                 un-rotated features, so a row is >= 0 and sums to 1 (a row
//                 whose sum is 0 comes back all 0);
//   softmax:      softmax_j(rope(q_i) . rope(k_j) / sqrt(d)), the real weights.
Tensor implied_attention(AttnKind kind, const Tensor& q, const Tensor& k, int64_t H, int64_t W,
                         const std::vector<int64_t>& queries);

// Constants of the kinds (docs/SPEC.md §11).
constexpr float kLinearAttnEps = 1e-6f;  // added to every linear kind's normaliser
constexpr float kFlattenEps = 1e-6f;     // FLatten: relu(x) + eps before the focusing power
constexpr float kPaperLambda = 3.0f;     // nala-paper: p = lambda (0.5 + tanh |q|); keys: power lambda
constexpr float kPaperAngle = 0.78539816339744831f;  // nala-paper: angle = (pi/4) * signed power of the direction

}  // namespace nala
