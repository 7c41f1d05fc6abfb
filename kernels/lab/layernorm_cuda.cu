// kernels/lab/layernorm_cuda.cu - the LayerNorm lab, CUDA, forward and
// backward, on the token layout: R rows (tokens) of C channels, contiguous.
// Walkthrough: docs/kernels.md; harness: kernels/lab/lab_cuda.cuh.
//
//   forward:  mean_r = (1/C) sum_c x,  var_r = (1/C) sum_c (x - mean_r)^2,
//             rstd_r = 1 / sqrt(var_r + eps),  xhat = (x - mean_r) rstd_r,
//             y = xhat w + b                           (saves mean, rstd)
//   backward: g = dy w,  dx = rstd (g - mean_c(g) - xhat mean_c(g xhat)),
//             dw = sum_r dy xhat,  db = sum_r dy       (all overwritten)
//
//   build/release/lab/layernorm_cuda [VERSION] [--size R] [--channels C] [--check] [--csv]
//     default: R = 203 rows of C = 100; --check without --size runs C = 100,
//     32, 64, 384 (the register-cached kernels' group shapes) and 98 (not a
//     multiple of 4: the production kernels fall back to a warp per row).
//     --size R: R rows of C = 128 unless --channels. docs/kernels.md times
//     NaLaFormer-xt's activations at batch 128: R = 401408 (56 x 56 tokens)
//     of C = 32, R = 100352 of 64, R = 25088 of 128, R = 6272 of 384.
//
// Versions:
//   1  forward, naive          one thread per row, three passes
//   2  forward, warp per row   32 lanes per row, shuffle sums (layernorm_rows.cuh: forward_warp)
//   3  forward, production     cuda::layernorm_forward: the row in registers as float4s,
//                              read once (layernorm_rows.cuh: forward_vec)
//   4  backward, naive         one thread per row for dx, one per channel for dw and db
//   5  backward, warp per row  dx as version 2 (backward_warp); dw, db by per-block
//                              partials, then a pass adding them in order
//   6  backward, production    cuda::layernorm_backward: one pass over x and dy for dx
//                              and the dw, db partials, kept in registers (backward_vec)
// References: cpu::layernorm_forward_naive / layernorm_backward_naive
// (double accumulation); the backward versions all start from the
// reference's mean and rstd.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/norm.h"
#include "kernels/cuda/layernorm_rows.cuh"
#include "kernels/cuda/norm.h"
#include "kernels/lab/lab_cuda.cuh"

using namespace nala;

namespace {

constexpr float kEps = 1e-6f;  // norm1 / norm2 of a block (docs/SPEC.md §1)
constexpr int kBlock = 256;

// ---- 1. forward, naive: the CPU loop, one thread per row. Neighbouring
// threads read addresses C floats apart, so each warp-wide load touches 32
// different cache lines and uses 4 bytes of each (uncoalesced); the three
// passes re-read the row, hoping it is still in L1. With few rows (R = 6272)
// there are also too few threads to fill the GPU.
__global__ void v1_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b,
                           int64_t R, int64_t C) {
  const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= R) return;
  const float* xr = x + r * C;
  float s = 0.0f, v = 0.0f;
  for (int64_t c = 0; c < C; c++) s += xr[c];
  const float m = s / C;
  for (int64_t c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
  const float rs = 1.0f / sqrtf(v / C + kEps);
  for (int64_t c = 0; c < C; c++) y[r * C + c] = (xr[c] - m) * rs * w[c] + b[c];
  mean[r] = m, rstd[r] = rs;
}

// ---- 2. forward, warp per row (layernorm_rows.cuh, forward_warp: the
// production kernel for rows the register-cached one does not take): the 32
// lanes of a warp take c = lane, lane + 32, ..., so each load instruction
// reads 128 contiguous bytes (coalesced), and a 5-step butterfly of
// __shfl_xor_sync adds the lanes' partial sums, leaving the total in every
// lane. Each pass still reloads the row (from L1 after the first), and for
// C = 32 every lane loads one float per pass.
void v2_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b, int64_t R,
                int64_t C) {
  using namespace cuda::layernorm_rows;
  forward_warp<<<lab::blocks_for(R, kWarps), dim3(32, kWarps)>>>(y, mean, rstd, x, w, b, R, C, kEps);
}

