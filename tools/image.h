// tools/image.h - one image file in, pixels out: decode (stb_image: JPEG, PNG
// incl. 16-bit, BMP), convert the channel count, resize, normalise.
//
// Pixels are channels-last (H, W, C) uint8. Channel conversion follows stb:
// grey -> RGB repeats the value, RGB -> grey takes the luminance, alpha is
// dropped (not composited). 16-bit images are rounded to 8 bits.
// Errors name the path and carry stb's reason.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace nala {

struct Image {
  int h = 0, w = 0, c = 0;
  std::vector<uint8_t> pixels;  // h * w * c, channels-last
};

// Decode a file to `channels` channels (1 = grey, 3 = RGB). The file must be
// a regular file of at most kMaxImageFileBytes: anything else (a FIFO, a
// device, a directory, a larger file) is refused before it is read.
Image decode_image(const std::string& path, int channels);
constexpr int64_t kMaxImageFileBytes = (int64_t)256 << 20;  // 256 MiB
// The same from a file's bytes in memory; `name` is used in error messages.
// Only PNG, JPEG and BMP reach stb; images of more than kMaxImagePixels
// pixels are refused before decoding.
Image decode_image_bytes(const uint8_t* data, size_t size, int channels, const std::string& name);
constexpr int64_t kMaxImagePixels = (int64_t)1 << 26;  // 8192 x 8192
// Resize to h x w with stb's default filters (Catmull-Rom up, Mitchell down).
Image resize_image(const Image& img, int h, int w);
// decode_image + resize to size x size (no resize when already that size).
Image load_image_u8(const std::string& path, int channels, int size);

// (H, W, C) uint8 -> float (x / 255 - mean[c]) / std[c], written to out.
void normalise_image(const uint8_t* src, int64_t h, int64_t w, int64_t c, const std::vector<float>& mean,
                     const std::vector<float>& std, float* out);

// One image ready for prediction: f32 (1, size, size, channels), normalised.
Tensor load_image(const std::string& path, int size, int channels, const std::vector<float>& mean,
                  const std::vector<float>& std);

// Write a PNG (1, 3 or 4 channels) atomically through nn/files.h: a target
// that is not a regular file (a device, a FIFO, a symlink) is refused and left
// as it was; throws on failure naming the path and errno's reason.
void write_png(const std::string& path, const Image& img);

// Per-channel statistics used by the datasets (on the [0, 1] scale).
std::vector<float> imagenet_mean(int channels);
std::vector<float> imagenet_std(int channels);

}  // namespace nala
