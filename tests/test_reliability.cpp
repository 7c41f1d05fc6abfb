// tests/test_reliability.cpp - what happens when things go wrong: fuzz
// regressions replayed, NaN losses, bad command lines and bad inputs at the
// level of the nala commands, the memory estimate, and (tagged [slow], run
// separately by CI) SIGKILL at random moments followed by --resume.
//
// The commands run in-process through cmd_train/cmd_eval/cmd_predict with
// stdout and stderr captured; Code mirrors tools/main.cpp (UsageError -> 2,
// any other error -> 1). The [slow] test runs the nala binary next to this
// test binary as a separate process, since it must be killed.
//
// Which case is covered where (besides this file):
//   unknown flag, missing value, negative batch, zero epochs   test_train.cpp "cli: bad arguments ..."
//   truncated / corrupt IDX and CIFAR files (loader level)      test_datasets.cpp
//   empty class folder, missing root, corrupt file + skip_bad  test_datasets.cpp "image folders ..."
//   16-bit PNG, RGBA PNG decoding (loader level)               test_datasets.cpp "image folders ..."
//   lying safetensors headers (parser level)                   test_safetensors.cpp
//   another model's checkpoint (load_weights level)            test_train.cpp "weights: ..."
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "models/train/evaluate.h"
#include "models/weights.h"
#include "nn/safetensors.h"
#include "stb/stb_image_write.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/helpers.h"
#include "tests/process.h"
#include "tests/run_command.h"
#include "tools/common.h"

using namespace nala;
using namespace nala::test;
namespace fs = std::filesystem;

namespace {

const std::string kSourceDir = std::string(__FILE__).substr(0, std::string(__FILE__).find_last_of('/') + 1);



using Bytes = std::vector<uint8_t>;

Bytes read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const Bytes& b) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f.write((const char*)b.data(), (std::streamsize)b.size());
}

// ---------------------------------------------------------------- running a command in-process

using Result = CmdResult;

// A model file check: loads, and every float is finite.
void require_clean_checkpoint(const std::string& path) {
  SafeTensors st = load_safetensors(path);
  REQUIRE(!st.tensors.empty());
  for (auto& [k, t] : st.tensors) {
    if (t.dtype() != DType::F32) continue;
    int64_t bad = 0;
    for (float v : t.to_vector()) bad += !std::isfinite(v);
    INFO(path << ": " << k);
    REQUIRE(bad == 0);
  }
}

// Training arguments on Fashion-MNIST: 32 images in batches of 8 (4 steps per
// epoch), small enough for the sanitizer build.
std::vector<std::string> small_run(const std::string& out, int epochs) {
  return {"--model", "pico", "--subset", "32", "--eval-subset", "16", "--batch-size", "8", "--epochs",
          std::to_string(epochs), "--threads", "2", "--seed", "1", "--log-every", "100", "--out", out};
}

// ---------------------------------------------------------------- small image files

void put_be32(Bytes& b, uint32_t v) {
  for (int k = 3; k >= 0; k--) b.push_back((uint8_t)(v >> (8 * k)));
}

// A PNG of any bit depth / colour type (stb_image_write only writes 8-bit ones).
Bytes png(int w, int h, int colour_type, int depth, int samples, uint16_t value) {
  Bytes raw;
  for (int y = 0; y < h; y++) {
    raw.push_back(0);
    for (int k = 0; k < w * samples; k++) {
      if (depth == 16) raw.push_back((uint8_t)(value >> 8));
      raw.push_back((uint8_t)value);
    }
  }
  uLongf zlen = compressBound(raw.size());
  Bytes z(zlen);
  REQUIRE(compress2(z.data(), &zlen, raw.data(), raw.size(), 6) == Z_OK);
  z.resize(zlen);
  Bytes out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  auto chunk = [&](const char* type, const Bytes& data) {
    put_be32(out, (uint32_t)data.size());
    Bytes td(type, type + 4);
    td.insert(td.end(), data.begin(), data.end());
    out.insert(out.end(), td.begin(), td.end());
    put_be32(out, (uint32_t)crc32(0, td.data(), (uInt)td.size()));
  };
  Bytes ihdr;
  put_be32(ihdr, w);
  put_be32(ihdr, h);
  ihdr.insert(ihdr.end(), {(uint8_t)depth, (uint8_t)colour_type, 0, 0, 0});
  chunk("IHDR", ihdr);
  chunk("IDAT", z);
  chunk("IEND", {});
  return out;
}

