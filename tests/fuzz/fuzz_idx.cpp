// tests/fuzz/fuzz_idx.cpp - libFuzzer entry: the IDX reader, in memory and through files (gzip)
// (see tests/fuzz/fuzz_targets.h for the input layout and what counts as a bug).
#include "tests/fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nala::fuzz::idx(data, size);
  return 0;
}
