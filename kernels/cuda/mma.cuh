// kernels/cuda/mma.cuh - warp-level tensor-core building blocks (sm_80 and
// later): mma.sync in bf16 (m16n8k16) and tf32 (m16n8k8) with float32
// accumulators, the hi/lo splits that make them about as accurate as float32,
// ldmatrix and cp.async. Used by kernels/cuda/attention_nala.cu,
// attention_softmax_tc.cu and the bf16 GEMM (gemm_bf16_mma.cuh).
//
// Fragments (PTX ISA, "matrix fragments for mma.m16n8k16 / m16n8k8"); lane =
// 4 g + t with g = lane / 4 in 0..7 and t = lane % 4 in 0..3:
//   bf16 m16n8k16, A (16 x 16) in 4 registers of two values each:
//     a0 = A[g][2t, 2t+1]    a1 = A[g+8][2t, 2t+1]
//     a2 = A[g][2t+8, 2t+9]  a3 = A[g+8][2t+8, 2t+9]
//   B (16 x 8): b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g]
//   tf32 m16n8k8, A (16 x 8): a0 = A[g][t], a1 = A[g+8][t], a2 = A[g][t+4], a3 = A[g+8][t+4]
//   B (8 x 8): b0 = B[t][g], b1 = B[t+4][g]
//   C (16 x 8), both: c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][2t, 2t+1]
// In a bf16 pair the lower-indexed value sits in the low 16 bits.
//
// Precision: one bf16 product keeps 8 bits of each operand, one tf32 product
// 11. Splitting each operand x into hi = round(x) and lo = x - hi, rounded, and
// summing a_hi b_hi + a_hi b_lo + a_lo b_hi ("3-pass") leaves about 1e-5
// (bf16) or 1e-6 (tf32) of each product's size as error, at three times the
// tensor work. The smaller terms go first.
#pragma once
#include <cuda_bf16.h>
#include <cstdint>

namespace nala {
namespace cuda {
namespace mma {

__device__ __forceinline__ uint32_t bits(__nv_bfloat162 h) { return *reinterpret_cast<uint32_t*>(&h); }

// (x0, x1) -> bf16 pairs hi and lo with x ~ hi + lo.
__device__ __forceinline__ void split_bf16(float x0, float x1, uint32_t& hi, uint32_t& lo) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(x0, x1);
  const float2 hf = __bfloat1622float2(h);
  hi = bits(h);
  lo = bits(__floats2bfloat162_rn(x0 - hf.x, x1 - hf.y));
}
// (x0, x1) -> one bf16 pair, rounded to nearest (the hi part alone: one-pass products).
__device__ __forceinline__ uint32_t pack_bf16(float x0, float x1) { return bits(__floats2bfloat162_rn(x0, x1)); }
__device__ __forceinline__ void split_bf16(float x, __nv_bfloat16& hi, __nv_bfloat16& lo) {
  hi = __float2bfloat16_rn(x);
  lo = __float2bfloat16_rn(x - __bfloat162float(hi));
}

// x ~ hi + lo, both tf32 (10 mantissa bits): hi = x rounded (integer add and mask, which
// also carries into the exponent), lo = x - hi (exact in float) truncated to tf32. The pair
// holds x to about 2^-21 of |x|. Cheaper than two cvt.rna.tf32 (several instructions each).
__device__ __forceinline__ void split_tf32(float x, uint32_t& hi, uint32_t& lo) {
  hi = (__float_as_uint(x) + 0x1000u) & 0xffffe000u;
  lo = __float_as_uint(x - __uint_as_float(hi)) & 0xffffe000u;
}

__device__ __forceinline__ void bf16_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void tf32_1688(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// c += a b in 3-pass form: ah/al and (bh0, bh1)/(bl0, bl1) are the hi/lo splits.
__device__ __forceinline__ void bf16_3pass(float (&c)[4], const uint32_t (&ah)[4], const uint32_t (&al)[4],
                                           uint32_t bh0, uint32_t bh1, uint32_t bl0, uint32_t bl1) {
  bf16_16816(c, al, bh0, bh1);
  bf16_16816(c, ah, bl0, bl1);
  bf16_16816(c, ah, bh0, bh1);
}
__device__ __forceinline__ void tf32_3pass(float (&c)[4], const uint32_t (&ah)[4], const uint32_t (&al)[4],
                                           uint32_t bh0, uint32_t bh1, uint32_t bl0, uint32_t bl1) {
  tf32_1688(c, al, bh0, bh1);
  tf32_1688(c, ah, bl0, bl1);
  tf32_1688(c, ah, bh0, bh1);
}

// The same products when one operand's lo part is zero (an operand that is
// exact in the narrow type, such as bf16 inputs split for tf32 or bf16): the
// pass with the zero part is left out, the other two in the same order, so
// the sum is the 3-pass one's bits. _a: a exact (al = 0); _b: b exact.
__device__ __forceinline__ void bf16_2pass_a(float (&c)[4], const uint32_t (&ah)[4], uint32_t bh0, uint32_t bh1,
                                             uint32_t bl0, uint32_t bl1) {
  bf16_16816(c, ah, bl0, bl1);
  bf16_16816(c, ah, bh0, bh1);
}
__device__ __forceinline__ void tf32_2pass_a(float (&c)[4], const uint32_t (&ah)[4], uint32_t bh0, uint32_t bh1,
                                             uint32_t bl0, uint32_t bl1) {
  tf32_1688(c, ah, bl0, bl1);
  tf32_1688(c, ah, bh0, bh1);
}
__device__ __forceinline__ void tf32_2pass_b(float (&c)[4], const uint32_t (&ah)[4], const uint32_t (&al)[4],
                                             uint32_t bh0, uint32_t bh1) {
  tf32_1688(c, al, bh0, bh1);
  tf32_1688(c, ah, bh0, bh1);
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

// Four 8 x 8 bf16 matrices; lanes 8i..8i+7 give the row addresses of matrix i
// (16 bytes each). Without .trans lane l gets row l/4, columns 2(l%4), +1 of
// each; with .trans it gets rows 2(l%4), +1 of column l/4. Read as 8 x 4 blocks
// of 32-bit values (no .trans), lane 4g + t gets element (g, t): the tf32
// fragment pattern.
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}
__device__ __forceinline__ void ldsm_x2_trans(uint32_t (&r)[4], const void* p) {  // fills r[0], r[1]
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(p))
               : "memory");
}

// The same with a shared-space byte address (smem_addr of the row, plus offsets).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t a) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t a) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory");
}

