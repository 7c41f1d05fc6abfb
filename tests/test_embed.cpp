// tests/test_embed.cpp - the C interface (include/nala/nala_c.h) and the
// examples built on it: examples/embed (C, static library) and
// examples/classify.py (Python ctypes over libnala.so) must reproduce
// `nala forward`'s logits on the same weights and images, and every C
// function must turn bad input into a message, never a crash or an abort.
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "catch2/catch.hpp"
#include "include/nala/nala_c.h"
#include "models/nalaformer.h"
#include "models/model_file.h"
#include "nn/safetensors.h"
#include "tensor/rng.h"
#include "tests/process.h"

using namespace nala;
using nala::test::TempDir;
using nala::test::slurp;

namespace {

std::string build_dir() {  // the folder of the test binary: build/<variant>
  std::string b = nala::test::nala_binary();
  return b.substr(0, b.find_last_of('/'));
}

// Runs bin args... and returns its exit status; output goes to log.
int run(const std::string& bin, const std::vector<std::string>& args, const std::string& log) {
  pid_t pid = nala::test::spawn(bin, args, log);
  int status = 0;
  REQUIRE(nala::test::wait_for(pid, 300, &status));
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::vector<float> read_floats(const std::string& path) {
  std::string b = slurp(path);
  std::vector<float> v(b.size() / sizeof(float));
  std::memcpy(v.data(), b.data(), v.size() * sizeof(float));
  return v;
}

// A pico model file with nala's metadata (config, classes, normalisation),
// random weights with non-trivial BatchNorm statistics.
std::string write_model(const std::string& dir, int64_t in_chans, int64_t classes) {
  NalaConfig cfg = nalaformer_config("pico", in_chans, classes);
  NalaFormer m(cfg);
  Rng r(7);
  m.init_weights(r);
  for (auto& [name, t] : m.state_dict())
    if (name.find("running_var") != std::string::npos) t.fill_(1.5f);
  ModelFile info;
  info.config = cfg;
  for (int64_t k = 0; k < classes; k++) info.classes.push_back("class-" + std::to_string(k));
  info.mean.assign(in_chans, 0.25f);
  info.std.assign(in_chans, 0.5f);
  info.height = info.width = 28;
  const std::string path = dir + "/pico.safetensors";
  save_model(m, info, path);
  return path;
}

}  // namespace

TEST_CASE("embed: the C example and the Python example reproduce nala forward's logits", "[embed]") {
  TempDir t;
  const std::string weights = write_model(t.path, 1, 10);
  const int N = 3, C = 1, H = 28, W = 28;
  Tensor x = Tensor::empty({N, C, H, W});
  Rng r(11);
  r.fill_normal(x, 0.0f, 1.0f);
  save_safetensors(t.path + "/in.safetensors", {{"input", x}});
  {
    std::ofstream f(t.path + "/in.f32", std::ios::binary);
    f.write((const char*)x.f32(), x.numel() * sizeof(float));
  }
  const std::string log = t.path + "/log.txt";
  REQUIRE(run(nala::test::nala_binary(), {"forward", "--model", "pico", "--weights", weights, "--input",
                                          t.path + "/in.safetensors", "--output", t.path + "/out.safetensors"},
              log) == 0);
  std::vector<float> ref = load_safetensors(t.path + "/out.safetensors").tensors.at("logits").to_vector();
  REQUIRE(ref.size() == (size_t)N * 10);

  auto check = [&](const std::string& path) {
    std::vector<float> got = read_floats(path);
    REQUIRE(got.size() == ref.size());
    for (size_t i = 0; i < ref.size(); i++) REQUIRE(std::fabs(got[i] - ref[i]) <= 1e-5f + 1e-4f * std::fabs(ref[i]));
  };
  const std::string dims[] = {std::to_string(N), std::to_string(C), std::to_string(H), std::to_string(W)};
  INFO(slurp(log));
  REQUIRE(run(build_dir() + "/examples/embed", {weights, "--logits", t.path + "/c.f32", "--raw", t.path + "/in.f32",
                                                 dims[0], dims[1], dims[2], dims[3]},
              log) == 0);
  check(t.path + "/c.f32");
  REQUIRE(slurp(log).find("class-") != std::string::npos);  // top-5 named from the file's class names

  // Python, ctypes over libnala.so, standard library only.
  REQUIRE(access("/usr/bin/python3", X_OK) == 0);
  REQUIRE(run("/usr/bin/python3", {"examples/classify.py", "--lib", build_dir() + "/libnala.so", weights, "--logits",
                                   t.path + "/py.f32", "--raw", t.path + "/in.f32", dims[0], dims[1], dims[2], dims[3]},
              log) == 0);
  check(t.path + "/py.f32");

  // An image through "your image code": a PGM, normalised with the file's mean and std.
  {
    std::ofstream f(t.path + "/img.pgm", std::ios::binary);
    f << "P5\n28 28\n255\n";
    for (int i = 0; i < 28 * 28; i++) f.put((char)((i * 37) % 256));
  }
  Tensor img = Tensor::empty({1, 1, 28, 28});
  for (int i = 0; i < 28 * 28; i++) img.f32()[i] = (((i * 37) % 256) / 255.0f - 0.25f) / 0.5f;
  save_safetensors(t.path + "/img.safetensors", {{"input", img}});
  REQUIRE(run(nala::test::nala_binary(), {"forward", "--model", "pico", "--weights", weights, "--input",
                                          t.path + "/img.safetensors", "--output", t.path + "/img_out.safetensors"},
              log) == 0);
  ref = load_safetensors(t.path + "/img_out.safetensors").tensors.at("logits").to_vector();
  REQUIRE(run(build_dir() + "/examples/embed", {weights, "--logits", t.path + "/pgm.f32", t.path + "/img.pgm"}, log) ==
          0);
  check(t.path + "/pgm.f32");
  REQUIRE(run("/usr/bin/python3", {"examples/classify.py", "--lib", build_dir() + "/libnala.so", weights, "--logits",
                                   t.path + "/pypgm.f32", t.path + "/img.pgm"},
              log) == 0);
  check(t.path + "/pypgm.f32");
}

TEST_CASE("embed: every C function turns bad input into a message", "[embed]") {
  TempDir t;
  char err[256];
  auto msg = [&] { return std::string(err); };

  // Missing file, a directory, a lying header, a file that is not NaLaFormer.
  err[0] = 0;
  CHECK(nala_model_load((t.path + "/missing.safetensors").c_str(), nullptr, err, sizeof err) == nullptr);
  CHECK(msg().find("missing.safetensors") != std::string::npos);
  CHECK(nala_model_load(t.path.c_str(), "pico", err, sizeof err) == nullptr);
  CHECK(msg().find("not a regular file") != std::string::npos);
  {
    std::ofstream f(t.path + "/lying.safetensors", std::ios::binary);
    const unsigned char len[8] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};  // a 4 GiB header in a tiny file
    f.write((const char*)len, 8);
    f << "{}";
  }
  CHECK(nala_model_load((t.path + "/lying.safetensors").c_str(), "pico", err, sizeof err) == nullptr);
  CHECK(msg().find("lying.safetensors") != std::string::npos);
  save_safetensors(t.path + "/other.safetensors", {{"x", Tensor::zeros({2})}});
  CHECK(nala_model_load((t.path + "/other.safetensors").c_str(), "pico", err, sizeof err) == nullptr);
  CHECK(msg().find("other.safetensors") != std::string::npos);
  CHECK(nala_model_load(nullptr, "pico", err, sizeof err) == nullptr);
  CHECK(msg().find("NULL") != std::string::npos);

