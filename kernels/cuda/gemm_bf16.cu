// kernels/cuda/gemm_bf16.cu - the bf16 tensor-core GEMM's entry point
// (API in kernels/cuda/gemm_bf16.h): picks a kernel and its tile, builds the
// TMA tensor maps, launches. The kernels are the GEMM lab's last two steps:
// gemm_mma (kernels/cuda/gemm_bf16_mma.cuh, lab version 6) and gemm_wgmma
// (kernels/cuda/gemm_bf16_wgmma.cuh, lab version 7; sm_90a builds only).
//
// Tensor maps are made by the driver's cuTensorMapEncodeTiled, reached
// through the runtime (cudaGetDriverEntryPointByVersion), so nothing links
// libcuda. They describe the operand as stored: a 2-D array of bf16 with its
// leading dim as row stride, boxes of 64 contiguous elements (128 bytes, the
// swizzle's width) by 128, BN or 64 rows; elements outside the array read as
// zeros.
#include "kernels/cuda/gemm_bf16.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <type_traits>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm_bf16_mma.cuh"
#include "kernels/cuda/gemm_bf16_wgmma.cuh"
#include "tensor/error.h"
#include "tensor/tensor.h"

#if defined(NALA_SM90A)
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled
#endif

namespace nala {
namespace cuda {

namespace {

using namespace bf16gemm;

int g_force_path = 0, g_force_bn = 0;

int device_sms(int* major) {
  static int sms = 0, maj = 0;
  if (!sms) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) ||
        cudaDeviceGetAttribute(&maj, cudaDevAttrComputeCapabilityMajor, dev))
      sms = 100, maj = 0;
    cudaGetLastError();
  }
  *major = maj;
  return sms;
}

bool aligned(const void* p, int bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

template <class Cfg, bool TA, bool TB, bool F32, int GATHER = 0>
void launch_mma(const Params& p, int splits) {
  static bool attr = false;
  if (!attr) {
    CUDA_CHECK(cudaFuncSetAttribute(gemm_mma<Cfg, TA, TB, F32, GATHER>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    Cfg::SMEM),
               "gemm_bf16");
    attr = true;
  }
  const int64_t ntiles = (p.N + Cfg::BN - 1) / Cfg::BN;
  NALA_CHECK(ntiles <= 65535, "gemm_bf16: N = ", p.N, " is too large for the mma.sync kernel");
  dim3 grid((unsigned)((p.M + Cfg::BM - 1) / Cfg::BM), (unsigned)ntiles, (unsigned)splits);
  gemm_mma<Cfg, TA, TB, F32, GATHER><<<grid, Cfg::THREADS, Cfg::SMEM>>>(p);
  CUDA_CHECK_LAUNCH("gemm_bf16 (mma.sync)");
}

// The two implicit-GEMM convolution products: the forward (NT, A gathered) and
// the weight gradient (TN, B gathered).
template <class Cfg>
void mma_gather(int gather, const Params& p, int splits) {
  if (gather == 1)
    launch_mma<Cfg, false, true, true, 1>(p, splits);
  else
    launch_mma<Cfg, true, false, true, 2>(p, splits);
}

// f(TA, TB) for the runtime transposes, each a std::bool_constant: one kernel
// instance per pair.
template <class F>
void with_transposes(bool ta, bool tb, F&& f) {
  using Y = std::true_type;
  using N = std::false_type;
  if (!ta && !tb) f(N(), N());
  else if (!ta && tb) f(N(), Y());
  else if (ta && !tb) f(Y(), N());
  else f(Y(), Y());
}

template <class Cfg, bool F32>
void mma_tr(bool ta, bool tb, const Params& p, int splits) {
  with_transposes(ta, tb, [&](auto A, auto B) {
    launch_mma<Cfg, decltype(A)::value, decltype(B)::value, F32>(p, splits);
  });
}

void mma_path(bool small, bool f32, bool ta, bool tb, const Params& p, int splits) {
  if (small) {
    if (f32) mma_tr<MmaSmall, true>(ta, tb, p, splits);
    else mma_tr<MmaSmall, false>(ta, tb, p, splits);
  } else {
    if (f32) mma_tr<MmaBig, true>(ta, tb, p, splits);
    else mma_tr<MmaBig, false>(ta, tb, p, splits);
  }
}

#if defined(NALA_SM90A)
PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q;
    CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q),
               "gemm_bf16");
    NALA_CHECK(q == cudaDriverEntryPointSuccess && f, "gemm_bf16: the driver has no cuTensorMapEncodeTiled");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// X stored as `rows` rows of `cols` contiguous bf16, `ld` apart; boxes of 64 x box_rows.
