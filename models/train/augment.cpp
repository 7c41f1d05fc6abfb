// models/train/augment.cpp - crop, flip and erasing on (H, W, C) images; one
// template per operation, instantiated for uint8 and float.
#include "models/train/augment.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "tensor/error.h"

namespace nala {

namespace {

template <typename T>
void shift_crop_t(const T* src, T* dst, int H, int W, int C, int dy, int dx) {
  for (int y = 0; y < H; y++) {
    T* row = dst + (size_t)y * W * C;
    int sy = y + dy;
    if (sy < 0 || sy >= H) {
      std::fill(row, row + (size_t)W * C, T(0));
      continue;
    }
    // Columns x with 0 <= x + dx < W come from the source row; the rest are zero.
    int x0 = std::max(0, -dx), x1 = std::min(W, W - dx);
    if (x1 <= x0) {
      std::fill(row, row + (size_t)W * C, T(0));
      continue;
    }
    std::fill(row, row + (size_t)x0 * C, T(0));
    std::memcpy(row + (size_t)x0 * C, src + ((size_t)sy * W + x0 + dx) * C, sizeof(T) * (size_t)(x1 - x0) * C);
    std::fill(row + (size_t)x1 * C, row + (size_t)W * C, T(0));
  }
}

template <typename T>
void random_crop_t(T* img, int H, int W, int C, int pad, Rng& rng) {
  NALA_CHECK(pad >= 0, "random_crop: negative padding ", pad);
  if (pad == 0) return;
  int dy = (int)rng.below(2 * pad + 1) - pad;
  int dx = (int)rng.below(2 * pad + 1) - pad;
  if (dy == 0 && dx == 0) return;
  std::vector<T> src(img, img + (size_t)H * W * C);
  shift_crop_t(src.data(), img, H, W, C, dy, dx);
}

template <typename T>
void hflip_t(T* img, int H, int W, int C) {
  for (int y = 0; y < H; y++) {
    T* row = img + (size_t)y * W * C;
    for (int a = 0, b = W - 1; a < b; a++, b--)
      for (int c = 0; c < C; c++) std::swap(row[(size_t)a * C + c], row[(size_t)b * C + c]);
  }
}

template <typename T>
bool random_erase_t(T* img, int H, int W, int C, const AugmentOptions& o, Rng& rng, Rect* where) {
  if (o.erase_prob <= 0 || !rng.bernoulli(o.erase_prob)) return false;
  NALA_CHECK(o.erase_scale_lo > 0 && o.erase_scale_lo <= o.erase_scale_hi && o.erase_ratio_lo > 0 &&
                 o.erase_ratio_lo <= o.erase_ratio_hi,
             "random_erase: bad ranges scale [", o.erase_scale_lo, ", ", o.erase_scale_hi, "] ratio [",
             o.erase_ratio_lo, ", ", o.erase_ratio_hi, "]");
  float area = (float)H * W, lr0 = std::log(o.erase_ratio_lo), lr1 = std::log(o.erase_ratio_hi);
  for (int attempt = 0; attempt < 10; attempt++) {
    float target = area * rng.uniform(o.erase_scale_lo, o.erase_scale_hi);
    float aspect = std::exp(rng.uniform(lr0, lr1));
    int h = (int)std::lround(std::sqrt(target * aspect));
    int w = (int)std::lround(std::sqrt(target / aspect));
    if (!(h < H && w < W) || h < 1 || w < 1) continue;
    int y = (int)rng.below(H - h + 1), x = (int)rng.below(W - w + 1);
    T v = (T)o.erase_value;
    for (int r = y; r < y + h; r++) std::fill(img + ((size_t)r * W + x) * C, img + ((size_t)r * W + x + w) * C, v);
    if (where) *where = Rect{y, x, h, w};
    return true;
  }
  return false;
}

template <typename T>
void augment_geometric_t(T* img, int H, int W, int C, const AugmentOptions& o, Rng& rng) {
  if (o.crop_pad > 0) random_crop_t(img, H, W, C, o.crop_pad, rng);
  if (o.hflip && rng.bernoulli(0.5f)) hflip_t(img, H, W, C);
}

}  // namespace

AugmentOptions train_augment(int64_t img_size) {
  AugmentOptions o;
  o.crop_pad = img_size <= 28 ? 2 : 4;
  o.hflip = true;
  o.erase_prob = 0.25f;
  return o;
}

void shift_crop(const uint8_t* s, uint8_t* d, int H, int W, int C, int dy, int dx) { shift_crop_t(s, d, H, W, C, dy, dx); }
void shift_crop(const float* s, float* d, int H, int W, int C, int dy, int dx) { shift_crop_t(s, d, H, W, C, dy, dx); }
void random_crop(uint8_t* img, int H, int W, int C, int pad, Rng& rng) { random_crop_t(img, H, W, C, pad, rng); }
void random_crop(float* img, int H, int W, int C, int pad, Rng& rng) { random_crop_t(img, H, W, C, pad, rng); }
void hflip(uint8_t* img, int H, int W, int C) { hflip_t(img, H, W, C); }
void hflip(float* img, int H, int W, int C) { hflip_t(img, H, W, C); }
bool random_erase(uint8_t* img, int H, int W, int C, const AugmentOptions& o, Rng& rng, Rect* where) {
  return random_erase_t(img, H, W, C, o, rng, where);
}
bool random_erase(float* img, int H, int W, int C, const AugmentOptions& o, Rng& rng, Rect* where) {
  return random_erase_t(img, H, W, C, o, rng, where);
}
void augment_geometric(uint8_t* img, int H, int W, int C, const AugmentOptions& o, Rng& rng) {
  augment_geometric_t(img, H, W, C, o, rng);
}
void augment_geometric(float* img, int H, int W, int C, const AugmentOptions& o, Rng& rng) {
  augment_geometric_t(img, H, W, C, o, rng);
}

}  // namespace nala
