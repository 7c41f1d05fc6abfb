// nn/module.h - modules: parameters, buffers and children with hierarchical
// names, train/eval mode, and Sequential.
//
// A Module owns its children (unique_ptr) and holds handles to its parameter
// and buffer tensors. Names follow PyTorch so that state_dict keys match the
// release's checkpoints (docs/SPEC.md §10): "layers.0.blocks.1.attn.qkvg.weight".
//
//   named_parameters(): own parameters (registration order), then children
//                       depth-first; a tensor registered twice is listed once.
//   state_dict():       for each module, own parameters, own persistent
//                       buffers, then children recursively (no de-duplication).
//
// What this file does not do: arithmetic (autograd/ops.h), initialisation
// (nn/init.h), file I/O (nn/safetensors.h), concrete layers (nn/layers.h).
// Sequential lives here because it is pure structure and calls no op.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace nala {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  explicit Module(std::string type);  // type name used in errors and `nala info`, e.g. "Linear"
  virtual ~Module();
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  virtual Tensor forward(const Tensor& x);  // default: fails naming the type
  const std::string& type() const { return type_; }

  // Full dotted names, PyTorch order (see the header comment).
  NamedTensors named_parameters() const;
  NamedTensors named_buffers() const;  // persistent and non-persistent
  NamedTensors state_dict() const;
  std::vector<Tensor> parameters() const;
  std::vector<std::pair<std::string, Module*>> named_children() const;
  // This module ("") and every descendant, pre-order, with dotted names.
  std::vector<std::pair<std::string, Module*>> named_modules();

  // This module's own entries only (no children), registration order.
  const NamedTensors& own_parameters() const { return params_; }
  const NamedTensors& own_buffers() const { return buffers_; }
  Tensor own_parameter(const std::string& name) const;  // undefined when absent
  Tensor own_buffer(const std::string& name) const;     // undefined when absent
  Module* child(const std::string& name) const;         // nullptr when absent

  void train(bool on = true);  // recursive
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad();               // sets every parameter's .grad to undefined
  // Move every parameter and buffer (and any .grad) to device d, in place:
  // handles held elsewhere (optimisers, layers) follow.
  void to(Device d);
  int64_t num_parameters() const;  // elements, each tensor counted once

  // Copy values from `sd` into this module's state_dict tensors (no autograd).
  // Shapes must match. An f32 value may fill an i64 buffer and vice versa
  // (num_batches_tracked, docs/SPEC.md §10). strict: every key of state_dict()
  // must be present and no unknown key may appear; both lists are reported.
  // Returns the keys of `sd` that were not used (empty when strict).
  std::vector<std::string> load_state_dict(const std::map<std::string, Tensor>& sd, bool strict = true);

 protected:
  // Sets requires_grad on t and returns the same handle.
  Tensor register_parameter(const std::string& name, Tensor t);
  // Non-persistent buffers are left out of state_dict() (PyTorch semantics).
  Tensor register_buffer(const std::string& name, Tensor t, bool persistent = true);
  template <class M>
  M* register_module(const std::string& name, std::unique_ptr<M> m) {
    M* raw = m.get();
    add_child(name, std::unique_ptr<Module>(std::move(m)));
    return raw;
  }
  void add_child(const std::string& name, std::unique_ptr<Module> m);

 private:
  void check_new_name(const std::string& name, const char* what) const;
  void collect(const std::string& prefix, bool params, bool buffers, bool persistent_only, NamedTensors& out) const;

  std::string type_;
  bool training_ = true;
  NamedTensors params_, buffers_;
  std::vector<bool> buffer_persistent_;
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> children_;
};

// Children named "0", "1", ...; forward applies them in order.
struct Sequential : Module {
  Sequential();
  Module* add(std::unique_ptr<Module> m);
  template <class M>
  M* push(std::unique_ptr<M> m) {  // typed add
    M* raw = m.get();
    add(std::unique_ptr<Module>(std::move(m)));
    return raw;
  }
  size_t size() const { return n_; }
  Module* operator[](size_t i) const;
  Tensor forward(const Tensor& x) override;

 private:
  size_t n_ = 0;
};

}  // namespace nala
