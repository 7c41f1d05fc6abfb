// nn/module.cpp - registration, hierarchical names, train/eval, Sequential.
#include "nn/module.h"

#include <set>
#include <sstream>

namespace nala {

Module::Module(std::string type) : type_(std::move(type)) {}
Module::~Module() = default;

Tensor Module::forward(const Tensor& x) {
  NALA_FAIL(type_, ": this module has no forward(x) (input ", x.defined() ? x.desc() : std::string("undefined"),
            ")");
}

// ---- registration -----------------------------------------------------------

void Module::check_new_name(const std::string& name, const char* what) const {
  NALA_CHECK(!name.empty() && name.find('.') == std::string::npos, type_, ": bad ", what, " name '", name,
             "' (must be non-empty and contain no '.')");
  bool taken = false;
  for (auto& p : params_) taken |= p.first == name;
  for (auto& b : buffers_) taken |= b.first == name;
  for (auto& c : children_) taken |= c.first == name;
  NALA_CHECK(!taken, type_, ": cannot register ", what, " '", name, "': the name is already used");
}

Tensor Module::register_parameter(const std::string& name, Tensor t) {
  check_new_name(name, "parameter");
  NALA_CHECK(t.defined(), type_, ": parameter '", name, "' is undefined");
  NALA_CHECK(t.dtype() == DType::F32, type_, ": parameter '", name, "' must be f32, got ", t.desc());
  NALA_CHECK(!t.grad_fn(), type_, ": parameter '", name, "' must be a leaf (it has a grad_fn)");
  t.set_requires_grad(true);
  params_.emplace_back(name, t);
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t, bool persistent) {
  check_new_name(name, "buffer");
  NALA_CHECK(t.defined(), type_, ": buffer '", name, "' is undefined");
  buffers_.emplace_back(name, t);
  buffer_persistent_.push_back(persistent);
  return t;
}

void Module::add_child(const std::string& name, std::unique_ptr<Module> m) {
  check_new_name(name, "module");
  NALA_CHECK(m != nullptr, type_, ": child module '", name, "' is null");
  m->train(training_);
  children_.emplace_back(name, std::move(m));
}

// ---- lookup -----------------------------------------------------------------

Tensor Module::own_parameter(const std::string& name) const {
  for (auto& p : params_)
    if (p.first == name) return p.second;
  return Tensor();
}

Tensor Module::own_buffer(const std::string& name) const {
  for (auto& b : buffers_)
    if (b.first == name) return b.second;
  return Tensor();
}

Module* Module::child(const std::string& name) const {
  for (auto& c : children_)
    if (c.first == name) return c.second.get();
  return nullptr;
}

// ---- hierarchical names -----------------------------------------------------

void Module::collect(const std::string& prefix, bool params, bool buffers, bool persistent_only,
                     NamedTensors& out) const {
  if (params)
    for (auto& p : params_) out.emplace_back(prefix + p.first, p.second);
  if (buffers)
    for (size_t i = 0; i < buffers_.size(); i++)
      if (!persistent_only || buffer_persistent_[i]) out.emplace_back(prefix + buffers_[i].first, buffers_[i].second);
  for (auto& c : children_) c.second->collect(prefix + c.first + ".", params, buffers, persistent_only, out);
}

NamedTensors Module::named_parameters() const {
  NamedTensors all, out;
  collect("", true, false, false, all);
  std::set<const TensorImpl*> seen;  // a shared parameter is listed once (PyTorch remove_duplicate)
  for (auto& p : all)
    if (seen.insert(p.second.impl()).second) out.push_back(p);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect("", false, true, false, out);
  return out;
}

NamedTensors Module::state_dict() const {
  NamedTensors out;
  collect("", true, true, true, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& p : named_parameters()) out.push_back(p.second);
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_children() const {
  std::vector<std::pair<std::string, Module*>> out;
  for (auto& c : children_) out.emplace_back(c.first, c.second.get());
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out;
  // Iterative pre-order walk; children pushed in reverse so they pop in order.
  std::vector<std::pair<std::string, Module*>> stack{{"", this}};
  while (!stack.empty()) {
    auto cur = stack.back();
    stack.pop_back();
    out.push_back(cur);
    auto& ch = cur.second->children_;
    for (size_t i = ch.size(); i-- > 0;)
      stack.emplace_back(cur.first.empty() ? ch[i].first : cur.first + "." + ch[i].first, ch[i].second.get());
  }
  return out;
}

// ---- mode, gradients, counts ------------------------------------------------

void Module::train(bool on) {
  training_ = on;
  for (auto& c : children_) c.second->train(on);
}

void Module::to(Device d) {
  for (auto& [name, t] : named_parameters()) const_cast<Tensor&>(t).move_to_(d);
  for (auto& [name, t] : named_buffers()) const_cast<Tensor&>(t).move_to_(d);
}

void Module::zero_grad() {
  for (auto& p : named_parameters()) p.second.set_grad(Tensor());
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& p : named_parameters()) n += p.second.numel();
  return n;
}

// ---- loading ----------------------------------------------------------------

static void copy_converting(Tensor& dst, const Tensor& src, const std::string& key) {
  NALA_CHECK(dst.shape() == src.shape(), "load_state_dict: '", key, "' has shape ", src.desc(), ", the module expects ",
             dst.desc());
  if (dst.dtype() == src.dtype()) {
    dst.copy_(src);
    return;
  }
  bool ok = (dst.dtype() == DType::I64 && src.dtype() == DType::F32) ||
            (dst.dtype() == DType::F32 && src.dtype() == DType::I64);
  NALA_CHECK(ok, "load_state_dict: '", key, "' has dtype ", src.desc(), ", the module expects ", dst.desc());
  // Convert on the host, then copy to wherever dst lives.
  Tensor host;
  if (dst.dtype() == DType::I64) {
    std::vector<float> v = src.to_vector();
    host = Tensor::from_vector_i64(dst.shape(), std::vector<int64_t>(v.begin(), v.end()));
  } else {
    std::vector<int64_t> v = src.to_vector_i64();
    host = Tensor::from_vector(dst.shape(), std::vector<float>(v.begin(), v.end()));
  }
  dst.copy_(host);
}

std::vector<std::string> Module::load_state_dict(const std::map<std::string, Tensor>& sd, bool strict) {
  NamedTensors mine = state_dict();
  std::vector<std::string> missing, unused, mismatched;
  std::set<std::string> used;
  for (auto& kv : mine) {
    auto it = sd.find(kv.first);
    if (it == sd.end()) {
      missing.push_back(kv.first);
      continue;
    }
    used.insert(kv.first);
    // Check every shape before copying anything, so a bad file leaves the module untouched.
    if (kv.second.shape() != it->second.shape())
      mismatched.push_back(kv.first + " (file " + shape_str(it->second.shape()) + ", module " +
                           shape_str(kv.second.shape()) + ")");
  }
  for (auto& kv : sd)
    if (!used.count(kv.first)) unused.push_back(kv.first);
  if (!mismatched.empty() || (strict && (!missing.empty() || !unused.empty()))) {
    std::ostringstream os;
    auto list = [&](const char* what, const std::vector<std::string>& ks) {
      if (ks.empty()) return;
      os << " " << ks.size() << " " << what << ":";
      for (size_t i = 0; i < ks.size() && i < 20; i++) os << " " << ks[i];
      if (ks.size() > 20) os << " ...";
      os << ";";
    };
    list("shape mismatches", mismatched);
    if (strict) {
      list("missing keys", missing);
      list("unexpected keys", unused);
    }
    NALA_FAIL("load_state_dict (", type_, "):", os.str());
  }
  for (auto& kv : mine) {
    auto it = sd.find(kv.first);
    if (it != sd.end()) copy_converting(kv.second, it->second, kv.first);
  }
  return unused;
}

// ---- Sequential -------------------------------------------------------------

Sequential::Sequential() : Module("Sequential") {}

Module* Sequential::add(std::unique_ptr<Module> m) {
  Module* raw = m.get();
  add_child(std::to_string(n_), std::move(m));
  n_++;
  return raw;
}

Module* Sequential::operator[](size_t i) const {
  NALA_CHECK(i < n_, "Sequential: index ", i, " out of range (size ", n_, ")");
  return child(std::to_string(i));
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor y = x;
  for (size_t i = 0; i < n_; i++) y = child(std::to_string(i))->forward(y);
  return y;
}

}  // namespace nala
