// nn/optim.cpp - see nn/optim.h.
#include "nn/optim.h"

#include <cmath>
#include <cstring>
#include <set>

#include "autograd/dispatch.h"
#include "kernels/cpu/optim.h"
#ifdef NALA_CUDA
#include "kernels/cuda/optim.h"
#endif

namespace nala {

// Optimiser state lives on its parameter's device. It is allocated there; a
// parameter moved after the optimiser was built (Module::to) takes its state
// along at the next step.
static void follow(Tensor& state, Device d) {
  if (state.defined() && state.device() != d) state.move_to_(d);
}

// ---- Optimizer ----------------------------------------------------------------

Optimizer::Optimizer(const char* kind, NamedTensors params, double lr)
    : kind_(kind), params_(std::move(params)), lr_(lr) {
  std::set<std::string> names;
  std::set<const TensorImpl*> seen;
  for (auto& p : params_) {
    NALA_CHECK(p.second.defined(), kind_, ": parameter '", p.first, "' is undefined");
    NALA_CHECK(names.insert(p.first).second, kind_, ": parameter name '", p.first, "' appears twice");
    NALA_CHECK(seen.insert(p.second.impl()).second, kind_, ": parameter '", p.first,
               "' is the same tensor as an earlier one");
    NALA_CHECK(p.second.dtype() == DType::F32 && p.second.is_contiguous(), kind_, ": parameter '", p.first,
               "' must be a contiguous f32 tensor, got ", p.second.desc());
  }
}

Optimizer::~Optimizer() = default;

void Optimizer::zero_grad() {
  for (auto& p : params_) p.second.set_grad(Tensor());
}

Tensor Optimizer::grad_of(size_t i) const {
  const Tensor& p = params_[i].second;
  Tensor g = p.grad();
  if (!g.defined()) return g;
  NALA_CHECK(g.shape() == p.shape() && g.dtype() == DType::F32 && g.device() == p.device(), kind_,
             ": gradient ", g.desc(), " of '", params_[i].first, "' does not match the parameter ", p.desc());
  return view::contiguous(g);
}

void Optimizer::load_entry(const std::map<std::string, Tensor>& st, const std::string& key, Tensor& dst) const {
  auto it = st.find(key);
  NALA_CHECK(it != st.end(), kind_, ".load_state: missing entry '", key, "'");
  const Tensor& src = it->second;
  NALA_CHECK(src.defined() && src.shape() == dst.shape() && src.dtype() == dst.dtype(), kind_,
             ".load_state: entry '", key, "' is ", src.defined() ? src.desc() : std::string("undefined"),
             ", expected ", dst.desc());
  dst.copy_(src);
}

int64_t Optimizer::load_step(const std::map<std::string, Tensor>& st, const std::string& key) const {
  auto it = st.find(key);
  NALA_CHECK(it != st.end(), kind_, ".load_state: missing entry '", key, "'");
  const Tensor& s = it->second;
  NALA_CHECK(s.defined() && s.numel() == 1 && (s.dtype() == DType::I64 || s.dtype() == DType::F32), kind_,
             ".load_state: entry '", key, "' must be a one-element i64 or f32 step count, got ",
             s.defined() ? s.desc() : std::string("undefined"));
  int64_t v = s.dtype() == DType::I64 ? s.to_vector_i64()[0] : (int64_t)s.to_vector()[0];
  NALA_CHECK(v >= 0, kind_, ".load_state: entry '", key, "' is a negative step count ", v);
  return v;
}

void Optimizer::check_no_unknown(const std::map<std::string, Tensor>& st,
                                 const std::vector<std::string>& known) const {
  std::set<std::string> k(known.begin(), known.end());
  std::string prefix = kind_ + ".";
  for (auto& kv : st)
    NALA_CHECK(kv.first.compare(0, prefix.size(), prefix) != 0 || k.count(kv.first), kind_,
               ".load_state: unknown entry '", kv.first, "' (no such parameter in this optimiser)");
}

// ---- AdamW --------------------------------------------------------------------

AdamW::AdamW(NamedTensors params, double lr, double beta1_, double beta2_, double eps_, double weight_decay_,
             std::vector<std::string> no_decay_patterns)
    : Optimizer("adamw", std::move(params), lr), beta1(beta1_), beta2(beta2_), eps(eps_),
      weight_decay(weight_decay_) {
  NALA_CHECK(lr >= 0 && beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1 && eps >= 0 && weight_decay >= 0,
             "adamw: bad hyperparameters lr=", lr, " betas=(", beta1, ", ", beta2, ") eps=", eps,
             " weight_decay=", weight_decay);
  for (auto& p : params_) {
    const std::string& n = p.first;
    bool is_bias = n.size() >= 4 && n.compare(n.size() - 4, 4, "bias") == 0;
    bool excluded = is_bias || p.second.dim() <= 1;
    for (auto& pat : no_decay_patterns) excluded |= n.find(pat) != std::string::npos;
    decay_.push_back(!excluded);
    exp_avg_.push_back(Tensor::zeros(p.second.shape(), DType::F32, p.second.device()));
    exp_avg_sq_.push_back(Tensor::zeros(p.second.shape(), DType::F32, p.second.device()));
    steps_.push_back(0);
  }
}

void AdamW::step() {
  // CUDA parameters: the kernel of the graphs' step (step_from), fed from the
  // host, so that eager and replayed steps agree bit for bit; and a hundred
  // small tensors take a few launches instead of one each.
  bool all_cuda = !params_.empty();
  for (auto& p : params_) all_cuda = all_cuda && p.second.device() == Device::CUDA;
  if (all_cuda) {
    stepped_.assign(params_.size(), false);
    for (size_t i = 0; i < params_.size(); i++) stepped_[i] = grad_of(i).defined();
    Tensor host = Tensor::empty({scalar_count()});
    write_scalars(host.f32());
    if (!coefs_dev_.defined() || coefs_dev_.numel() != host.numel())
      coefs_dev_ = Tensor::empty(host.shape(), DType::F32, Device::CUDA);
    coefs_dev_.copy_(host);
    launch_from(coefs_dev_.f32());
    return;
  }
  for (size_t i = 0; i < params_.size(); i++) {
    Tensor g = grad_of(i);
    if (!g.defined()) continue;
    Tensor& p = params_[i].second;
    follow(exp_avg_[i], p.device());
    follow(exp_avg_sq_[i], p.device());
    steps_[i]++;
    AdamWCoefs c = adamw_coefs(lr_, beta1, beta2, eps, decay_[i] ? weight_decay : 0.0, steps_[i]);
    NALA_DISPATCH(p.device(), adamw_step, p.f32(), g.f32(), exp_avg_[i].f32(), exp_avg_sq_[i].f32(), p.numel(), c);
  }
}

// One AdamWCoefs (8 floats) per parameter.
constexpr int64_t kAdamWScalars = sizeof(AdamWCoefs) / sizeof(float);
static_assert(sizeof(AdamWCoefs) == 8 * sizeof(float), "AdamWCoefs is the block of 8 floats per parameter");

int64_t AdamW::scalar_count() const { return kAdamWScalars * (int64_t)params_.size(); }

void AdamW::step_from(const float* dev) {
  stepped_.assign(params_.size(), false);
  for (size_t i = 0; i < params_.size(); i++) {
    if (!grad_of(i).defined()) continue;
    NALA_CHECK(params_[i].second.device() == Device::CUDA, "adamw: a step with device scalars needs CUDA parameters, '",
               params_[i].first, "' is ", params_[i].second.desc());
    stepped_[i] = true;
  }
  launch_from(dev);
}

void AdamW::launch_from(const float* dev) {
#ifdef NALA_CUDA
  std::vector<cuda::AdamWDevTensor> list;
  std::vector<Tensor> grads;  // alive until the launches are queued
  for (size_t i = 0; i < params_.size(); i++) {
    if (!stepped_[i]) continue;
    Tensor& p = params_[i].second;
    follow(exp_avg_[i], p.device());
    follow(exp_avg_sq_[i], p.device());
    grads.push_back(grad_of(i));
    list.push_back({p.f32(), grads.back().f32(), exp_avg_[i].f32(), exp_avg_sq_[i].f32(), p.numel(),
                    reinterpret_cast<const AdamWCoefs*>(dev + kAdamWScalars * (int64_t)i)});
  }
  cuda::adamw_step_dev_multi(list.data(), (int64_t)list.size());
#else
  (void)dev;
  NALA_FAIL("adamw: a step with device scalars needs a build with CUDA (rebuild with CUDA=1)");
#endif
}

void AdamW::write_scalars(float* host) {
  NALA_CHECK(stepped_.size() == params_.size(), "adamw: write_scalars before step_from");
  for (size_t i = 0; i < params_.size(); i++) {
    AdamWCoefs c{};
    if (stepped_[i]) {
      steps_[i]++;
      c = adamw_coefs(lr_, beta1, beta2, eps, decay_[i] ? weight_decay : 0.0, steps_[i]);
    }
    std::memcpy(host + kAdamWScalars * (int64_t)i, &c, sizeof c);
  }
}

std::vector<std::string> AdamW::no_decay_names() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < params_.size(); i++)
    if (!decay_[i]) out.push_back(params_[i].first);
  return out;
}

