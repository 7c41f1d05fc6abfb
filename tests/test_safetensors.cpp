// tests/test_safetensors.cpp - safetensors round trips, compatibility with the
// Python reference writer, every lying header we can think of, atomic saves.
#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "nn/safetensors.h"
#include "tests/helpers.h"
#include "tests/process.h"

using namespace nala;
using namespace nala::test;

namespace {

// A fresh directory under /tmp, removed with everything in it at the end of the test.

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), (std::streamsize)bytes.size());
}

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int k = 0; k < 8; k++) s[k] = (char)(v >> (8 * k));
  return s;
}

// A file with the given header text (unpadded) and data bytes.
std::string st_file(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  REQUIRE(d != nullptr);
  while (dirent* e = readdir(d))
    if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) out.push_back(e->d_name);
  closedir(d);
  return out;
}

}  // namespace

TEST_CASE("safetensors: f32 and i64 round trip, all shapes", "[io]") {
  TempDir tmp;
  std::string dir = tmp.path, path = dir + "/a.safetensors";
  Rng rng(7);
  Tensor a = test::randn({2, 3, 5}, rng);
  Tensor b = Tensor::from_vector_i64({5}, {-3, 0, 1, INT64_MAX, INT64_MIN});
  Tensor s = Tensor::scalar(2.5f);
  Tensor e = Tensor::zeros({0, 4});
  Tensor ei = Tensor::zeros({3, 0}, DType::I64);
  Tensor base = test::randn({4, 7}, rng);
  Tensor nc = transpose(base, 0, 1);  // non-contiguous: saved in logical order
  Tensor big = test::randn({2, 3, 4, 5}, rng);
  save_safetensors(path, {{"z.weight", a}, {"labels", b}, {"scalar", s}, {"empty", e}, {"empty_i64", ei},
                          {"transposed", nc}, {"a.big", big}});
  std::string bytes = read_bytes(path);
  uint64_t n = 0;
  for (int k = 7; k >= 0; k--) n = (n << 8) | (unsigned char)bytes[k];
  REQUIRE((8 + n) % 8 == 0);                     // header padded so data is 8-aligned
  std::string header = bytes.substr(8, n);
  REQUIRE(header.find("\"a.big\"") < header.find("\"z.weight\""));  // sorted by name
  REQUIRE(list_dir(dir).size() == 1);            // no temp file left behind

  SafeTensors st = load_safetensors(path);
  REQUIRE(st.tensors.size() == 7);
  REQUIRE(st.metadata.empty());
  auto same_f32 = [&](const std::string& k, const Tensor& ref) {
    const Tensor& t = st.tensors.at(k);
    INFO(k);
    REQUIRE(t.dtype() == DType::F32);
    REQUIRE(t.shape() == ref.shape());
    REQUIRE(t.to_vector() == ref.to_vector());
  };
  same_f32("z.weight", a);
  same_f32("scalar", s);
  same_f32("empty", e);
  same_f32("transposed", nc);
  same_f32("a.big", big);
  REQUIRE(st.tensors.at("scalar").shape().empty());
  REQUIRE(st.tensors.at("labels").dtype() == DType::I64);
  REQUIRE(st.tensors.at("labels").to_vector_i64() == b.to_vector_i64());
  REQUIRE(st.tensors.at("empty_i64").dtype() == DType::I64);
  REQUIRE(st.tensors.at("empty_i64").shape() == Shape{3, 0});
  // The in-memory parser agrees with the file reader.
  SafeTensors mem = parse_safetensors(bytes, "memory");
  REQUIRE(mem.tensors.at("a.big").to_vector() == big.to_vector());
}

TEST_CASE("safetensors: metadata round trip with escapes and unicode", "[io]") {
  TempDir tmp;
  std::string dir = tmp.path, path = dir + "/m.safetensors";
  std::map<std::string, std::string> meta = {{"format", "pt"},
                                             {"quote\"back\\slash", "line\nbreak\ttab\x01 ctl"},
                                             {"caf\xc3\xa9", "\xce\xbb \xf0\x9f\x98\x80"},
                                             {"empty", ""}};
  save_safetensors(path, {{"w", Tensor::ones({2})}}, meta);
  SafeTensors st = load_safetensors(path);
  REQUIRE(st.metadata == meta);
  save_safetensors(path, {}, meta);  // metadata alone, no tensors
  st = load_safetensors(path);
  REQUIRE(st.tensors.empty());
  REQUIRE(st.metadata == meta);
}

