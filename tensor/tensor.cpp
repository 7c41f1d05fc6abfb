// tensor/tensor.cpp - Tensor bookkeeping, factories and raw views.
#include "tensor/tensor.h"

#include "tensor/device.h"

#include <cstring>

namespace nala {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::I64: return 8;
    case DType::F16: return 2;
    case DType::BF16: return 2;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::I64: return "i64";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
  }
  return "?";
}

const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); i++) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

int64_t shape_numel(const Shape& s) {
  // Checked: a product that wraps would give a small (or zero) allocation
  // that the shape then writes far past. 2^60 elements is beyond any memory.
  for (int64_t v : s) {
    NALA_CHECK(v >= 0, "negative size in shape ", shape_str(s));
    if (v == 0) return 0;
  }
  int64_t n = 1;
  for (int64_t v : s)
    if (__builtin_mul_overflow(n, v, &n) || n > (int64_t(1) << 60))
      NALA_FAIL("shape ", shape_str(s), " has more than 2^60 elements");
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = (int64_t)s.size() - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

int64_t wrap_dim(int64_t d, int64_t ndim, const char* op) {
  int64_t w = d < 0 ? d + ndim : d;
  NALA_CHECK(w >= 0 && w < ndim, op, ": dim ", d, " out of range for a ", ndim, "-d tensor");
  return w;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; i++) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    NALA_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
               " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// ---- Tensor accessors ---------------------------------------------------

static TensorImpl* must(const std::shared_ptr<TensorImpl>& p) {
  NALA_CHECK(p != nullptr, "use of an undefined tensor");
  return p.get();
}

const Shape& Tensor::shape() const { return must(impl_)->shape; }
const Shape& Tensor::strides() const { return must(impl_)->strides; }
int64_t Tensor::offset() const { return must(impl_)->offset; }
int64_t Tensor::size(int64_t d) const { return shape()[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::numel() const { return shape_numel(shape()); }
DType Tensor::dtype() const { return must(impl_)->dtype; }
Device Tensor::device() const { return must(impl_)->storage->device; }
const std::shared_ptr<Storage>& Tensor::storage() const { return must(impl_)->storage; }

bool Tensor::is_contiguous() const {
  const Shape& s = shape();
  const Shape& st = strides();
  int64_t acc = 1;
  for (int64_t i = (int64_t)s.size() - 1; i >= 0; i--) {
    if (s[i] == 1) continue;
    if (st[i] != acc) return false;
    acc *= s[i];
  }
  return true;
}

void* Tensor::raw() const {
  TensorImpl* p = must(impl_);
  return (char*)p->storage->data + p->offset * (int64_t)dtype_size(p->dtype);
}

float* Tensor::f32() const {
  NALA_CHECK(dtype() == DType::F32, "expected an f32 tensor, got ", desc());
  return (float*)raw();
}

bf16_t* Tensor::bf16() const {
  NALA_CHECK(dtype() == DType::BF16, "expected a bf16 tensor, got ", desc());
  return (bf16_t*)raw();
}

int64_t* Tensor::i64() const {
  NALA_CHECK(dtype() == DType::I64, "expected an i64 tensor, got ", desc());
  return (int64_t*)raw();
}

std::string Tensor::desc() const {
  if (!impl_) return "undefined";
  std::string s = std::string(dtype_name(dtype())) + shape_str(shape());
  if (!impl_->storage) return s + " (no data: a node's record of an input)";
  if (device() != Device::CPU) s += std::string("@") + device_name(device());
  return s;
}

bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }
Tensor& Tensor::set_requires_grad(bool r) {
  NALA_CHECK(!r || dtype() == DType::F32 || dtype() == DType::BF16, "only f32 and bf16 tensors can require grad, got ",
             desc());
  must(impl_)->requires_grad = r;
  return *this;
}
Tensor Tensor::grad() const { return must(impl_)->grad; }
void Tensor::set_grad(const Tensor& g) { must(impl_)->grad = g; }
const std::shared_ptr<Node>& Tensor::grad_fn() const { return must(impl_)->grad_fn; }
void Tensor::set_grad_fn(std::shared_ptr<Node> fn) { must(impl_)->grad_fn = std::move(fn); }

// ---- factories ----------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t v : shape) NALA_CHECK(v >= 0, "empty: negative size in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(shape_numel(shape) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(impl);
}

Tensor Tensor::empty_pinned(const Shape& shape, DType dtype) {
  if (!device::cuda_available()) return empty(shape, dtype);
  for (int64_t v : shape) NALA_CHECK(v >= 0, "empty_pinned: negative size in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(shape_numel(shape) * dtype_size(dtype), Device::CPU, true);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(impl);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero_();
  return t;
}

Tensor Tensor::full(const Shape& shape, float value, Device device) {
  Tensor t = empty(shape, DType::F32, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_vector(const Shape& shape, const std::vector<float>& values) {
  NALA_CHECK((int64_t)values.size() == shape_numel(shape), "from_vector: ", values.size(),
             " values for shape ", shape_str(shape));
  Tensor t = empty(shape);
  if (!values.empty()) std::memcpy(t.raw(), values.data(), values.size() * sizeof(float));
  return t;
}

Tensor Tensor::from_vector_i64(const Shape& shape, const std::vector<int64_t>& values) {
  NALA_CHECK((int64_t)values.size() == shape_numel(shape), "from_vector_i64: ", values.size(),
             " values for shape ", shape_str(shape));
  Tensor t = empty(shape, DType::I64);
  if (!values.empty()) std::memcpy(t.raw(), values.data(), values.size() * sizeof(int64_t));
  return t;
}

// ---- host element access ------------------------------------------------

namespace {
// Visit every element of (shape, strides) in logical order, calling f(offset).
template <typename F>
void for_each_offset(const Shape& shape, const Shape& strides, int64_t base, F f) {
  int64_t n = shape_numel(shape);
  if (n == 0) return;
  size_t nd = shape.size();
  std::vector<int64_t> idx(nd, 0);
  int64_t off = base;
  for (int64_t k = 0; k < n; k++) {
    f(off);
    for (int64_t d = (int64_t)nd - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) {
        off += strides[d];
        break;
      }
      off -= strides[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
}
}  // namespace

float Tensor::item() const {
  NALA_CHECK(numel() == 1, "item: tensor ", desc(), " has ", numel(), " elements, expected 1");
  return to_vector()[0];
}

float Tensor::at(std::initializer_list<int64_t> idx) const {
  NALA_CHECK((int64_t)idx.size() == dim(), "at: ", idx.size(), " indices for ", desc());
  if (device() != Device::CPU) return to(Device::CPU).at(idx);
  int64_t off = offset(), d = 0;
  for (int64_t i : idx) {
    NALA_CHECK(i >= 0 && i < shape()[d], "at: index ", i, " out of range for dim ", d, " of ", desc());
    off += i * strides()[d++];
  }
  const char* base = (const char*)storage()->data;
  if (dtype() == DType::I64) return (float)((const int64_t*)base)[off];
  if (dtype() == DType::BF16) return bf16_to_float(((const bf16_t*)base)[off]);
  NALA_CHECK(dtype() == DType::F32, "at: unsupported dtype ", desc());
  return ((const float*)base)[off];
}

std::vector<float> Tensor::to_vector() const {
  if (device() != Device::CPU) return to(Device::CPU).to_vector();
  std::vector<float> out;
  out.reserve(numel());
  const char* base = (const char*)storage()->data;
  if (dtype() == DType::I64) {
    for_each_offset(shape(), strides(), offset(),
                    [&](int64_t o) { out.push_back((float)((const int64_t*)base)[o]); });
  } else if (dtype() == DType::BF16) {
    for_each_offset(shape(), strides(), offset(),
                    [&](int64_t o) { out.push_back(bf16_to_float(((const bf16_t*)base)[o])); });
  } else {
    NALA_CHECK(dtype() == DType::F32, "to_vector: unsupported dtype ", desc());
    for_each_offset(shape(), strides(), offset(), [&](int64_t o) { out.push_back(((const float*)base)[o]); });
  }
  return out;
}

std::vector<int64_t> Tensor::to_vector_i64() const {
  if (device() != Device::CPU) return to(Device::CPU).to_vector_i64();
  NALA_CHECK(dtype() == DType::I64, "to_vector_i64: need an i64 tensor, got ", desc());
  std::vector<int64_t> out;
  out.reserve(numel());
  const int64_t* base = (const int64_t*)storage()->data;
  for_each_offset(shape(), strides(), offset(), [&](int64_t o) { out.push_back(base[o]); });
  return out;
}

Tensor Tensor::to(Device d) const {
  if (device() == d) return *this;
  Tensor out = empty(shape(), dtype(), d);
  out.copy_(*this);
  return out;
}

void Tensor::move_to_(Device d) {
  if (device() == d) return;
  Tensor moved = to(d);
  TensorImpl* p = must(impl_);
  p->storage = moved.storage();
  p->strides = moved.strides();
  p->offset = 0;
  if (p->grad.defined()) p->grad = p->grad.to(d);
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = storage();
  impl->shape = shape();
  impl->strides = strides();
  impl->offset = offset();
  impl->dtype = dtype();
  return Tensor(impl);
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  out.copy_(*this);
  return out;
}

void Tensor::copy_(const Tensor& src) {
  NALA_CHECK(shape() == src.shape(), "copy_: shape ", src.desc(), " into ", desc());
  NALA_CHECK(dtype() == src.dtype(), "copy_: dtype ", src.desc(), " into ", desc());
  size_t es = dtype_size(dtype());
  if (numel() == 0) return;
  if (device() != Device::CPU || src.device() != Device::CPU) {
    if (is_contiguous() && src.is_contiguous()) {
      device::copy_bytes(raw(), device(), src.raw(), src.device(), numel() * es);
    } else if (device() == src.device()) {
      Shape ss = src.strides(), ds = strides(), sh = shape();
      device::strided_copy(raw(), ds.data(), src.raw(), ss.data(), sh.data(), (int)sh.size(), es);
    } else {  // across devices: make both sides contiguous first
      Tensor s = src.is_contiguous() ? src : src.clone();
      Tensor d = is_contiguous() ? *this : Tensor::empty(shape(), dtype(), device());
      device::copy_bytes(d.raw(), device(), s.raw(), s.device(), numel() * es);
      if (!d.same(*this)) copy_(d);
    }
    return;
  }
  if (is_contiguous() && src.is_contiguous()) {
    std::memmove(raw(), src.raw(), numel() * es);
    return;
  }
  // Gather src in logical order, then scatter into this view.
  std::vector<char> tmp(numel() * es);
  char* t = tmp.data();
  const char* sb = (const char*)src.storage()->data;
  for_each_offset(src.shape(), src.strides(), src.offset(), [&](int64_t o) {
    std::memcpy(t, sb + o * es, es);
    t += es;
  });
  t = tmp.data();
  char* db = (char*)storage()->data;
  for_each_offset(shape(), strides(), offset(), [&](int64_t o) {
    std::memcpy(db + o * es, t, es);
    t += es;
  });
}

void Tensor::fill_(float v) {
  if (device() != Device::CPU) {
    if (is_contiguous()) {
      device::fill(raw(), dtype(), v, numel());
    } else {
      Tensor t = Tensor::empty(shape(), dtype(), device());
      t.fill_(v);
      copy_(t);
    }
    return;
  }
  char* base = (char*)storage()->data;
  if (dtype() == DType::I64) {
    for_each_offset(shape(), strides(), offset(), [&](int64_t o) { ((int64_t*)base)[o] = (int64_t)v; });
    return;
  }
  NALA_CHECK(dtype() == DType::F32, "fill_: unsupported dtype ", desc());
  if (is_contiguous()) {
    float* p = f32();
    for (int64_t i = 0, n = numel(); i < n; i++) p[i] = v;
    return;
  }
  for_each_offset(shape(), strides(), offset(), [&](int64_t o) { ((float*)base)[o] = v; });
}

// ---- raw views ----------------------------------------------------------

namespace view {

Tensor as_strided(const Tensor& x, const Shape& shape, const Shape& strides, int64_t offset) {
  NALA_CHECK(shape.size() == strides.size(), "as_strided: ", shape.size(), " sizes and ", strides.size(),
             " strides");
  // Bounds: the lowest and highest element reached must lie inside the storage.
  int64_t lo = offset, hi = offset;
  bool empty = false;
  for (size_t i = 0; i < shape.size(); i++) {
    NALA_CHECK(shape[i] >= 0, "as_strided: negative size in ", shape_str(shape));
    if (shape[i] == 0) empty = true;
    int64_t span = strides[i] * (shape[i] - 1);
    (span < 0 ? lo : hi) += span;
  }
  int64_t cap = (int64_t)(x.storage()->nbytes / dtype_size(x.dtype()));
  NALA_CHECK(empty || (lo >= 0 && hi < cap), "as_strided: view ", shape_str(shape), " at offset ", offset,
             " reaches outside a storage of ", cap, " elements");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = x.storage();
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = x.dtype();
  return Tensor(impl);
}

Tensor contiguous(const Tensor& x) { return x.is_contiguous() ? x.detach() : x.clone(); }

Tensor reshape(const Tensor& x, Shape shape) {
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); i++) {
    if (shape[i] == -1) {
      NALA_CHECK(infer < 0, "reshape: more than one -1 in ", shape_str(shape));
      infer = (int64_t)i;
    } else {
      NALA_CHECK(shape[i] >= 0, "reshape: bad size in ", shape_str(shape));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    NALA_CHECK(known > 0 && x.numel() % known == 0, "reshape: cannot reshape ", x.desc(), " to ",
               shape_str(shape));
    shape[infer] = x.numel() / known;
  }
  NALA_CHECK(shape_numel(shape) == x.numel(), "reshape: cannot reshape ", x.desc(), " to ", shape_str(shape));
  Tensor c = contiguous(x);
  return as_strided(c, shape, contiguous_strides(shape), c.offset());
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  int64_t nd = x.dim();
  NALA_CHECK((int64_t)dims.size() == nd, "permute: ", dims.size(), " dims for ", x.desc());
  std::vector<bool> seen(nd, false);
  Shape s(nd), st(nd);
  for (int64_t i = 0; i < nd; i++) {
    int64_t d = wrap_dim(dims[i], nd, "permute");
    NALA_CHECK(!seen[d], "permute: dim ", d, " repeated");
    seen[d] = true;
    s[i] = x.shape()[d];
    st[i] = x.strides()[d];
  }
  return as_strided(x, s, st, x.offset());
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  int64_t d = wrap_dim(dim, x.dim(), "narrow");
  NALA_CHECK(start >= 0 && length >= 0 && start + length <= x.shape()[d], "narrow: [", start, ", ",
             start + length, ") out of range for dim ", d, " of ", x.desc());
  Shape s = x.shape();
  s[d] = length;
  return as_strided(x, s, x.strides(), x.offset() + start * x.strides()[d]);
}

Tensor expand(const Tensor& x, const Shape& shape) {
  int64_t nd = (int64_t)shape.size(), xd = x.dim();
  NALA_CHECK(nd >= xd, "expand: cannot expand ", x.desc(), " to ", shape_str(shape));
  Shape st(nd, 0);
  for (int64_t i = 0; i < nd; i++) {
    int64_t j = i - (nd - xd);
    if (j < 0) continue;
    int64_t xs = x.shape()[j];
    NALA_CHECK(xs == shape[i] || xs == 1, "expand: cannot expand ", x.desc(), " to ", shape_str(shape));
    st[i] = xs == 1 ? 0 : x.strides()[j];
  }
  return as_strided(x, shape, st, x.offset());
}

}  // namespace view
}  // namespace nala
