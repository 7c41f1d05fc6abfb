// models/analyze.cpp - see analyze.h.
#include "models/analyze.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <sstream>

#include "autograd/autograd.h"
#include "autograd/ops.h"
#include "kernels/cpu/rope.h"
#include "models/train/evaluate.h"
#include "tensor/error.h"

namespace nala {

std::vector<std::string> analyze_kinds() { return {"nala", "softmax"}; }

namespace {

// The RoPE rotation of token n (docs/SPEC.md §4), in double, angles computed
// on the spot as in the naive kernels.
std::vector<double> rope(const float* x, int64_t n, int64_t W, int64_t d) {
  const int64_t m = d / 4, r = n / W, c = n % W;
  std::vector<double> y(d);
  for (int64_t e = 0; e < d; e += 2) {
    const int64_t half = e < d / 2 ? 0 : 1, t = (half ? e - d / 2 : e) / 2;
    const double a = m == 1 ? 1.0 : std::pow(10000.0, -(double)t / (double)(m - 1));
    const double th = (half ? (double)c : (double)r) * a;
    const double x0 = x[e], x1 = x[e + 1];
    y[e] = x0 * std::cos(th) - x1 * std::sin(th);
    y[e + 1] = x1 * std::cos(th) + x0 * std::sin(th);
  }
  return y;
}

std::vector<double> softmax_weights(const float* q, const float* k, int64_t H, int64_t W, int64_t d, int64_t i) {
  const int64_t N = H * W;
  const std::vector<double> rq = rope(q + i * d, i, W, d);
  std::vector<double> s(N);
  for (int64_t j = 0; j < N; j++) {
    const std::vector<double> rk = rope(k + j * d, j, W, d);
    double dot = 0;
    for (int64_t e = 0; e < d; e++) dot += rq[e] * rk[e];
    s[j] = dot / std::sqrt((double)d);
  }
  const double mx = *std::max_element(s.begin(), s.end());
  double sum = 0;
  for (double& v : s) sum += (v = std::exp(v - mx));
  for (double& v : s) v /= sum;
  return s;
}

// NaLa's feature maps (docs/SPEC.md §2.1), un-rotated.
std::vector<double> nala_weights(const float* q, const float* k, int64_t N, int64_t d, int64_t i) {
  const float* qi = q + i * d;
  double norm = 0;
  for (int64_t e = 0; e < d; e++) norm += (double)qi[e] * qi[e];
  norm = std::max(std::sqrt(norm), 1e-12);
  const double p = 3.0 * (0.5 + std::tanh(norm));
  std::vector<double> fq(2 * d);
  for (int64_t e = 0; e < d; e++) {
    const double u_pos = std::max((double)qi[e], 0.0) / norm, u_neg = std::max(-(double)qi[e], 0.0) / norm;
    fq[e] = u_pos > 0 ? std::pow(u_pos, p) : 0.0;
    fq[d + e] = u_neg > 0 ? std::pow(u_neg, p) : 0.0;
  }
  std::vector<double> w(N);
  double sum = 0;
  for (int64_t j = 0; j < N; j++) {
    double dot = 0;
    for (int64_t e = 0; e < d; e++) {
      const double kc = (double)k[j * d + e] * k[j * d + e] * k[j * d + e];
      dot += fq[e] * std::max(kc, 0.0) + fq[d + e] * std::max(-kc, 0.0);
    }
    sum += (w[j] = dot);
  }
  // Every product zero (a zero query, or keys all of the other sign): no
  // preference, uniform weights.
  for (double& v : w) v = sum > 0 ? v / sum : 1.0 / (double)N;
  return w;
}

std::vector<double> ranks(const std::vector<double>& x) {
  const size_t n = x.size();
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
  std::vector<double> r(n);
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j + 1 < n && x[idx[j + 1]] == x[idx[i]]) j++;
    const double avg = (double)(i + j) / 2.0 + 1.0;  // ranks from 1
    for (size_t t = i; t <= j; t++) r[idx[t]] = avg;
    i = j + 1;
  }
  return r;
}

