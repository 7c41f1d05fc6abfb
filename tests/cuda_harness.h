// tests/cuda_harness.h - the one CPU-versus-CUDA harness of the
// tests/test_cuda_*.cpp files: the skip without a GPU, device buffers, one op
// run on both devices with its output and every input gradient compared
// (atol + rtol * |ref|, as REQUIRE_CLOSE in helpers.h, or normwise), the sentinel for
// outputs a kernel must write or must leave alone, bit equality, and named
// tensors (parameters, optimiser state, buffers) compared after the same
// steps. The CPU is the reference everywhere.
#pragma once
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/closeness.h"
#include "nn/module.h"
#include "tensor/device.h"
#include "tests/helpers.h"
#ifdef NALA_CUDA
#include <cuda_bf16.h>
#endif

// Every CUDA test starts with this: without a GPU it passes with a warning
// (the tests are built everywhere and run where there is one).
#define SKIP_WITHOUT_CUDA()                  \
  do {                                       \
    if (!::nala::device::cuda_available()) { \
      WARN("no CUDA device");                \
      return;                                \
    }                                        \
  } while (0)

namespace nala {
namespace test {

// ---- precision -------------------------------------------------------------

// The GPU's matrix products in bf16 (device::set_gemm_bf16) or float32 for a
// scope; float32 again when it ends, also when a REQUIRE throws.
struct Bf16Products {
  explicit Bf16Products(bool on = true) { device::set_gemm_bf16(on); }
  ~Bf16Products() { device::set_gemm_bf16(false); }
  Bf16Products(const Bf16Products&) = delete;
  Bf16Products& operator=(const Bf16Products&) = delete;
};

#ifdef NALA_CUDA
// x rounded to bf16 (to nearest even) and back: what the tensor-core kernels
// multiply, for references on the same operands.
inline float round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }
inline std::vector<float> round_bf16(std::vector<float> v) {
  for (float& x : v) x = round_bf16(x);
  return v;
}
inline Tensor round_bf16(const Tensor& t) { return Tensor::from_vector(t.shape(), round_bf16(t.to_vector())); }
#endif

// ---- device buffers ---------------------------------------------------------

// A copy of t on the GPU (a new leaf that requires grad when asked), and back.
inline Tensor on_cuda(const Tensor& t, bool grad = false) {
  Tensor d = t.to(Device::CUDA);
  if (grad) d.set_requires_grad(true);
  return d;
}
inline Tensor host(const Tensor& t) { return t.to(Device::CPU); }

inline Tensor cuda_empty(const Shape& s) { return Tensor::empty(s, DType::F32, Device::CUDA); }
// A host vector on the GPU as a flat f32 tensor.
inline Tensor cuda_vec(const std::vector<float>& v) { return on_cuda(Tensor::from_vector({(int64_t)v.size()}, v)); }

// Output buffers that start as kSentinel: an output the kernel must
// overwrite cannot pass by chance, and one it was told not to write (nullptr
// for a gradient not wanted) must still hold kSentinel afterwards.
constexpr float kSentinel = 7.0f;
inline Tensor cuda_sentinel(const Shape& s) { return Tensor::full(s, kSentinel, Device::CUDA); }
inline bool holds_sentinel(const Tensor& t) { return host(t).to_vector() == std::vector<float>(t.numel(), kSentinel); }

// The same bits (unlike ==, NaN equals NaN and -0 differs from 0).
inline bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// ---- one op on both devices ---------------------------------------------------

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

struct Tol {
  double atol, rtol;
};

// A normwise bound (kernels/closeness.h), for results whose single elements
// may err by more than themselves (products of one bf16 tensor-core pass,
// where terms cancel): ||got - ref|| <= norm ||ref|| and max |got - ref| <=
// max_rel max |ref|; a reference of zeros must be matched exactly. Every
// element must be finite. kNalaOnePassBound is NaLa's one-pass products' bound.
inline void require_normwise(const Tensor& got_t, const Tensor& ref_t, NormBound bound) {
  REQUIRE(got_t.shape() == ref_t.shape());
  const std::vector<float> got = host(got_t).to_vector(), ref = host(ref_t).to_vector();
  const Normwise w = normwise_error(got.data(), ref.data(), ref.size());
  if (w.first_bad < ref.size()) {
    INFO("element " << w.first_bad << ": got " << got[w.first_bad] << ", reference " << ref[w.first_bad]);
    FAIL("a difference that is not finite");
  }
  INFO("||got - ref|| / ||ref|| = " << w.rel_norm << " (bound " << bound.norm << "), max |got - ref| / max |ref| = "
                                    << w.rel_max << " (bound " << bound.max_rel << ")");
  REQUIRE(w.rel_norm <= bound.norm);
  REQUIRE(w.rel_max <= bound.max_rel);
}

// Where the upstream gradient of a comparison comes from: randn of the
// output's shape from a fresh Rng(seed), or from the caller's rng (which
// advances), or a given tensor. Implicit on purpose: a call passes 7, rng or g.
class Upstream {
 public:
  Upstream(uint64_t seed) : seed_(seed) {}
  Upstream(Rng& rng) : rng_(&rng) {}
  Upstream(const Tensor& g) : given_(g) {}
  Tensor make(const Shape& s) {
    if (given_.defined()) {
      REQUIRE(given_.shape() == s);
      return given_;
    }
    if (rng_) return randn(s, *rng_);
    Rng r(seed_);
    return randn(s, r);
  }

