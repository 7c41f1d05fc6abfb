// kernels/cuda/gemm_bf16_wgmma.cuh - the bf16 GEMM for sm_90a: wgmma
// (warpgroup tensor-core products read straight from shared memory) fed by
// the Tensor Memory Accelerator (TMA) through a ring of shared buffers
// guarded by mbarriers. Included by kernels/cuda/gemm_bf16.cu, compiled for
// sm_90a (the Makefile adds -DNALA_SM90A there; elsewhere this file is empty);
// the lab's version 7 (kernels/lab/gemm_cuda.cu) runs it through
// cuda::gemm_bf16 with this kernel forced.
//
// gemm_wgmma<BN, S, TA, TB, H>: 384 threads = 3 warpgroups per block, one block
//   per SM (persistent), each walking 128 x BN tiles of C. Warpgroup 0 is the producer: one thread issues, per
//   64-deep k slice, the TMA copies of A's 128 x 64 and B's BN x 64 pieces into
//   stage s = slice % S, announcing the bytes on the stage's "full" barrier;
//   it first waits on the stage's "empty" barrier until the consumers are
//   done with the slice that used it S slices ago. Warpgroups 1 and 2 are the
//   consumers, rows 0-63 and 64-127 of the tile: each waits on "full", issues
//   4 H wgmma m64nBNk16 (asynchronous; one wgmma group stays in flight), then
//   marks the previous slice's stage empty. The producer gives registers
//   back (setmaxnreg) so the consumers can hold their 64 x BN accumulators
//   (BN / 2 floats a thread). With H = 2 (64-wide tiles of short-K
//   products) each consumer takes whole tiles instead, the two taking turns,
//   so that one stores while the other multiplies (BN floats a thread). The producer does not wait for a tile's
//   epilogue: it fills the stages with the next tile's slices meanwhile, so
//   loads and stores of C overlap (what matters when K is short). A bf16 C
//   leaves through shared memory and TMA stores (epilogue_tma), which run on
//   while the consumers start the next tile.
// Layouts: TMA writes each piece with the 128-byte swizzle (rows of 64 bf16;
//   within each 8-row, 1024-byte atom the 16-byte chunks are permuted by the
//   row index: ldmatrix-free and conflict-free reads for the tensor cores).
//   A K-major operand (k contiguous: A, or B when transposed) is one box of
//   rows x 64 k; an MN-major one (m or n contiguous) is boxes of 64 k x 64
//   columns, and wgmma reads it with its transpose flag. The shared-memory
//   matrix descriptor says where: start address, the byte offset between
//   8-row atoms (SBO, 1024) and, MN-major, between 64-column boxes (LBO).
// Edges: the tensor map knows the matrix's size; TMA fills everything
//   outside with zeros, so odd M, N and K need nothing here but the guarded
//   epilogue. Split-K slices are multiples of 64 long, so they never overlap.
//   A's and B's leading dims must be multiples of 8 (16-byte rows): the host
//   falls back to gemm_mma otherwise; C's too for the TMA store, else C is
//   written from registers.
#pragma once
#if defined(NALA_SM90A)
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/gemm_bf16_mma.cuh"

namespace nala {
namespace cuda {
namespace bf16gemm {

constexpr int WG_BM = 128, WG_BK = 64, WG_THREADS = 384;

// H: 64-row halves of a tile a consumer warpgroup computes: 1, the two
// split each tile; 2, each takes whole tiles, the two alternating.
template <int BN, int S, int H = 1>
struct WgCfg {
  static constexpr int A_BYTES = WG_BM * WG_BK * 2, B_BYTES = BN * WG_BK * 2;
  static constexpr int STAGE = A_BYTES + B_BYTES;
  // after the ring: each consumer's H x 64 x BN bf16 piece of C for the TMA store, as 64-column boxes
  static constexpr int OUT_BOX = 64 * 64 * 2, OUT = 2 * H * (BN / 64) * OUT_BOX;
  static constexpr int SMEM = S * STAGE + OUT + 1024;  // + room to align the ring to 1024 bytes
  static_assert(SMEM <= 227 * 1024, "gemm_wgmma: the ring and the staging of C exceed shared memory");
};

// ---- PTX wrappers -------------------------------------------------------------------

__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Until the barrier's phase with this parity has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, int parity) {
  asm volatile(
      "{\n.reg .pred P1;\nLAB_WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
      "@P1 bra DONE;\nbra LAB_WAIT;\nDONE:\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
// A 2-D box of the tensor map at element coordinates (c0 innermost, c1) into dst.
__device__ __forceinline__ void tma_load(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];\n" ::
          "r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1)
      : "memory");
}
// The box of the tensor map at (c0, c1) from shared memory at src, in the thread's bulk group.
__device__ __forceinline__ void tma_store(const CUtensorMap* map, uint32_t src, int c0, int c1) {
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%2, %3}], [%1];\n" ::"l"(
                   reinterpret_cast<uint64_t>(map)),
               "r"(src), "r"(c0), "r"(c1)
               : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
