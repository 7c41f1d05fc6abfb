// models/analyze.cpp - see analyze.h.
#include "models/analyze.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <sstream>

#include "autograd/autograd.h"
#include "autograd/ops.h"
#include "models/attention_kind.h"
#include "models/train/evaluate.h"
#include "tensor/error.h"

namespace nala {

std::vector<std::string> analyze_kinds() { return attn_kind_names(); }

namespace {

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

std::vector<std::vector<double>> attention_weights(const std::string& kind, const float* q, const float* k,
                                                   int64_t H, int64_t W, int64_t d,
                                                   const std::vector<int64_t>& queries) {
  const int64_t N = H * W;
  NALA_CHECK(H >= 1 && W >= 1 && d >= 4 && d % 4 == 0, "attention_weights: grid ", H, "x", W, ", head width ", d,
             " (a multiple of 4)");
  for (int64_t i : queries) NALA_CHECK(i >= 0 && i < N, "attention_weights: query ", i, " outside the ", N, " tokens");
  const AttnKind ak = parse_attn_kind(kind);
  const Tensor qt = Tensor::from_vector({N, d}, std::vector<float>(q, q + N * d));
  const Tensor kt = Tensor::from_vector({N, d}, std::vector<float>(k, k + N * d));
  const std::vector<float> w = implied_attention(ak, qt, kt, H, W, queries).to_vector();
  std::vector<std::vector<double>> rows(queries.size());
  for (size_t r = 0; r < queries.size(); r++) rows[r].assign(w.begin() + r * N, w.begin() + (r + 1) * N);
  return rows;
}

std::vector<double> attention_weights(const std::string& kind, const float* q, const float* k, int64_t H, int64_t W,
                                      int64_t d, int64_t i) {
  return attention_weights(kind, q, k, H, W, d, std::vector<int64_t>{i})[0];
}

double entropy(const std::vector<double>& w) {
  double h = 0, sum = 0;
  for (double v : w) {
    sum += v;
    if (v > 0) h -= v * std::log(v);
  }
  return sum > 0 ? h : NAN;  // all zero: the query attends nowhere
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
  NALA_CHECK(opt.images >= 1 && opt.queries >= 1 && opt.batch_size >= 1, "analyze: images, queries and batch size "
             "must be positive (got ", opt.images, ", ", opt.queries, ", ", opt.batch_size, ")");
  NALA_CHECK(ds.n >= 1 && ds.c == cfg.in_chans, "analyze: ", ds.name, " holds ", ds.n, " images of ", ds.c,
             " channels; the model takes ", cfg.in_chans);

  // Every block's attention, in network order, with its stage and kind.
  struct Layer {
    NalaAttention* attn;
    LayerSummary sum;
    std::vector<NormEntropy> rows;
    AttnCapture slot;  // the current batch's q and k (B, h, N, d)
  };
  std::vector<Layer> layers;
  for (int64_t s = 0; s < cfg.num_stages(); s++)
    for (size_t b = 0; b < model.blocks[s]->size(); b++) {
      auto* blk = static_cast<NalaBlock*>((*model.blocks[s])[b]);
      Layer L;
      L.attn = blk->attn;
      L.sum.layer = (int64_t)layers.size(), L.sum.stage = s, L.sum.block = (int64_t)b;
      L.sum.heads = blk->attn->heads, L.sum.head_dim = blk->attn->C / blk->attn->heads;
      L.sum.kind = attn_kind_name(blk->attn->kind);
      layers.push_back(std::move(L));
    }
  struct Unhook {  // the capture slots live in `layers`: unset however this ends
    std::vector<Layer>& ls;
    ~Unhook() {
      for (Layer& L : ls) L.attn->capture = nullptr;
    }
  } unhook{layers};
  for (Layer& L : layers) L.attn->capture = &L.slot;

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
      const int64_t h = L.sum.heads, d = L.sum.head_dim, H = L.slot.H, W = L.slot.W, N = H * W;
      NALA_CHECK(L.slot.q.defined() && L.slot.q.numel() == B * h * N * d, "analyze: layer ", L.sum.layer,
                 " was not seen in the forward");
      L.sum.kind = attn_kind_name(L.slot.kind);
      L.sum.tokens = N;
      const std::vector<float> qs = L.slot.q.to(Device::CPU).to_vector(), ks = L.slot.k.to(Device::CPU).to_vector();
      L.slot = AttnCapture{};
      for (int64_t bi = 0; bi < B; bi++) {
        const int64_t image = batch.indices[bi];
        for (int64_t hd = 0; hd < h; hd++) {
          const float* q = qs.data() + (bi * h + hd) * N * d;
          const float* k = ks.data() + (bi * h + hd) * N * d;
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
          const std::vector<std::vector<double>> w = attention_weights(L.sum.kind, q, k, H, W, d, tokens);
          for (size_t r = 0; r < tokens.size(); r++) {
            const int64_t t = tokens[r];
            NormEntropy e;
            e.layer = L.sum.layer, e.head = hd, e.image = image, e.token = t;
            double n2 = 0;
            for (int64_t c = 0; c < d; c++) n2 += (double)q[t * d + c] * q[t * d + c];
            e.norm = std::sqrt(n2);
            e.entropy = entropy(w[r]);
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
      if (std::isnan(e.entropy)) {  // attends nowhere: left out of the statistics, counted
        L.sum.undefined++;
        continue;
      }
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
  os << "layer,stage,block,kind,heads,tokens,head_dim,samples,pearson,spearman,mean_norm,mean_entropy,undefined\n";
  for (const LayerSummary& s : r.layers)
    os << s.layer << "," << s.stage << "," << s.block << "," << s.kind << "," << s.heads << "," << s.tokens << ","
       << s.head_dim << "," << s.samples << "," << num(s.pearson, "%.4f") << "," << num(s.spearman, "%.4f") << ","
       << num(s.mean_norm, "%.4g") << "," << num(s.mean_entropy, "%.4g") << "," << s.undefined << "\n";
  return os.str();
}

std::string summary_markdown(const AnalyzeResult& r, const std::string& title) {
  std::ostringstream os;
  os << title << "\n\n"
     << "Query norm |q| against the entropy of the query's attention weights (nats; uniform = ln N), per layer. "
        "Negative correlation: larger norms attend more sharply. Samples: queries measured (those whose weights are "
        "all zero, which attend nowhere, are counted in brackets and left out of the statistics).\n\n"
     << "| layer | stage.block | kind | heads x tokens | samples | Pearson | Spearman | mean norm | mean entropy (ln N) "
        "| plot |\n|---|---|---|---|---|---|---|---|---|---|\n";
  for (const LayerSummary& s : r.layers)
    os << "| " << s.layer << " | " << s.stage << "." << s.block << " | " << s.kind << " | " << s.heads << " x "
       << s.tokens << " | " << s.samples << (s.undefined ? " (" + std::to_string(s.undefined) + ")" : std::string())
       << " | " << num(s.pearson, "%.3f") << " | " << num(s.spearman, "%.3f")
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
