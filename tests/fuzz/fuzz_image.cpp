// tests/fuzz/fuzz_image.cpp - libFuzzer entry: decode_image_bytes, resize, normalise
// (see tests/fuzz/fuzz_targets.h for the input layout and what counts as a bug).
#include "tests/fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nala::fuzz::image(data, size);
  return 0;
}
