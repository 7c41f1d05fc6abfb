// models/analyze.h - the query norm against the entropy of that query's
// attention (the paper's Fig. 1 measurement, `nala analyze`): softmax
// attention grows spikier (lower entropy) as the query norm grows; plain
// linear attention loses that link; NaLa's norm-dependent power restores it.
//
// Shape letters: N = H * W tokens of a layer (row-major, token n = r W + c),
// d the head width. For one problem (an image, a layer, a head) and query i:
//
//   softmax  w_j = exp(s_ij) / sum_j exp(s_ij), s_ij = (R_i q_i) . (R_j k_j) / sqrt d
//            (the real weights, docs/SPEC.md §3, RoPE §4)
//   linear   w_j = phi_q(q_i) . phi_k(k_j) / sum_j phi_q(q_i) . phi_k(k_j)
//            with the kind's feature maps before the rotation (NaLa,
//            docs/SPEC.md §2.1: phi(q) = ([relu(q), relu(-q)] / |q|)^p(|q|),
//            p = 3 (0.5 + tanh |q|), phi(k) = [relu(k^3), relu(-k^3)]; the
//            other kinds §11); non-negative, so w is a distribution (the
//            rotated products the layer multiplies by v may be negative: the
//            implied weights leave RoPE out, as the kinds' own normaliser does)
//
//   entropy  H_i = -sum_j w_j ln w_j (nats; 0 ln 0 = 0), between 0 (all
//            weight on one key) and ln N (uniform)
//   norm     |q_i|, the query before any feature map or rotation
//
// The weights come from implied_attention (models/attention_kind.h), which
// knows every kind. Everything runs on the CPU in double from the model's own
// q and k (taken with NalaAttention::on_qk during an eval-mode forward on
// the model's device).
//
// What it does not do: write files (tools/cmd_analyze.cpp does), or look at
// the values v or the outputs.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "models/nalaformer.h"
#include "models/plot.h"
#include "models/train/data.h"

namespace nala {

// The kinds attention_weights() knows.
std::vector<std::string> analyze_kinds();

// The attention weights query i gives the N keys of one problem; q and k are
// (N, d) row-major f32, as they enter the attention core. Refuses an unknown
// kind, i outside [0, N), or a head width that is not a multiple of 4. The
// weights come from implied_attention (models/attention_kind.h), the one
// place that knows every kind's feature maps; a query whose features meet
// no key's (relu with an all-negative query) gets all zeros.
std::vector<double> attention_weights(const std::string& kind, const float* q, const float* k, int64_t H, int64_t W,
                                      int64_t d, int64_t i);
// The same for several queries: one row per query.
std::vector<std::vector<double>> attention_weights(const std::string& kind, const float* q, const float* k,
                                                   int64_t H, int64_t W, int64_t d,
                                                   const std::vector<int64_t>& queries);

// -sum w ln w (nats), 0 ln 0 = 0; NaN for all-zero weights (the query attends
// nowhere: such samples are written with entropy nan and left out of the
// correlations, counted in LayerSummary::undefined).
double entropy(const std::vector<double>& w);
// Correlation of paired samples: NaN when fewer than 2 pairs or either side
// is constant. spearman ranks each side (ties get their average rank) and
// correlates the ranks.
double pearson(const std::vector<double>& x, const std::vector<double>& y);
double spearman(const std::vector<double>& x, const std::vector<double>& y);

struct AnalyzeOptions {
  int64_t images = 32;               // the first N images of the dataset
  int64_t queries = 64;              // queries per (image, layer, head); all when a layer has fewer tokens
  uint64_t seed = 0;                 // which queries
  int64_t batch_size = 32;
};

struct NormEntropy {
  int64_t layer = 0, head = 0;
  int64_t query = 0;  // the sample's number within (layer, head): 0, 1, ...
  int64_t image = 0, token = 0;
  double norm = 0, entropy = 0;
};

struct LayerSummary {
  int64_t layer = 0, stage = 0, block = 0, heads = 0, tokens = 0, head_dim = 0;
  std::string kind;
  int64_t samples = 0;
  int64_t undefined = 0;             // samples whose weights are all zero (entropy NaN), left out below
  double pearson = 0, spearman = 0;  // of (norm, entropy) over the other samples of the layer
  double mean_entropy = 0, mean_norm = 0;
};

struct AnalyzeResult {
  std::vector<NormEntropy> rows;      // by layer, head, then image and token
  std::vector<LayerSummary> layers;   // one per attention layer (block), in network order
};

// Runs the images through the model (eval mode, no tape) and measures every
// attention layer and head. The dataset must match the model's input.
AnalyzeResult analyze_attention(NalaFormer& model, const Dataset& ds, const AnalyzeOptions& opt);

// entropy_norm.csv: "layer,head,query,norm,entropy,image,token", one row a sample.
std::string norm_entropy_csv(const AnalyzeResult& r);
// summary.csv: one row per layer (layer,stage,block,kind,heads,tokens,head_dim,samples,pearson,spearman,
// mean_norm,mean_entropy).
std::string summary_csv(const AnalyzeResult& r);
// The per-layer table in markdown, after `title` (a line naming the weights and data).
std::string summary_markdown(const AnalyzeResult& r, const std::string& title);
// One layer's scatter plot: x the query norm, y the entropy, one colour per head.
plot::Chart layer_chart(const AnalyzeResult& r, size_t layer_index, const std::string& title_prefix = "");

}  // namespace nala
