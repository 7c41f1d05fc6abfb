// autograd/autograd.h - the reverse-mode tape.
//
// A differentiable op computes its result with kernels, then calls record():
// if grad mode is on and an input requires grad, a Node is attached to the
// result holding the op's id, its inputs, and a backward function. The
// backward function receives the gradient of the result and returns one
// gradient per input (an undefined Tensor where an input needs none); what
// it needs from the forward pass it captures itself (the "saved" tensors).
// Never capture the result tensor itself (that would be a reference cycle):
// capture result.detach().
// A backward function never writes into the gradient it receives; it may
// return that gradient itself or a view of it (add, reshape do: no copy).
// The engine copies on write: it never adds in place into a gradient that
// anything else still holds, and a leaf's .grad never shares its buffer
// (it is written in place later: accumulation, clipping, the optimiser).
//
// backward() orders the graph with an iterative depth-first walk (no
// recursion: deep graphs do not overflow the stack), runs each node once,
// and accumulates (+=) gradients where a tensor feeds several ops. Leaves
// (tensors created by the user with requires_grad) receive .grad, which
// accumulates across backward() calls until zeroed. Unless retain_graph is
// set, each node's inputs and saved tensors are released after use.
// Backward functions call kernels directly: there is no double backward.
#pragma once
#include <functional>
#include <vector>

#include "autograd/op_table.h"
#include "tensor/tensor.h"

namespace nala {

using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_out)>;

// An op whose one input's gradient is the incoming gradient placed into part
// of an input-shaped tensor of zeros (narrow; split and chunk are narrows) may
// also give a ScatterFn: it adds grad_out into that part of `slot`, the
// gradient its input has accumulated so far, first making `slot` zeros of the
// input's shape when it is undefined. The engine then calls it instead of the
// backward function, on a slot it may write (copy on write as above): the
// parts of one tensor (a Linear's weight used as four row blocks) add into
// one buffer instead of each being padded to full size with zeros and the
// padded tensors added.
using ScatterFn = std::function<void(Tensor& slot, const Tensor& grad_out)>;

struct Node {
  OpId op;
  // Same order as the gradients BackwardFn returns. An input with a history
  // is kept as that history alone (grad_fn, shape, strides, dtype; no
  // storage: its device() is unknown): a backward function saves, detached,
  // the values it reads, so nothing else keeps an op's result alive.
  std::vector<Tensor> inputs;
  BackwardFn backward;
  ScatterFn scatter;  // optional (see ScatterFn); only for nodes with one input
  Node() = default;
  ~Node();  // iterative: see autograd.cpp
};

// Grad mode: on by default, per thread. NoGradGuard turns it off in a scope.
bool grad_enabled();
struct NoGradGuard {
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// Does any input require grad (and is grad mode on)?
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Attach the op to `out` when needed; returns `out`.
Tensor record(OpId op, Tensor out, std::vector<Tensor> inputs, BackwardFn backward);

// Called once per leaf that the graph reaches, as soon as no later node of
// the pass can add to its .grad (which may be undefined when no gradient
// reached it). Data-parallel training starts each gradient's all-reduce
// from here while the rest of the backward pass runs (distributed/distributed.h).
using LeafHook = std::function<void(Tensor& leaf)>;

// Run the backward pass from `root`. grad_root defaults to ones (a scalar
// root needs none). Gradients of leaves accumulate into their .grad.
void backward(const Tensor& root, const Tensor& grad_root = Tensor(), bool retain_graph = false,
              const LeafHook& on_leaf_ready = nullptr);

// Sum of every node reachable from root, by op, for tests and profiling.
std::vector<OpId> graph_ops(const Tensor& root);

// dst += src (same shape, contiguous dst). Used for gradient accumulation.
void accumulate_into(Tensor& dst, const Tensor& src);

}  // namespace nala