CUtensorMap make_map(const bf16* X, int64_t rows, int64_t cols, int64_t ld, int box_rows) {
  CUtensorMap map;
  const cuuint64_t dims[2] = {(cuuint64_t)cols, (cuuint64_t)rows};
  const cuuint64_t strides[1] = {(cuuint64_t)ld * 2};
  const cuuint32_t box[2] = {64, (cuuint32_t)box_rows}, estr[2] = {1, 1};
  CUresult r = encode_fn()(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<bf16*>(X), dims, strides, box, estr,
                           CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                           CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  NALA_CHECK(r == CUDA_SUCCESS, "gemm_bf16: cuTensorMapEncodeTiled failed (", (int)r, ") for a ", rows, " x ", cols,
             " operand, ld ", ld);
  return map;
}

template <int BN, int S, bool TA, bool TB, int H = 1>
void launch_wgmma(const Params& p, int splits) {
  using Cfg = WgCfg<BN, S, H>;
  static bool attr = false;
  if (!attr) {
    CUDA_CHECK(cudaFuncSetAttribute(gemm_wgmma<BN, S, TA, TB, H>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    Cfg::SMEM),
               "gemm_bf16");
    attr = true;
  }
  // A: [M, K] boxes 64 k x 128 rows, or stored [K, M]: boxes 64 m x 64 k.
  // B: stored [N, K]: boxes 64 k x BN rows, or [K, N]: boxes 64 n x 64 k.
  const CUtensorMap ma = TA ? make_map(p.A, p.K, p.M, p.lda, 64) : make_map(p.A, p.M, p.K, p.lda, WG_BM);
  const CUtensorMap mb = TB ? make_map(p.B, p.N, p.K, p.ldb, BN) : make_map(p.B, p.K, p.N, p.ldb, 64);
  // C: boxes of 64 columns x 64 rows (a consumer warpgroup's piece of a tile holds H BN / 64 of them)
  CUtensorMap mc{};
  if (p.tmaC) mc = make_map(static_cast<const bf16*>(p.C), p.M, p.N, p.ldc, 64);
  int major = 0;
  const int64_t tiles = ((p.M + WG_BM - 1) / WG_BM) * ((p.N + BN - 1) / BN) * splits;
  const unsigned grid = (unsigned)std::min<int64_t>(tiles, device_sms(&major));  // persistent: one block an SM
  gemm_wgmma<BN, S, TA, TB, H><<<grid, WG_THREADS, Cfg::SMEM>>>(ma, mb, mc, p);
  CUDA_CHECK_LAUNCH("gemm_bf16 (wgmma)");
}

template <int BN, int S>
void wgmma_tr(bool ta, bool tb, const Params& p, int splits) {
  with_transposes(ta, tb, [&](auto A, auto B) {
    launch_wgmma<BN, S, decltype(A)::value, decltype(B)::value>(p, splits);
  });
}

// Tile width: 64 for N <= 64; else 128 or 256, whichever gives the fewer
// waves of tiles over the SMs, counting a tile's time as its width plus 16
// columns (its A slice, the epilogue's fixed part); 128 when the 256-wide
// tiles would leave SMs idle. Wave quantisation decides at the models'
// stage-2 and -3 shapes (25,088 x 256: 196 wide tiles, two waves of which
// the second a half; 392 narrow ones fill three: 1.25x faster). Stages: as
// many as fit beside the staging of C in the 227 KB a block may have.
int wgmma_bn(const Params& p, int sms) {
  if (p.N <= 64) return 64;
  const int64_t mt = (p.M + WG_BM - 1) / WG_BM;
  auto cost = [&](int bn) { return (double)((mt * ((p.N + bn - 1) / bn) + sms - 1) / sms) * (bn + 16); };
  return p.N <= 128 || mt * ((p.N + 255) / 256) < sms || cost(128) < cost(256) ? 128 : 256;
}
void wgmma_path(bool ta, bool tb, const Params& p, int bn, int splits) {
  // 64-wide tiles of a short-K product (N <= 64, K <= 256: the models'
  // projections and xt's stage-0 layers): each consumer warpgroup takes whole
  // 128 x 64 tiles, the two alternating, so one's stores overlap the other's
  // products (1.08-1.16x at 401,408 x 64 x 64 and x 32 x 32). At 128-wide
  // tiles the same split was slower (0.85x at 401,408 x 128 x 32): kept to 64.
  // A warpgroup passes over the other's tiles without waiting on their
  // stages, so its next wait must not be two uses of a stage ahead: a tile's
  // slices + 1 <= the stages (K <= 256: 4 slices, 7 stages).
  if (bn == 64 && !ta && p.K <= 256) {
    static_assert(256 / WG_BK + 1 <= 7, "gemm_bf16: H = 2 needs a tile's slices + 1 <= the stages");
    if (tb) launch_wgmma<64, 7, false, true, 2>(p, splits);
    else launch_wgmma<64, 7, false, false, 2>(p, splits);
    return;
  }
  if (bn == 64)
    wgmma_tr<64, 8>(ta, tb, p, splits);
  else if (bn == 128)
    wgmma_tr<128, 5>(ta, tb, p, splits);
  else
    wgmma_tr<256, 3>(ta, tb, p, splits);
}
#endif

}  // namespace

