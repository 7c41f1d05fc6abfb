// autograd/ops_util.h - small tensor helpers shared by the shape, the
// elementwise, the matrix and the convolution ops (defined in
// autograd/ops_shape.cpp, cast_values, gelu_values and scale_grads in
// autograd/ops_elementwise.cpp). Each one runs on the
// device of its input through the kernels of that device.
#pragma once
#include <utility>

#include "tensor/tensor.h"

namespace nala {
namespace detail {

// A zero-filled f32 tensor on `device`.
Tensor zeros_on(const Shape& shape, Device device);
// dst (any strides) = src (any strides, same shape), f32.
void copy_into(const Tensor& dst, const Tensor& src, const char* op);
// dst (any strides) += src (any strides, same shape), f32, in place.
void add_into(const Tensor& dst, const Tensor& src, const char* op);
// A fresh contiguous copy of g's values in logical order, viewed as `shape`
// (same element count).
Tensor fresh_copy(const Tensor& g, const Shape& shape, const char* op);
// x itself when contiguous, else a contiguous copy (no autograd).
Tensor contig(const Tensor& x, const char* op);
// x's values as a contiguous tensor of dtype `to` (f32 or bf16; no autograd):
// x itself (contig) when it already is one.
Tensor cast_values(const Tensor& x, DType to, const char* op);
// out = gelu(x), both contiguous of one dtype: f32, or bf16 (gelu of the
// value in float32, rounded once) on either device.
void gelu_values(const Tensor& out, const Tensor& x, const char* op);
// g (any strides) summed down to `target`, a shape g broadcasts from.
Tensor sum_to_shape(const Tensor& g, const Shape& target, const char* op);
// The gradients of y * gamma (y contiguous, gamma (C) over y's last dim) from
// g (contiguous, y's shape): mul's backward, so the bits of mul(y, gamma)'s.
// Returns {dy, dgamma}, each undefined unless asked for.
std::pair<Tensor, Tensor> scale_grads(const Tensor& g, const Tensor& y, const Tensor& gamma, bool need_y,
                                      bool need_gamma, const char* op);

}  // namespace detail
}  // namespace nala