// root/a: RGB, 16-bit RGBA, 8-bit RGBA PNGs; root/b: grey and 16-bit grey PNGs,
// plus (bad = true) a text file named .jpg and a PNG cut in half.
void make_folder(const std::string& root, bool bad) {
  write_bytes(root + "/a/rgb.png", png(10, 9, 2, 8, 3, 200));
  write_bytes(root + "/a/rgba16.png", png(8, 8, 6, 16, 4, 40000));
  write_bytes(root + "/a/rgba.png", png(12, 8, 6, 8, 4, 90));
  write_bytes(root + "/b/grey.png", png(8, 8, 0, 8, 1, 30));
  write_bytes(root + "/b/grey16.png", png(9, 8, 0, 16, 1, 1000));
  if (!bad) return;
  std::string text = "not an image\n";
  write_bytes(root + "/b/notes.jpg", Bytes(text.begin(), text.end()));
  Bytes cut = png(16, 16, 2, 8, 3, 77);
  cut.resize(cut.size() / 2);
  write_bytes(root + "/b/zz_truncated.png", cut);
}

}  // namespace

// ---------------------------------------------------------------- fuzz inputs

TEST_CASE("reliability: fuzz seeds and crash regressions replay without a crash", "[reliability]") {
  struct Target {
    const char* name;
    void (*fn)(const uint8_t*, size_t);
  } targets[] = {{"safetensors", fuzz::safetensors}, {"idx", fuzz::idx}, {"cifar", fuzz::cifar},
                 {"image", fuzz::image}, {"cli", fuzz::cli}};
  int replayed = 0;
  for (auto& t : targets)
    for (const char* kind : {"corpus", "regressions"}) {
      std::string dir = kSourceDir + "fuzz/" + kind + "/" + t.name;
      if (!fs::exists(dir)) continue;
      for (auto& e : fs::directory_iterator(dir)) {
        INFO(e.path().string());
        Bytes b = read_bytes(e.path().string());
        t.fn(b.data(), b.size());  // a crash or an unexpected exception fails the test
        replayed++;
      }
    }
  REQUIRE(replayed >= 40);
}

TEST_CASE("reliability: image decoding guards found by fuzzing", "[reliability]") {
  // A JPEG whose Huffman table declares more than 256 codes: stb 2.27 writes past the
  // table (UBSan: index 257 out of bounds for stbi_uc[257]); refused before stb sees it.
  Bytes jpeg = read_bytes(kSourceDir + "fuzz/regressions/image/jpeg_dht_more_than_256_codes");
  REQUIRE(jpeg.size() > 100);
  REQUIRE_THROWS_WITH(decode_image_bytes(jpeg.data() + 1, jpeg.size() - 1, 3, "x.jpg"),
                      Catch::Contains("x.jpg: cannot decode: corrupt JPEG (a Huffman table with more than 256 codes)"));
  // The same table after the first scan (a progressive JPEG's place for it).
  Bytes good = read_bytes(kSourceDir + "data/solid_200_100_50.jpg");
  REQUIRE(decode_image_bytes(good.data(), good.size(), 3, "good.jpg").h == 10);
  Bytes late(good.begin(), good.end() - 2);  // without EOI
  for (int b : {0xFF, 0xC4, 0x00, 0x13, 0x00}) late.push_back((uint8_t)b);
  for (int k = 0; k < 16; k++) late.push_back(k < 2 ? 200 : 0);
  REQUIRE_THROWS_WITH(decode_image_bytes(late.data(), late.size(), 3, "late.jpg"),
                      Catch::Contains("more than 256 codes"));
  // A legal zero-length IDAT chunk first (stb would memcpy from NULL): dropped, the image decodes.
  Bytes grey = png(3, 2, 0, 8, 1, 123);
  Bytes empty_idat = {0, 0, 0, 0, 'I', 'D', 'A', 'T', 0x35, 0xAF, 0x06, 0x1E};
  grey.insert(grey.begin() + 33, empty_idat.begin(), empty_idat.end());
  REQUIRE(decode_image_bytes(grey.data(), grey.size(), 1, "g.png").pixels == std::vector<uint8_t>(6, 123));
  Bytes fuzzed = read_bytes(kSourceDir + "fuzz/regressions/image/png_zero_length_idat");
  fuzz::image(fuzzed.data(), fuzzed.size());  // under SANITIZE=1, UBSan stopped here
  // The same chunk at the end of a file cut inside its CRC: stb copies before the CRC.
  Bytes cut = read_bytes(kSourceDir + "fuzz/regressions/image/png_zero_length_idat_without_crc");
  fuzz::image(cut.data(), cut.size());
  REQUIRE_THROWS_WITH(decode_image_bytes(cut.data() + 1, cut.size() - 1, 1, "cut.png"),
                      Catch::Contains("cut.png: cannot decode:"));
  Bytes grey_cut(grey.begin(), grey.begin() + 33);
  grey_cut.insert(grey_cut.end(), empty_idat.begin(), empty_idat.begin() + 9);
  REQUIRE_THROWS_WITH(decode_image_bytes(grey_cut.data(), grey_cut.size(), 1, "g_cut.png"),
                      Catch::Contains("g_cut.png: cannot decode:"));
  // Formats the datasets do not document never reach stb.
  std::string gif = "GIF89a\x01\x00\x01\x00\x00\x00\x00;";
  REQUIRE_THROWS_WITH(decode_image_bytes((const uint8_t*)gif.data(), gif.size(), 1, "a.gif"),
                      Catch::Contains("a.gif: cannot decode: not a PNG, JPEG or BMP file"));
  // A BMP header that claims 1048581 x 28 pixels in 60 bytes (stb fills the rest with zeros),
  // and a real BMP cut short.
  Bytes bmp = read_bytes(kSourceDir + "fuzz/regressions/image/bmp_header_claims_1048581_columns");
  REQUIRE_THROWS_WITH(decode_image_bytes(bmp.data() + 1, bmp.size() - 1, 3, "wide.bmp"),
                      Catch::Contains("wide.bmp: cannot decode: truncated BMP (1048581x28 pixels of 24 bits"));
  {
    TempDir t;
    std::vector<uint8_t> px(7 * 5 * 3, 100);
    REQUIRE(stbi_write_bmp((t.path + "/a.bmp").c_str(), 7, 5, 3, px.data()));
    Bytes b = read_bytes(t.path + "/a.bmp");
    REQUIRE(decode_image_bytes(b.data(), b.size(), 3, "a.bmp").pixels == px);
    b.resize(b.size() - 10);
    REQUIRE_THROWS_WITH(decode_image_bytes(b.data(), b.size(), 3, "a.bmp"), Catch::Contains("truncated BMP"));
  }
  // A header that claims 20000 x 20000 pixels in a few bytes.
  Bytes huge = png(1, 1, 0, 8, 1, 0);
  for (int k = 0; k < 8; k++) huge[16 + k] = (uint8_t)((k % 4 == 2 ? 20000 >> 8 : k % 4 == 3 ? 20000 & 255 : 0));
  REQUIRE_THROWS_WITH(decode_image_bytes(huge.data(), huge.size(), 1, "huge.png"),
                      Catch::Contains("huge.png: 20000x20000 pixels is more than the limit"));
}