std::string num(double v, const char* f = "%.6g") {
  if (!std::isfinite(v)) return "nan";
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

std::vector<double> attention_weights(const std::string& kind, const float* q, const float* k, int64_t H, int64_t W,
                                      int64_t d, int64_t i) {
  const int64_t N = H * W;
  NALA_CHECK(H >= 1 && W >= 1 && d >= 4 && d % 4 == 0, "attention_weights: grid ", H, "x", W, ", head width ", d,
             " (a multiple of 4)");
  NALA_CHECK(i >= 0 && i < N, "attention_weights: query ", i, " outside the ", N, " tokens");
  if (kind == "softmax") return softmax_weights(q, k, H, W, d, i);
  if (kind == "nala") return nala_weights(q, k, N, d, i);
  std::string known;
  for (const std::string& s : analyze_kinds()) known += (known.empty() ? "" : ", ") + s;
  NALA_FAIL("attention_weights: unknown attention kind '", kind, "' (known: ", known, ")");
}

double entropy(const std::vector<double>& w) {
  double h = 0;
  for (double v : w)
    if (v > 0) h -= v * std::log(v);
  return h;
}

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  NALA_CHECK(x.size() == y.size(), "pearson: ", x.size(), " x values and ", y.size(), " y values");
  const size_t n = x.size();
  if (n < 2) return NAN;
  double mx = 0, my = 0;
  for (size_t i = 0; i < n; i++) mx += x[i], my += y[i];
  mx /= (double)n, my /= (double)n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < n; i++) {
    const double a = x[i] - mx, b = y[i] - my;
    sxy += a * b, sxx += a * a, syy += b * b;
  }
  if (sxx <= 0 || syy <= 0) return NAN;
  return sxy / std::sqrt(sxx * syy);
}

double spearman(const std::vector<double>& x, const std::vector<double>& y) {
  NALA_CHECK(x.size() == y.size(), "spearman: ", x.size(), " x values and ", y.size(), " y values");
  return pearson(ranks(x), ranks(y));
}

