// tensor/tensor.h - n-dimensional arrays: storage, shape/strides/offset views,
// dtype and device. No autograd arithmetic lives here; the fields the tape
// needs (requires_grad, grad, grad_fn) are carried so that autograd/ can use
// them. Views share one reference-counted Storage.
//
// What this file does not do: arithmetic (kernels/), differentiable shape ops
// (autograd/ops.h wraps the view functions below and records them on the tape).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor/bf16.h"
#include "tensor/error.h"

namespace nala {

enum class DType : uint8_t { F32, I64, F16, BF16 };
enum class Device : uint8_t { CPU, CUDA };


size_t dtype_size(DType t);
const char* dtype_name(DType t);
const char* device_name(Device d);

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);

// One allocation. CPU memory is 64-byte aligned; other devices register their
// allocator in tensor/storage.cpp (the one seam for device memory).
struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device = Device::CPU;
  bool pinned = false;  // CPU memory that is page-locked for fast GPU copies
  Storage(size_t nbytes, Device device, bool pinned = false);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

struct Node;  // autograd/autograd.h
struct TensorImpl;

class Tensor {
 public:
  Tensor() = default;  // undefined tensor (no storage)
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Factories (CPU unless a device is given).
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  // A CPU tensor in page-locked memory (staging for host-to-GPU copies);
  // ordinary host memory in a build without CUDA or on a machine without a GPU.
  static Tensor empty_pinned(const Shape& shape, DType dtype = DType::F32);
  static Tensor full(const Shape& shape, float value, Device device = Device::CPU);
  static Tensor ones(const Shape& shape, Device device = Device::CPU) { return full(shape, 1.0f, device); }
  static Tensor from_vector(const Shape& shape, const std::vector<float>& values);
  static Tensor from_vector_i64(const Shape& shape, const std::vector<int64_t>& values);
  static Tensor scalar(float v) { return from_vector({}, {v}); }

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  const Shape& strides() const;
  int64_t offset() const;
  int64_t dim() const { return (int64_t)shape().size(); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const;

  // Typed pointer to element 0 of this view. Checks the dtype.
  float* f32() const;
  int64_t* i64() const;
  bf16_t* bf16() const;
  void* raw() const;  // untyped pointer to element 0 of this view

  // Element access for tests and small host code (CPU only, any strides).
  float item() const;                          // one-element tensor
  float at(std::initializer_list<int64_t> idx) const;
  std::vector<float> to_vector() const;        // logical order, any strides
  std::vector<int64_t> to_vector_i64() const;

  // This tensor's data on device d (itself when already there; no autograd).
  Tensor to(Device d) const;
  // Move the data of this tensor (and its .grad) to d in place: every handle
  // sharing this tensor sees the new storage (how Module::to moves weights).
  void move_to_(Device d);
  // A new tensor with the same storage and view but no autograd history.
  Tensor detach() const;
  // A contiguous copy of the data (no autograd; use nala::contiguous on the tape).
  Tensor clone() const;
  // Copy the values of src (same shape, any strides) into this tensor.
  void copy_(const Tensor& src);
  void fill_(float v);
  void zero_() { fill_(0.0f); }

  // Autograd fields.
  bool requires_grad() const;
  Tensor& set_requires_grad(bool r);
  Tensor grad() const;  // undefined until a backward pass reached this leaf
  void set_grad(const Tensor& g);
  const std::shared_ptr<Node>& grad_fn() const;
  void set_grad_fn(std::shared_ptr<Node> fn);

  TensorImpl* impl() const { return impl_.get(); }
  long impl_use_count() const { return impl_.use_count(); }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }
  std::string desc() const;  // "f32[2, 3]" for error messages

 private:
  std::shared_ptr<TensorImpl> impl_;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape, strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::F32;
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;
};

// Raw views (no autograd). Each checks its arguments and never lets a view
// reach outside its storage. autograd/ops.h records differentiable versions
// (and has transpose, a permute of two dims).
namespace view {
Tensor as_strided(const Tensor& x, const Shape& shape, const Shape& strides, int64_t offset);
Tensor reshape(const Tensor& x, Shape shape);  // -1 allowed once; copies if not viewable
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
Tensor expand(const Tensor& x, const Shape& shape);  // size-1 dims (and new leading dims) broadcast
Tensor contiguous(const Tensor& x);                  // x itself when already contiguous
}  // namespace view

int64_t wrap_dim(int64_t d, int64_t ndim, const char* op);
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace nala