TEST_CASE("reliability: a JPEG scan that uses a Huffman table no DHT segment defined", "[reliability]") {
  const char* refused = "cannot decode: corrupt JPEG (a scan uses a Huffman table that no DHT segment defined)";
  // Found by fuzzing (first byte: the fuzz target's options): the DHT segment defines DC 0, AC 0
  // and DC 1, the scan uses AC 1. stb 2.27 decoded it with whatever its unzeroed struct held,
  // and read far past the 257-entry symbol table when earlier inputs had left tables there.
  Bytes fuzzed = read_bytes(kSourceDir + "fuzz/regressions/image/jpeg_scan_uses_undefined_ac_table");
  REQUIRE(fuzzed.size() > 600);
  REQUIRE_THROWS_WITH(decode_image_bytes(fuzzed.data() + 1, fuzzed.size() - 1, 3, "ac.jpg"),
                      Catch::Contains(std::string("ac.jpg: ") + refused));
  // The committed 10x10 JPEG with its luma DC table changed to 2 (never defined): with
  // allocations filled with 0xFF (tools/fuzz.sh's replay), stb 2.27 reads index 644 of size[257].
  Bytes good = read_bytes(kSourceDir + "data/solid_200_100_50.jpg");
  Bytes dc = read_bytes(kSourceDir + "fuzz/regressions/image/jpeg_scan_uses_undefined_dc_table");
  REQUIRE(dc.size() == good.size() + 1);
  REQUIRE_THROWS_WITH(decode_image_bytes(dc.data() + 1, dc.size() - 1, 3, "dc.jpg"), Catch::Contains(refused));
  fuzz::image(dc.data(), dc.size());  // through the fuzz target: no crash
  // The same, built here: an undefined AC table, and table numbers stb itself refuses.
  const size_t sos = 0x251;  // FF DA 00 0C 03 | 01 00 | 02 11 | 03 11 | 00 3F 00
  REQUIRE((good[sos] == 0xFF && good[sos + 1] == 0xDA && good[sos + 8] == 0x11));
  Bytes ac3 = good;
  ac3[sos + 8] = 0x13;
  REQUIRE_THROWS_WITH(decode_image_bytes(ac3.data(), ac3.size(), 3, "ac3.jpg"), Catch::Contains(refused));
  Bytes dc5 = good;
  dc5[sos + 8] = 0x51;
  REQUIRE_THROWS_WITH(decode_image_bytes(dc5.data(), dc5.size(), 3, "dc5.jpg"), Catch::Contains("bad DC huff"));
  REQUIRE(decode_image_bytes(good.data(), good.size(), 3, "good.jpg").h == 10);
  // A progressive JPEG (16x16, left half (200, 100, 50), right half (20, 140, 230), written once
  // with libjpeg's optimised tables and committed) defines each AC table just before the scan
  // that needs it: its first scan names AC table 0 before any is defined (a DC scan reads none)
  // and its DC refinement scan reads no table; it decodes.
  Bytes prog = read_bytes(kSourceDir + "data/halves_progressive.jpg");
  Image im = decode_image_bytes(prog.data(), prog.size(), 3, "prog.jpg");
  REQUIRE((im.h == 16 && im.w == 16));
  auto near = [&](int y, int x, std::vector<int> rgb) {
    for (int c = 0; c < 3; c++) CHECK(std::abs(im.pixels[(y * 16 + x) * 3 + c] - rgb[c]) <= 8);
  };
  near(8, 2, {200, 100, 50});
  near(8, 13, {20, 140, 230});
  // Without its DHT for AC table 1 (the first one), the scan after it uses an undefined table.
  const uint8_t dht_ac1[] = {0xFF, 0xC4, 0x00, 0x18, 0x11};
  auto at = std::search(prog.begin(), prog.end(), dht_ac1, dht_ac1 + 5);
  REQUIRE(at != prog.end());
  Bytes cut(prog.begin(), at);
  cut.insert(cut.end(), at + 2 + 0x18, prog.end());
  REQUIRE_THROWS_WITH(decode_image_bytes(cut.data(), cut.size(), 3, "cut.jpg"), Catch::Contains(refused));
}

