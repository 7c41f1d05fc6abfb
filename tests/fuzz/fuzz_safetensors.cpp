// tests/fuzz/fuzz_safetensors.cpp - libFuzzer entry: parse_safetensors on arbitrary bytes
// (see tests/fuzz/fuzz_targets.h for the input layout and what counts as a bug).
#include "tests/fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nala::fuzz::safetensors(data, size);
  return 0;
}