// ---- 3. forward, production (cuda::layernorm_forward, which takes
// layernorm_rows.cuh's forward_vec here): the row is loaded once, as float4s
// (one 16-byte load per lane moves 512 contiguous bytes per warp), and kept
// in registers for the mean, the variance and the output, which is stored
// as float4s too: x read once, y written once, the memory-bound minimum.
// Short rows get a group of 8 or 16 lanes (C = 32: 8 lanes x 1 float4), so
// no lane idles; the group size and the float4s per lane are template
// parameters, so the loops unroll and the row stays in registers.
void v3_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b, int64_t R,
                int64_t C) {
  cuda::layernorm_forward(y, mean, rstd, x, w, b, R, C, 1, kEps);
}

// ---- 4. backward, naive: dx as version 1 (a thread per row, three passes
// over x and dy), and dw, db by one thread per channel walking all R rows:
// coalesced (neighbouring threads take neighbouring channels) but only C
// threads in all, each a long chain of dependent adds.
__global__ void v4_backward_dx(float* dx, const float* dy, const float* x, const float* mean, const float* rstd,
                               const float* w, int64_t R, int64_t C) {
  const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= R) return;
  const float m = mean[r], rs = rstd[r];
  float m1 = 0.0f, m2 = 0.0f;
  for (int64_t c = 0; c < C; c++) {
    const float g = dy[r * C + c] * w[c];
    m1 += g, m2 += g * (x[r * C + c] - m) * rs;
  }
  m1 /= C, m2 /= C;
  for (int64_t c = 0; c < C; c++)
    dx[r * C + c] = rs * (dy[r * C + c] * w[c] - m1 - (x[r * C + c] - m) * rs * m2);
}
__global__ void v4_backward_dwdb(float* dw, float* db, const float* dy, const float* x, const float* mean,
                                 const float* rstd, int64_t R, int64_t C) {
  const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float sw = 0.0f, sb = 0.0f;
  for (int64_t r = 0; r < R; r++) {
    sw += dy[r * C + c] * (x[r * C + c] - mean[r]) * rstd[r];
    sb += dy[r * C + c];
  }
  dw[c] = sw, db[c] = sb;
}

// ---- 5. backward, warp per row: dx by layernorm_rows.cuh's backward_warp
// (version 2's lanes and shuffles); dw, db by a 2-D block of 32 channels x 8
// row lanes, each block summing a fixed range of rows into a partial
// (nblk x 2 x C), then one thread per channel adding the nblk partials in
// order: thousands of threads instead of C, and the same result every run.
// x and dy are read twice: once for dx, once for the partials.
constexpr int kPartials = 1024;
__global__ void v5_partials(float* part, const float* dy, const float* x, const float* mean, const float* rstd,
                            int64_t R, int64_t C) {
  __shared__ float sw[8][32], sb[8][32];
  const int tx = threadIdx.x, ty = threadIdx.y, blk = blockIdx.y, nblk = gridDim.y;
  const int64_t c = (int64_t)blockIdx.x * 32 + tx, r0 = blk * R / nblk, r1 = (blk + 1) * R / nblk;
  float a = 0.0f, d = 0.0f;
  if (c < C)
    for (int64_t r = r0 + ty; r < r1; r += 8) {
      a += dy[r * C + c] * (x[r * C + c] - mean[r]) * rstd[r];
      d += dy[r * C + c];
    }
  sw[ty][tx] = a, sb[ty][tx] = d;
  __syncthreads();
  if (ty == 0 && c < C) {
    a = sw[0][tx], d = sb[0][tx];
    for (int j = 1; j < 8; j++) a += sw[j][tx], d += sb[j][tx];
    part[(int64_t)blk * 2 * C + c] = a;
    part[((int64_t)blk * 2 + 1) * C + c] = d;
  }
}
__global__ void v5_finish(float* dw, float* db, const float* part, int64_t C, int nblk) {
  const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double a = 0, d = 0;
  for (int k = 0; k < nblk; k++) a += part[(int64_t)k * 2 * C + c], d += part[((int64_t)k * 2 + 1) * C + c];
  dw[c] = (float)a, db[c] = (float)d;
}