// ---------------------------------------------------------------- numerical faults

TEST_CASE("reliability: a NaN loss stops training naming the step; --skip-nonfinite skips it", "[reliability]") {
  SKIP_WITHOUT_FASHION_MNIST();
  TempDir t;
  // Step 5 is the second step of epoch 2; epoch 1 (steps 0..3) was checkpointed.
  auto args = small_run(t.path + "/stop", 2);
  args.insert(args.end(), {"--debug-nan-at", "5"});
  Result r = run_cmd(cmd_train, args);
  INFO(r.out);
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find("non-finite") != std::string::npos);
  REQUIRE(r.out.find("at step 5 (epoch 2)") != std::string::npos);
  REQUIRE(r.out.find("last good checkpoint is " + t.path + "/stop/checkpoint.safetensors") != std::string::npos);
  SafeTensors ck = load_safetensors(t.path + "/stop/checkpoint.safetensors");
  REQUIRE(ck.metadata.at("nala.epoch") == "1");
  REQUIRE(ck.metadata.at("nala.step") == "4");
  require_clean_checkpoint(t.path + "/stop/checkpoint.safetensors");
  require_clean_checkpoint(t.path + "/stop/best.safetensors");

  // Before the first checkpoint the message says so.
  args = small_run(t.path + "/early", 2);
  args.insert(args.end(), {"--debug-nan-at", "2"});
  r = run_cmd(cmd_train, args);
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find("at step 2 (epoch 1); stopping without saving. No checkpoint was written yet") !=
          std::string::npos);

  args = small_run(t.path + "/skip", 2);
  args.insert(args.end(), {"--debug-nan-at", "5", "--skip-nonfinite"});
  Result s = run_cmd(cmd_train, args);
  INFO(s.out);
  REQUIRE(s.code == 0);
  REQUIRE(s.out.find("non-finite gradient norm at step 5: step skipped") != std::string::npos);
  REQUIRE(s.out.find("skipped 1 step with non-finite values") != std::string::npos);
  SafeTensors sk = load_safetensors(t.path + "/skip/checkpoint.safetensors");
  REQUIRE(sk.metadata.at("nala.epoch") == "2");
  REQUIRE(sk.metadata.at("nala.step") == "8");  // the skipped step still counts
  require_clean_checkpoint(t.path + "/skip/checkpoint.safetensors");

  // The aid is a checked option like any other.
  REQUIRE(run_cmd(cmd_train, {"--debug-nan-at", "-1"}).code == 2);
  REQUIRE(run_cmd(cmd_train, {"--help"}).code == 2);  // main() prints the usage for an empty UsageError
  REQUIRE(ArgParser::last_usage().find("--debug-nan-at N") != std::string::npos);
}