void gemm_bf16_force_path(int path, int bn) { g_force_path = path, g_force_bn = bn; }

namespace {

// Both entry points: A and B are bf16 (A16, B16) or float32 (A32, B32, the mma.sync kernel only).
// gather: 1 or 2, A32 or B32 is the image batch that conv unfolds (implicit GEMM).
void gemm_any(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const bf16* A16, const bf16* B16,
              const float* A32, const float* B32, int64_t lda, int64_t ldb, void* C, int64_t ldc, bool c_bf16,
              float alpha, const GemmEpilogue& epi, int gather = 0, const ConvGather* conv = nullptr) {
  if (M <= 0 || N <= 0) return;
  const bool f32 = A32 != nullptr;
  // a tile's or a k slice's end past the last index must stay an int
  const int64_t most = INT_MAX - 256;
  NALA_CHECK(M < most && N < most && K >= 0 && K < most, "gemm_bf16: sizes out of range (M ", M, ", N ", N, ", K ", K,
             ")");
  NALA_CHECK(lda >= (trans_a ? M : K) && ldb >= (trans_b ? K : N) && ldc >= N, "gemm_bf16: a leading dim is too small");
  NALA_CHECK(!epi.residual || epi.ldr >= N, "gemm_bf16: residual's leading dim ", epi.ldr, " < N = ", N);
  Params p;
  p.A = A16, p.B = B16, p.A32 = A32, p.B32 = B32, p.C = C;
  p.alpha = alpha;
  p.lda = lda, p.ldb = ldb, p.ldc = ldc;
  p.M = (int)M, p.N = (int)N, p.K = (int)K;
  if (conv) p.conv = *conv;
  p.bias = epi.bias, p.res = epi.residual, p.ldr = epi.ldr;
  p.gelu = epi.act == GemmAct::gelu, p.c_bf16 = c_bf16;
  // 16-byte aligned rows: 8 bf16 or 4 floats
  p.vecA = f32 ? aligned(A32, 16) && lda % 4 == 0 : aligned(A16, 16) && lda % 8 == 0;
  p.vecB = f32 ? aligned(B32, 16) && ldb % 4 == 0 : aligned(B16, 16) && ldb % 8 == 0;
  const int esz = c_bf16 ? 2 : 4;
  p.pairC = aligned(C, 2 * esz) && ldc % 2 == 0;
  p.pairR = epi.residual && aligned(epi.residual, 2 * esz) && epi.ldr % 2 == 0;
  int major = 0;
  const int sms = device_sms(&major);
  bool wg = false;
#if defined(NALA_SM90A)
  wg = !f32 && !gather && g_force_path != 6 && major == 9 && K > 0 && p.vecA && p.vecB;
#endif
  NALA_CHECK(wg || g_force_path != 7, "gemm_bf16: the wgmma path needs an sm_90a build (CUDA_ARCH=90), an sm_90 GPU, "
             "bf16 operands, K > 0 and 16-byte aligned rows (leading dims multiples of 8)");
  // mma.sync tiles: 64 x 64 for thin products (64 columns or rows or fewer,
  // a short K of 64 or less: one or two slices, nothing to pipeline, so more
  // blocks an SM hide the loads instead; or too few 128 x 128 tiles to give
  // every SM two), else 128 x 128.
  const int64_t big_tiles = ((M + MmaBig::BM - 1) / MmaBig::BM) * ((N + MmaBig::BN - 1) / MmaBig::BN);
  const bool small = !wg && (N <= 64 || M <= 64 || K <= 64 || big_tiles < 2 * sms);
  const int bm = wg ? WG_BM : small ? MmaSmall::BM : MmaBig::BM;
  int bn = small ? MmaSmall::BN : MmaBig::BN;
#if defined(NALA_SM90A)
  if (wg) bn = g_force_bn ? g_force_bn : wgmma_bn(p, sms);
#endif
  // Split-K when the tiles leave SMs idle and K is long (a weight gradient:
  // M, N small, K = all rows): the number of slices (each >= 512 long, a
  // workspace of at most 256 MB) that minimises the waves of blocks per
  // slice's worth of work, with 3% a slice for the second pass; one block an
  // SM (wgmma), two (mma.sync, 128 x 128) or four (64 x 64).
  const int64_t tiles = ((M + bm - 1) / bm) * ((N + bn - 1) / bn), slots = wg ? sms : small ? 4 * sms : 2 * sms;
  int64_t splits = 1;
  if (tiles < slots && K >= 1024) {
    const int64_t most = std::max<int64_t>(1, std::min<int64_t>(K / 512, ((int64_t)1 << 26) / (M * N)));
    double best = 1e30;
    for (int64_t s = 1; s <= std::min<int64_t>(most, 4 * slots); s++) {
      const double cost = (double)((tiles * s + slots - 1) / slots) / s * (1.0 + 0.03 * s);
      if (cost < best) best = cost, splits = s;
    }
  }
  p.kchunk = (int)((K + splits - 1) / splits + 63) / 64 * 64;
  if (p.kchunk == 0) p.kchunk = 64;
  splits = std::max<int64_t>(1, (K + p.kchunk - 1) / p.kchunk);
  p.ws = nullptr;
  p.splits = (int)splits;
  // wgmma's C by TMA stores: bf16, 16-byte aligned rows (the tensor map's
  // stride), N even (the bias read in pairs), no residual, no split-K
  p.tmaC = wg && c_bf16 && aligned(C, 16) && ldc % 8 == 0 && N % 2 == 0 && !epi.residual && splits == 1;
  Tensor ws;
  if (splits > 1) {
    ws = Tensor::empty({splits * M * N}, DType::F32, Device::CUDA);
    p.ws = ws.f32();
  }
#if defined(NALA_SM90A)
  if (wg)
    wgmma_path(trans_a, trans_b, p, bn, (int)splits);
  else
#endif
  if (gather && small)
    mma_gather<MmaSmall>(gather, p, (int)splits);
  else if (gather)
    mma_gather<MmaBig>(gather, p, (int)splits);
  else
    mma_path(small, f32, trans_a, trans_b, p, (int)splits);
  if (splits > 1) {
    const int64_t total = M * ((N + 1) / 2);
    splitk_epilogue<<<(unsigned)std::min<int64_t>((total + 255) / 256, 1 << 16), 256>>>(p, (int)splits);
    CUDA_CHECK_LAUNCH("gemm_bf16 (split-K epilogue)");
  }
}

}  // namespace