// Until this thread's bulk stores have read their shared memory (READ) or are complete.
template <bool READ>
__device__ __forceinline__ void bulk_wait_all() {
  if (READ) asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
  else asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
}
// Generic-proxy writes to shared memory made visible to the TMA unit (async proxy).
__device__ __forceinline__ void fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Barrier `id` (1..15) over `n` threads: one warpgroup, without stopping the others.
__device__ __forceinline__ void named_sync(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Shared-memory matrix descriptor, 128-byte swizzle: start, LBO and SBO in 16-byte units.
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return (uint64_t)((addr & 0x3FFFF) >> 4) | (uint64_t)((lbo & 0x3FFFF) >> 4) << 16 |
         (uint64_t)((sbo & 0x3FFFF) >> 4) << 32 | 1ull << 62;
}

// wgmma m64nNk16, f32 += bf16 x bf16, both operands from shared memory; TA / TB:
// the operand is MN-major (transposed relative to wgmma's K-major default).
template <int TA, int TB>
__device__ __forceinline__ void wgmma_n64(float (&d)[32], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31"
      "}, %32, %33, p, 1, 1, %34, %35;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "n"(TA), "n"(TB));
}
template <int TA, int TB>
__device__ __forceinline__ void wgmma_n128(float (&d)[64], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63"
      "}, %64, %65, p, 1, 1, %66, %67;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "n"(TA), "n"(TB));
}
template <int TA, int TB>
__device__ __forceinline__ void wgmma_n256(float (&d)[128], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,"
      "%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,"
      "%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,"
      "%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,"
      "%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127"
      "}, %128, %129, p, 1, 1, %130, %131;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
        "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(da), "l"(db), "n"(TA), "n"(TB));
}
template <int BN, int TA, int TB>
__device__ __forceinline__ void wgmma_tile(float (&d)[BN / 2], uint64_t da, uint64_t db) {
  if constexpr (BN == 64) wgmma_n64<TA, TB>(d, da, db);
  else if constexpr (BN == 128) wgmma_n128<TA, TB>(d, da, db);
  else wgmma_n256<TA, TB>(d, da, db);
}

// ---- the kernel ---------------------------------------------------------------------

