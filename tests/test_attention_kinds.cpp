// tests/test_attention_kinds.cpp - the attention kinds (docs/SPEC.md §11):
// names, gradchecks of every linear kind's core, every kind against the
// PyTorch reference's golden numbers (core output and gradients, implied
// weights, pico logits with the kind in the model), the properties of the
// implied weights, the default path unchanged, kinds and stages in the
// config, model files that record the kind and refuse another, and the
// command line. The CUDA side is in tests/test_cuda_attention.cpp.
//
// Shape letters: B batch, h heads, N = H * W tokens, d head dim.
#include <cmath>
#include <cstdlib>
#include <unistd.h>

#include "autograd/gradcheck.h"
#include "models/attention_kind.h"
#include "models/model_file.h"
#include "models/nalaformer.h"
#include "nn/safetensors.h"
#include "tests/golden_init.h"
#include "tests/helpers.h"
#include "tests/process.h"
#include "tools/common.h"

using namespace nala;
using namespace nala::test;

namespace {

const char* const kGolden = "tests/golden/attn_kinds.safetensors";

// Values in +-[0.1, 2] with mixed signs: no element near relu's kink, so the
// finite differences of gradcheck never straddle it.
Tensor away_from_zero(const Shape& s, Rng& rng) {
  Tensor x = randu(s, rng, 0.1f, 2.0f);
  float* p = x.f32();
  for (int64_t i = 0; i < x.numel(); i++)
    if (rng.uniform() < 0.5) p[i] = -p[i];
  return x.set_requires_grad(true);
}

GradcheckFn core_fn(AttnKind kind, int64_t H, int64_t W) {
  return [=](const std::vector<Tensor>& in) { return attention_core(kind, in[0], in[1], in[2], H, W); };
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (float v : t.to_vector()) m = std::max(m, (double)std::fabs(v));
  return m;
}

Tensor nchw_to_nhwc(const Tensor& x) { return contiguous(permute(x, {0, 2, 3, 1})); }

int run_cmd(int (*cmd)(int, char**), std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return cmd((int)argv.size(), argv.data());
}

}  // namespace

TEST_CASE("attention kinds: names parse back, unknown names list the kinds", "[attention][kinds]") {
  const std::vector<std::string> names = attn_kind_names();
  REQUIRE(names.size() == 6);
  REQUIRE(names[0] == "nala");
  for (const std::string& n : names) REQUIRE(attn_kind_name(parse_attn_kind(n)) == n);
  REQUIRE(parse_attn_kind("nala-paper") == AttnKind::nala_paper);
  REQUIRE_THROWS_WITH(parse_attn_kind("linear"), Catch::Contains("unknown attention kind 'linear'") &&
                                                     Catch::Contains("nala-paper, relu, elu1, flatten, softmax"));
  REQUIRE(attn_kind_is_linear(AttnKind::flatten));
  REQUIRE_FALSE(attn_kind_is_linear(AttnKind::softmax));
  REQUIRE_THROWS_WITH(attn_features(AttnKind::softmax, Tensor::zeros({4, 8}), true), Catch::Contains("softmax"));
}

TEST_CASE("attention kinds: gradcheck of every linear kind's core", "[attention][kinds][gradcheck-kinds]") {
  const int64_t H = 2, W = 3, d = 8;
  for (AttnKind kind : {AttnKind::nala_paper, AttnKind::relu, AttnKind::elu1, AttnKind::flatten}) {
    INFO("kind " << attn_kind_name(kind));
    Rng rng(61);
    Tensor q = away_from_zero({1, 2, H * W, d}, rng), k = away_from_zero({1, 2, H * W, d}, rng);
    Tensor v = randn({1, 2, H * W, d}, rng, 1.0f, true);
    REQUIRE_GRADCHECK(core_fn(kind, H, W), std::vector<Tensor>({q, k, v}));
  }
}

TEST_CASE("attention kinds: every kind's core matches the PyTorch reference", "[attention][kinds]") {
  SafeTensors g = load_safetensors(kGolden);
  const Tensor &q0 = g.tensors.at("q"), &k0 = g.tensors.at("k"), &v0 = g.tensors.at("v"), &w = g.tensors.at("w");
  for (const std::string& name : attn_kind_names()) {
    INFO("kind " << name);
    Tensor q = q0.clone().set_requires_grad(true), k = k0.clone().set_requires_grad(true),
           v = v0.clone().set_requires_grad(true);
    Tensor o = attention_core(parse_attn_kind(name), q, k, v, 3, 4);
    const Tensor& ref = g.tensors.at(name + ".out");
    REQUIRE_CLOSE(o, ref, 1e-5 * max_abs(ref) + 1e-6, 1e-4);
    backward(sum(mul(o, w)));
    std::vector<std::pair<const char*, Tensor>> grads = {{".dq", q.grad()}, {".dk", k.grad()}, {".dv", v.grad()}};
    for (auto& [suffix, got] : grads) {
      INFO("gradient " << suffix);
      const Tensor& r = g.tensors.at(name + suffix);
      REQUIRE_CLOSE(got, r, 1e-4 * max_abs(r) + 1e-6, 1e-3);
    }
  }
}