void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const __nv_bfloat16* A, int64_t lda,
               const __nv_bfloat16* B, int64_t ldb, void* C, int64_t ldc, bool c_bf16, const GemmEpilogue& epi) {
  gemm_any(trans_a, trans_b, M, N, K, A, B, nullptr, nullptr, lda, ldb, C, ldc, c_bf16, 1.0f, epi);
}

bool conv_fits_int(int64_t B, int64_t H, int64_t W, int64_t Ci, int64_t k, int64_t stride, int64_t pad) {
  const int64_t most = INT_MAX - 256;
  if (k <= 0 || stride <= 0 || pad < 0 || H + 2 * pad >= most || W + 2 * pad >= most) return false;
  const int64_t Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
  return B * Ho * Wo < most && Ci * k * k < most && H * W < most;
}

ConvGather conv_gather(const float* x, int64_t B, int64_t H, int64_t W, int64_t Ci, int64_t k, int64_t stride,
                       int64_t pad, const char* op) {
  NALA_CHECK(k > 0 && stride > 0 && pad >= 0, op, ": kernel ", k, ", stride ", stride, ", padding ", pad);
  const int64_t Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
  NALA_CHECK(conv_fits_int(B, H, W, Ci, k, stride, pad), op, ": sizes out of range for the implicit GEMM");
  return ConvGather((int)H, (int)W, (int)Ci, (int)Ho, (int)Wo, (int)k, (int)stride, (int)pad, (int)(B * Ho * Wo),
                    (int)(Ci * k * k), aligned(x, 16));
}