TEST_CASE("reliability: --resume after a kill that tore metrics.csv and left a temporary file", "[reliability]") {
  SKIP_WITHOUT_FASHION_MNIST();
  TempDir t;
  const std::string out = t.path + "/run";
  auto args = small_run(out, 2);
  args.insert(args.end(), {"--max-steps", "4"});  // stops after epoch 1
  REQUIRE(run_cmd(cmd_train, args).code == 0);
  // What a kill while appending epoch 2's row (or epoch 12's: "1" of "12") and
  // while saving a checkpoint (pid 2^22 + 1 is above Linux's pid_max: never alive) leaves.
  { std::ofstream(out + "/metrics.csv", std::ios::app) << "2,8,0.000\n1"; }
  write_bytes(out + "/checkpoint.safetensors.tmp.4194305", Bytes(100, 0));
  auto resume = small_run(out, 2);
  resume.erase(resume.end() - 2, resume.end());
  resume.insert(resume.end(), {"--resume", out});
  Result r = run_cmd(cmd_train, resume);
  INFO(r.out);
  REQUIRE(r.code == 0);
  REQUIRE(r.out.find("removed " + out + "/checkpoint.safetensors.tmp.4194305") != std::string::npos);
  REQUIRE(!fs::exists(out + "/checkpoint.safetensors.tmp.4194305"));
  std::ifstream csv(out + "/metrics.csv");
  std::vector<std::string> rows;
  for (std::string line; std::getline(csv, line);) rows.push_back(line);
  REQUIRE(rows.size() == 3);
  REQUIRE(rows[1].rfind("1,4,", 0) == 0);
  REQUIRE(rows[2].rfind("2,8,", 0) == 0);
}

TEST_CASE("reliability: evaluate's limit is exact, whatever the batch size", "[reliability]") {
  // --eval-subset N used to evaluate whole batches of max(batch, 256) images.
  Dataset ds;
  ds.name = "tiny";
  ds.n = 40, ds.h = ds.w = 8, ds.c = 1;
  ds.classes = {"a", "b", "c"};
  for (int64_t i = 0; i < ds.n * 64; i++) ds.images.push_back((uint8_t)(i * 37 % 251));
  for (int64_t i = 0; i < ds.n; i++) ds.labels.push_back(i % 3);
  NalaFormer model(nalaformer_config("pico", 1, 3));
  Rng rng(3);
  model.init_weights(rng);
  EvalResult a = evaluate(model, ds, 32, 13), b = evaluate(model, ds, 5, 13), all = evaluate(model, ds, 32, 0);
  REQUIRE(a.n == 13);
  REQUIRE(b.n == 13);
  REQUIRE(all.n == 40);
  REQUIRE(a.loss == Approx(b.loss).epsilon(1e-5));
  REQUIRE(a.top1 == b.top1);
}

// ---------------------------------------------------------------- command line and inputs

TEST_CASE("reliability: usage errors come before any data is read", "[reliability]") {
  TempDir t;
  const std::string nowhere = t.path + "/no/such/dir";
  // An image size the model cannot take: refused although the folder does not exist.
  Result r = run_cmd(cmd_train, {"--data", "folder", "--data-dir", nowhere, "--img-size", "2"});
  REQUIRE(r.code == 2);
  REQUIRE(r.out.find("image size 2x2 is too small for pico") != std::string::npos);
  r = run_cmd(cmd_train, {"--lr", "1e-4", "--min-lr", "1e-3", "--data-dir", nowhere});
  REQUIRE(r.code == 2);
  REQUIRE(r.out.find("--min-lr must not exceed --lr") != std::string::npos);
  r = run_cmd(cmd_train, {"--precision", "bf16", "--device", "cpu", "--data-dir", nowhere});
  REQUIRE(r.code == 2);
  REQUIRE(r.out.find("--precision bf16 needs --device cuda") != std::string::npos);
  REQUIRE(run_cmd(cmd_train, {"--precision", "fp16"}).out.find("fp16") != std::string::npos);
  r = run_cmd(cmd_train, {"--resume", t.path + "/a", "--out", t.path + "/b"});
  REQUIRE(r.code == 2);
  REQUIRE(r.out.find("--resume DIR writes into DIR") != std::string::npos);
  REQUIRE(run_cmd(cmd_train, {"--threads", "-1"}).code == 2);
  REQUIRE(run_cmd(cmd_train, {"--seed", "1", "--seed", "2"}).out.find("--seed given twice") != std::string::npos);
  REQUIRE(run_cmd(cmd_train, {"--hflip=yes"}).out.find("--hflip takes no value") != std::string::npos);
  REQUIRE(run_cmd(cmd_eval, {"--weights"}).out.find("--weights needs a value") != std::string::npos);
  REQUIRE(run_cmd(cmd_predict, {"--weights", "w.safetensors"}).out.find("missing IMAGE") != std::string::npos);
  // Missing data: an error naming the directory (exit 1).
  r = run_cmd(cmd_train, {"--data-dir", nowhere, "--out", t.path + "/o"});
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find(nowhere) != std::string::npos);
  r = run_cmd(cmd_train, {"--data", "folder", "--data-dir", nowhere, "--out", t.path + "/o"});
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find(nowhere + " does not exist") != std::string::npos);
}

