// tests/test_probe.cpp - inputs a hostile user tried that the other tests did
// not: model files whose metadata lies about the network's size, shapes whose
// element count wraps int64, NaN and Inf images given to the C interface and
// to `nala forward`, more threads than cores, a normalisation that turns every
// pixel into Inf, and a line chart of a million points. Each test is a few
// seconds at most.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "include/nala/nala_c.h"
#include "models/model_file.h"
#include "models/plot.h"
#include "nn/safetensors.h"
#include "tests/helpers.h"
#include "tools/common.h"

using namespace nala;
namespace fs = std::filesystem;

namespace {

std::string scratch(const std::string& name) {
  std::string dir = "/tmp/nala_probe_" + std::to_string(getpid());
  fs::create_directories(dir);
  return dir + "/" + name;
}

double state_values(const Module& m) {
  double n = 0;
  for (auto& [k, t] : m.state_dict()) n += (double)t.numel();
  return n;
}

// A pico model file (random weights) with its metadata, at `path`.
void write_pico(const std::string& path) {
  NalaFormer m(nalaformer_config("pico"));
  Rng rng(7);
  m.init_weights(rng);
  ModelFile mf;
  mf.config = m.cfg;
  mf.mean = {0.25f}, mf.std = {0.5f}, mf.height = mf.width = 28;
  save_model(m, mf, path);
}

// The file at `from` with metadata key k set to v, written to `to`.
void rewrite_metadata(const std::string& from, const std::string& to,
                      const std::vector<std::pair<std::string, std::string>>& kv) {
  SafeTensors st = load_safetensors(from);
  for (auto& [k, v] : kv) st.metadata[k] = v;
  std::vector<std::pair<std::string, Tensor>> tensors(st.tensors.begin(), st.tensors.end());
  save_safetensors(to, tensors, st.metadata);
}

std::string load_error(const std::string& path) {
  try {
    load_model_file(path);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("probe: a config's state size, computed without building, is the built network's", "[probe]") {
  std::vector<NalaConfig> configs = {nalaformer_config("pico"), nalaformer_config("xt", 3, 7),
                                     nalaformer_config("t", 1, 3)};
  NalaConfig odd = nalaformer_config("pico", 2, 5);
  odd.mlp_ratio = 3.7f, odd.stem_stride_last = 2, odd.head_width = 40, odd.depths = {1, 3, 1};
  configs.push_back(odd);
  for (const NalaConfig& c : configs) {
    NalaFormer m(c);
    CAPTURE(c.describe());
    CHECK(c.state_numel() == state_values(m));
  }
}

TEST_CASE("probe: model metadata describing a larger network than its tensors is refused before building it",
          "[probe]") {
  const std::string good = scratch("pico.safetensors"), bad = scratch("lying.safetensors");
  write_pico(good);
  REQUIRE(load_error(good).empty());
  // Each lie once cost minutes and gigabytes (16M classes: 16 GB, 43 s) or a
  // terabyte allocation before the shapes were compared.
  const std::vector<std::vector<std::pair<std::string, std::string>>> lies = {
      {{"nala.config.classes", "100000"}},
      {{"nala.config.dims", "65536,65536,65536"}, {"nala.config.heads", "1,1,1"}},
      {{"nala.config.depths", "1024,1024,1024"}},
      {{"nala.config.classes", "16777216"}},
      {{"nala.config.head_width", "1048576"}},
  };
  for (auto& lie : lies) {
    CAPTURE(lie[0].first, lie[0].second);
    rewrite_metadata(good, bad, lie);
    auto t0 = std::chrono::steady_clock::now();
    std::string e = load_error(bad);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK_THAT(e, Catch::Contains("lying.safetensors: its metadata (nala.config.*) describes a network of") &&
                      Catch::Contains("but the file's tensors hold only 654257"));
    CHECK(s < 2.0);
  }
  // A config of the same size that contradicts the shapes names both sides
  // and says the file disagrees with itself.
  rewrite_metadata(good, bad, {{"nala.config.dims", "16,64,128"}});
  CHECK_THAT(load_error(bad), Catch::Contains("the tensors do not match the file's own metadata") &&
                                  Catch::Contains("file [16, 1, 3, 3], module [8, 1, 3, 3]"));
  fs::remove_all(fs::path(good).parent_path());
}

TEST_CASE("probe: a normalisation that makes pixels infinite is refused, on reading and on writing", "[probe]") {
  const std::string good = scratch("pico.safetensors"), bad = scratch("std.safetensors");
  write_pico(good);
  rewrite_metadata(good, bad, {{"nala.input.std", "1e-45"}});  // (x - mean) / std = Inf: NaN logits
  CHECK_THAT(load_error(bad), Catch::Contains("nala.input.std = \"1e-45\": every std must be in [1e-06, 1e+06]"));
  rewrite_metadata(good, bad, {{"nala.input.mean", "3e38"}});
  CHECK_THAT(load_error(bad), Catch::Contains("nala.input.mean = \"3e38\": every mean must be in"));
  ModelFile mf;
  mf.config = nalaformer_config("pico");
  mf.mean = {0.5f}, mf.std = {1e-30f}, mf.height = mf.width = 28;
  CHECK_THROWS_WITH(model_file_metadata(mf), Catch::Contains("std in [1e-06, 1e+06]"));
  fs::remove_all(fs::path(good).parent_path());
}

TEST_CASE("probe: a shape whose element count passes int64 is refused, not wrapped to a small buffer", "[probe]") {
  const int64_t big = int64_t(1) << 32;
  // 2^32 * 2^32 wrapped to 0: an empty buffer the shape would write 2^64 floats into.
  CHECK_THROWS_WITH(Tensor::empty({big, big, 1}), Catch::Contains("has more than 2^60 elements"));
  CHECK_THROWS_WITH(Tensor::empty({big + 1, big}), Catch::Contains("has more than 2^60 elements"));
  CHECK_THROWS_WITH(Tensor::empty({2147483647, 1 << 20, 1 << 20, 1}), Catch::Contains("more than 2^60"));
  CHECK(Tensor::empty({big, big, 0}).numel() == 0);  // a zero anywhere: empty, whatever the rest
  CHECK(shape_numel({3, 5, 7}) == 105);
}

TEST_CASE("probe: the C interface refuses NaN and Inf pixels and sizes past 2^40 values", "[probe]") {
  const std::string path = scratch("pico.safetensors");
  write_pico(path);
  char err[512] = "";
  nala_model* m = nala_model_load(path.c_str(), nullptr, err, sizeof err);
  REQUIRE(m);
  std::vector<float> img(2 * 28 * 28, 0.1f), logits(20, 0.0f);
  REQUIRE(nala_model_forward(m, img.data(), 2, 1, 28, 28, logits.data(), err, sizeof err) == 0);
  const std::vector<float> ref = logits;
  img[28 * 28 + 3 * 28 + 5] = NAN;  // image 1, row 3, column 5
  CHECK(nala_model_forward(m, img.data(), 2, 1, 28, 28, logits.data(), err, sizeof err) != 0);
  CHECK_THAT(std::string(err), Catch::Contains("(image 1, channel 0, row 3, column 5) is NaN"));
  img[28 * 28 + 3 * 28 + 5] = -INFINITY;
  CHECK(nala_model_forward(m, img.data(), 2, 1, 28, 28, logits.data(), err, sizeof err) != 0);
  CHECK_THAT(std::string(err), Catch::Contains("is infinite"));
  CHECK(logits == ref);  // nothing written on failure
  // n * H * W past 2^63 (it wrapped to a small allocation): refused before a pixel is read.
  CHECK(nala_model_forward(m, img.data(), 2147483647, 1, 1 << 20, 1 << 20, logits.data(), err, sizeof err) != 0);
  CHECK_THAT(std::string(err), Catch::Contains("more than 2^40 values"));
  nala_model_free(m);
  fs::remove_all(fs::path(path).parent_path());
}

TEST_CASE("probe: more threads than cores are capped at the cores", "[probe]") {
#ifdef _OPENMP
  const int before = omp_get_max_threads();
  CHECK(nala_set_threads(100000) == omp_get_num_procs());
  set_threads(4096);
  CHECK(omp_get_max_threads() == omp_get_num_procs());
  omp_set_num_threads(before);
#else
  CHECK(nala_set_threads(100000) == 1);
#endif
}

TEST_CASE("probe: nala forward refuses an input holding NaN, naming the file and the index", "[probe]") {
  const std::string w = scratch("pico.safetensors"), in = scratch("in.safetensors"), out = scratch("out.safetensors");
  write_pico(w);
  Tensor x = Tensor::full({1, 1, 28, 28}, 0.1f);
  x.f32()[40] = NAN;
  save_safetensors(in, {{"input", x}}, {});
  std::vector<std::string> args = {"--weights", w, "--input", in, "--output", out};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(&a[0]);
  argv.push_back(nullptr);
  CHECK_THROWS_WITH(cmd_forward((int)args.size(), argv.data()),
                    Catch::Contains("in.safetensors: tensor \"input\" holds 1 non-finite value (NaN at index 40"));
  CHECK(!fs::exists(out));
  fs::remove_all(fs::path(w).parent_path());
}

TEST_CASE("probe: a line chart of a million points stays small and keeps its extremes", "[probe]") {
  plot::Chart c;
  plot::Series s;
  s.name = "loss";
  for (int i = 0; i < 1000000; i++) {
    s.x.push_back(i);
    s.y.push_back(1.0 + 0.5 * std::sin(i * 0.01) + (i == 654321 ? 5.0 : 0.0));  // one spike
  }
  c.series.push_back(s);
  std::string svg = plot::chart_svg(c);
  CHECK(svg.size() < 200000);  // 1e6 points were 20 MB of path
  // The spike is the highest point: the path must still reach the top of the plot area.
  double top = 1e9;
  size_t at = svg.find("class=\"series\" d=\"");
  REQUIRE(at != std::string::npos);
  std::string d = svg.substr(at, svg.find('"', at + 18) - at);
  for (size_t p = 0; (p = d.find_first_of("ML", p)) != std::string::npos; p++) {
    double x, y;
    if (std::sscanf(d.c_str() + p + 1, "%lf %lf", &x, &y) == 2) top = std::min(top, y);
  }
  CHECK(top < 100);  // near the top of a 460-pixel chart, as without thinning
}