AnalyzeResult analyze_attention(NalaFormer& model, const Dataset& ds, const AnalyzeOptions& opt) {
  const NalaConfig& cfg = model.cfg;
  const auto& kinds = analyze_kinds();
  NALA_CHECK(std::find(kinds.begin(), kinds.end(), opt.linear_kind) != kinds.end(), "analyze: unknown attention "
             "kind '", opt.linear_kind, "'");
  NALA_CHECK(opt.images >= 1 && opt.queries >= 1 && opt.batch_size >= 1, "analyze: images, queries and batch size "
             "must be positive (got ", opt.images, ", ", opt.queries, ", ", opt.batch_size, ")");
  NALA_CHECK(ds.n >= 1 && ds.c == cfg.in_chans, "analyze: ", ds.name, " holds ", ds.n, " images of ", ds.c,
             " channels; the model takes ", cfg.in_chans);

  // Every block's attention, in network order, with its stage and kind.
  struct Layer {
    NalaAttention* attn;
    LayerSummary sum;
    std::vector<NormEntropy> rows;
    std::vector<float> q, k;  // the current batch's (B, h, N, d), on the CPU
    int64_t H = 0, W = 0;
  };
  std::vector<Layer> layers;
  for (int64_t s = 0; s < cfg.num_stages(); s++)
    for (size_t b = 0; b < model.blocks[s]->size(); b++) {
      auto* blk = static_cast<NalaBlock*>((*model.blocks[s])[b]);
      Layer L;
      L.attn = blk->attn;
      L.sum.layer = (int64_t)layers.size(), L.sum.stage = s, L.sum.block = (int64_t)b;
      L.sum.heads = blk->attn->heads, L.sum.head_dim = blk->attn->C / blk->attn->heads;
      L.sum.kind = blk->attn->use_nala ? opt.linear_kind : "softmax";
      layers.push_back(std::move(L));
    }
  struct Unhook {  // the hooks refer to `layers`: removed however this ends
    std::vector<Layer>& ls;
    ~Unhook() {
      for (Layer& L : ls) L.attn->on_qk = nullptr;
    }
  } unhook{layers};
  for (Layer& L : layers)
    L.attn->on_qk = [&L](const Tensor& q, const Tensor& k, int64_t H, int64_t W) {
      L.q = q.to(Device::CPU).to_vector(), L.k = k.to(Device::CPU).to_vector();
      L.H = H, L.W = W;
    };

  LoaderOptions lo;
  lo.batch_size = opt.batch_size, lo.shuffle = false, lo.workers = 0;
  lo.limit = std::min(opt.images, ds.n);
  BatchLoader loader(ds, lo);
  Rng order(0);
  loader.start_epoch(order);
  Batch batch;
  while (loader.next(batch)) {
    eval_logits(model, batch.images);
    const int64_t B = (int64_t)batch.indices.size();
    for (Layer& L : layers) {
      const int64_t h = L.sum.heads, d = L.sum.head_dim, N = L.H * L.W;
      NALA_CHECK((int64_t)L.q.size() == B * h * N * d, "analyze: layer ", L.sum.layer, " was not seen in the forward");
      L.sum.tokens = N;
      for (int64_t bi = 0; bi < B; bi++) {
        const int64_t image = batch.indices[bi];
        for (int64_t hd = 0; hd < h; hd++) {
          const float* q = L.q.data() + (bi * h + hd) * N * d;
          const float* k = L.k.data() + (bi * h + hd) * N * d;
          // Which queries: all, or a fixed sample per (seed, image, layer, head).
          std::vector<int64_t> tokens(N);
          std::iota(tokens.begin(), tokens.end(), 0);
          if (N > opt.queries) {
            Rng pick(opt.seed * 0x9e3779b97f4a7c15ULL + (uint64_t)image * 1000003 + (uint64_t)L.sum.layer * 101 +
                     (uint64_t)hd);
            tokens = pick.permutation(N);
            tokens.resize(opt.queries);
            std::sort(tokens.begin(), tokens.end());
          }
          for (int64_t t : tokens) {
            NormEntropy e;
            e.layer = L.sum.layer, e.head = hd, e.image = image, e.token = t;
            double n2 = 0;
            for (int64_t c = 0; c < d; c++) n2 += (double)q[t * d + c] * q[t * d + c];
            e.norm = std::sqrt(n2);
            e.entropy = entropy(attention_weights(L.sum.kind, q, k, L.H, L.W, d, t));
            L.rows.push_back(e);
          }
        }
      }
    }
  }

  AnalyzeResult res;
  for (Layer& L : layers) {
    std::stable_sort(L.rows.begin(), L.rows.end(), [](const NormEntropy& a, const NormEntropy& b) {
      return a.head < b.head;
    });
    std::vector<int64_t> next(L.sum.heads, 0);
    std::vector<double> xs, ys;
    for (NormEntropy& e : L.rows) {
      e.query = next[e.head]++;
      xs.push_back(e.norm), ys.push_back(e.entropy);
    }
    L.sum.samples = (int64_t)L.rows.size();
    L.sum.pearson = pearson(xs, ys), L.sum.spearman = spearman(xs, ys);
    L.sum.mean_norm = xs.empty() ? NAN : std::accumulate(xs.begin(), xs.end(), 0.0) / (double)xs.size();
    L.sum.mean_entropy = ys.empty() ? NAN : std::accumulate(ys.begin(), ys.end(), 0.0) / (double)ys.size();
    res.layers.push_back(L.sum);
    res.rows.insert(res.rows.end(), L.rows.begin(), L.rows.end());
  }
  return res;
}

