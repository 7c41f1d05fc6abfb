// kernels/lab/lab.cpp - the kernel lab's shared harness (see lab.h): peaks,
// timing, checks and the table. Compiled into every lab program, never into
// libnala.a.
#include "kernels/lab/lab.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>

#ifdef NALA_LAB_X86
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include "tensor/rng.h"

namespace nala {
namespace lab {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// ---- the FMA peak: independent chains of a = a * m + c, enough of them to
// cover the FMA latency on every FMA pipe (4-5 cycles x 2 pipes on recent
// x86 cores), so the loop runs at the FMA units' throughput.

#ifdef NALA_LAB_X86
__attribute__((target("avx512f"))) float fma_loop_avx512(int64_t iters) {
  __m512 acc[16];
  const __m512 m = _mm512_set1_ps(0.99999f), c = _mm512_set1_ps(1e-5f);
#pragma GCC unroll 16
  for (int r = 0; r < 16; r++) acc[r] = _mm512_set1_ps(1.0f + 0.01f * r);
  for (int64_t i = 0; i < iters; i++) {
#pragma GCC unroll 16
    for (int r = 0; r < 16; r++) acc[r] = _mm512_fmadd_ps(acc[r], m, c);
  }
  float out[16], s = 0;
  for (int r = 1; r < 16; r++) acc[0] = _mm512_add_ps(acc[0], acc[r]);
  _mm512_storeu_ps(out, acc[0]);
  for (float x : out) s += x;
  return s;
}
constexpr double kFlopsAvx512 = 16 * 16 * 2;  // per iteration

// 12 chains: AVX2 has 16 ymm registers, and m and c take two.
__attribute__((target("avx2,fma"))) float fma_loop_avx2(int64_t iters) {
  __m256 acc[12];
  const __m256 m = _mm256_set1_ps(0.99999f), c = _mm256_set1_ps(1e-5f);
#pragma GCC unroll 12
  for (int r = 0; r < 12; r++) acc[r] = _mm256_set1_ps(1.0f + 0.01f * r);
  for (int64_t i = 0; i < iters; i++) {
#pragma GCC unroll 12
    for (int r = 0; r < 12; r++) acc[r] = _mm256_fmadd_ps(acc[r], m, c);
  }
  float out[8], s = 0;
  for (int r = 1; r < 12; r++) acc[0] = _mm256_add_ps(acc[0], acc[r]);
  _mm256_storeu_ps(out, acc[0]);
  for (float x : out) s += x;
  return s;
}
constexpr double kFlopsAvx2 = 12 * 8 * 2;
#endif

// Whatever the compiler makes of 64 independent float chains.
float fma_loop_plain(int64_t iters) {
  float acc[64];
  for (int r = 0; r < 64; r++) acc[r] = 1.0f + 0.01f * r;
  for (int64_t i = 0; i < iters; i++)
#pragma omp simd
    for (int r = 0; r < 64; r++) acc[r] = acc[r] * 0.99999f + 1e-5f;
  float s = 0;
  for (float x : acc) s += x;
  return s;
}
constexpr double kFlopsPlain = 64 * 2;

double fma_peak(int nt, Isa* used) {
  float (*loop)(int64_t) = fma_loop_plain;
  double per_iter = kFlopsPlain;
  int64_t iters = 1 << 19;
  *used = Isa::any;
#ifdef NALA_LAB_X86
  if (cpu_has(Isa::avx512)) {
    loop = fma_loop_avx512, per_iter = kFlopsAvx512, iters = 1 << 21, *used = Isa::avx512;
  } else if (cpu_has(Isa::avx2)) {
    loop = fma_loop_avx2, per_iter = kFlopsAvx2, iters = 1 << 21, *used = Isa::avx2;
  }
#endif
  double best = 1e30;
  volatile float sink = 0;
  for (int rep = 0; rep < 5; rep++) {  // the first one also wakes the threads up
    double t0 = now_s();
#pragma omp parallel num_threads(nt)
    {
      float s = loop(iters);
#pragma omp critical
      sink = sink + s;
    }
    best = std::min(best, now_s() - t0);
  }
  return per_iter * (double)iters * nt / best / 1e9;
}

// A triad, a = b + s c, counted as the 16 bytes per element the memory
// really moves: b and c read, a read (a store to a line not in cache first
// fetches it: write-allocate) and written back. STREAM counts 12, which
// understates the bandwidth by a quarter: with non-temporal stores (no
// write-allocate, 12 bytes moved) the same triad runs 16/12 times faster.
double triad_bandwidth(int nt) {
  const int64_t n = int64_t(1) << 24;  // 64 MiB per array: well beyond the caches
  std::unique_ptr<float[]> a(new float[n]), b(new float[n]), c(new float[n]);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t i = 0; i < n; i++) a[i] = 0.0f, b[i] = 1.0f, c[i] = 2.0f;  // first touch by the thread that uses it
  double best = 1e30;
  for (int rep = 0; rep < 4; rep++) {
    float *pa = a.get(), *pb = b.get(), *pc = c.get();
    double t0 = now_s();
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t i = 0; i < n; i++) pa[i] = pb[i] + 0.5f * pc[i];
    best = std::min(best, now_s() - t0);
  }
  return 16.0 * (double)n / best / 1e9;
}