NamedTensors AdamW::state() const {
  NamedTensors out;
  for (size_t i = 0; i < params_.size(); i++) {
    const std::string& n = params_[i].first;
    out.emplace_back("adamw.exp_avg." + n, exp_avg_[i]);
    out.emplace_back("adamw.exp_avg_sq." + n, exp_avg_sq_[i]);
    out.emplace_back("adamw.step." + n, Tensor::from_vector_i64({}, {steps_[i]}));
  }
  return out;
}

void AdamW::load_state(const std::map<std::string, Tensor>& st) {
  std::vector<std::string> known;
  for (auto& kv : state()) known.push_back(kv.first);
  check_no_unknown(st, known);
  // Check everything before changing anything.
  std::vector<int64_t> steps;
  for (size_t i = 0; i < params_.size(); i++) {
    const std::string& n = params_[i].first;
    steps.push_back(load_step(st, "adamw.step." + n));
    for (const char* k : {"adamw.exp_avg.", "adamw.exp_avg_sq."}) {
      auto it = st.find(k + n);
      NALA_CHECK(it != st.end(), "adamw.load_state: missing entry '", k + n, "'");
      NALA_CHECK(it->second.defined() && it->second.shape() == params_[i].second.shape() &&
                     it->second.dtype() == DType::F32,
                 "adamw.load_state: entry '", k + n, "' is ",
                 it->second.defined() ? it->second.desc() : std::string("undefined"), ", expected ",
                 exp_avg_[i].desc());
    }
  }
  for (size_t i = 0; i < params_.size(); i++) {
    const std::string& n = params_[i].first;
    load_entry(st, "adamw.exp_avg." + n, exp_avg_[i]);
    load_entry(st, "adamw.exp_avg_sq." + n, exp_avg_sq_[i]);
    steps_[i] = steps[i];
  }
}

