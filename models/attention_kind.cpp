// models/attention_kind.cpp - the attention kinds (see attention_kind.h and
// docs/SPEC.md §11): names, feature maps, the composed linear attention and
// the implied weights for analysis.
//
// Shape letters: B batch, h heads, N = H * W tokens, d head dim, F the
// feature width (d or 2d), Q the number of queries analysed.
#include "models/attention_kind.h"

#include <algorithm>
#include <cmath>

#include "autograd/ops.h"

namespace nala {

namespace {

struct KindName {
  AttnKind kind;
  const char* name;
};
// The one table of kinds; the default first.
constexpr KindName kKinds[] = {{AttnKind::nala, "nala"},       {AttnKind::nala_paper, "nala-paper"},
                               {AttnKind::relu, "relu"},       {AttnKind::elu1, "elu1"},
                               {AttnKind::flatten, "flatten"}, {AttnKind::softmax, "softmax"}};

std::string names_list() {
  std::string s;
  for (const KindName& k : kKinds) s += std::string(s.empty() ? "" : ", ") + k.name;
  return s;
}

// sign(x) |x|^p for x in [-1, 1], p broadcast against x: the two signs
// powered apart, so that pow only ever sees a base >= 0 (docs/SPEC.md §7).
Tensor signed_pow(const Tensor& x, const Tensor& p) { return sub(pow(relu(x), p), pow(relu(neg(x)), p)); }

// NaLa's query exponent p = lambda (0.5 + tanh n), n the floored norm (..., N, 1).
Tensor norm_power(const Tensor& n) { return scale(add_scalar(tanh(n), 0.5f), kPaperLambda); }

// nala-paper: x = r u with r = ||x|| (floored), u = x / r; the angles
// theta = (pi/4) sign(u)|u|^p lie in [-pi/4, pi/4]; phi(x) = r / sqrt(d)
// [cos theta, sin theta], so |phi(x)| = |x| and phi(q) . phi(k) =
// |q||k|/d sum_e cos(theta_q,e - theta_k,e) >= 0 (every difference is
// within [-pi/2, pi/2]).
std::vector<Tensor> paper_features(const Tensor& x, bool query) {
  const int64_t last = x.dim() - 1, d = x.size(-1);
  Tensor r = l2norm(x, last, /*keepdim=*/true, kNalaNormFloor);  // (..., N, 1)
  Tensor u = div(x, r);
  Tensor a = query ? signed_pow(u, norm_power(r)) : cube(u);    // keys: lambda = 3, odd: cube keeps the sign
  Tensor theta = scale(a, kPaperAngle);
  Tensor amp = scale(r, 1.0f / std::sqrt((float)d));
  return {mul(amp, cos(theta)), mul(amp, sin(theta))};
}

// FLatten's focused map with p = 3: r = relu(x) + eps, phi = |r| r^3 / |r^3|.
Tensor flatten_feature(const Tensor& x) {
  const int64_t last = x.dim() - 1;
  Tensor r = add_scalar(relu(x), kFlattenEps);
  Tensor r3 = cube(r);
  return mul(r3, div(l2norm(r, last, true), l2norm(r3, last, true)));
}

Tensor cat_last(const std::vector<Tensor>& parts) { return parts.size() == 1 ? parts[0] : concat(parts, -1); }

// The structure of docs/SPEC.md §2.1 for any feature maps. q, k, v (B, h, N, d).
Tensor linear_attention(AttnKind kind, const Tensor& q, const Tensor& k, const Tensor& v, int64_t H, int64_t W) {
  const int64_t N = q.size(2);
  std::vector<Tensor> pq = attn_features(kind, q, true), pk = attn_features(kind, k, false);
  std::vector<Tensor> rq, rk;
  for (const Tensor& t : pq) rq.push_back(rope2d(t, H, W));
  for (const Tensor& t : pk) rk.push_back(rope2d(t, H, W));
  Tensor fq = cat_last(pq), fk = cat_last(pk);                                        // (B, h, N, F)
  Tensor kmean = mean(fk, {2}, /*keepdim=*/true);                                      // (B, h, 1, F)
  Tensor den = add_scalar(matmul(fq, kmean, false, /*trans_b=*/true), kLinearAttnEps); // (B, h, N, 1)
  Tensor S = scale(matmul(cat_last(rk), v, /*trans_a=*/true, false), 1.0f / (float)N); // (B, h, F, d)
  return div(matmul(cat_last(rq), S), den);
}

// Rows `rows` of a contiguous CPU (N, C) tensor, as a (rows.size(), C) tensor.
Tensor take_rows(const Tensor& x, const std::vector<int64_t>& rows) {
  const int64_t N = x.size(0), C = x.size(1);
  Tensor out = Tensor::empty({(int64_t)rows.size(), C});
  for (size_t r = 0; r < rows.size(); r++) {
    NALA_CHECK(rows[r] >= 0 && rows[r] < N, "implied_attention: query ", rows[r], " is not a token of ", N);
    std::copy(x.f32() + rows[r] * C, x.f32() + (rows[r] + 1) * C, out.f32() + r * C);
  }
  return out;
}

}  // namespace

AttnKind parse_attn_kind(const std::string& name) {
  for (const KindName& k : kKinds)
    if (name == k.name) return k.kind;
  NALA_FAIL("unknown attention kind '", name, "' (known: ", names_list(), ")");
}

const char* attn_kind_name(AttnKind kind) {
  for (const KindName& k : kKinds)
    if (kind == k.kind) return k.name;
  return "?";
}

std::vector<std::string> attn_kind_names() {
  std::vector<std::string> v;
  for (const KindName& k : kKinds) v.push_back(k.name);
  return v;
}

std::vector<Tensor> attn_features(AttnKind kind, const Tensor& x, bool query) {
  NALA_CHECK(x.defined() && x.dim() >= 2, "attn_features(", attn_kind_name(kind), "): expected (..., N, d), got ",
             x.defined() ? x.desc() : std::string("an undefined tensor"));
  switch (kind) {
    case AttnKind::nala: {  // docs/SPEC.md §2.1
      if (!query) {
        Tensor kc = cube(x);
        return {relu(kc), relu(neg(kc))};
      }
      Tensor n = l2norm(x, x.dim() - 1, /*keepdim=*/true, kNalaNormFloor);
      Tensor p = norm_power(n);
      return {pow(div(relu(x), n), p), pow(div(relu(neg(x)), n), p)};
    }
    case AttnKind::nala_paper: return paper_features(x, query);
    case AttnKind::relu: return {relu(x)};
    case AttnKind::elu1: return {add_scalar(elu(x), 1.0f)};
    case AttnKind::flatten: return {flatten_feature(x)};
    case AttnKind::softmax: break;
  }
  NALA_FAIL("attn_features: softmax attention has no feature map");
}

Tensor attention_core(AttnKind kind, const Tensor& q, const Tensor& k, const Tensor& v, int64_t H, int64_t W) {
  switch (kind) {
    case AttnKind::nala: return nala_attention(q, k, v, H, W);
    case AttnKind::softmax: return softmax_attention(q, k, v, H, W);
    default: break;
  }
  NALA_CHECK(q.defined() && k.defined() && v.defined() && q.dim() == 4 && q.shape() == k.shape() &&
                 q.shape() == v.shape(),
             "attention (", attn_kind_name(kind), "): expected q, k, v of one shape (B, h, N, d), got ",
             q.defined() ? q.desc() : "undefined", ", ", k.defined() ? k.desc() : "undefined", ", ",
             v.defined() ? v.desc() : "undefined");
  NALA_CHECK(q.size(2) == H * W, "attention (", attn_kind_name(kind), "): N = ", q.size(2), " is not H*W = ", H, "*",
             W);
  return linear_attention(kind, q, k, v, H, W);
}

Tensor implied_attention(AttnKind kind, const Tensor& q_in, const Tensor& k_in, int64_t H, int64_t W,
                         const std::vector<int64_t>& queries) {
  NALA_CHECK(q_in.defined() && k_in.defined() && q_in.dim() == 2 && q_in.shape() == k_in.shape(),
             "implied_attention: expected q and k of one shape (N, d), got ", q_in.defined() ? q_in.desc() : "undefined",
             ", ", k_in.defined() ? k_in.desc() : "undefined");
  NALA_CHECK(q_in.device() == Device::CPU && k_in.device() == Device::CPU && q_in.dtype() == DType::F32,
             "implied_attention: q and k must be f32 CPU tensors, got ", q_in.desc());
  const int64_t N = q_in.size(0), d = q_in.size(1);
  NALA_CHECK(N == H * W, "implied_attention: N = ", N, " is not H*W = ", H, "*", W);
  NoGradGuard no_grad;
  Tensor q = contiguous(q_in.detach()), k = contiguous(k_in.detach());
  Tensor fq, fk;  // (N, F): features, or rope(q), rope(k) for softmax
  if (kind == AttnKind::softmax) {
    fq = rope2d(q, H, W), fk = rope2d(k, H, W);
  } else {
    fq = contiguous(cat_last(attn_features(kind, q, true)));
    fk = contiguous(cat_last(attn_features(kind, k, false)));
  }
  const int64_t F = fq.size(1), Q = (int64_t)queries.size();
  Tensor sel = take_rows(fq, queries);  // (Q, F)
  Tensor out = Tensor::empty({Q, N});
  const float *a = sel.f32(), *b = fk.f32();
  float* o = out.f32();
  const double inv_sqrt_d = 1.0 / std::sqrt((double)d);
  std::vector<double> s(N);
  for (int64_t r = 0; r < Q; r++) {
    for (int64_t j = 0; j < N; j++) {
      double acc = 0;
      for (int64_t f = 0; f < F; f++) acc += (double)a[r * F + f] * b[j * F + f];
      s[j] = acc;
    }
    double total = 0;
    if (kind == AttnKind::softmax) {
      double mx = -INFINITY;
      for (int64_t j = 0; j < N; j++) mx = std::max(mx, s[j] * inv_sqrt_d);
      for (int64_t j = 0; j < N; j++) total += (s[j] = std::exp(s[j] * inv_sqrt_d - mx));
    } else {
      for (int64_t j = 0; j < N; j++) total += s[j];
    }
    for (int64_t j = 0; j < N; j++) o[r * N + j] = total > 0 ? (float)(s[j] / total) : 0.0f;
  }
  return out;
}

}  // namespace nala