  const std::string weights = write_model(t.path, 3, 4);
  CHECK(nala_model_load(weights.c_str(), "no-such-size", err, sizeof err) == nullptr);
  CHECK(msg().find("no-such-size") != std::string::npos);
  // A file without metadata needs a config name.
  {
    SafeTensors st = load_safetensors(weights);
    std::vector<std::pair<std::string, Tensor>> plain(st.tensors.begin(), st.tensors.end());
    save_safetensors(t.path + "/plain.safetensors", plain);
  }
  CHECK(nala_model_load((t.path + "/plain.safetensors").c_str(), nullptr, err, sizeof err) == nullptr);
  CHECK(!msg().empty());
  nala_model* plain = nala_model_load((t.path + "/plain.safetensors").c_str(), "pico", err, sizeof err);
  REQUIRE(plain != nullptr);
  CHECK(nala_model_classes(plain) == 4);
  CHECK(nala_model_channels(plain) == 3);
  CHECK(nala_model_class_name(plain, 0) == nullptr);
  float mean[3], sd[3];
  CHECK(nala_model_normalization(plain, mean, sd) != 0);
  nala_model_free(plain);

  nala_model* m = nala_model_load(weights.c_str(), nullptr, err, sizeof err);
  INFO(msg());
  REQUIRE(m != nullptr);
  CHECK(nala_model_classes(m) == 4);
  CHECK(nala_model_channels(m) == 3);
  CHECK(nala_model_image_size(m) == 28);
  CHECK(std::string(nala_model_class_name(m, 3)) == "class-3");
  CHECK(nala_model_class_name(m, 4) == nullptr);
  CHECK(nala_model_class_name(m, -1) == nullptr);
  REQUIRE(nala_model_normalization(m, mean, sd) == 0);
  CHECK(mean[2] == 0.25f);
  CHECK(sd[1] == 0.5f);

