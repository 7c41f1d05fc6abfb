// nn/optim.h - optimisers (AdamW, SGD with PyTorch semantics) and gradient
// clipping, over named parameters so that their state can be checkpointed
// under stable keys.
//
// The arithmetic is in kernels/cpu/optim.h and kernels/cuda/optim.h (raw f32
// arrays, dispatched by the parameter's device); this file keeps the
// per-parameter state, on the parameter's device, and the bookkeeping.
// Parameters whose .grad is undefined are skipped entirely (no decay, no
// state change, their step count does not advance), as in PyTorch.
//
// State keys (state() / load_state()), <name> being the parameter's name:
//   adamw.exp_avg.<name>, adamw.exp_avg_sq.<name>   f32, the parameter's shape
//   adamw.step.<name>                                i64 [], steps taken
//   sgd.momentum_buffer.<name>                       f32 (when momentum != 0)
//   sgd.step.<name>                                  i64 []
// state() returns the live state tensors (clone them to keep a snapshot);
// they are on the parameters' device (save_safetensors copies them to the
// host), the step counts on the CPU. load_state copies values in from any
// device and fails naming the first missing or mismatched entry; keys of the
// other optimiser or of a model are ignored, unknown keys with this
// optimiser's prefix are an error.
//
// What this file does not do: learning-rate schedules (nn/schedule.h), EMA.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "nn/module.h"

namespace nala {

class Optimizer {
 public:
  Optimizer(const char* kind, NamedTensors params, double lr);
  virtual ~Optimizer();
  virtual void step() = 0;
  void zero_grad();  // sets every parameter's .grad to undefined
  void set_lr(double lr) { lr_ = lr; }
  double lr() const { return lr_; }
  const NamedTensors& params() const { return params_; }
  virtual NamedTensors state() const = 0;
  virtual void load_state(const std::map<std::string, Tensor>& st) = 0;

  // The step with its scalars (learning rate, bias corrections, first-step
  // flags) read from device memory, for a step captured in a CUDA graph and
  // replayed (models/train/graph_step.h); CUDA parameters only. The block
  // holds scalar_count() floats. step_from(dev) queues the updates of the
  // parameters that have a gradient, reading the block at dev, and remembers
  // them; write_scalars(host) then advances their step counts as step()
  // does and writes the block of that step, to be copied to dev before the
  // updates run. Same arithmetic as step(), bit for bit.
  virtual int64_t scalar_count() const = 0;
  virtual void step_from(const float* dev) = 0;
  virtual void write_scalars(float* host) = 0;

 protected:
  // The gradient of parameter i, checked (shape, dtype, device) and made
  // contiguous; undefined when the parameter has none.
  Tensor grad_of(size_t i) const;
  // Copy st[key] into dst (shape and dtype checked); i64 steps go through load_step.
  void load_entry(const std::map<std::string, Tensor>& st, const std::string& key, Tensor& dst) const;
  int64_t load_step(const std::map<std::string, Tensor>& st, const std::string& key) const;
  void check_no_unknown(const std::map<std::string, Tensor>& st, const std::vector<std::string>& known) const;

  std::string kind_;  // "adamw" or "sgd": the key prefix and the name in errors
  NamedTensors params_;
  double lr_;
  std::vector<bool> stepped_;  // step_from: the parameters it updates
};

// AdamW exactly as torch.optim.AdamW: decoupled weight decay (p -= lr wd p),
// then the Adam update with bias correction. No decay on biases (names
// ending in "bias"), on 1-D parameters, or on names containing any of
// no_decay_patterns (e.g. "gamma_").
class AdamW : public Optimizer {
 public:
  AdamW(NamedTensors params, double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weight_decay = 0.05, std::vector<std::string> no_decay_patterns = {});
  void step() override;
  NamedTensors state() const override;
  void load_state(const std::map<std::string, Tensor>& st) override;
  int64_t scalar_count() const override;
  void step_from(const float* dev) override;
  void write_scalars(float* host) override;

  bool decays(size_t i) const { return decay_[i]; }
  std::vector<std::string> no_decay_names() const;  // for logging
  double beta1, beta2, eps, weight_decay;

 private:
  void launch_from(const float* dev);  // the updates of the parameters in stepped_
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
  std::vector<int64_t> steps_;
  std::vector<bool> decay_;
  Tensor coefs_dev_;  // step() on CUDA: this step's coefficients, copied to the device
};

// SGD exactly as torch.optim.SGD (dampening 0): d = g + wd p; buf = d on the
// first step, else momentum buf + d; nesterov: d += momentum buf, else d = buf;
// p -= lr d.
class SGD : public Optimizer {
 public:
  SGD(NamedTensors params, double lr, double momentum = 0.9, double weight_decay = 0.0, bool nesterov = false);
  void step() override;
  NamedTensors state() const override;
  void load_state(const std::map<std::string, Tensor>& st) override;
  int64_t scalar_count() const override;
  void step_from(const float* dev) override;
  void write_scalars(float* host) override;
  double momentum, weight_decay;
  bool nesterov;

 private:
  std::vector<Tensor> buf_;
  std::vector<int64_t> steps_;
};

// torch.nn.utils.clip_grad_norm_ (2-norm): the total norm over every defined
// .grad, accumulated in double in a fixed order (deterministic). When
// max_norm / (total + 1e-6) < 1 every grad is multiplied by that factor.
// A non-finite total is returned without touching the grads (the caller may
// skip the step). Returns the total norm before clipping.
float clip_grad_norm(const std::vector<Tensor>& params, float max_norm);
// The total norm alone.
double grad_norm(const std::vector<Tensor>& params);

}  // namespace nala