TEST_CASE("attention kinds: implied weights match the reference and are distributions", "[attention][kinds]") {
  SafeTensors g = load_safetensors(kGolden);
  // Batch 0, head 1 of the golden q and k: (N, d).
  auto head = [](const Tensor& t) { return contiguous(reshape(narrow(narrow(t, 0, 0, 1), 1, 1, 1), {12, 8})); };
  Tensor q = head(g.tensors.at("q")), k = head(g.tensors.at("k"));
  for (const std::string& name : attn_kind_names()) {
    INFO("kind " << name);
    Tensor wts = implied_attention(parse_attn_kind(name), q, k, 3, 4, {0, 5, 11});
    REQUIRE(wts.shape() == Shape({3, 12}));
    REQUIRE_CLOSE(wts, g.tensors.at(name + ".implied"), 1e-6, 1e-4);
    std::vector<float> v = wts.to_vector();
    for (int r = 0; r < 3; r++) {
      double s = 0;
      for (int j = 0; j < 12; j++) {
        REQUIRE(v[r * 12 + j] >= 0.0f);
        s += v[r * 12 + j];
      }
      REQUIRE(std::fabs(s - 1.0) < 1e-5);
    }
  }
  // The weights are the normaliser's: o_i without RoPE would be sum_j w_ij v_j.
  REQUIRE_THROWS_WITH(implied_attention(AttnKind::relu, q, k, 3, 4, {12}), Catch::Contains("query 12"));
  REQUIRE_THROWS_WITH(implied_attention(AttnKind::relu, q, k, 2, 4, {0}), Catch::Contains("H*W"));
  // relu with an all-negative query: its row sums to 0 and comes back all 0.
  Tensor qn = Tensor::full({12, 8}, -1.0f);
  REQUIRE(implied_attention(AttnKind::relu, qn, k, 3, 4, {3}).to_vector() == std::vector<float>(12, 0.0f));
}

TEST_CASE("attention kinds: nala-paper similarities are non-negative for any q and k", "[attention][kinds]") {
  // Opposite extremes inhibit (cos(pi/2) = 0) but never go negative.
  Rng rng(62);
  for (int t = 0; t < 5; t++) {
    Tensor q = randn({16, 8}, rng, 3.0f), k = randn({16, 8}, rng, 3.0f);
    Tensor fq = concat(attn_features(AttnKind::nala_paper, q, true), -1);
    Tensor fk = concat(attn_features(AttnKind::nala_paper, k, false), -1);
    for (float s : matmul(fq, fk, false, true).to_vector()) REQUIRE(s >= -1e-5f);
    // Norm-preserving: |phi(x)| = |x|.
    REQUIRE_CLOSE(l2norm(fk, 1), l2norm(k, 1), 1e-5, 1e-5);
  }
  // q = -k (every component opposite, at the extremes +-1 of a one-hot
  // direction): that component's cosine is cos(pi/2) = 0, the others cos 0 = 1.
  Tensor e = Tensor::from_vector({1, 4}, {1, 0, 0, 0});
  Tensor fq = concat(attn_features(AttnKind::nala_paper, e, true), -1);
  Tensor fk = concat(attn_features(AttnKind::nala_paper, neg(e), false), -1);
  REQUIRE(matmul(fq, fk, false, true).to_vector()[0] == Approx(3.0 / 4.0).margin(1e-6));
}

TEST_CASE("attention kinds: the nala kind is the fused op, bit for bit", "[attention][kinds]") {
  Rng rng(63);
  Tensor q = randn({2, 2, 12, 8}, rng), k = randn({2, 2, 12, 8}, rng), v = randn({2, 2, 12, 8}, rng);
  REQUIRE(attention_core(AttnKind::nala, q, k, v, 3, 4).to_vector() == nala_attention(q, k, v, 3, 4).to_vector());
  REQUIRE(attention_core(AttnKind::softmax, q, k, v, 3, 4).to_vector() ==
          softmax_attention(q, k, v, 3, 4).to_vector());
  // The structure of docs/SPEC.md §11.1 on NaLa's feature maps (what
  // implied_attention uses for nala) gives the fused op's output.
  auto pq = attn_features(AttnKind::nala, q, true), pk = attn_features(AttnKind::nala, k, false);
  REQUIRE(pq.size() == 2);
  auto rope_cat = [](std::vector<Tensor> parts) {
    for (Tensor& t : parts) t = rope2d(t, 3, 4);
    return concat(parts, -1);
  };
  Tensor fq = concat(pq, -1), fk = concat(pk, -1);
  Tensor den = add_scalar(matmul(fq, mean(fk, {2}, true), false, true), 1e-6f);
  Tensor S = scale(matmul(rope_cat(pk), v, true, false), 1.0f / 12.0f);
  REQUIRE_CLOSE(nala::div(matmul(rope_cat(pq), S), den), nala_attention(q, k, v, 3, 4), 1e-5, 1e-4);
}

