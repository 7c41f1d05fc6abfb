// kernels/cuda/rope.h - 2-D rotary position embedding on the GPU
// (docs/SPEC.md §4). Same names and signatures as kernels/cpu/rope.h; the pointers
// are device pointers. See kernels/cpu/rope.h for the math and shape letters
// (R matrices of (N, D), N = H * W, D % 4 == 0). All kernels overwrite (=).
#pragma once
#include <cstdint>

namespace nala {
namespace cuda {

// y = rope(x); x and y may alias.
void rope2d_forward(const float* x, float* y, int64_t R, int64_t H, int64_t W, int64_t D);
// gx = rope^T(gy); gy and gx may alias.
void rope2d_backward(const float* gy, float* gx, int64_t R, int64_t H, int64_t W, int64_t D);

// Device copies of the (N, D) sin and cos tables of cpu::rope_tables (the
// same float values), built once per (H, W, D) and kept for the life of the
// process. The attention kernels read them too.
void rope_tables_device(int64_t H, int64_t W, int64_t D, const float** sin, const float** cos);

// The same angles, one (cos, sin) per rope pair and coordinate: (H + W, D/4)
// pairs of floats (cos first). Entry x * D/4 + i (x < H) is the pair i of row x, entry (H + c) *
// D/4 + i the pair i of column c: features 2i, 2i + 1 of a token in row x use
// the first, features D/2 + 2i, D/2 + 2i + 1 of a token in column c the
// second (cpu::rope_tables' values, bit for bit). The same (H + W) x D/4
// pairs follow, pair-major: entry (H + W) * D/4 + i * (H + W) + x is pair i of
// row (x < H) or column (x - H) again, so that the lanes of a warp that hold
// consecutive tokens of one row read consecutive entries. Then the column
// pairs once more, fragment-major: entry 2 (H + W) * D/4 + ((i / 4) * W + c) * 4
// + i % 4 is pair i of column c, so that the lanes of an mma fragment (8
// consecutive tokens, lane t holding pairs 4 j + t) read 256 consecutive
// bytes where the position-major entries take a cache line per token.
// 35 KB at d = 64, 56 x 56, where the (N, D) tables take 1.6 MB. Built once
// per (H, W, D), kept.
const float* rope_pair_table_device(int64_t H, int64_t W, int64_t D);

}  // namespace cuda
}  // namespace nala
