// tests/fuzz/fuzz_targets.h - what each fuzz target does with one input,
// shared by the libFuzzer programs (tests/fuzz/fuzz_<target>.cpp) and the
// regression replay in tests/test_reliability.cpp.
//
// Each function feeds the bytes to the code under test. A nala::Error (a
// UsageError for the command line) is the expected answer to a bad input and
// is caught here; anything else - another exception, a crash, a sanitizer
// report - escapes and is a bug.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "nn/safetensors.h"
#include "tools/common.h"
#include "tools/datasets.h"
#include "tools/image.h"

namespace nala::fuzz {

// parse_safetensors on the raw bytes; every F32 tensor is read to its end.
inline void safetensors(const uint8_t* data, size_t size) {
  try {
    SafeTensors st = parse_safetensors(std::string((const char*)data, size), "fuzz.safetensors");
    for (auto& nt : st.tensors)
      if (nt.second.numel() && nt.second.dtype() == DType::F32) (void)nt.second.f32()[nt.second.numel() - 1];
  } catch (const Error&) {
  }
}

namespace detail {
// One per process under $TMPDIR (tools/fuzz.sh points it at its work
// directory: libFuzzer may leave without running atexit handlers).
inline const std::string& temp_dir() {
  static std::string dir;
  if (dir.empty()) {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/nala_fuzz_idx_XXXXXX";
    if (!mkdtemp(&tmpl[0])) std::abort();
    dir = tmpl;
    std::atexit([] {
      std::remove((dir + "/images").c_str());
      std::remove((dir + "/labels").c_str());
      rmdir(dir.c_str());
    });
  }
  return dir;
}
inline void write_all(const std::string& path, const uint8_t* p, size_t n) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (n && std::fwrite(p, 1, n, f) != n)) std::abort();
  std::fclose(f);
}
}  // namespace detail

// The IDX reader. Byte 0 picks the path, bytes 1..4 (big-endian) the length
// of the images part; the rest is images then labels.
//   byte 0 even: parse_idx on the two buffers;
//   byte 0 odd:  both parts written to files and read by load_idx, so the
//                gzip path (read_idx_file) sees the fuzzer's bytes too.
//   byte 0 & 2:  with Fashion-MNIST's 10 classes (labels are checked).
inline void idx(const uint8_t* data, size_t size) {
  if (size < 5) return;
  const uint8_t mode = data[0];
  size_t split = (size_t)data[1] << 24 | (size_t)data[2] << 16 | (size_t)data[3] << 8 | data[4];
  data += 5, size -= 5;
  if (split > size) split = size;
  std::vector<std::string> classes;
  if (mode & 2) classes = fashion_mnist_classes();
  try {
    Dataset ds;
    if (mode & 1) {
      const std::string& dir = detail::temp_dir();
      detail::write_all(dir + "/images", data, split);
      detail::write_all(dir + "/labels", data + split, size - split);
      ds = load_idx(dir + "/images", dir + "/labels", classes);
    } else {
      ds = parse_idx(std::vector<uint8_t>(data, data + split), std::vector<uint8_t>(data + split, data + size),
                     classes, "images", "labels");
    }
    if (ds.n) (void)ds.image(ds.n - 1)[ds.image_size() - 1];
  } catch (const Error&) {
  }
}

// parse_cifar10 on one in-memory batch file.
inline void cifar(const uint8_t* data, size_t size) {
  try {
    Dataset ds = parse_cifar10({std::vector<uint8_t>(data, data + size)}, {"fuzz.bin"});
    if (ds.n) (void)ds.image(ds.n - 1)[ds.image_size() - 1];
  } catch (const Error&) {
  }
}

// One image file through what an image folder or `nala predict` does with
// it: decode_image_bytes, resize, normalise. Byte 0 picks the channels
// (bit 0: 3, else 1) and the target size (bits 1..5: 1..32); the rest is the file.
inline void image(const uint8_t* data, size_t size) {
  if (size < 1) return;
  const int channels = data[0] & 1 ? 3 : 1, target = 1 + ((data[0] >> 1) & 31);
  try {
    Image img = decode_image_bytes(data + 1, size - 1, channels, "fuzz.img");
    if (img.c != channels || img.pixels.size() != (size_t)img.h * img.w * img.c) std::abort();
    Image small = resize_image(img, target, target);
    std::vector<float> out((size_t)target * target * channels);
    normalise_image(small.pixels.data(), target, target, channels, imagenet_mean(channels), imagenet_std(channels),
                    out.data());
  } catch (const Error&) {
  }
}

// `nala train`'s command line: the input split into argv words at newlines
// and NUL bytes; cmd_train returns right after checking its arguments.
inline void cli(const uint8_t* data, size_t size) {
  g_check_args_only = true;
  std::vector<std::string> words;
  if (size) words.emplace_back();
  for (size_t i = 0; i < size; i++) {
    char ch = (char)data[i];
    if (ch == '\n' || ch == '\0') words.emplace_back();
    else words.back() += ch;
  }
  if (words.size() <= 64) {
    std::vector<char*> argv;
    for (auto& w : words) argv.push_back(&w[0]);
    argv.push_back(nullptr);
    try {
      cmd_train((int)words.size(), argv.data());
    } catch (const UsageError&) {
    }
  }
  g_check_args_only = false;
}

}  // namespace nala::fuzz