TEST_CASE("attention kinds: pico with each kind matches the PyTorch reference", "[attention][kinds][model]") {
  SafeTensors g = load_safetensors(kGolden);
  SafeTensors pg = load_safetensors("tests/golden/pico_golden.safetensors");
  Tensor x = nchw_to_nhwc(pg.tensors.at("input"));
  std::vector<std::string> runs = attn_kind_names();
  runs.push_back("flatten_all");
  for (const std::string& run : runs) {
    INFO("run " << run);
    NalaConfig cfg = nalaformer_config("pico");
    cfg.attn = parse_attn_kind(run == "flatten_all" ? "flatten" : run);
    if (run == "flatten_all") cfg.nala_stage = {true, true, true};
    NalaFormer m(cfg);
    test::golden_init(m);  // the same names and shapes for every kind
    m.eval();
    NoGradGuard ng;
    const Tensor& ref = g.tensors.at("pico." + run + ".logits_eval");
    REQUIRE_CLOSE(m.forward(x), ref, 1e-4 * max_abs(ref) + 1e-5, 1e-4);
  }
}

TEST_CASE("attention kinds: config, description and module types per stage", "[attention][kinds][model]") {
  NalaConfig cfg = nalaformer_config("pico");
  const std::string plain = cfg.describe();
  REQUIRE(plain.find("attn=") == std::string::npos);  // the default's line is unchanged
  cfg.attn = AttnKind::elu1;
  REQUIRE(cfg.describe().find("attn=elu1 nala_stages=0,1") != std::string::npos);
  REQUIRE(cfg.stage_attn(0) == AttnKind::elu1);
  REQUIRE(cfg.stage_attn(2) == AttnKind::softmax);
  NalaFormer m(cfg);
  auto attn_of = [&](int s) { return static_cast<NalaBlock*>((*m.blocks[s])[0])->attn; };
  REQUIRE(attn_of(0)->kind == AttnKind::elu1);
  REQUIRE(attn_of(2)->kind == AttnKind::softmax);
  cfg.attn = AttnKind::softmax;
  NalaFormer all_softmax(cfg);
  for (int s = 0; s < 3; s++) REQUIRE(static_cast<NalaBlock*>((*all_softmax.blocks[s])[0])->attn->kind == AttnKind::softmax);
  REQUIRE(all_softmax.num_parameters() == m.num_parameters());
  // The capture hook sees each layer's q and k.
  AttnCapture cap;
  attn_of(1)->capture = &cap;
  m.eval();
  Rng rng(64);
  {
    NoGradGuard ng;
    m.forward(randn({2, 28, 28, 1}, rng));
  }
  REQUIRE(cap.q.shape() == Shape({2, 2, 49, 32}));
  REQUIRE(cap.k.shape() == Shape({2, 2, 49, 32}));
  REQUIRE(cap.H == 7);
  REQUIRE(cap.kind == AttnKind::elu1);
}

TEST_CASE("attention kinds: options --attn and --nala-stages", "[attention][kinds][cli]") {
  NalaConfig cfg = nalaformer_config("pico");
  apply_attn_options({"relu", "0,2"}, cfg);
  REQUIRE(cfg.attn == AttnKind::relu);
  REQUIRE(cfg.nala_stage == std::vector<bool>({true, false, true}));
  apply_attn_options({"", "all"}, cfg);
  REQUIRE(cfg.nala_stage == std::vector<bool>({true, true, true}));
  apply_attn_options({"", "none"}, cfg);
  REQUIRE(cfg.nala_stage == std::vector<bool>({false, false, false}));
  REQUIRE_THROWS_WITH(apply_attn_options({"", "0,3"}, cfg), Catch::Contains("\"3\" is not a stage of pico"));
  REQUIRE_THROWS_WITH(apply_attn_options({"", "1,1"}, cfg), Catch::Contains("named twice"));
  REQUIRE_THROWS_WITH(apply_attn_options({"", "x"}, cfg), Catch::Contains("not a stage"));
  REQUIRE_THROWS_WITH(apply_attn_options({"softmax", "0"}, cfg), Catch::Contains("--attn softmax"));
  REQUIRE_THROWS_AS(apply_attn_options({"softmax", "0"}, cfg), UsageError);
}