std::string cpu_description() {
  std::ifstream f("/proc/cpuinfo");
  std::string line, model = "unknown CPU", family, mod;
  auto value = [](const std::string& l) {
    size_t p = l.find(':');
    return p == std::string::npos ? std::string() : l.substr(l.find_first_not_of(" \t", p + 1));
  };
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) model = value(line);
    else if (line.rfind("cpu family", 0) == 0) family = value(line);
    else if (line.rfind("model", 0) == 0 && mod.empty()) mod = value(line);
    if (line.empty() && model != "unknown CPU") break;  // the first processor is enough
  }
  if (!family.empty()) model += " (family " + family + ", model " + mod + ")";
  return model;
}

std::string csv_safe(std::string s) {
  std::replace(s.begin(), s.end(), ',', ';');
  return s;
}

}  // namespace

// ---- the CPU ------------------------------------------------------------------

bool cpu_has(Isa isa) {
#ifdef NALA_LAB_X86
  __builtin_cpu_init();
  switch (isa) {
    case Isa::any:
      return true;
    case Isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::avx512:
      return __builtin_cpu_supports("avx512f");
  }
  return false;
#else
  return isa == Isa::any;
#endif
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx2:
      return "AVX2+FMA";
    case Isa::avx512:
      return "AVX-512F";
    default:
      return "compiler-vectorised";
  }
}

int threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

Peak measure_peak(int nt) {
  Peak p;
  p.threads = nt;
  p.gflops = fma_peak(nt, &p.isa);
  p.gbs = triad_bandwidth(nt);
  return p;
}

// ---- checks -------------------------------------------------------------------

Check compare(const char* name, const float* got, const float* ref, int64_t n, double atol, double rtol) {
  Check c;
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < n; i++) {
    const double err = std::fabs((double)got[i] - (double)ref[i]);
    const bool ok = err <= atol + rtol * std::fabs((double)ref[i]);  // false for NaN
    if (!ok && bad++ == 0) first = i;
    if (!std::isnan(err)) c.max_err = std::max(c.max_err, err);
    else c.max_err = INFINITY;
  }
  if (bad) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s: %lld of %lld elements differ; first at %lld: %.7g vs reference %.7g (atol %g, rtol %g)",
                  name, (long long)bad, (long long)n, (long long)first, got[first], ref[first], atol, rtol);
    c.ok = false;
    c.what = buf;
  }
  return c;
}

Check compare_normwise(const char* name, const float* got, const float* ref, int64_t n, NormBound bound) {
  Check c;
  const Normwise w = normwise_error(got, ref, (size_t)n);
  c.max_err = w.max_err;
  if (!(bound_ratio(w, bound) <= 1.0)) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s: ||error|| / ||reference|| = %.3g (at most %g), max |error| / max |reference| = %.3g (at most %g)",
                  name, w.rel_norm, bound.norm, w.rel_max, bound.max_rel);
    c.ok = false;
    c.what = buf;
  }
  return c;
}

