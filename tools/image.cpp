// tools/image.cpp - image decoding, resizing and normalisation on top of stb.
#include "tools/image.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "stb/stb_image.h"
#include "stb/stb_image_resize.h"
#include "stb/stb_image_write.h"

namespace nala {

namespace {
// Whole file into memory; errors name the path.
std::vector<uint8_t> read_file_bytes(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  NALA_CHECK(f, "image ", path, ": cannot open: ", std::strerror(errno));
  std::vector<uint8_t> b;
  uint8_t buf[1 << 16];
  size_t r;
  while ((r = std::fread(buf, 1, sizeof buf, f)) > 0) b.insert(b.end(), buf, buf + r);
  bool err = std::ferror(f);
  std::fclose(f);
  NALA_CHECK(!err, "image ", path, ": read error");
  return b;
}
}  // namespace

Image decode_image(const std::string& path, int channels) {
  NALA_CHECK(channels == 1 || channels == 3, "image ", path, ": channels must be 1 or 3, got ", channels);
  std::vector<uint8_t> bytes = read_file_bytes(path);
  return decode_image_bytes(bytes.data(), bytes.size(), channels, path);
}

Image decode_image_bytes(const uint8_t* data, size_t size, int channels, const std::string& name) {
  NALA_CHECK(channels == 1 || channels == 3, "image ", name, ": channels must be 1 or 3, got ", channels);
  NALA_CHECK(size > 0, "image ", name, ": empty file");
  NALA_CHECK(size <= (size_t)INT32_MAX, "image ", name, ": file of ", size, " bytes is too large");
  const int len = (int)size;
  Image img;
  int w = 0, h = 0, n = 0;
  // The header's size first: a few bytes can claim a huge image, and stb
  // would allocate (and for some formats fill) all of it.
  NALA_CHECK(stbi_info_from_memory(data, len, &w, &h, &n), "image ", name, ": cannot decode: ",
             stbi_failure_reason());
  NALA_CHECK(w > 0 && h > 0 && (int64_t)w * h <= kMaxImagePixels, "image ", name, ": ", w, "x", h,
             " pixels is more than the limit of ", kMaxImagePixels, " (corrupt file?)");
  img.c = channels;
  if (stbi_is_16_bit_from_memory(data, len)) {
    // Our own rounding to 8 bits (stb would truncate with >> 8).
    stbi_us* p = stbi_load_16_from_memory(data, len, &w, &h, &n, channels);
    NALA_CHECK(p, "image ", name, ": cannot decode: ", stbi_failure_reason());
    img.h = h, img.w = w;
    img.pixels.resize((size_t)w * h * channels);
    for (size_t k = 0; k < img.pixels.size(); k++) img.pixels[k] = (uint8_t)((p[k] * 255u + 32767u) / 65535u);
    stbi_image_free(p);
    return img;
  }
  stbi_uc* p = stbi_load_from_memory(data, len, &w, &h, &n, channels);
  NALA_CHECK(p, "image ", name, ": cannot decode: ", stbi_failure_reason());
  img.h = h, img.w = w;
  img.pixels.assign(p, p + (size_t)w * h * channels);
  stbi_image_free(p);
  return img;
}

Image resize_image(const Image& img, int h, int w) {
  NALA_CHECK(h > 0 && w > 0, "resize_image: bad target size ", h, "x", w);
  if (img.h == h && img.w == w) return img;
  Image out;
  out.h = h, out.w = w, out.c = img.c;
  out.pixels.resize((size_t)h * w * img.c);
  int ok = stbir_resize_uint8(img.pixels.data(), img.w, img.h, 0, out.pixels.data(), w, h, 0, img.c);
  NALA_CHECK(ok, "resize_image: stb_image_resize failed for ", img.w, "x", img.h, " -> ", w, "x", h);
  return out;
}

Image load_image_u8(const std::string& path, int channels, int size) {
  return resize_image(decode_image(path, channels), size, size);
}

void normalise_image(const uint8_t* src, int64_t h, int64_t w, int64_t c, const std::vector<float>& mean,
                     const std::vector<float>& std, float* out) {
  NALA_CHECK((int64_t)mean.size() == c && (int64_t)std.size() == c, "normalise_image: need ", c,
             " mean/std values, got ", mean.size(), "/", std.size());
  // A table per channel: 256 values each, so the pixel loop is one lookup.
  std::vector<float> lut(256 * c);
  for (int64_t ch = 0; ch < c; ch++)
    for (int v = 0; v < 256; v++) lut[ch * 256 + v] = (v / 255.0f - mean[ch]) / std[ch];
  for (int64_t p = 0; p < h * w; p++)
    for (int64_t ch = 0; ch < c; ch++) out[p * c + ch] = lut[ch * 256 + src[p * c + ch]];
}

Tensor load_image(const std::string& path, int size, int channels, const std::vector<float>& mean,
                  const std::vector<float>& std) {
  Image img = load_image_u8(path, channels, size);
  Tensor t = Tensor::empty({1, size, size, channels});
  normalise_image(img.pixels.data(), size, size, channels, mean, std, t.f32());
  return t;
}

void write_png(const std::string& path, const Image& img) {
  NALA_CHECK((img.c == 1 || img.c == 3 || img.c == 4) && img.pixels.size() == (size_t)img.h * img.w * img.c,
             "write_png ", path, ": bad image ", img.w, "x", img.h, "x", img.c);
  int ok = stbi_write_png(path.c_str(), img.w, img.h, img.c, img.pixels.data(), img.w * img.c);
  NALA_CHECK(ok, "write_png: cannot write ", path);
}

std::vector<float> imagenet_mean(int channels) {
  return channels == 1 ? std::vector<float>{0.449f} : std::vector<float>{0.485f, 0.456f, 0.406f};
}
std::vector<float> imagenet_std(int channels) {
  return channels == 1 ? std::vector<float>{0.226f} : std::vector<float>{0.229f, 0.224f, 0.225f};
}

}  // namespace nala