// TA: A is stored [K, M] (MN-major); TB: B is stored [N, K] (K-major). wgmma's
// transpose flags are then TA for A and !TB for B.
// The epilogue of a tile: the thread's rows r and r + 8, columns c + 8j, +1
// (d[4j + 0..1] and d[4j + 2..3]); row pointers computed once, the options
// tested once per tile (uniform branches), two values per store, a row or a
// column pair outside C skipped (N even, so pairs are whole). The guarded
// per-pair epilogue2 costs ~70 instructions a pair, which made short-K
// products (K = 32..128: a linear layer's forward) instruction-bound.
template <int BN, class T, class T2, class Load2, class Store2>
__device__ __forceinline__ void epilogue_rows(const Params& p, int r, int c, const float (&d)[BN / 2], Load2 load2,
                                              Store2 store2) {
  const bool bias = p.bias != nullptr, gelu = p.gelu, res = p.res != nullptr;
  const bool in0 = r < p.M, in1 = r + 8 < p.M;
  T2* c0 = reinterpret_cast<T2*>(static_cast<T*>(p.C) + (int64_t)r * p.ldc + c);
  T2* c1 = reinterpret_cast<T2*>(reinterpret_cast<T*>(c0) + 8 * p.ldc);
  const T2* r0 = res ? reinterpret_cast<const T2*>(static_cast<const T*>(p.res) + (int64_t)r * p.ldr + c) : nullptr;
  const T2* r1 = res ? reinterpret_cast<const T2*>(reinterpret_cast<const T*>(r0) + 8 * p.ldr) : nullptr;
#pragma unroll
  for (int j = 0; j < BN / 8; j++) {
    if (c + 8 * j >= p.N) continue;
    const float al = p.alpha;
    float a0 = al * d[4 * j], a1 = al * d[4 * j + 1], b0 = al * d[4 * j + 2], b1 = al * d[4 * j + 3];
    if (bias) {
      const float x0 = __ldg(p.bias + c + 8 * j), x1 = __ldg(p.bias + c + 8 * j + 1);
      a0 += x0, a1 += x1, b0 += x0, b1 += x1;
    }
    if (gelu) a0 = act::gelu(a0), a1 = act::gelu(a1), b0 = act::gelu(b0), b1 = act::gelu(b1);
    if (in0) {
      if (res) {
        const float2 x = load2(r0 + 4 * j);
        a0 += x.x, a1 += x.y;
      }
      store2(c0 + 4 * j, a0, a1);
    }
    if (in1) {
      if (res) {
        const float2 y = load2(r1 + 4 * j);
        b0 += y.x, b1 += y.y;
      }
      store2(c1 + 4 * j, b0, b1);
    }
  }
}
// A bf16 C without a residual, no split-K (Params::tmaC), through the Tensor
// Memory Accelerator: the warpgroup writes its H x 64 x BN piece of the tile into
// shared memory as 64-column boxes in the TMA's 128-byte swizzle (row r's
// 16-byte chunk c at chunk c ^ (r % 8), so a warp's 4-byte writes of one
// 8-column block fall in 32 distinct banks), and one thread hands the boxes
// to the TMA unit, which writes them to C (whole 128-byte rows, clipped at
// C's edges) while the warpgroup goes on to its next tile. That thread first
// waits until the unit has read the previous tile's boxes. Writing C from
// registers (8 columns a lane after shuffles in the quad, guarded) took ~900
// instructions a thread a tile: short-K products (K = 32..128, a linear
// layer's forward) ran at half of cuBLAS.
// The warpgroup's H halves: rows m0 + 64 h.
template <int BN, int H>
__device__ __forceinline__ void epilogue_tma(const Params& p, const CUtensorMap* mapC, uint32_t out, int wg, int m0,
                                             int n0, const float (&dd)[H][BN / 2]) {
  constexpr int BOX = WgCfg<BN, 1>::OUT_BOX, PIECE = BN / 64 * BOX;
  const int tid = threadIdx.x % 128, g = (tid % 32) / 4, t = tid % 4;
  if (tid == 0) bulk_wait_all<true>();
  named_sync(wg, 128);  // the boxes are free
  const bool bias = p.bias != nullptr, gelu = p.gelu;
  const float al = p.alpha;
#pragma unroll
  for (int h = 0; h < H; h++) {
    const float(&d)[BN / 2] = dd[h];
    // row r of the half; r + 8 is 1024 bytes on
    const uint32_t row = out + h * PIECE + (tid / 32 * 16 + g) * 128 + 4 * t;
#pragma unroll
    for (int j = 0; j < BN / 8; j++) {
      float a0 = al * d[4 * j], a1 = al * d[4 * j + 1], b0 = al * d[4 * j + 2], b1 = al * d[4 * j + 3];
      const int n = n0 + 8 * j + 2 * t;
      if (bias && n < p.N) {  // N even: n + 1 < N too
        const float x0 = __ldg(p.bias + n), x1 = __ldg(p.bias + n + 1);
        a0 += x0, a1 += x1, b0 += x0, b1 += x1;
      }
      if (gelu) a0 = act::gelu(a0), a1 = act::gelu(a1), b0 = act::gelu(b0), b1 = act::gelu(b1);
      const uint32_t at = row + (j / 8) * BOX + (((j % 8) ^ g) << 4);
      asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(at), "r"(mma::pack_bf16(a0, a1)) : "memory");
      asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(at + 1024), "r"(mma::pack_bf16(b0, b1)) : "memory");
    }
  }
  fence_async_shared();
  named_sync(wg, 128);  // the piece is written
  if (tid == 0) {
#pragma unroll
    for (int h = 0; h < H; h++)
#pragma unroll
      for (int b = 0; b < BN / 64; b++)
        if (m0 + 64 * h < p.M && n0 + 64 * b < p.N) tma_store(mapC, out + h * PIECE + b * BOX, n0 + 64 * b, m0 + 64 * h);
    bulk_commit();
  }
}