// ---- 6. backward, production (cuda::layernorm_backward, which takes
// layernorm_rows.cuh's backward_vec here): each group of lanes loads its
// row of x and dy once, as float4s, computes dx from registers, and adds
// dy xhat and dy into per-lane registers for dw and db: a lane owns the same
// channels in every row it visits, so these sums need no communication
// until the end, where the block's groups add theirs in order in shared
// memory and write one partial per block. x and dy are read once for
// everything; then a small kernel adds the partials in order (as version 5).

}  // namespace

int main(int argc, char** argv) {
  const char* usage =
      "usage: layernorm_cuda [VERSION] [--size R] [--channels C] [--check] [--csv] [--min-time S]\n"
      "  LayerNorm over C channels of R rows: default R = 203, C = 100 (--check: C = 100, 32, 64, 384, 98);\n"
      "  with --size, C = 128 unless --channels\n";
  // --channels is this program's own; the rest is the harness's command line.
  int64_t channels = 0;
  std::vector<char*> args;
  for (int i = 0; i < argc; i++) {
    if (!std::strcmp(argv[i], "--channels") && i + 1 < argc) {
      char* end = nullptr;
      channels = std::strtoll(argv[++i], &end, 10);
      if (*end || channels <= 0) {
        std::fprintf(stderr, "layernorm_cuda: --channels needs a positive integer, got '%s'\n%s", argv[i], usage);
        return 2;
      }
    } else {
      args.push_back(argv[i]);
    }
  }
  lab::Options opt = lab::parse((int)args.size(), args.data(), usage);
  const int64_t R = opt.size ? opt.size : 203;
  std::vector<int64_t> Cs = {channels ? channels : opt.size ? 128 : 100};
  if (opt.check_only && !opt.size && !channels) Cs = {100, 32, 64, 384, 98};

  int status = 0;
  for (const int64_t C : Cs) {
    const int64_t n = R * C;
    std::vector<float> xh(n), dyh(n), wh(C), bh(C);
    lab::fill_normal(xh, 1, 1.0f);
    for (int64_t r = 0; r < R; r++)  // rows with a mean far from 0: the variance must be two-pass
      for (int64_t c = 0; c < C; c++) xh[r * C + c] += 0.01f * (float)(r % 97);
    lab::fill_normal(dyh, 2, 1.0f);
    lab::fill_uniform(wh, 3, 0.5f, 1.5f);
    lab::fill_uniform(bh, 4, -0.5f, 0.5f);
    std::vector<float> y_ref(n), mean_ref(R), rstd_ref(R), dx_ref(n), dw_ref(C), db_ref(C);
    cpu::layernorm_forward_naive(y_ref.data(), mean_ref.data(), rstd_ref.data(), xh.data(), wh.data(), bh.data(), R,
                                 C, 1, kEps);
    cpu::layernorm_backward_naive(dx_ref.data(), dw_ref.data(), db_ref.data(), dyh.data(), xh.data(),
                                  mean_ref.data(), rstd_ref.data(), wh.data(), R, C, 1);

    lab::DeviceArray<float> x(xh), dy(dyh), w(wh), b(bh), y(n), mean(R), rstd(R), dx(n), dw(C), db(C);
    lab::DeviceArray<float> mean_in(mean_ref), rstd_in(rstd_ref), part((int64_t)kPartials * 2 * C);
    lab::Task fwd, bwd;
    fwd.name = "forward";
    fwd.flops = 8.0 * n;             // about: sum, squared deviation, normalise and affine
    fwd.bytes = 8.0 * n + 8.0 * R;  // x read, y written; mean and rstd
    fwd.clear = [&] { y.poison(), mean.poison(), rstd.poison(); };
    fwd.check = [&] {
      const auto yg = y.download(), mg = mean.download(), rg = rstd.download();
      return lab::both(lab::compare("y", yg.data(), y_ref.data(), n, 1e-5, 1e-4),
                       lab::both(lab::compare("mean", mg.data(), mean_ref.data(), R, 1e-5, 1e-5),
                                 lab::compare("rstd", rg.data(), rstd_ref.data(), R, 1e-5, 1e-4)));
    };
    bwd.name = "backward";
    bwd.flops = 16.0 * n;             // about: xhat, g, four sums, dx
    bwd.bytes = 12.0 * n + 8.0 * R;  // x, dy read, dx written; mean, rstd
    bwd.clear = [&] { dx.poison(), dw.poison(), db.poison(); };
    const double atol_sum = 1e-4 + 2e-6 * R;  // dw and db sum R terms of size ~1
    bwd.check = [&] {
      const auto dxg = dx.download(), dwg = dw.download(), dbg = db.download();
      return lab::both(lab::compare("dx", dxg.data(), dx_ref.data(), n, 1e-5, 1e-4),
                       lab::both(lab::compare("dw", dwg.data(), dw_ref.data(), C, atol_sum, 1e-4),
                                 lab::compare("db", dbg.data(), db_ref.data(), C, atol_sum, 1e-4)));
    };

    const float *px = x, *pdy = dy, *pw = w, *pb = b, *pm = mean_in, *pr = rstd_in;
    float *py = y, *pmean = mean, *prstd = rstd, *pdx = dx, *pdw = dw, *pdb = db, *ppart = part;
    const int nblk = (int)std::max<int64_t>(1, std::min<int64_t>(R / 8, kPartials));
    std::vector<lab::GpuVersion> v = {
        {"forward naive: thread per row", 0, lab::Unit::fp32, 0,
         [=] { v1_forward<<<lab::blocks_for(R, kBlock), kBlock>>>(py, pmean, prstd, px, pw, pb, R, C); }},
        {"forward: warp per row, shuffles", 0, lab::Unit::fp32, 0,
         [=] { v2_forward(py, pmean, prstd, px, pw, pb, R, C); }},
        {"forward: float4 rows in registers (prod)", 0, lab::Unit::fp32, 0,
         [=] { v3_forward(py, pmean, prstd, px, pw, pb, R, C); }},
        {"backward naive: thread per row/channel", 1, lab::Unit::fp32, 0,
         [=] {
           v4_backward_dx<<<lab::blocks_for(R, kBlock), kBlock>>>(pdx, pdy, px, pm, pr, pw, R, C);
           v4_backward_dwdb<<<lab::blocks_for(C, kBlock), kBlock>>>(pdw, pdb, pdy, px, pm, pr, R, C);
         }},
        {"backward: warp per row + partials", 1, lab::Unit::fp32, 0,
         [=] {
           cuda::layernorm_rows::backward_dx_warp(pdx, pdy, px, pm, pr, pw, R, C);
           v5_partials<<<dim3(lab::blocks_for(C, 32), nblk), dim3(32, 8)>>>(ppart, pdy, px, pm, pr, R, C);
           v5_finish<<<lab::blocks_for(C, kBlock), kBlock>>>(pdw, pdb, ppart, C, nblk);
         }},
        {"backward: fused, registers (prod)", 1, lab::Unit::fp32, 0,
         [=] { cuda::layernorm_backward(pdx, pdw, pdb, pdy, px, pm, pr, pw, R, C, 1); }},
    };
    char desc[128];
    std::snprintf(desc, sizeof desc, "LayerNorm over C = %lld channels of R = %lld rows (x: %.1f MiB)", (long long)C,
                  (long long)R, 4.0 * n / (1 << 20));
    status = std::max(status, lab::run_gpu("layernorm", desc, {fwd, bwd}, v, opt));
  }
  return status;
}