TEST_CASE("attention kinds: a model file records its kind and refuses another", "[attention][kinds][model]") {
  char tmpl[] = "/tmp/nala_kinds_XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl, path = dir + "/m.safetensors";
  NalaConfig cfg = nalaformer_config("pico");
  cfg.attn = AttnKind::nala_paper;
  cfg.nala_stage = {true, false, false};
  NalaFormer m(cfg);
  ModelFile mf;
  mf.config = cfg;
  Metadata meta = model_file_metadata(mf);
  REQUIRE(meta.at("nala.config.attn") == "nala-paper");
  REQUIRE(meta.at("nala.config.nala_stages") == "1,0,0");
  save_model(m, mf, path);

  LoadedModel back = load_model_file(path);
  REQUIRE(back.file.config.attn == AttnKind::nala_paper);
  REQUIRE(back.file.config.nala_stage == std::vector<bool>({true, false, false}));
  REQUIRE(static_cast<NalaBlock*>((*back.model->blocks[0])[0])->attn->kind == AttnKind::nala_paper);
  REQUIRE(load_model_file(path, "", "nala-paper").file.config.attn == AttnKind::nala_paper);
  REQUIRE_THROWS_WITH(load_model_file(path, "", "relu"),
                      Catch::Contains("trained with attention kind nala-paper") && Catch::Contains("not relu"));
  // The same logits after the round trip.
  Rng rng(65);
  Tensor x = randn({1, 28, 28, 1}, rng);
  m.eval();
  {
    NoGradGuard ng;
    REQUIRE(m.forward(x).to_vector() == back.model->forward(x).to_vector());
  }
  // A file without the key (older nala files) is nala; a bad value is named.
  Metadata old = meta;
  old.erase("nala.config.attn");
  REQUIRE(read_model_metadata(old, "old.safetensors").config.attn == AttnKind::nala);
  Metadata bad = meta;
  bad["nala.config.attn"] = "cosine";
  REQUIRE_THROWS_WITH(read_model_metadata(bad, "bad.safetensors"),
                      Catch::Contains("bad.safetensors") && Catch::Contains("nala.config.attn") &&
                          Catch::Contains("not an attention kind"));
  // Weights without metadata take the kind asked for (nala by default).
  save_safetensors(dir + "/plain.safetensors", m.state_dict());
  REQUIRE(load_model_file(dir + "/plain.safetensors", "pico").file.config.attn == AttnKind::nala);
  REQUIRE(load_model_file(dir + "/plain.safetensors", "pico", "relu").file.config.attn == AttnKind::relu);
  std::system(("rm -rf " + dir).c_str());
}

TEST_CASE("attention kinds: nala train --attn and --nala-stages on the CPU", "[attention][kinds][train]") {
  REQUIRE_THROWS_AS(run_cmd(cmd_train, {"--attn", "cosine"}), UsageError);
  REQUIRE_THROWS_WITH(run_cmd(cmd_train, {"--nala-stages", "0,7"}), Catch::Contains("not a stage of pico"));
  REQUIRE_THROWS_WITH(run_cmd(cmd_train, {"--attn", "softmax", "--nala-stages", "0"}),
                      Catch::Contains("--attn softmax"));
  SKIP_WITHOUT_FASHION_MNIST();
  char tmpl[] = "/tmp/nala_kinds_train_XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  struct Run {
    const char* attn;
    const char* stages;
    const char* recorded;
  };
  for (Run r : {Run{"nala-paper", "all", "1,1,1"}, Run{"flatten", "", "1,1,0"}}) {
    INFO("--attn " << r.attn << " --nala-stages " << r.stages);
    const std::string out = dir + "/" + r.attn;
    std::vector<std::string> args = {"--attn", r.attn, "--epochs", "1", "--subset", "64", "--eval-subset", "32",
                                     "--batch-size", "32", "--threads", "2", "--workers", "1", "--out", out};
    if (*r.stages) args.insert(args.end(), {"--nala-stages", r.stages});
    REQUIRE(run_cmd(cmd_train, args) == 0);
    SafeTensors best = load_safetensors(out + "/best.safetensors");
    REQUIRE(best.metadata.at("nala.config.attn") == r.attn);
    REQUIRE(best.metadata.at("nala.config.nala_stages") == r.recorded);
    LoadedModel lm = load_model_file(out + "/best.safetensors");
    REQUIRE(lm.model->cfg.attn == parse_attn_kind(r.attn));
    // Resuming with another kind is refused.
    REQUIRE_THROWS_WITH(run_cmd(cmd_train, {"--attn", "relu", "--epochs", "1", "--subset", "64", "--eval-subset", "32",
                                            "--batch-size", "32", "--threads", "2", "--workers", "1", "--resume", out}),
                        Catch::Contains("attn=relu"));
  }
  std::system(("rm -rf " + dir).c_str());
}