template <int BN>
__device__ __forceinline__ void epilogue_fast(const Params& p, int r, int c, const float (&d)[BN / 2]) {
  using B2 = __nv_bfloat162;
  if (p.c_bf16)
    epilogue_rows<BN, bf16, B2>(
        p, r, c, d, [](const B2* q) { return __bfloat1622float2(*q); },
        [](B2* q, float x, float y) { *q = __floats2bfloat162_rn(x, y); });
  else
    epilogue_rows<BN, float, float2>(
        p, r, c, d, [](const float2* q) { return *q; }, [](float2* q, float x, float y) { *q = make_float2(x, y); });
}

// Tile t of the persistent loop -> (z, m0, n0): split-K slice z, then groups
// of 8 tile rows walked column by column, so the blocks running at one time
// share their A rows and B columns in L2.
__device__ __forceinline__ void tile_coords(int t, int tm, int tn, int bn, int& z, int& m0, int& n0) {
  const int per = tm * tn;
  z = t / per, t %= per;
  const int group = t / (8 * tn), first = group * 8, gsz = min(tm - first, 8);
  m0 = (first + (t % (8 * tn)) % gsz) * WG_BM;
  n0 = ((t % (8 * tn)) / gsz) * bn;
}

template <int BN, int S, bool TA, bool TB, int H = 1>
__global__ void __launch_bounds__(WG_THREADS, 1)
    gemm_wgmma(const __grid_constant__ CUtensorMap mapA, const __grid_constant__ CUtensorMap mapB,
               const __grid_constant__ CUtensorMap mapC, Params p) {
  using Cfg = WgCfg<BN, S, H>;
  extern __shared__ __align__(1024) unsigned char wg_smem[];
  __shared__ __align__(8) uint64_t full[S], empty[S];
  const uint32_t ring = (mma::smem_addr(wg_smem) + 1023) & ~1023u;
  const int wg = threadIdx.x / 128, tid = threadIdx.x % 128;
  const int tm = (p.M + WG_BM - 1) / WG_BM, tn = (p.N + BN - 1) / BN;
  const int ntiles = tm * tn * p.splits;
  if (threadIdx.x == 0) {
    for (int s = 0; s < S; s++) mbar_init(mma::smem_addr(&full[s]), 1), mbar_init(mma::smem_addr(&empty[s]), 4 * (3 - H));
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  // Both roles walk the same tiles (blockIdx.x, + gridDim.x, ...) and count
  // slices (it) across them: stage it % S, its use number it / S.
  if (wg == 0) {  // producer
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if (tid == 0) {
      int it = 0;
      for (int t = blockIdx.x; t < ntiles; t += gridDim.x) {
        int z, m0, n0;
        tile_coords(t, tm, tn, BN, z, m0, n0);
        const int kbeg = z * p.kchunk, nk = (min(p.K, kbeg + p.kchunk) - kbeg + WG_BK - 1) / WG_BK;
        for (int kt = 0; kt < nk; kt++, it++) {
          const int s = it % S, k0 = kbeg + kt * WG_BK;
          if (it >= S) mbar_wait(mma::smem_addr(&empty[s]), (it / S - 1) & 1);
          const uint32_t bar = mma::smem_addr(&full[s]), a = ring + s * Cfg::STAGE, b = a + Cfg::A_BYTES;
          mbar_expect_tx(bar, Cfg::STAGE);
          if (!TA) {
            tma_load(a, &mapA, bar, k0, m0);  // 128 rows x 64 k
          } else {
            tma_load(a, &mapA, bar, m0, k0);  // 64 k x 64 m, twice
            tma_load(a + 8192, &mapA, bar, m0 + 64, k0);
          }
          if (TB) {
            tma_load(b, &mapB, bar, k0, n0);  // BN rows x 64 k
          } else {
#pragma unroll
            for (int j = 0; j < BN / 64; j++) tma_load(b + j * 8192, &mapB, bar, n0 + 64 * j, k0);
          }
        }
      }
    }
  } else {  // consumers: H = 1, warpgroup 1 rows 0-63 of each tile, warpgroup 2 rows 64-127; H = 2, whole
            // tiles, warpgroup 1 the block's even ones, 2 the odd ones
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
    const int warp = tid / 32, lane = tid % 32;
    const uint32_t out = ring + S * Cfg::STAGE + (wg - 1) * (Cfg::OUT / 2);  // this warpgroup's staging of C
    int it = 0, j = 0;
    for (int t = blockIdx.x; t < ntiles; t += gridDim.x, j++) {
      int z, m0, n0;
      tile_coords(t, tm, tn, BN, z, m0, n0);
      const int kbeg = z * p.kchunk, nk = (min(p.K, kbeg + p.kchunk) - kbeg + WG_BK - 1) / WG_BK;
      if (H == 2 && j % 2 != wg - 1) {  // the other warpgroup's tile: its slices go by
        it += nk;
        continue;
      }
      const int mw = m0 + (H == 1 ? (wg - 1) * 64 : 0);  // this warpgroup's first row
      float d[H][BN / 2];
#pragma unroll
      for (int h = 0; h < H; h++)
#pragma unroll
        for (int i = 0; i < BN / 2; i++) d[h][i] = 0.0f;
      for (int kt = 0; kt < nk; kt++, it++) {
        const int s = it % S;
        mbar_wait(mma::smem_addr(&full[s]), (it / S) & 1);
        const uint32_t a = ring + s * Cfg::STAGE + (H == 1 ? (wg - 1) * 8192 : 0),
                       b = ring + s * Cfg::STAGE + Cfg::A_BYTES;
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < WG_BK / 16; kk++)
#pragma unroll
          for (int h = 0; h < H; h++) {
            // K-major: the next 16 k are 32 bytes along the (swizzled) rows; MN-major: 16 rows further.
            const uint32_t ah = a + h * 8192;
            const uint64_t da = TA ? smem_desc(ah + kk * 2048, 8192, 1024) : smem_desc(ah + kk * 32, 16, 1024);
            const uint64_t db = TB ? smem_desc(b + kk * 32, 16, 1024) : smem_desc(b + kk * 2048, 8192, 1024);
            wgmma_tile<BN, TA ? 1 : 0, TB ? 0 : 1>(d[h], da, db);
          }
        wgmma_commit();
        wgmma_wait<1>();  // the previous slice's products are done: its stage may be refilled
        // One arrival per warp (4 (3 - H) expected): 256 arrivals on one shared word serialise.
        if (kt > 0 && lane == 0) mbar_arrive(mma::smem_addr(&empty[(it - 1) % S]));
      }
      wgmma_wait<0>();
      if (lane == 0) mbar_arrive(mma::smem_addr(&empty[(it - 1) % S]));  // the tile's last slice

      if (p.tmaC) {
        epilogue_tma<BN, H>(p, &mapC, out, wg, mw, n0, d);
        continue;
      }
#pragma unroll
      for (int h = 0; h < H; h++) {
        const int r = mw + 64 * h + warp * 16 + lane / 4, c = n0 + 2 * (lane % 4);
        if (!p.ws && p.N % 2 == 0 && p.pairC && (!p.res || p.pairR)) {
          epilogue_fast<BN>(p, r, c, d[h]);
        } else if (p.ws && p.N % 2 == 0) {  // a split-K slice's raw sums, float2 stores into ws[z]
          Params q = p;
          q.C = p.ws + (int64_t)z * p.M * p.N, q.ldc = p.N, q.c_bf16 = false;
          q.alpha = 1.0f, q.bias = nullptr, q.gelu = false, q.res = nullptr;
          epilogue_fast<BN>(q, r, c, d[h]);
        } else {  // odd N or leading dims: element pairs, each guarded
#pragma unroll
          for (int jj = 0; jj < BN / 8; jj++) {
            epilogue2(p, z, r, c + 8 * jj, d[h][4 * jj], d[h][4 * jj + 1]);
            epilogue2(p, z, r + 8, c + 8 * jj, d[h][4 * jj + 2], d[h][4 * jj + 3]);
          }
        }
      }
    }
    if (p.tmaC && tid == 0) bulk_wait_all<false>();  // the last tile's stores are done
  }
}

}  // namespace bf16gemm
}  // namespace cuda
}  // namespace nala
#endif  // NALA_SM90A