TEST_CASE("reliability: the memory estimate and a batch that cannot fit", "[reliability]") {
  // pico on 28x28: peak RSS grows by ~4.1 MB per image of the batch (measured).
  NalaConfig pico = nalaformer_config("pico", 1, 10);
  TrainMemory m = estimate_train_memory(pico, 653194, 2, 28, 28, 64);
  CHECK(m.per_image > 3 * 1000 * 1000);
  CHECK(m.per_image < 6 * 1000 * 1000);
  CHECK(m.weights == 8 * 653194);
  CHECK(m.optimizer == 8 * 653194);
  // Activations scale with the pixels (and more for softmax stages).
  CHECK(estimate_train_memory(pico, 653194, 2, 56, 56, 1).per_image > 3 * m.per_image);
  const int64_t phys = physical_memory_bytes();
  REQUIRE(phys > (int64_t)256 << 20);
  check_train_memory(m, phys);  // a normal batch fits
  TrainMemory huge = estimate_train_memory(pico, 653194, 2, 28, 28, 1 << 20);
  REQUIRE_THROWS_AS(check_train_memory(huge, (int64_t)8 << 30), UsageError);
  REQUIRE_THROWS_WITH(check_train_memory(huge, (int64_t)8 << 30),
                      Catch::Contains("--batch-size 1048576 does not fit in memory") &&
                          Catch::Contains("this machine has 8.00 GiB") && Catch::Contains("the largest batch"));
  // Through the command: all 60000 Fashion-MNIST images in one batch need ~260 GB.
  if (have_fashion_mnist() &&
      estimate_train_memory(pico, 653194, 2, 28, 28, 60000).total() > phys) {
    TempDir t;
    Result r = run_cmd(cmd_train, {"--batch-size", "60000", "--threads", "2", "--out", t.path + "/o"});
    INFO(r.out);
    REQUIRE(r.code == 2);
    REQUIRE(r.out.find("--batch-size 60000 does not fit in memory") != std::string::npos);
    REQUIRE(!fs::exists(t.path + "/o"));  // refused before any output
  }
}

TEST_CASE("reliability: image folders with bad files, 16-bit and RGBA PNGs", "[reliability]") {
  TempDir t;
  make_folder(t.path + "/data/train", true);
  make_folder(t.path + "/data/val", false);
  std::vector<std::string> args = {"--data", "folder", "--data-dir", t.path + "/data", "--img-size", "8",
                                   "--epochs", "1", "--batch-size", "2", "--threads", "2", "--out", t.path + "/o"};
  Result r = run_cmd(cmd_train, args);
  INFO(r.out);
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find(t.path + "/data/train/b/notes.jpg: cannot decode") != std::string::npos);
  args.push_back("--skip-bad");
  r = run_cmd(cmd_train, args);
  INFO(r.out);
  REQUIRE(r.code == 0);
  REQUIRE(r.out.find("skipped 2 unreadable images") != std::string::npos);
  REQUIRE(r.out.find("5 train / 5 test images 8x8x3, 2 classes") != std::string::npos);
  // The truncated PNG alone names itself too (into a new folder: /o holds the run above).
  fs::remove(t.path + "/data/train/b/notes.jpg");
  args.pop_back();
  args.back() = t.path + "/o2";
  r = run_cmd(cmd_train, args);
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find("zz_truncated.png: cannot decode") != std::string::npos);
}

TEST_CASE("reliability: truncated dataset files through nala train", "[reliability]") {
  TempDir t;
  // CIFAR-10: one record per batch, the third batch cut short.
  Bytes rec(3073, 7);
  rec[0] = 3;
  for (int k = 1; k <= 5; k++) write_bytes(t.path + "/cifar/data_batch_" + std::to_string(k) + ".bin", rec);
  write_bytes(t.path + "/cifar/test_batch.bin", rec);
  Bytes cut(rec.begin(), rec.end() - 1000);
  write_bytes(t.path + "/cifar/data_batch_3.bin", cut);
  Result r = run_cmd(cmd_train, {"--data", "cifar10", "--data-dir", t.path + "/cifar", "--out", t.path + "/o"});
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find("data_batch_3.bin: truncated") != std::string::npos);
  // IDX: a gzipped images file that ends early.
  Bytes idx;
  for (uint32_t v : {0x803u, 10u, 28u, 28u}) put_be32(idx, v);
  idx.resize(16 + 10 * 784 - 100, 9);
  fs::create_directories(t.path + "/fm");
  gzFile g = gzopen((t.path + "/fm/train-images-idx3-ubyte.gz").c_str(), "wb");
  REQUIRE(gzwrite(g, idx.data(), (unsigned)idx.size()) == (int)idx.size());
  gzclose(g);
  r = run_cmd(cmd_train, {"--data-dir", t.path + "/fm", "--out", t.path + "/o"});
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find("train-images-idx3-ubyte.gz: truncated: the header promises 10 images") != std::string::npos);
}