__device__ __forceinline__ void ldsm_x2(uint32_t (&r)[4], uint32_t a) {  // fills r[0], r[1]
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(a)
               : "memory");
}
__device__ __forceinline__ void ldsm_x2_trans(uint32_t (&r)[4], uint32_t a) {  // fills r[0], r[1]
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(a)
               : "memory");
}

// 16 bytes global -> shared without passing through registers; valid = false
// writes 16 zero bytes and reads nothing (src must still be a mapped address).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Wait until at most n of this thread's committed groups are still in flight.
template <int n>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(n) : "memory");
}

// acc = 0 for an array of m16n8 accumulator fragments.
template <int NT>
__device__ __forceinline__ void zero_acc(float (&acc)[NT][4]) {
#pragma unroll
  for (int nt = 0; nt < NT; nt++)
#pragma unroll
    for (int c = 0; c < 4; c++) acc[nt][c] = 0.0f;
}

// One 16-deep k step of a warp's 16 x D product: acc[0 .. D/8) += A x B, where A
// is the warp's 16 x 16 fragment as bf16 hi + lo halves (ah, al) and B is rows
// [k0, k0 + 16) of a shared-memory tile kept as a bf16 hi/lo pair (bh, bl: the
// lane's ldmatrix addresses; row stride ls elements), read with
// ldmatrix.trans in D/16 panels of 16 columns; three products a panel
// (bf16_3pass), so the result keeps about float32 accuracy.
// ONE (one-pass products): A and B as their bf16 hi parts alone, one product a
// panel (al and bl are not read): about bf16's precision, a third of the work.
template <int D, bool ONE = false>
__device__ __forceinline__ void mma_k16_panels(float (&acc)[D / 8][4], const uint32_t (&ah)[4],
                                               const uint32_t (&al)[4], uint32_t bh, uint32_t bl, int k0, int ls) {
#pragma unroll
  for (int np = 0; np < D / 16; np++) {
    uint32_t h[4], l[4];
    const uint32_t at = (uint32_t)(k0 * ls + 16 * np) * 2;
    ldsm_x4_trans(h, bh + at);
    if (ONE) {
      bf16_16816(acc[2 * np], ah, h[0], h[1]);
      bf16_16816(acc[2 * np + 1], ah, h[2], h[3]);
      continue;
    }
    ldsm_x4_trans(l, bl + at);
    bf16_3pass(acc[2 * np], ah, al, h[0], h[1], l[0], l[1]);
    bf16_3pass(acc[2 * np + 1], ah, al, h[2], h[3], l[2], l[3]);
  }
}

}  // namespace mma
}  // namespace cuda
}  // namespace nala
