// tests/fuzz/fuzz_cli.cpp - libFuzzer entry: `nala train`'s command line
// (see tests/fuzz/fuzz_targets.h for the input layout and what counts as a bug).
#include "tests/fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nala::fuzz::cli(data, size);
  return 0;
}