TEST_CASE("reliability: predict and eval with odd images and wrong weights", "[reliability]") {
  TempDir t;
  // A grey image given to a 3-channel model: converted.
  NalaFormer rgb(nalaformer_config("pico", 3, 2));
  Rng rng(5);
  rgb.init_weights(rng);
  save_weights(rgb, t.path + "/rgb.safetensors");
  std::vector<uint8_t> grey(20 * 17);
  for (size_t k = 0; k < grey.size(); k++) grey[k] = (uint8_t)(k * 3);
  REQUIRE(stbi_write_png((t.path + "/grey.png").c_str(), 20, 17, 1, grey.data(), 20));
  write_bytes(t.path + "/rgba16.png", png(8, 8, 6, 16, 4, 50000));
  Result r = run_cmd(cmd_predict, {"--weights", t.path + "/rgb.safetensors", "--threads", "2", t.path + "/grey.png",
                                   t.path + "/rgba16.png"});
  INFO(r.out);
  REQUIRE(r.code == 0);
  REQUIRE(r.out.find(t.path + "/grey.png\n") != std::string::npos);
  REQUIRE(r.out.find("class 1") != std::string::npos);
  // A truncated image in predict names the file.
  Bytes cut = read_bytes(t.path + "/grey.png");
  cut.resize(cut.size() / 2);
  write_bytes(t.path + "/cut.png", cut);
  r = run_cmd(cmd_predict, {"--weights", t.path + "/rgb.safetensors", t.path + "/cut.png"});
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find(t.path + "/cut.png: cannot decode") != std::string::npos);

  // eval given the weights of another model: an error naming the file and the model.
  make_folder(t.path + "/data", false);
  NalaFormer xt(nalaformer_config("xt", 3, 2));
  xt.init_weights(rng);
  save_weights(xt, t.path + "/xt.safetensors");
  std::vector<std::string> eval_args = {"--model", "pico", "--data", "folder", "--data-dir", t.path + "/data",
                                        "--img-size", "8", "--threads", "2", "--weights"};
  auto with = [&](const std::string& w) {
    auto a = eval_args;
    a.push_back(w);
    return a;
  };
  r = run_cmd(cmd_eval, with(t.path + "/rgb.safetensors"));
  INFO(r.out);
  REQUIRE(r.code == 0);
  r = run_cmd(cmd_eval, with(t.path + "/xt.safetensors"));
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find(t.path + "/xt.safetensors: not a checkpoint of pico") != std::string::npos);
  // A weights file whose header lies about a tensor's size.
  Bytes good = read_bytes(t.path + "/rgb.safetensors");
  std::string s(good.begin(), good.end());
  size_t at = s.find("\"head.bias\":{\"dtype\":\"F32\",\"shape\":[2]");
  REQUIRE(at != std::string::npos);
  s[at + std::string("\"head.bias\":{\"dtype\":\"F32\",\"shape\":[").size()] = '3';
  write_bytes(t.path + "/liar.safetensors", Bytes(s.begin(), s.end()));
  r = run_cmd(cmd_eval, with(t.path + "/liar.safetensors"));
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find("safetensors: " + t.path + "/liar.safetensors: tensor \"head.bias\"") != std::string::npos);
  r = run_cmd(cmd_predict, {"--weights", t.path + "/liar.safetensors", t.path + "/grey.png"});
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find("liar.safetensors") != std::string::npos);
}

// ---------------------------------------------------------------- crash safety

namespace {

std::vector<std::string> temp_files(const std::string& dir) {
  std::vector<std::string> v;
  for (auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) v.push_back(e.path().filename().string());
  return v;
}

// The metrics rows without the two timing columns.
std::vector<std::string> metrics_rows(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> rows;
  for (std::string line; std::getline(f, line);) {
    std::stringstream ss(line);
    std::string cell, row;
    for (int c = 0; c < 8 && std::getline(ss, cell, ','); c++) row += cell + ",";
    rows.push_back(row);
  }
  return rows;
}

void require_same_file(const std::string& a, const std::string& b, bool with_metadata) {
  INFO(a << " vs " << b);
  SafeTensors x = load_safetensors(a), y = load_safetensors(b);
  REQUIRE(x.tensors.size() == y.tensors.size());
  for (auto& [k, t] : x.tensors) {
    INFO(k);
    REQUIRE(y.tensors.count(k));
    const Tensor& u = y.tensors.at(k);
    REQUIRE(t.shape() == u.shape());
    REQUIRE(t.dtype() == u.dtype());
    REQUIRE(std::memcmp(t.raw(), u.raw(), (size_t)t.numel() * dtype_size(t.dtype())) == 0);  // bit for bit
  }
  if (with_metadata) REQUIRE(x.metadata == y.metadata);
}

}  // namespace

