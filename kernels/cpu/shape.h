// kernels/cpu/shape.h - strided layouts and the strided copy.
//
// A Layout describes one n-d loop over up to three operands that share an
// index space: `size` is the shape walked, and so / sa / sb give each
// operand's element stride per dim (0 on a broadcast or reduced dim). Every
// strided kernel (copy_strided here, the broadcasting binary ops and sum_to in
// elementwise.h) takes one by value, so kernels/cuda/ can pass it straight to
// a kernel launch. make_layout drops size-1 dims and merges neighbours that
// are contiguous for every operand, so most real cases collapse to one or two
// dims (same shape -> 1 dim; (M, C) op (C) -> 2 dims), which is what the fast
// paths look for.
//
// Building a Layout is host planning, not a kernel; it lives here so that
// both backends use the same one.
#pragma once
#include <cstdint>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace nala {

constexpr int kMaxDims = 8;

struct Layout {
  int nd = 1;
  int64_t size[kMaxDims] = {1};
  int64_t so[kMaxDims] = {1};  // output (or the written operand)
  int64_t sa[kMaxDims] = {1};  // first input
  int64_t sb[kMaxDims] = {1};  // second input (unused ones are 0)
};

int64_t layout_numel(const Layout& L);

// Collapse (size, so, sa, sb) into a Layout. An empty sb means "no second
// operand" (strides 0). Fails naming `op` when more than kMaxDims dims remain.
Layout make_layout(const std::vector<int64_t>& size, const std::vector<int64_t>& so,
                   const std::vector<int64_t>& sa, const std::vector<int64_t>& sb, const char* op);

// Strides of an operand of shape `in` (element strides `in_strides`) read in
// the index space of `out` under numpy broadcasting: 0 on missing and
// broadcast (size-1) dims.
std::vector<int64_t> broadcast_strides(const std::vector<int64_t>& out, const std::vector<int64_t>& in,
                                       const std::vector<int64_t>& in_strides);

namespace cpu {

// out[so . i] = x[sa . i] for every index i of L (sb unused). Overwrites.
// Used for contiguous(), concat (writing into a slice of the output) and the
// slice gradients of narrow/concat.
void copy_strided(float* out, const float* x, Layout L);
void copy_strided_naive(float* out, const float* x, Layout L);

// out (cols x rows) = x^T for a row-major x (rows x cols). Overwrites; out and
// x must not overlap; serial (callers run it inside their own parallel
// loops). The one 2-D transpose of the CPU kernels (attention's S^T, the
// depthwise conv's weight taps); the CUDA kernels read through strides.
void transpose_2d(float* out, const float* x, int64_t rows, int64_t cols);

// ---- loop drivers shared by the CPU strided kernels ---------------------
namespace detail {

int num_threads();

// Walk the rows of L (a row = the last dim) in order, calling
// f(po, pa, pb) with each operand's element offset at the row's start.
template <class F>
void for_rows(const Layout& L, F f) {
  const int nd = L.nd;
  int64_t rows = 1;
  for (int d = 0; d < nd - 1; d++) rows *= L.size[d];
  int64_t idx[kMaxDims] = {0};
  int64_t po = 0, pa = 0, pb = 0;
  for (int64_t r = 0; r < rows; r++) {
    f(po, pa, pb);
    for (int d = nd - 2; d >= 0; d--) {
      if (++idx[d] < L.size[d]) {
        po += L.so[d], pa += L.sa[d], pb += L.sb[d];
        break;
      }
      po -= L.so[d] * (L.size[d] - 1), pa -= L.sa[d] * (L.size[d] - 1), pb -= L.sb[d] * (L.size[d] - 1);
      idx[d] = 0;
    }
  }
}

// Split L along one dim into one piece per thread and call
// f(piece, po, pa, pb, thread) for each piece (base offsets of the piece).
// Splits dim `d` when d >= 0, else the outermost dim with at least 2 pieces
// per thread (else the largest dim). Runs serially below `min_parallel`
// elements. Pieces of a split output dim write disjoint elements.
template <class F>
void parallel_pieces(const Layout& L, int64_t min_parallel, int d, F f) {
  int T = num_threads();
  if (T <= 1 || layout_numel(L) < min_parallel) {
    f(L, 0, 0, 0, 0);
    return;
  }
  if (d < 0) {
    d = 0;
    for (int k = 0; k < L.nd; k++)
      if (L.size[k] > L.size[d]) d = k;
    for (int k = 0; k < L.nd; k++)
      if (L.size[k] >= 2 * T) {
        d = k;
        break;
      }
  }
#pragma omp parallel num_threads(T)
  {
#ifdef _OPENMP
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
    int t = 0, nt = 1;
#endif
    int64_t lo = L.size[d] * t / nt, hi = L.size[d] * (t + 1) / nt;
    if (lo < hi) {
      Layout p = L;
      p.size[d] = hi - lo;
      f(p, lo * L.so[d], lo * L.sa[d], lo * L.sb[d], t);
    }
  }
}

}  // namespace detail
}  // namespace cpu
}  // namespace nala