TEST_CASE("safetensors: reads a file written by the Python safetensors package", "[io]") {
  // Written by tests/data/make_safetensors_fixture.py; found next to this source file.
  std::string src = __FILE__;
  std::string path = src.substr(0, src.find_last_of('/') + 1) + "data/reference.safetensors";
  std::ifstream probe(path);
  INFO("fixture " << path << " (run the tests from the repository root)");
  REQUIRE(probe.good());
  SafeTensors st = load_safetensors(path);
  REQUIRE(st.tensors.size() == 11);
  REQUIRE(st.metadata.at("format") == "pt");
  REQUIRE(st.metadata.at("note") == "h\xc3\xa9llo \"quoted\"\n");
  Tensor w = st.tensors.at("layers.0.blocks.1.attn.qkvg.weight");
  REQUIRE(w.shape() == Shape{2, 3, 4});
  for (int64_t k = 0; k < 24; k++) REQUIRE(w.to_vector()[k] == k * 0.5f - 3.0f);
  Tensor nbt = st.tensors.at("layers.2.downsample.norm.num_batches_tracked");
  REQUIRE(nbt.dtype() == DType::I64);
  REQUIRE(nbt.shape().empty());
  REQUIRE(nbt.to_vector_i64()[0] == 12345678901LL);
  REQUIRE(st.tensors.at("head.bias").to_vector() == std::vector<float>{1.5f, -2.25f, 1e-3f});
  REQUIRE(st.tensors.at("empty").shape() == Shape{0, 3});
  REQUIRE(st.tensors.at("labels").to_vector_i64() == std::vector<int64_t>{-1, 0, 7, 1LL << 40});
  // Conversions on load: half, bfloat16, double -> f32; int32, bool -> i64.
  REQUIRE(st.tensors.at("half").dtype() == DType::F32);
  REQUIRE(st.tensors.at("half").to_vector() == std::vector<float>{1.0f, -0.5f, 65504.0f, std::ldexp(1.0f, -24)});
  REQUIRE(st.tensors.at("bfloat").to_vector() == std::vector<float>{1.0f, -3.0f, 0.15625f});
  REQUIRE(st.tensors.at("double").to_vector() == std::vector<float>{0.25f, -1e10f});
  REQUIRE(st.tensors.at("int32").to_vector_i64() == std::vector<int64_t>{-5, 2147483647});
  REQUIRE(st.tensors.at("bool").to_vector_i64() == std::vector<int64_t>{1, 0, 1});
  REQUIRE(st.tensors.at("caf\xc3\xa9.\xce\xbb").to_vector() == std::vector<float>{1, 1, 1, 1});
}

TEST_CASE("safetensors: lying headers give errors naming the file and the problem", "[io]") {
  TempDir tmp;
  std::string dir = tmp.path;
  int case_no = 0;
  auto check = [&](const std::string& bytes, const std::string& reason) {
    std::string path = dir + "/bad" + std::to_string(case_no++) + ".safetensors";
    write_bytes(path, bytes);
    INFO("expecting: " << reason);
    REQUIRE_THROWS_WITH(load_safetensors(path), Catch::Contains(path) && Catch::Contains(reason));
    REQUIRE_THROWS_WITH(parse_safetensors(bytes, path), Catch::Contains(path) && Catch::Contains(reason));
  };
  const std::string f32x2 = std::string(8, '\0');  // two f32 zeros
  auto one = [](const std::string& fields) { return "{\"t\":{" + fields + "}}"; };

  check("abc", "too short");
  check(le64(1000) + "{}", "runs past the end of the file");
  check(le64(1ULL << 62) + "{}", "absurdly large");
  check(le64(0), "too small");
  check(st_file(one("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]"), f32x2), "run past the end of the data");
  check(st_file(one("\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]"), f32x2), "end before begin");
  check(st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                f32x2),
        "overlap");
  check(st_file(one("\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]"), f32x2), "needs 12 bytes");
  check(st_file(one("\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,8]"), f32x2),
        "overflow");
  check(st_file(one("\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]"), f32x2), "non-negative");
  check(st_file(one("\"dtype\":\"Q7\",\"shape\":[2],\"data_offsets\":[0,8]"), f32x2), "unknown dtype \"Q7\"");
  check(st_file(one("\"dtype\":\"U32\",\"shape\":[2],\"data_offsets\":[0,8]"), f32x2), "unsupported dtype U32");
  check(st_file("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                f32x2),
        "duplicate key \"t\"");
  check(st_file(one("\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]"), f32x2),
        "duplicate key \"dtype\"");
  check(st_file("{\"t\xff\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", f32x2), "invalid UTF-8");
  check(st_file("{\"t\xc0\xaf\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", f32x2),
        "invalid UTF-8");  // overlong encoding of '/'
  check(st_file("{\"t\\ud800\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", f32x2), "surrogate");
  check(st_file(one("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]") + "xyz", f32x2), "trailing garbage");
  check(st_file(one("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]"), f32x2 + "junk"),
        "4 bytes of trailing data");
  check(st_file(one("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]"), f32x2), "gap of 4 unused bytes");
  check(st_file("[1, 2]", ""), "must be a JSON object");
  check(st_file(one("\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]"), f32x2), "numbers must be integers");
  check(st_file(one("\"dtype\":\"F32\",\"shape\":[2]"), f32x2), "missing field \"data_offsets\"");
  check(st_file(one("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1"), f32x2), "unknown field");
  check(st_file(one("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]").substr(0, 30), f32x2), "bad JSON");
  check(st_file(one("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,99999999999999999999]"), f32x2),
        "integer too large");
  check(st_file("{\"__metadata__\":{\"k\":1}}", ""), "not a string");
  check(st_file(std::string(40, '[') + std::string(40, ']'), ""), "must be a JSON object");
  check(st_file("{\"a\":" + std::string(40, '[') + std::string(40, ']') + "}", ""), "nested too deeply");

  REQUIRE_THROWS_WITH(load_safetensors(dir + "/missing.safetensors"),
                      Catch::Contains("missing.safetensors") && Catch::Contains("cannot open"));
  // Escapes decode, including a surrogate pair; padding spaces are fine.
  SafeTensors ok = parse_safetensors(
      st_file("{\"\\u00e9\\ud83d\\ude00\\n\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}   ", f32x2),
      "ok");
  REQUIRE(ok.tensors.count("\xc3\xa9\xf0\x9f\x98\x80\n") == 1);
}