  std::vector<float> img(2 * 3 * 32 * 32, 0.1f), logits(2 * 4, -7.0f);
  CHECK(nala_model_forward(m, img.data(), 2, 1, 32, 32, logits.data(), err, sizeof err) != 0);  // wrong channels
  CHECK(msg().find("3-channel") != std::string::npos);
  CHECK(nala_model_forward(m, nullptr, 2, 3, 32, 32, logits.data(), err, sizeof err) != 0);
  CHECK(msg().find("NULL") != std::string::npos);
  CHECK(nala_model_forward(m, img.data(), 2, 3, 32, 32, nullptr, err, sizeof err) != 0);
  CHECK(nala_model_forward(nullptr, img.data(), 2, 3, 32, 32, logits.data(), err, sizeof err) != 0);
  CHECK(nala_model_forward(m, img.data(), 0, 3, 32, 32, logits.data(), err, sizeof err) != 0);
  CHECK(nala_model_forward(m, img.data(), 1, 3, 2, 2, logits.data(), err, sizeof err) != 0);  // too small
  CHECK(nala_model_forward(m, img.data(), 1, 3, -5, 32, logits.data(), err, sizeof err) != 0);
  CHECK(logits[0] == -7.0f);  // nothing written on failure
  // A message is cut to the buffer; a zero-length buffer is never written.
  char tiny[8] = "xxxxxxx";
  CHECK(nala_model_forward(m, nullptr, 1, 3, 32, 32, logits.data(), tiny, 4) != 0);
  CHECK(std::strlen(tiny) == 3);
  CHECK(nala_model_forward(m, nullptr, 1, 3, 32, 32, logits.data(), nullptr, 0) != 0);
  REQUIRE(nala_model_forward(m, img.data(), 2, 3, 32, 32, logits.data(), err, sizeof err) == 0);
  for (float v : logits) CHECK(std::isfinite(v));
  CHECK(logits[0] != -7.0f);

  // NULL models in the queries.
  CHECK(nala_model_classes(nullptr) == -1);
  CHECK(nala_model_channels(nullptr) == -1);
  CHECK(nala_model_class_name(nullptr, 0) == nullptr);
  CHECK(nala_model_describe(nullptr) == nullptr);
  CHECK(std::string(nala_model_describe(m)).find("pico") != std::string::npos);
  nala_model_free(m);
  nala_model_free(nullptr);
  CHECK(std::string(nala_version()).size() > 0);
}
