// models/train/augment.h - training-time augmentation of single images:
// random crop after zero padding, horizontal flip, random erasing
// (torchvision's RandomCrop(padding), RandomHorizontalFlip, RandomErasing).
//
// Images are channels-last (H, W, C), uint8 or float, modified in place.
// All randomness comes from the Rng passed in, drawn in a fixed order
// (crop offsets, then flip, then erasing), so one seed gives one result.
// In the batch loader crop and flip run on the uint8 image (so padding is
// black, as in torchvision), erasing on the normalised float image (so the
// erased value 0 is the dataset mean).
#pragma once
#include <cstdint>

#include "tensor/rng.h"

namespace nala {

struct AugmentOptions {
  int crop_pad = 0;      // random crop after padding each side by this many zero pixels; 0 = off
  bool hflip = false;    // flip left-right with probability 1/2
  float erase_prob = 0;  // probability of erasing one rectangle; 0 = off
  float erase_scale_lo = 0.02f, erase_scale_hi = 0.33f;  // erased area / image area
  float erase_ratio_lo = 0.3f, erase_ratio_hi = 3.3f;    // aspect ratio h / w (sampled log-uniform)
  float erase_value = 0;
  bool any() const { return crop_pad > 0 || hflip || erase_prob > 0; }
};

// Training defaults for small images: crop with padding 4 (2 at 28 px and
// below), flip, erasing with probability 0.25 (docs/SPEC.md §9).
AugmentOptions train_augment(int64_t img_size);

struct Rect {
  int y = 0, x = 0, h = 0, w = 0;
};

// dst(y, x) = src(y + dy, x + dx), zero where that falls outside. src != dst.
void shift_crop(const uint8_t* src, uint8_t* dst, int H, int W, int C, int dy, int dx);
void shift_crop(const float* src, float* dst, int H, int W, int C, int dy, int dx);

// Pad by `pad` zeros on every side and cut an H x W window at a random place:
// the same as shift_crop with dy, dx uniform in [-pad, pad].
void random_crop(uint8_t* img, int H, int W, int C, int pad, Rng& rng);
void random_crop(float* img, int H, int W, int C, int pad, Rng& rng);

void hflip(uint8_t* img, int H, int W, int C);
void hflip(float* img, int H, int W, int C);

// With probability opt.erase_prob, set a random rectangle (area and aspect
// drawn from the option ranges; up to 10 tries, as torchvision) of all
// channels to opt.erase_value. Returns whether it erased; *where gets the
// rectangle.
bool random_erase(uint8_t* img, int H, int W, int C, const AugmentOptions& opt, Rng& rng, Rect* where = nullptr);
bool random_erase(float* img, int H, int W, int C, const AugmentOptions& opt, Rng& rng, Rect* where = nullptr);

// Crop (when crop_pad > 0) then flip (when hflip).
void augment_geometric(uint8_t* img, int H, int W, int C, const AugmentOptions& opt, Rng& rng);
void augment_geometric(float* img, int H, int W, int C, const AugmentOptions& opt, Rng& rng);

}  // namespace nala