TEST_CASE("safetensors: a failing save leaves the previous file intact", "[io]") {
  TempDir tmp;
  std::string dir = tmp.path, path = dir + "/ckpt.safetensors";
  Tensor w = Tensor::from_vector({3}, {1, 2, 3});
  save_safetensors(path, {{"w", w}}, {{"step", "1"}});
  std::string before = read_bytes(path);

  // Refused before anything is written.
  REQUIRE_THROWS_WITH(save_safetensors(path, {{"w", Tensor::ones({3})}, {"bad", Tensor()}}),
                      Catch::Contains(path) && Catch::Contains("\"bad\" is undefined"));
  REQUIRE_THROWS_WITH(save_safetensors(path, {{"w", w}, {"w", w}}), Catch::Contains("duplicate tensor name"));
  REQUIRE_THROWS_WITH(save_safetensors(path, {{"__metadata__", w}}), Catch::Contains("not a valid tensor name"));
  REQUIRE_THROWS_WITH(save_safetensors(path, {{"", w}}), Catch::Contains("empty name"));
  REQUIRE_THROWS_WITH(save_safetensors(dir + "/no/such/dir/x.safetensors", {{"w", w}}),
                      Catch::Contains("cannot create") && Catch::Contains("x.safetensors"));

  // Fails midway through writing the data: the file size limit makes fwrite fail with EFBIG.
  Tensor big = Tensor::zeros({1 << 18});  // 1 MiB
  struct rlimit old_lim;
  REQUIRE(getrlimit(RLIMIT_FSIZE, &old_lim) == 0);
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old_lim;
  lim.rlim_cur = 64 * 1024;
  REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
  std::string err;
  try {
    save_safetensors(path, {{"w", Tensor::ones({3})}, {"big", big}});
  } catch (const Error& e) {
    err = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old_lim);
  signal(SIGXFSZ, old_handler);
  INFO(err);
  REQUIRE(err.find(path) != std::string::npos);
  REQUIRE(err.find("failed") != std::string::npos);

  REQUIRE(read_bytes(path) == before);
  REQUIRE(list_dir(dir) == std::vector<std::string>{"ckpt.safetensors"});  // temp file removed
  SafeTensors st = load_safetensors(path);
  REQUIRE(st.tensors.at("w").to_vector() == std::vector<float>{1, 2, 3});
  REQUIRE(st.metadata.at("step") == "1");

  // A successful save replaces it.
  save_safetensors(path, {{"w", Tensor::ones({2})}});
  REQUIRE(load_safetensors(path).tensors.at("w").to_vector() == std::vector<float>{1, 1});
  REQUIRE(list_dir(dir).size() == 1);
}

TEST_CASE("safetensors: truncated and randomly corrupted files fail cleanly", "[io]") {
  TempDir tmp;
  std::string path = tmp.path + "/c.safetensors";
  Rng rng(5);
  save_safetensors(path, {{"a", test::randn({3, 4}, rng)}, {"b", Tensor::from_vector_i64({2}, {1, 2})},
                          {"s", Tensor::scalar(1)}},
                   {{"k", "v"}});
  const std::string good = read_bytes(path);
  for (size_t len = 0; len < good.size(); len++)  // every truncation is an error naming the file
    REQUIRE_THROWS_WITH(parse_safetensors(good.substr(0, len), "cut.safetensors"), Catch::Contains("cut.safetensors"));
  int loaded = 0, refused = 0;
  for (int trial = 0; trial < 3000; trial++) {
    std::string b = good;
    int flips = 1 + (int)rng.below(3);
    for (int k = 0; k < flips; k++) {
      size_t at = rng.below(std::min<size_t>(b.size(), 8 + 200));  // mostly the length and the header
      b[at] = (char)rng.below(256);
    }
    try {
      parse_safetensors(b, "fuzz");
      loaded++;
    } catch (const Error& e) {
      REQUIRE(std::string(e.what()).find("fuzz") != std::string::npos);
      refused++;
    }
  }
  REQUIRE(refused > 1000);
  REQUIRE(loaded + refused == 3000);
}