// ---- SGD ----------------------------------------------------------------------

SGD::SGD(NamedTensors params, double lr, double momentum_, double weight_decay_, bool nesterov_)
    : Optimizer("sgd", std::move(params), lr), momentum(momentum_), weight_decay(weight_decay_),
      nesterov(nesterov_) {
  NALA_CHECK(lr >= 0 && momentum >= 0 && weight_decay >= 0, "sgd: bad hyperparameters lr=", lr,
             " momentum=", momentum, " weight_decay=", weight_decay);
  NALA_CHECK(!nesterov || momentum > 0, "sgd: nesterov needs momentum > 0");
  for (auto& p : params_) {
    buf_.push_back(momentum != 0 ? Tensor::zeros(p.second.shape(), DType::F32, p.second.device()) : Tensor());
    steps_.push_back(0);
  }
}

void SGD::step() {
  for (size_t i = 0; i < params_.size(); i++) {
    Tensor g = grad_of(i);
    if (!g.defined()) continue;
    Tensor& p = params_[i].second;
    follow(buf_[i], p.device());
    bool first = steps_[i] == 0;
    steps_[i]++;
    NALA_DISPATCH(p.device(), sgd_step, p.f32(), g.f32(), buf_[i].defined() ? buf_[i].f32() : nullptr, p.numel(),
                  (float)lr_, (float)momentum, 0.0f, (float)weight_decay, nesterov, first);
  }
}

// {lr, first} per parameter.
int64_t SGD::scalar_count() const { return 2 * (int64_t)params_.size(); }

void SGD::step_from(const float* dev) {
  stepped_.assign(params_.size(), false);
  for (size_t i = 0; i < params_.size(); i++) {
    Tensor g = grad_of(i);
    if (!g.defined()) continue;
    Tensor& p = params_[i].second;
    NALA_CHECK(p.device() == Device::CUDA, "sgd: a step with device scalars needs CUDA parameters, '",
               params_[i].first, "' is ", p.desc());
    follow(buf_[i], p.device());
    stepped_[i] = true;
#ifdef NALA_CUDA
    cuda::sgd_step_dev(p.f32(), g.f32(), buf_[i].defined() ? buf_[i].f32() : nullptr, p.numel(), dev + 2 * i,
                       (float)momentum, 0.0f, (float)weight_decay, nesterov);
#endif
  }
}

