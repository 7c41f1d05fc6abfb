// autograd/op_table.h - the one table of differentiable ops.
//
// Every op recorded on the tape has an entry here. Its name appears in error
// messages, in profiling output and in the gradcheck test list
// (tests/test_coverage.cpp fails if an op below has no test named
// "gradcheck: <op>"). Add an op: add a line here, implement it in
// autograd/ops_*.cpp, add its gradcheck test. The table is an X-macro so the
// enum and the names cannot drift.
#pragma once

#define NALA_OPS(X)                                                               \
  /* shape (autograd/ops_shape.cpp) */                                            \
  X(reshape) X(permute) X(narrow) X(expand) X(contiguous) X(concat)               \
  /* elementwise (autograd/ops_elementwise.cpp) */                                \
  X(add) X(sub) X(mul) X(div) X(scale) X(add_scalar) X(pow) X(sqrt) X(cube)      \
  X(relu) X(gelu) X(silu) X(tanh) X(sigmoid) X(exp) X(log)                       \
  X(sin) X(cos) X(elu) X(scale_add) X(cast)                                      \
  /* reductions and losses (autograd/ops_reduce.cpp) */                           \
  X(sum) X(mean) X(l2norm) X(global_avg_pool) X(softmax) X(log_softmax)          \
  X(cross_entropy)                                                               \
  /* matrix products (autograd/ops_matmul.cpp) */                                 \
  X(matmul) X(linear) X(linear_gelu) X(linear_scale_add)                        \
  /* convolutions (autograd/ops_conv.cpp) */                                      \
  X(conv2d) X(dwconv2d) X(dwconv2d_gelu_add)                                     \
  /* normalisation (autograd/ops_norm.cpp) */                                     \
  X(layernorm) X(layernorm_gate) X(batchnorm) X(batchnorm_sync)                  \
  /* attention (autograd/ops_attention.cpp) */                                    \
  X(rope2d) X(nala_attention) X(softmax_attention)                               \
  /* regularisation (autograd/ops_dropout.cpp) */                                 \
  X(dropout) X(drop_path)

namespace nala {

enum class OpId {
#define NALA_OP_ENUM(name) name,
  NALA_OPS(NALA_OP_ENUM)
#undef NALA_OP_ENUM
      count
};

const char* op_name(OpId op);
constexpr int op_count() { return (int)OpId::count; }

}  // namespace nala