Check both(const Check& a, const Check& b) {
  Check c;
  c.ok = a.ok && b.ok;
  c.max_err = std::max(a.max_err, b.max_err);
  c.what = !a.ok ? a.what : b.what;
  return c;
}

void fill_uniform(std::vector<float>& x, uint64_t seed, float lo, float hi) {
  Rng rng(seed);
  for (float& e : x) e = rng.uniform(lo, hi);
}

void fill_normal(std::vector<float>& x, uint64_t seed, float std) {
  Rng rng(seed);
  for (float& e : x) e = std * rng.normal();
}

// ---- the command line -----------------------------------------------------------

Options parse(int argc, char** argv, const char* usage) {
  Options o;
  auto fail = [&](const char* why, const char* arg) {
    std::fprintf(stderr, "%s: %s '%s'\n%s", argv[0], why, arg, usage);
    std::exit(2);
  };
  for (int i = 1; i < argc; i++) {
    const char* a = argv[i];
    char* end = nullptr;
    if (!std::strcmp(a, "--check")) {
      o.check_only = true;
    } else if (!std::strcmp(a, "--csv")) {
      o.csv = true;
    } else if (!std::strcmp(a, "--threaded")) {
      o.threaded_only = true;
    } else if (!std::strcmp(a, "--size") || !std::strcmp(a, "--min-time")) {
      if (i + 1 >= argc) fail("missing value after", a);
      const char* v = argv[++i];
      if (!std::strcmp(a, "--size")) {
        o.size = std::strtoll(v, &end, 10);
        if (*end || o.size <= 0) fail("--size needs a positive integer, got", v);
      } else {
        o.min_time = std::strtod(v, &end);
        if (*end || !(o.min_time >= 0)) fail("--min-time needs seconds >= 0, got", v);
      }
    } else if (!std::strcmp(a, "-h") || !std::strcmp(a, "--help")) {
      std::printf("%s", usage);
      std::exit(0);
    } else if (a[0] != '-' && o.version == 0) {
      o.version = (int)std::strtol(a, &end, 10);
      if (*end || o.version <= 0) fail("the version must be a number from 1, got", a);
    } else {
      fail("unknown argument", a);
    }
  }
  return o;
}

// ---- the run --------------------------------------------------------------------

namespace {
struct Row {
  size_t index;
  const Version* v;
  const Task* t;
  int threads;
  double seconds;  // 0: not timed (--check)
  Check check;
};
}  // namespace