void SGD::write_scalars(float* host) {
  NALA_CHECK(stepped_.size() == params_.size(), "sgd: write_scalars before step_from");
  for (size_t i = 0; i < params_.size(); i++) {
    host[2 * i] = (float)lr_, host[2 * i + 1] = 0.0f;
    if (!stepped_[i]) continue;
    host[2 * i + 1] = steps_[i] == 0 ? 1.0f : 0.0f;
    steps_[i]++;
  }
}

NamedTensors SGD::state() const {
  NamedTensors out;
  for (size_t i = 0; i < params_.size(); i++) {
    const std::string& n = params_[i].first;
    if (buf_[i].defined()) out.emplace_back("sgd.momentum_buffer." + n, buf_[i]);
    out.emplace_back("sgd.step." + n, Tensor::from_vector_i64({}, {steps_[i]}));
  }
  return out;
}

void SGD::load_state(const std::map<std::string, Tensor>& st) {
  std::vector<std::string> known;
  for (auto& kv : state()) known.push_back(kv.first);
  check_no_unknown(st, known);
  std::vector<int64_t> steps;
  for (size_t i = 0; i < params_.size(); i++) {
    const std::string& n = params_[i].first;
    steps.push_back(load_step(st, "sgd.step." + n));
    if (!buf_[i].defined()) continue;
    auto it = st.find("sgd.momentum_buffer." + n);
    NALA_CHECK(it != st.end(), "sgd.load_state: missing entry 'sgd.momentum_buffer.", n, "'");
    NALA_CHECK(it->second.defined() && it->second.shape() == buf_[i].shape() && it->second.dtype() == DType::F32,
               "sgd.load_state: entry 'sgd.momentum_buffer.", n, "' is ",
               it->second.defined() ? it->second.desc() : std::string("undefined"), ", expected ", buf_[i].desc());
  }
  for (size_t i = 0; i < params_.size(); i++) {
    if (buf_[i].defined()) load_entry(st, "sgd.momentum_buffer." + params_[i].first, buf_[i]);
    steps_[i] = steps[i];
  }
}

// ---- gradient clipping --------------------------------------------------------

// CPU gradients are summed one by one in order. CUDA gradients write their
// chunk sums side by side into one device array, which is then added in a
// fixed order and read back once: one synchronisation per call, not one per
// tensor.
double grad_norm(const std::vector<Tensor>& params) {
  double ss = 0;
  std::vector<Tensor> dev_grads;
  int64_t chunks = 0;
  for (const Tensor& p : params) {
    if (!p.defined() || !p.grad().defined()) continue;
    Tensor g = p.grad();
    NALA_CHECK(g.dtype() == DType::F32, "clip_grad_norm: gradient ", g.desc(), " is not f32");
    g = view::contiguous(g);
    if (g.device() == Device::CPU) {
      ss += cpu::grad_sum_squares(g.f32(), g.numel());
    } else {
      dev_grads.push_back(g);
      chunks += (g.numel() + cpu::kSumSquaresChunk - 1) / cpu::kSumSquaresChunk;
    }
  }
  if (chunks > 0) {
#ifdef NALA_CUDA
    Tensor part = Tensor::empty({chunks}, DType::I64, Device::CUDA);  // doubles in 8-byte slots
    double* q = reinterpret_cast<double*>(part.raw());
    int64_t off = 0;
    for (const Tensor& g : dev_grads) {
      cuda::grad_sum_squares_chunks(q + off, g.f32(), g.numel());
      off += (g.numel() + cpu::kSumSquaresChunk - 1) / cpu::kSumSquaresChunk;
    }
    ss += cuda::sum_f64(q, chunks);
#else
    NALA_FAIL("grad_sum_squares: this build has no CUDA kernels (rebuild with CUDA=1)");
#endif
  }
  return std::sqrt(ss);
}

float clip_grad_norm(const std::vector<Tensor>& params, float max_norm) {
  NALA_CHECK(max_norm > 0, "clip_grad_norm: max_norm must be positive, got ", max_norm);
  double total = grad_norm(params);
  if (!std::isfinite(total)) return (float)total;
  float coef = (float)((double)max_norm / (total + 1e-6));
  if (coef < 1.0f) {
    for (const Tensor& p : params) {
      if (!p.defined() || !p.grad().defined()) continue;
      Tensor g = p.grad();
      if (!g.is_contiguous()) {  // scale a contiguous copy and store it as the grad
        g = g.clone();
        Tensor handle = p;  // shares the parameter's impl
        handle.set_grad(g);
      }
      NALA_DISPATCH(g.device(), grad_scale, g.f32(), g.numel(), coef);
    }
  }
  return (float)total;
}

}  // namespace nala
