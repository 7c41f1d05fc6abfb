// kernels/lab/lab_cuda.cu - the CUDA kernel lab's shared harness (see
// lab_cuda.cuh): the GPU's peaks, CUDA-event timing, checks and the table.
// Compiled into every CUDA lab program, never into libnala.a.
#include "kernels/lab/lab_cuda.cuh"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace nala {
namespace lab {

void cuda_fail(const char* call, const char* file, int line, const char* err) {
  std::fprintf(stderr, "%s:%d: %s failed: %s\n", file, line, call, err);
  std::exit(1);
}

const char* unit_name(Unit u) {
  switch (u) {
    case Unit::tf32:
      return "tf32";
    case Unit::bf16:
      return "bf16";
    default:
      return "fp32";
  }
}

namespace {

// FP32 lanes (FMA per clock) per SM, by compute capability.
int fp32_lanes(int cc) {
  switch (cc) {
    case 60: case 70: case 72: case 75: case 80:
      return 64;
    default:
      return 128;  // sm_61, 86, 87, 89, 90, 100, 120
  }
}

// Dense bf16 tensor-core FLOP per clock per SM (A100: 312 TFLOPS at 1.41 GHz
// on 108 SMs; H100: 4 tensor cores x 512 FMA; B200 doubles that); 0: unknown.
double bf16_flop_per_clock(int cc) {
  if (cc == 80) return 2048;
  if (cc == 90) return 4096;
  if (cc == 100) return 8192;
  return 0;
}

// A device-to-device copy of 256 MiB, counted as read + write; best of 5.
double copy_bandwidth() {
  const size_t bytes = size_t(256) << 20;
  void *a = nullptr, *b = nullptr;
  LAB_CUDA(cudaMalloc(&a, bytes));
  LAB_CUDA(cudaMalloc(&b, bytes));
  LAB_CUDA(cudaMemset(a, 1, bytes));
  LAB_CUDA(cudaMemset(b, 0, bytes));
  cudaEvent_t e0, e1;
  LAB_CUDA(cudaEventCreate(&e0));
  LAB_CUDA(cudaEventCreate(&e1));
  float best = 1e30f;
  for (int rep = 0; rep < 6; rep++) {
    LAB_CUDA(cudaEventRecord(e0));
    LAB_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
    LAB_CUDA(cudaEventRecord(e1));
    LAB_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    LAB_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    if (rep > 0) best = std::min(best, ms);  // the first one warms up
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * (double)bytes / (best * 1e-3) / 1e9;
}

std::string csv_safe(std::string s) {
  std::replace(s.begin(), s.end(), ',', ';');
  return s;
}

struct Row {
  size_t index;
  const GpuVersion* v;
  const Task* t;
  double seconds;    // 0: not timed (--check)
  Check check;
  std::string note;  // skipped: why
};

// Launches the version once and waits, turning a launch or run error into a
// failed check (a sticky error, e.g. an illegal address, ends the program:
// the context is lost).
Check run_once(const GpuVersion& v) {
  v.run();
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  Check c;
  if (e != cudaSuccess) {
    c.ok = false;
    c.max_err = INFINITY;
    c.what = std::string("CUDA error: ") + cudaGetErrorString(e);
    if (cudaGetLastError() != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess) {
      std::fprintf(stderr, "%s: %s; the CUDA context is lost, stopping\n", v.name.c_str(), c.what.c_str());
      std::exit(1);
    }
  }
  return c;
}

// Median time per call, in seconds (see lab_cuda.cuh, Timing).
double time_version(const GpuVersion& v, double min_time) {
  cudaEvent_t e0, e1;
  LAB_CUDA(cudaEventCreate(&e0));
  LAB_CUDA(cudaEventCreate(&e1));
  auto batch = [&](int k) {
    LAB_CUDA(cudaEventRecord(e0));
    for (int i = 0; i < k; i++) v.run();
    LAB_CUDA(cudaEventRecord(e1));
    LAB_CUDA(cudaEventSynchronize(e1));
    LAB_CUDA(cudaGetLastError());
    float ms = 0;
    LAB_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    return ms * 1e-3 / k;
  };
  batch(1);  // warm-up
  const double one = std::max(batch(1), 1e-7);
  const int k = (int)std::min(10000.0, std::max(1.0, std::ceil(0.5e-3 / one)));
  const int samples = (int)std::min(1000.0, std::max(5.0, min_time / (one * k)));
  std::vector<double> t;
  for (int s = 0; s < samples; s++) t.push_back(batch(k));
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

}  // namespace

GpuPeak gpu_peak(bool measure_copy) {
  int dev = 0;
  LAB_CUDA(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  LAB_CUDA(cudaGetDeviceProperties(&prop, dev));
  GpuPeak p;
  p.name = prop.name;
  p.cc = prop.major * 10 + prop.minor;
  p.sms = prop.multiProcessorCount;
  int clock_khz = 0, mem_khz = 0, bus_bits = 0;
  LAB_CUDA(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, dev));
  LAB_CUDA(cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, dev));
  LAB_CUDA(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev));
  p.clock_ghz = clock_khz * 1e-6;
  p.fp32 = p.sms * fp32_lanes(p.cc) * 2.0 * p.clock_ghz;
  p.bf16 = p.sms * bf16_flop_per_clock(p.cc) * p.clock_ghz;
  p.tf32 = p.bf16 / 2;
  p.mem_clock_ghz = mem_khz * 1e-6;
  p.bus_bits = bus_bits;
  p.gbs_spec = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0) / 1e9;
  if (measure_copy || p.gbs_spec <= 0) p.gbs_copy = copy_bandwidth();
  return p;
}