TEST_CASE("reliability: SIGKILL at random moments, --resume, and the result is bit for bit the same",
          "[reliability][slow]") {
  SKIP_WITHOUT_FASHION_MNIST();
  const std::string bin = nala_binary();
  INFO("nala binary: " << bin);
  REQUIRE(access(bin.c_str(), X_OK) == 0);  // build it: make CUDA=0 (it sits next to nala_tests)
  TempDir t;
  const std::vector<std::string> base = {"train", "--model", "pico", "--subset", "1024", "--eval-subset", "256",
                                         "--batch-size", "64", "--epochs", "3", "--threads", "2", "--seed", "3",
                                         "--log-every", "4"};
  const std::string ref = t.path + "/ref", run = t.path + "/run", log = t.path + "/log.txt";
  auto with = [&](std::vector<std::string> extra) {
    auto a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };

  // The uninterrupted reference, timed.
  auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  pid_t pid = spawn(bin, with({"--out", ref}), log);
  REQUIRE(wait_for(pid, 1800, &status));
  const double T = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  {
    Bytes out = read_bytes(log);
    INFO(std::string(out.begin(), out.end()));
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
  }

  // Killed runs. NALA_KILL_SEED=<n> repeats a sequence of delays.
  uint64_t seed = std::getenv("NALA_KILL_SEED") ? std::strtoull(std::getenv("NALA_KILL_SEED"), nullptr, 10)
                                                : std::random_device{}();
  std::printf("kill/resume: reference run %.1f s, delay seed %llu (NALA_KILL_SEED)\n", T, (unsigned long long)seed);
  INFO("NALA_KILL_SEED=" << seed);
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> frac(0.05, 0.6);
  const std::string ckpt = run + "/checkpoint.safetensors";
  int kills = 0, resumes = 0, fresh = 0;
  int64_t last_epoch = 0;
  bool finished = false;
  for (int attempt = 0; attempt < 5 && !finished; attempt++) {
    // No checkpoint yet: start again from scratch (--overwrite: a kill between
    // the first metrics row and the first checkpoint leaves a run to replace).
    const bool resume = fs::exists(ckpt);
    (resume ? resumes : fresh)++;
    const double delay = frac(gen) * T;
    pid = spawn(bin,
                with(resume ? std::vector<std::string>{"--resume", run}
                            : std::vector<std::string>{"--out", run, "--overwrite"}),
                log);
    if (wait_for(pid, delay, &status)) {  // finished before the kill
      REQUIRE(WIFEXITED(status));
      REQUIRE(WEXITSTATUS(status) == 0);
      finished = true;
      break;
    }
    REQUIRE(kill(pid, SIGKILL) == 0);
    REQUIRE(waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFSIGNALED(status));
    kills++;
    // Whatever was on disk at the kill: a complete checkpoint or none, never a torn one.
    std::string state = "no checkpoint";
    if (fs::exists(ckpt)) {
      SafeTensors st = load_safetensors(ckpt);
      int64_t epoch = std::stoll(st.metadata.at("nala.epoch"));
      REQUIRE(epoch >= last_epoch);  // never goes back
      REQUIRE((epoch >= 1 && epoch <= 3));
      REQUIRE(st.metadata.at("nala.step") == std::to_string(16 * epoch));
      require_clean_checkpoint(ckpt);
      last_epoch = epoch;
      state = "checkpoint of epoch " + std::to_string(epoch);
    }
    if (fs::exists(run + "/best.safetensors")) require_clean_checkpoint(run + "/best.safetensors");
    std::printf("kill/resume: killed after %.1f s: %s, %zu temporary file(s) left\n", delay, state.c_str(),
                temp_files(run).size());
  }
  if (!finished) {  // the last run goes to the end
    // Plus a torn save of a process that is gone (the last killed one): ignored and removed.
    if (kills) {
      Bytes half = read_bytes(ref + "/checkpoint.safetensors");
      half.resize(half.size() / 2);
      write_bytes(run + "/checkpoint.safetensors.tmp." + std::to_string((long)pid), half);
    }
    pid = spawn(bin, with(fs::exists(ckpt) ? std::vector<std::string>{"--resume", run}
                                           : std::vector<std::string>{"--out", run, "--overwrite"}),
                log);
    REQUIRE(wait_for(pid, 1800, &status));
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
  }
  std::printf("kill/resume: %d kill(s), %d resume(s), %d fresh start(s)\n", kills, resumes, fresh);

  REQUIRE(temp_files(run).empty());  // stale temporary files were cleaned up on resume
  require_same_file(ref + "/checkpoint.safetensors", ckpt, true);  // weights, optimiser, step, RNG, ...
  require_same_file(ref + "/best.safetensors", run + "/best.safetensors", true);
  REQUIRE(metrics_rows(ref + "/metrics.csv") == metrics_rows(run + "/metrics.csv"));
  REQUIRE(metrics_rows(run + "/metrics.csv").size() == 4);
}
