// nn/ema.cpp - see nn/ema.h.
#include "nn/ema.h"

#include <algorithm>
#include <cmath>

#include "autograd/dispatch.h"
#include "kernels/cpu/elementwise.h"
#ifdef NALA_CUDA
#include "kernels/cuda/elementwise.h"
#endif

namespace nala {

WeightEma::WeightEma(const NamedTensors& tracked, double decay) : decay_(decay) {
  NALA_CHECK(decay > 0 && decay < 1 && std::isfinite(decay), "weight average: decay ", decay,
             " must lie in (0, 1) (--ema)");
  for (const auto& [name, t] : tracked) {
    if (!t.defined() || t.dtype() != DType::F32) continue;
    NALA_CHECK(t.is_contiguous(), "weight average: '", name, "' is not contiguous");
    live_.push_back({name, t});
    avg_.push_back(t.clone());
  }
}

void WeightEma::follow() {
  for (size_t i = 0; i < avg_.size(); i++) {
    const Device d = live_[i].second.device();
    if (avg_[i].device() != d) avg_[i].move_to_(d);  // the average lives where the model does
  }
}

double WeightEma::next_decay() const {
  return std::min(decay_, (1.0 + (double)updates_) / (10.0 + (double)updates_));
}

void WeightEma::update() {
  follow();
  const float d = (float)next_decay();
  for (size_t i = 0; i < avg_.size(); i++) {
    float* a = avg_[i].f32();
    const Tensor& x = live_[i].second;
    const int64_t n = x.numel();
    const Device dev = x.device();
    NALA_DISPATCH(dev, scale_forward, a, a, d, n);      // a = d a
    NALA_DISPATCH(dev, axpy, a, x.f32(), 1.0f - d, n);  // a += (1 - d) x
  }
  updates_++;
}

void WeightEma::swap() {
  follow();
  for (size_t i = 0; i < avg_.size(); i++) {
    Tensor tmp = live_[i].second.clone();
    live_[i].second.copy_(avg_[i]);
    avg_[i].copy_(tmp);
  }
}

NamedTensors WeightEma::state() const {
  NamedTensors out;
  for (size_t i = 0; i < avg_.size(); i++) out.push_back({"ema." + live_[i].first, avg_[i]});
  out.push_back({"ema.updates", Tensor::from_vector_i64({}, {updates_})});
  return out;
}

void WeightEma::load_state(const std::map<std::string, Tensor>& st, const std::string& path) {
  auto it = st.find("ema.updates");
  NALA_CHECK(it != st.end() && it->second.dtype() == DType::I64 && it->second.numel() == 1, path,
             ": no weight average (ema.updates) in the checkpoint: its run was trained without --ema");
  const int64_t updates = it->second.to_vector_i64()[0];
  NALA_CHECK(updates >= 0, path, ": ema.updates = ", updates, " is negative");
  for (size_t i = 0; i < avg_.size(); i++) {  // check everything before changing anything
    auto e = st.find("ema." + live_[i].first);
    NALA_CHECK(e != st.end(), path, ": the weight average lacks 'ema.", live_[i].first, "'");
    NALA_CHECK(e->second.shape() == avg_[i].shape() && e->second.dtype() == DType::F32, path, ": 'ema.",
               live_[i].first, "' is ", e->second.desc(), ", expected ", avg_[i].desc());
  }
  for (size_t i = 0; i < avg_.size(); i++) avg_[i].copy_(st.at("ema." + live_[i].first));
  updates_ = updates;
}

}  // namespace nala