std::string norm_entropy_csv(const AnalyzeResult& r) {
  std::ostringstream os;
  os << "layer,head,query,norm,entropy,image,token\n";
  for (const NormEntropy& e : r.rows)
    os << e.layer << "," << e.head << "," << e.query << "," << num(e.norm, "%.7g") << "," << num(e.entropy, "%.7g")
       << "," << e.image << "," << e.token << "\n";
  return os.str();
}

std::string summary_csv(const AnalyzeResult& r) {
  std::ostringstream os;
  os << "layer,stage,block,kind,heads,tokens,head_dim,samples,pearson,spearman,mean_norm,mean_entropy\n";
  for (const LayerSummary& s : r.layers)
    os << s.layer << "," << s.stage << "," << s.block << "," << s.kind << "," << s.heads << "," << s.tokens << ","
       << s.head_dim << "," << s.samples << "," << num(s.pearson, "%.4f") << "," << num(s.spearman, "%.4f") << ","
       << num(s.mean_norm, "%.4g") << "," << num(s.mean_entropy, "%.4g") << "\n";
  return os.str();
}

std::string summary_markdown(const AnalyzeResult& r, const std::string& title) {
  std::ostringstream os;
  os << title << "\n\n"
     << "Query norm |q| against the entropy of the query's attention weights (nats; uniform = ln N), per layer. "
        "Negative correlation: larger norms attend more sharply.\n\n"
     << "| layer | stage.block | kind | heads x tokens | samples | Pearson | Spearman | mean norm | mean entropy (ln N) "
        "| plot |\n|---|---|---|---|---|---|---|---|---|---|\n";
  for (const LayerSummary& s : r.layers)
    os << "| " << s.layer << " | " << s.stage << "." << s.block << " | " << s.kind << " | " << s.heads << " x "
       << s.tokens << " | " << s.samples << " | " << num(s.pearson, "%.3f") << " | " << num(s.spearman, "%.3f")
       << " | " << num(s.mean_norm, "%.3g") << " | " << num(s.mean_entropy, "%.3f") << " ("
       << num(std::log((double)std::max<int64_t>(s.tokens, 1)), "%.3f") << ") | [layer_" << s.layer << ".svg](layer_"
       << s.layer << ".svg) |\n";
  return os.str();
}

plot::Chart layer_chart(const AnalyzeResult& r, size_t li, const std::string& prefix) {
  NALA_CHECK(li < r.layers.size(), "layer_chart: layer ", li, " of ", r.layers.size());
  const LayerSummary& s = r.layers[li];
  plot::Chart c;
  c.mark = plot::Mark::Points;
  c.point_radius = 1.6, c.point_opacity = 0.35;
  c.title = prefix + "layer " + std::to_string(s.layer) + " (stage " + std::to_string(s.stage) + ", block " +
            std::to_string(s.block) + "): " + s.kind + ", " + std::to_string(s.tokens) + " tokens";
  c.subtitle = "Pearson " + num(s.pearson, "%.3f") + ", Spearman " + num(s.spearman, "%.3f") + ", " +
               std::to_string(s.samples) + " queries";
  c.x.label = "query norm |q|";
  c.y.label = "attention entropy (nats)";
  c.notes.push_back("uniform attention over the " + std::to_string(s.tokens) + " tokens: ln N = " +
                    num(std::log((double)std::max<int64_t>(s.tokens, 1)), "%.3f"));
  for (int64_t h = 0; h < s.heads; h++) {
    plot::Series ser;
    ser.name = "head " + std::to_string(h);
    for (const NormEntropy& e : r.rows)
      if (e.layer == s.layer && e.head == h) ser.x.push_back(e.norm), ser.y.push_back(e.entropy);
    c.series.push_back(std::move(ser));
  }
  c.legend = s.heads > 1;
  return c;
}

}  // namespace nala
