// tests/fuzz/fuzz_cifar.cpp - libFuzzer entry: parse_cifar10 on one in-memory batch
// (see tests/fuzz/fuzz_targets.h for the input layout and what counts as a bug).
#include "tests/fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nala::fuzz::cifar(data, size);
  return 0;
}