void conv_bf16_f32_forward(float* out, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                           int64_t W, int64_t Ci, int64_t Co, int64_t k, int64_t stride, int64_t pad) {
  const ConvGather g = conv_gather(x, B, H, W, Ci, k, stride, pad, "conv_bf16_f32_forward");
  GemmEpilogue epi;
  epi.bias = bias;
  // out[rows, Co] = unfold(x)[rows, cols] w[Co, cols]^T (+ bias), w in (Co, k, k, Ci) order
  gemm_any(false, true, g.rows, Co, g.cols, nullptr, nullptr, x, w, g.cols, g.cols, out, Co, false, 1.0f, epi, 1, &g);
}

void conv_bf16_f32_dw(float* dw, const float* dout, const float* x, int64_t B, int64_t H, int64_t W, int64_t Ci,
                      int64_t Co, int64_t k, int64_t stride, int64_t pad) {
  const ConvGather g = conv_gather(x, B, H, W, Ci, k, stride, pad, "conv_bf16_f32_dw");
  // dw[Co, cols] = dout[rows, Co]^T unfold(x)[rows, cols], in (Co, k, k, Ci) order
  gemm_any(true, false, Co, g.cols, g.rows, nullptr, nullptr, dout, x, Co, g.cols, dw, g.cols, false, 1.0f,
           GemmEpilogue(), 2, &g);
}

void gemm_bf16_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                   int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, const GemmEpilogue& epi) {
  NALA_CHECK(A && B, "gemm_bf16_f32: null operand");
  gemm_any(trans_a, trans_b, M, N, K, nullptr, nullptr, A, B, lda, ldb, C, ldc, false, alpha, epi);
}

void gemm_bf16_mixed(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const GemmOperand& A,
                     const GemmOperand& B, void* C, int64_t ldc, bool c_bf16, const GemmEpilogue& epi) {
  NALA_CHECK(A.p && B.p && C, "gemm_bf16_mixed: null operand");
  if (!A.bf16 && !B.bf16) {
    gemm_any(trans_a, trans_b, M, N, K, nullptr, nullptr, static_cast<const float*>(A.p),
             static_cast<const float*>(B.p), A.ld, B.ld, C, ldc, c_bf16, 1.0f, epi);
    return;
  }
  // A float32 operand stored as `rows` rows of `cols`, ld apart: its values in bf16 (same ld).
  auto rounded = [](const GemmOperand& X, int64_t rows, int64_t cols, Tensor& keep) -> const bf16* {
    if (X.bf16) return static_cast<const bf16*>(X.p);
    const int64_t n = rows > 0 && cols > 0 ? (rows - 1) * X.ld + cols : 0;
    keep = Tensor::empty({std::max<int64_t>(n, 1)}, DType::BF16, Device::CUDA);
    cast_f32_bf16(keep.bf16(), static_cast<const float*>(X.p), n);
    return reinterpret_cast<const bf16*>(keep.bf16());
  };
  Tensor ka, kb;
  const bf16* a = rounded(A, trans_a ? K : M, trans_a ? M : K, ka);
  const bf16* b = rounded(B, trans_b ? N : K, trans_b ? K : N, kb);
  gemm_any(trans_a, trans_b, M, N, K, a, b, nullptr, nullptr, A.ld, B.ld, C, ldc, c_bf16, 1.0f, epi);
}

}  // namespace cuda
}  // namespace nala