int run(const std::string& op, const std::string& problem, const std::vector<Task>& tasks,
        const std::vector<Version>& versions, const Options& opt) {
  if (opt.version > (int)versions.size()) {
    std::fprintf(stderr, "%s: no version %d (versions 1..%zu)\n", op.c_str(), opt.version, versions.size());
    return 2;
  }
  const int nt = threads();
  std::printf("%s: %s\n", op.c_str(), problem.c_str());
  std::printf("CPU: %s; AVX-512F %s, AVX2+FMA %s; OMP_NUM_THREADS %d\n", cpu_description().c_str(),
              cpu_has(Isa::avx512) ? "yes" : "no", cpu_has(Isa::avx2) ? "yes" : "no", nt);
  // The peaks are measured before and after the versions and the better kept:
  // on a machine shared with other work a single measurement can come out low.
  Peak p1, pt;
  auto peaks = [&] {
    Peak a = measure_peak(1), b = nt > 1 ? measure_peak(nt) : a;
    p1.gflops = std::max(p1.gflops, a.gflops), p1.gbs = std::max(p1.gbs, a.gbs), p1.isa = a.isa;
    pt.gflops = std::max(pt.gflops, b.gflops), pt.gbs = std::max(pt.gbs, b.gbs), pt.isa = b.isa;
  };
  if (!opt.check_only) peaks();

  std::vector<Row> rows;
  int status = 0;
  for (size_t i = 0; i < versions.size(); i++) {
    if (opt.version && opt.version != (int)i + 1) continue;
    if (opt.threaded_only && !versions[i].threaded) continue;
    const Version& v = versions[i];
    const Task& t = tasks[v.task];
    Row row{i + 1, &v, &t, v.threaded ? nt : 1, 0.0, Check()};
    if (!cpu_has(v.needs)) {
      row.check.what = std::string("skipped: this CPU has no ") + isa_name(v.needs);
      rows.push_back(row);
      continue;
    }
    t.clear();
    v.run();
    row.check = t.check();
    if (row.check.ok && !opt.check_only) {
      double best = 1e30, spent = 0;
      int reps = 0;
      while ((spent < opt.min_time || reps < 1) && reps < 10000) {
        double t0 = now_s();
        v.run();
        double dt = now_s() - t0;
        best = std::min(best, dt), spent += dt, reps++;
      }
      row.seconds = best;
      t.clear();  // and again after the timing: the last call must be right too
      v.run();
      row.check = both(row.check, t.check());
    }
    if (!row.check.ok) status = 1;
    rows.push_back(row);
  }

  if (!opt.check_only) {
    peaks();
    if (nt > 1)
      std::printf("measured peaks (best of before and after): FP32 FMA (%s) %.1f GFLOP/s on 1 thread, %.1f on %d; "
                  "memory %.1f GB/s on 1 thread, %.1f on %d\n",
                  isa_name(p1.isa), p1.gflops, pt.gflops, nt, p1.gbs, pt.gbs, nt);
    else
      std::printf("measured peaks (best of before and after): FP32 FMA (%s) %.1f GFLOP/s, memory %.1f GB/s\n",
                  isa_name(p1.isa), p1.gflops, p1.gbs);
  }
  std::printf("\n%-3s %-40s %-8s %3s %10s %9s %6s %8s %6s %9s  %s\n", "#", "version", "task", "thr", "ms", "GFLOP/s",
              "%peak", "GB/s", "%bw", "max err", "check");
  for (const Row& r : rows) {
    const char *name = r.v->name.c_str(), *task = r.t->name.c_str();
    if (r.check.ok && !r.check.what.empty()) {  // skipped
      std::printf("%-3zu %-40s %-8s %s\n", r.index, name, task, r.check.what.c_str());
    } else if (!r.check.ok) {
      std::printf("%-3zu %-40s %-8s %3d MISMATCH: %s\n", r.index, name, task, r.threads, r.check.what.c_str());
    } else if (opt.check_only) {
      std::printf("%-3zu %-40s %-8s %3d %10s %9s %6s %8s %6s %9.2e  ok\n", r.index, name, task, r.threads, "-", "-",
                  "-", "-", "-", r.check.max_err);
    } else {
      const Peak& pk = r.v->threaded ? pt : p1;
      const double gf = r.t->flops / r.seconds / 1e9, gb = r.t->bytes / r.seconds / 1e9;
      std::printf("%-3zu %-40s %-8s %3d %10.3f %9.2f %5.1f%% %8.2f %5.1f%% %9.2e  ok\n", r.index, name, task,
                  r.threads, r.seconds * 1e3, gf, 100 * gf / pk.gflops, gb, 100 * gb / pk.gbs, r.check.max_err);
      if (opt.csv)
        std::printf("csv,%s,%lld,%zu,%s,%s,%d,%.6e,%.4f,%.4f,%.4f,%.2f,%.2f,%.3e\n", op.c_str(),
                    (long long)opt.size, r.index, csv_safe(r.v->name).c_str(), task, r.threads, r.seconds, gf, gb,
                    r.t->flops / r.t->bytes, pk.gflops, pk.gbs, r.check.max_err);
    }
  }
  if (status) std::printf("\n%s: a version does not match its reference (above)\n", op.c_str());
  return status;
}

}  // namespace lab
}  // namespace nala
