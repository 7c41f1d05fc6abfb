// nn/safetensors.h - read and write checkpoints in the safetensors format.
//
// Layout of a file:
//   8 bytes   N, little-endian u64: the length of the header
//   N bytes   UTF-8 JSON: {"<name>": {"dtype": "F32", "shape": [2, 3],
//             "data_offsets": [begin, end]}, ..., "__metadata__": {"k": "v"}}
//             (padded with trailing spaces so that the data starts 8-aligned)
//   rest      the raw little-endian tensor bytes; offsets count from here
//
// Loading opens the file through nn/files.h: a path that is not a regular
// file (a FIFO, a device, a directory) is refused before a byte is read.
// Loading trusts nothing in the file: the header length, the JSON, every
// shape, dtype and offset are checked, and an error names the file and what
// is wrong with it. F32 and I64 load as they are; F16, BF16 and F64 are
// widened/narrowed to F32, and I32, I16, I8, U8 and BOOL are widened to I64.
//
// Saving is atomic: the bytes go to "<path>.tmp.<pid>", are flushed and
// fsync'ed, and the temp file is renamed over the target (then the directory
// is fsync'ed). A failure at any point removes the temp file and leaves an
// existing file at <path> untouched. Only an absent target or a regular file
// is replaced: a device (/dev/null), a FIFO, a symlink or a directory at
// <path> is refused and left as it was (nn/files.h's AtomicWriter).
// Tensors are written sorted by name.
//
// Part of the core library (C++ standard library and POSIX only).
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace nala {

struct SafeTensors {
  std::map<std::string, Tensor> tensors;           // contiguous CPU tensors, f32 or i64
  std::map<std::string, std::string> metadata;     // the "__metadata__" object, if any
};

SafeTensors load_safetensors(const std::string& path);

// Parse a whole file held in memory; `name` is used in error messages.
SafeTensors parse_safetensors(const std::string& bytes, const std::string& name);

// Tensors must be defined CPU tensors of dtype f32, i64, f16 or bf16, with
// distinct, non-empty UTF-8 names other than "__metadata__".
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace nala