int run_gpu(const std::string& op, const std::string& problem, const std::vector<Task>& tasks,
            const std::vector<GpuVersion>& versions, const Options& opt) {
  if (opt.version > (int)versions.size()) {
    std::fprintf(stderr, "%s: no version %d (versions 1..%zu)\n", op.c_str(), opt.version, versions.size());
    return 2;
  }
  const GpuPeak pk = gpu_peak(!opt.check_only);
  std::printf("%s (CUDA): %s\n", op.c_str(), problem.c_str());
  std::printf("GPU: %s, sm_%d, %d SMs, max clock %.3f GHz\n", pk.name.c_str(), pk.cc, pk.sms, pk.clock_ghz);
  if (!opt.check_only) {
    std::printf("peaks: FP32 FMA %.0f GFLOP/s (SMs x %d lanes x 2 x clock)", pk.fp32, fp32_lanes(pk.cc));
    if (pk.bf16 > 0)
      std::printf("; bf16 tensor %.0f, tf32 tensor %.0f GFLOP/s (dense, at that clock)", pk.bf16, pk.tf32);
    else
      std::printf("; tensor peaks n/a for sm_%d", pk.cc);
    if (pk.gbs_spec > 0)
      std::printf("\n       memory %.0f GB/s (2 x memory clock %.3f GHz x %d-bit bus / 8; %%bw below), "
                  "measured device-to-device copy %.0f GB/s (%.0f%% of it)\n",
                  pk.gbs_spec, pk.mem_clock_ghz, pk.bus_bits, pk.gbs_copy, 100 * pk.gbs_copy / pk.gbs_spec);
    else
      std::printf("\n       memory %.0f GB/s (measured device-to-device copy; the device reports no memory clock)\n",
                  pk.gbs_copy);
  }

  std::vector<Row> rows;
  int status = 0;
  for (size_t i = 0; i < versions.size(); i++) {
    if (opt.version && opt.version != (int)i + 1) continue;
    const GpuVersion& v = versions[i];
    const Task& t = tasks[v.task];
    Row row{i + 1, &v, &t, 0.0, Check(), ""};
    if (pk.cc < v.min_cc) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "skipped: needs sm_%d, this GPU is sm_%d", v.min_cc, pk.cc);
      row.note = buf;
      rows.push_back(row);
      continue;
    }
    t.clear();
    row.check = run_once(v);
    if (row.check.ok) row.check = t.check();
    if (row.check.ok && !opt.check_only) {
      row.seconds = time_version(v, opt.min_time);
      t.clear();  // and again after the timing: the last call must be right too
      Check again = run_once(v);
      row.check = both(row.check, again.ok ? t.check() : again);
    }
    if (!row.check.ok) status = 1;
    rows.push_back(row);
  }

  std::printf("\n%-3s %-40s %-8s %-4s %10s %9s %6s %8s %6s %9s  %s\n", "#", "version", "task", "unit", "ms",
              "GFLOP/s", "%peak", "GB/s", "%bw", "max err", "check");
  for (const Row& r : rows) {
    const char *name = r.v->name.c_str(), *task = r.t->name.c_str(), *unit = unit_name(r.v->unit);
    if (!r.note.empty()) {
      std::printf("%-3zu %-40s %-8s %-4s %s\n", r.index, name, task, unit, r.note.c_str());
    } else if (!r.check.ok) {
      std::printf("%-3zu %-40s %-8s %-4s MISMATCH: %s\n", r.index, name, task, unit, r.check.what.c_str());
    } else if (opt.check_only) {
      std::printf("%-3zu %-40s %-8s %-4s %10s %9s %6s %8s %6s %9.2e  ok\n", r.index, name, task, unit, "-", "-", "-",
                  "-", "-", r.check.max_err);
    } else {
      const double peak = pk.gflops(r.v->unit);
      const double gf = r.t->flops / r.seconds / 1e9, gb = r.t->bytes / r.seconds / 1e9;
      char pct[16];
      if (peak > 0) std::snprintf(pct, sizeof pct, "%5.1f%%", 100 * gf / peak);
      else std::snprintf(pct, sizeof pct, "%6s", "n/a");
      std::printf("%-3zu %-40s %-8s %-4s %10.4f %9.1f %s %8.1f %5.1f%% %9.2e  ok\n", r.index, name, task, unit,
                  r.seconds * 1e3, gf, pct, gb, 100 * gb / pk.gbs(), r.check.max_err);
      if (opt.csv)
        std::printf("csv,%s,%lld,%zu,%s,%s,gpu-%s,%.6e,%.4f,%.4f,%.4f,%.2f,%.2f,%.3e\n", op.c_str(),
                    (long long)opt.size, r.index, csv_safe(r.v->name).c_str(), task, unit, r.seconds, gf, gb,
                    r.t->bytes > 0 ? r.t->flops / r.t->bytes : 0.0, peak, pk.gbs(), r.check.max_err);
    }
  }
  if (status) std::printf("\n%s: a version does not match its reference (above)\n", op.c_str());
  return status;
}

}  // namespace lab
}  // namespace nala