 private:
  uint64_t seed_ = 0;
  Rng* rng_ = nullptr;
  Tensor given_;
};

// What one device gave, copied to the host: the output and the gradient of
// each input (undefined for the inputs that did not require grad).
struct DeviceRun {
  Tensor out;
  std::vector<Tensor> grads;
};
struct DeviceRuns {
  DeviceRun cpu, cuda;
};

namespace detail {

struct Live {
  std::vector<Tensor> in;
  std::vector<bool> want;
  Tensor out;
};

inline std::string descs(const std::vector<Tensor>& xs) {
  std::ostringstream os;
  for (size_t i = 0; i < xs.size(); i++) os << (i ? ", " : "") << (xs[i].defined() ? xs[i].desc() : "none");
  return os.str();
}

// want[i]: input i requires grad. Empty: every defined input does.
inline std::vector<bool> wanted(const std::vector<Tensor>& inputs, std::vector<bool> want) {
  if (want.empty())
    for (const Tensor& t : inputs) want.push_back(t.defined());
  REQUIRE(want.size() == inputs.size());
  return want;
}

// Fresh copies of the inputs on dev (undefined ones stay undefined; the wanted
// ones require grad), f on them; the output must be on dev.
inline Live forward_on(Device dev, const OpFn& f, const std::vector<Tensor>& inputs, const std::vector<bool>& want) {
  Live l;
  l.want = want;
  for (size_t i = 0; i < inputs.size(); i++) {
    const Tensor& t = inputs[i];
    Tensor c = !t.defined() ? Tensor() : dev == Device::CPU ? host(t).clone() : t.to(dev);
    if (c.defined() && want[i]) c.set_requires_grad(true);
    l.in.push_back(c);
  }
  l.out = f(l.in);
  REQUIRE(l.out.device() == dev);
  return l;
}

// Backward from the upstream gradient g (on the host); every wanted gradient
// must be defined and on the output's device. Everything comes back to the host.
inline DeviceRun backward_on(Live& l, const Tensor& g) {
  const Device dev = l.out.device();
  DeviceRun r;
  r.out = host(l.out.detach());
  r.grads.resize(l.in.size());
  bool any = false;
  for (bool w : l.want) any = any || w;
  if (!any) return r;
  backward(l.out, g.to(dev));
  for (size_t i = 0; i < l.in.size(); i++) {
    if (!l.want[i]) continue;
    INFO("gradient of input " << i << " " << l.in[i].desc());
    REQUIRE(l.in[i].grad().defined());
    REQUIRE(l.in[i].grad().device() == dev);
    r.grads[i] = host(l.in[i].grad());
  }
  return r;
}

}  // namespace detail

// f on fresh copies of the inputs on dev, then backward from `up`: the output
// and the wanted gradients (want as in compare_devices), on the host.
inline DeviceRun run_on(Device dev, const OpFn& f, const std::vector<Tensor>& inputs, Upstream up,
                        const std::vector<bool>& want = {}) {
  detail::Live l = detail::forward_on(dev, f, inputs, detail::wanted(inputs, want));
  return detail::backward_on(l, up.make(l.out.shape()));
}

namespace detail {
// The comparison of compare_devices: close(got on CUDA, reference on the CPU)
// for the output (grad < 0) and the gradient of input `grad`.
using Closeness = std::function<void(const Tensor& got, const Tensor& ref, int grad)>;
inline DeviceRuns compare_with(const OpFn& f, const std::vector<Tensor>& inputs, Upstream up,
                               const std::vector<bool>& want, const Closeness& close) {
  INFO("inputs " << detail::descs(inputs));
  const std::vector<bool> w = detail::wanted(inputs, want);
  detail::Live c = detail::forward_on(Device::CPU, f, inputs, w);
  detail::Live d = detail::forward_on(Device::CUDA, f, inputs, w);
  INFO("output " << c.out.desc());
  {
    INFO("forward");
    close(host(d.out), c.out, -1);
  }
  const Tensor g = up.make(c.out.shape());
  DeviceRuns r{detail::backward_on(c, g), detail::backward_on(d, g)};
  for (size_t i = 0; i < inputs.size(); i++) {
    if (!w[i]) continue;
    INFO("gradient of input " << i << " " << inputs[i].desc());
    close(r.cuda.grads[i], r.cpu.grads[i], (int)i);
  }
  return r;
}
}  // namespace detail

// f on the CPU and on CUDA from the same inputs, then backward from the same
// upstream gradient on both: the CUDA output must be within `tol` of the CPU
// one, and the gradient of each input that requires grad within grad_tol[i]
// (`tol` for all when grad_tol is empty). want[i] says whether input i
// requires grad (empty: every defined input). The upstream gradient is drawn
// after both forwards. Returns both runs for further checks.
inline DeviceRuns compare_devices(const OpFn& f, const std::vector<Tensor>& inputs, Upstream up, Tol tol,
                                  const std::vector<bool>& want = {}, const std::vector<Tol>& grad_tol = {}) {
  REQUIRE((grad_tol.empty() || grad_tol.size() == inputs.size()));
  return detail::compare_with(f, inputs, up, want, [&](const Tensor& got, const Tensor& ref, int i) {
    const Tol t = i < 0 || grad_tol.empty() ? tol : grad_tol[(size_t)i];
    REQUIRE_CLOSE(got, ref, t.atol, t.rtol);
  });
}
// The same with a normwise bound on the output and every gradient.
inline DeviceRuns compare_devices_normwise(const OpFn& f, const std::vector<Tensor>& inputs, Upstream up,
                                           NormBound bound, const std::vector<bool>& want = {}) {
  return detail::compare_with(f, inputs, up, want,
                              [&](const Tensor& got, const Tensor& ref, int) { require_normwise(got, ref, bound); });
}

// ---- named tensors after the same steps on both devices -------------------------

// Same names in the same order; i64 entries equal; f32 entries on the GPU and
// within tol of the CPU ones.
inline void require_same_named(const NamedTensors& cuda, const NamedTensors& cpu, Tol tol) {
  REQUIRE(cuda.size() == cpu.size());
  for (size_t i = 0; i < cpu.size(); i++) {
    INFO(cpu[i].first << " " << cpu[i].second.desc());
    REQUIRE(cuda[i].first == cpu[i].first);
    if (cpu[i].second.dtype() == DType::I64) {
      REQUIRE(cuda[i].second.to_vector_i64() == cpu[i].second.to_vector_i64());
    } else {
      REQUIRE(cuda[i].second.device() == Device::CUDA);
      REQUIRE_CLOSE(host(cuda[i].second), cpu[i].second, tol.atol, tol.rtol);
    }
  }
}

}  // namespace test
}  // namespace nala
