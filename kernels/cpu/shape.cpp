// kernels/cpu/shape.cpp - layout planning, the strided copy and the 2-D
// transpose.
#include "kernels/cpu/shape.h"

#include <string>

#include "tensor/error.h"

namespace nala {

int64_t layout_numel(const Layout& L) {
  int64_t n = 1;
  for (int d = 0; d < L.nd; d++) n *= L.size[d];
  return n;
}

Layout make_layout(const std::vector<int64_t>& size, const std::vector<int64_t>& so,
                   const std::vector<int64_t>& sa, const std::vector<int64_t>& sb, const char* op) {
  size_t n = size.size();
  NALA_CHECK(so.size() == n && sa.size() == n && (sb.empty() || sb.size() == n), op,
             ": layout with mismatched stride counts");
  std::vector<int64_t> s, o, a, b;
  for (size_t i = 0; i < n; i++) {
    if (size[i] == 0) {  // empty: one dim of size 0
      Layout L;
      L.size[0] = 0;
      return L;
    }
    if (size[i] == 1) continue;
    int64_t bi = sb.empty() ? 0 : sb[i];
    // Dim i continues the previous kept dim when every operand steps through
    // both as one: stride(prev) == stride(i) * size(i).
    if (!s.empty() && o.back() == so[i] * size[i] && a.back() == sa[i] * size[i] && b.back() == bi * size[i]) {
      s.back() *= size[i];
      o.back() = so[i], a.back() = sa[i], b.back() = bi;
    } else {
      s.push_back(size[i]), o.push_back(so[i]), a.push_back(sa[i]), b.push_back(bi);
    }
  }
  Layout L;
  if (s.empty()) return L;  // one element
  NALA_CHECK(s.size() <= (size_t)kMaxDims, op, ": ", s.size(), " dims after collapsing, at most ", kMaxDims,
             " are supported");
  L.nd = (int)s.size();
  for (int d = 0; d < L.nd; d++) L.size[d] = s[d], L.so[d] = o[d], L.sa[d] = a[d], L.sb[d] = b[d];
  return L;
}

std::vector<int64_t> broadcast_strides(const std::vector<int64_t>& out, const std::vector<int64_t>& in,
                                       const std::vector<int64_t>& in_strides) {
  size_t n = out.size(), k = in.size();
  std::vector<int64_t> st(n, 0);
  for (size_t i = n - k; i < n; i++) st[i] = in[i - (n - k)] == 1 ? 0 : in_strides[i - (n - k)];
  return st;
}

namespace cpu {
namespace detail {
int num_threads() {
#ifdef _OPENMP
  return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}
}  // namespace detail

void copy_strided(float* out, const float* x, Layout L) {
  if (layout_numel(L) == 0) return;
  const int last = L.nd - 1;
  detail::parallel_pieces(L, 1 << 15, -1, [&](const Layout& p, int64_t oo, int64_t oa, int64_t, int) {
    const int64_t n = p.size[last], so = p.so[last], sa = p.sa[last];
    detail::for_rows(p, [&](int64_t po, int64_t pa, int64_t) {
      float* o = out + oo + po;
      const float* a = x + oa + pa;
      if (so == 1 && sa == 1) {
        for (int64_t i = 0; i < n; i++) o[i] = a[i];
      } else if (so == 1 && sa == 0) {
        for (int64_t i = 0; i < n; i++) o[i] = a[0];
      } else {
        for (int64_t i = 0; i < n; i++) o[i * so] = a[i * sa];
      }
    });
  });
}

void copy_strided_naive(float* out, const float* x, Layout L) {
  int64_t n = layout_numel(L);
  for (int64_t e = 0; e < n; e++) {
    int64_t r = e, po = 0, pa = 0;
    for (int d = L.nd - 1; d >= 0; d--) {
      int64_t i = r % L.size[d];
      r /= L.size[d];
      po += i * L.so[d], pa += i * L.sa[d];
    }
    out[po] = x[pa];
  }
}

void transpose_2d(float* out, const float* x, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) out[c * rows + r] = x[r * cols + c];
}

}  // namespace cpu
}  // namespace nala
