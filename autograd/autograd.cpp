// autograd/autograd.cpp - the backward engine.
#include "autograd/autograd.h"

#include <unordered_map>
#include <unordered_set>

#include "autograd/dispatch.h"
#include "autograd/ops_util.h"
#include "kernels/cpu/elementwise.h"
#ifdef NALA_CUDA
#include "kernels/cuda/elementwise.h"
#endif

namespace nala {

const char* op_name(OpId op) {
  static const char* names[] = {
#define NALA_OP_NAME(name) #name,
      NALA_OPS(NALA_OP_NAME)
#undef NALA_OP_NAME
  };
  int i = (int)op;
  return i >= 0 && i < op_count() ? names[i] : "?";
}

static thread_local bool g_grad_enabled = true;
bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev_; }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

// What a node keeps of an interior input (one with a history): its history,
// shape, strides and dtype, no storage. The engine needs no more of it (the
// path to the next node, the checks of the gradient's shape and dtype); a
// backward function that reads the input's values saves them itself,
// detached. Keeping the tensor kept every op's result alive until backward
// reached the ops that consumed it, read or not: the attention output held
// by LePE's residual add, q and k by their contiguous copies, a SiLU's
// output by the pooling after it. Leaves stay whole: their .grad is written
// through the node.
static Tensor history_of(const Tensor& t) {
  auto m = std::make_shared<TensorImpl>();
  m->shape = t.shape();
  m->strides = t.strides();
  m->offset = t.offset();
  m->dtype = t.dtype();
  m->requires_grad = true;
  m->grad_fn = t.grad_fn();
  return Tensor(std::move(m));
}

Tensor record(OpId op, Tensor out, std::vector<Tensor> inputs, BackwardFn backward) {
  if (!needs_grad(inputs)) return out;
  auto node = std::make_shared<Node>();
  node->op = op;
  for (Tensor& t : inputs)
    if (t.defined() && t.grad_fn()) t = history_of(t);
  node->inputs = std::move(inputs);
  node->backward = std::move(backward);
  out.set_grad_fn(node);
  out.impl()->requires_grad = true;
  return out;
}

// Gradients add up in their tensor's dtype: f32 in f32; a bf16 tensor that
// reaches the loss by two paths gets the sum of its two bf16 gradients,
// computed in f32 and rounded once (add_bf16).
static void check_accumulable(const Tensor& dst, const Tensor& src) {
  NALA_CHECK(dst.dtype() == src.dtype() && (dst.dtype() == DType::F32 || dst.dtype() == DType::BF16),
             "gradient accumulation: ", src.desc(), " into ", dst.desc(),
             ": gradients add up in f32 or bf16, one dtype");
}

// out = a + b for bf16 tensors of one shape (out contiguous; a and b any strides).
static void add_bf16_into(const Tensor& out, const Tensor& a, const Tensor& b) {
  if (out.numel() == 0) return;
  auto dense = [](const Tensor& t) { return t.is_contiguous() ? t : detail::fresh_copy(t, t.shape(), "backward"); };
  Tensor ac = dense(a), bc = dense(b);
  NALA_DISPATCH(out.device(), add_bf16, out.bf16(), ac.bf16(), bc.bf16(), out.numel());
}

void accumulate_into(Tensor& dst, const Tensor& src) {
  NALA_CHECK(dst.shape() == src.shape(), "gradient accumulation: shape ", src.desc(), " into ", dst.desc());
  check_accumulable(dst, src);
  NALA_CHECK(dst.is_contiguous(), "gradient accumulation into a non-contiguous tensor ", dst.desc());
  NALA_CHECK(dst.device() == src.device(), "gradient accumulation: ", src.desc(), " into ", dst.desc(),
             " (different devices)");
  if (dst.dtype() == DType::BF16) return add_bf16_into(dst, dst, src);
  Tensor s = view::contiguous(src);
  NALA_DISPATCH(dst.device(), axpy, dst.f32(), s.f32(), 1.0f, dst.numel());
}

// Nodes reachable from root in an order where every node comes before the
// nodes of its inputs (reverse post-order of an iterative DFS).
// Holds shared pointers so that nodes stay alive while backward frees inputs.
static std::vector<std::shared_ptr<Node>> topo_order(const std::shared_ptr<Node>& root) {
  std::vector<std::shared_ptr<Node>> post;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<std::shared_ptr<Node>, size_t>> stack;  // node, next input to visit
  stack.push_back({root, 0});
  seen.insert(root.get());
  while (!stack.empty()) {
    auto& top = stack.back();
    Node* node = top.first.get();
    if (top.second < node->inputs.size()) {
      const Tensor& in = node->inputs[top.second++];
      if (in.defined() && in.grad_fn() && seen.insert(in.grad_fn().get()).second)
        stack.push_back({in.grad_fn(), 0});
    } else {
      post.push_back(top.first);
      stack.pop_back();
    }
  }
  return std::vector<std::shared_ptr<Node>>(post.rbegin(), post.rend());
}

// Dismantle a chain of nodes without recursion: a 100,000-op graph that is
// dropped without backward() must not overflow the stack in destructors.
Node::~Node() {
  std::vector<std::shared_ptr<Node>> pending;
  auto harvest = [&pending](std::vector<Tensor>& inputs) {
    for (Tensor& t : inputs)
      if (t.defined() && t.grad_fn() && t.impl_use_count() == 1 && t.grad_fn().use_count() == 1) {
        pending.push_back(t.grad_fn());
        t.set_grad_fn(nullptr);
      }
    inputs.clear();
  };
  harvest(inputs);
  while (!pending.empty()) {
    std::shared_ptr<Node> n = std::move(pending.back());
    pending.pop_back();
    harvest(n->inputs);
    n->backward = nullptr;
  }
}

std::vector<OpId> graph_ops(const Tensor& root) {
  std::vector<OpId> ops;
  if (!root.grad_fn()) return ops;
  for (auto& n : topo_order(root.grad_fn())) ops.push_back(n->op);
  return ops;
}

// The gradient flowing into an interior node. A backward may hand its
// incoming gradient on without a copy (add passes it to both inputs, reshape
// a view of it), so these may share a buffer: copy on write, before adding
// in place into one that anything else still holds.
// Copies go through the device's copy kernel (detail::fresh_copy), never a
// cudaMemcpy: a CUDA graph may be capturing the step.
static Tensor copy_of(const Tensor& t) { return detail::fresh_copy(t, t.shape(), "backward"); }

// slot + g into a new buffer (one pass, the same bits as copying slot and
// adding g into the copy).
static Tensor sum_of(const Tensor& slot, const Tensor& g) {
  NALA_CHECK(slot.device() == g.device(), "gradient accumulation: ", g.desc(), " into ", slot.desc(),
             " (different devices)");
  check_accumulable(slot, g);
  Tensor out = Tensor::empty(slot.shape(), slot.dtype(), slot.device());
  if (out.numel() == 0) return out;
  if (out.dtype() == DType::BF16) {
    add_bf16_into(out, slot, g);
    return out;
  }
  const Shape st = contiguous_strides(slot.shape());
  Layout L = make_layout(slot.shape(), st, slot.strides(), g.strides(), "backward");
  NALA_DISPATCH(slot.device(), binary_forward, BinaryOp::Add, out.f32(), slot.f32(), g.f32(), L);
  return out;
}

static void add_grad_interior(Tensor& slot, const Tensor& g) {  // shapes checked by backward()
  if (!slot.defined())
    slot = g.is_contiguous() ? g : copy_of(g);
  else if (slot.impl_use_count() > 1 || slot.storage().use_count() > 1)
    slot = sum_of(slot, g);  // shared: never written in place
  else
    accumulate_into(slot, g);
}

// A leaf's .grad is written in place later (accumulation over backward
// passes, clipping, the optimiser, all-reduce), and other code may keep a
// handle to it: it takes g's buffer only when nothing else holds it (g here
// is the backward's own reference), else a copy.
static void add_grad_leaf(Tensor& slot, const Tensor& g) {
  if (!slot.defined()) {
    const bool own = g.impl_use_count() == 1 && g.storage().use_count() == 1;
    slot = own && g.is_contiguous() ? g : copy_of(g);
  } else {
    if (slot.storage().use_count() > 1) slot = copy_of(slot);  // never write into a shared buffer
    accumulate_into(slot, g);
  }
}

// A node with a ScatterFn adds its gradient into its input's slot in place:
// the slot is copied first when anything else holds it (a leaf's .grad never
// shares its buffer; an interior gradient may be a view another node handed on).
static void scatter_grad(const Node& node, const Tensor& gout, std::unordered_map<Node*, Tensor>& grads) {
  const Tensor& in = node.inputs[0];
  if (in.grad_fn()) {
    Tensor& slot = grads[in.grad_fn().get()];
    if (slot.defined() && (slot.impl_use_count() > 1 || slot.storage().use_count() > 1)) slot = copy_of(slot);
    node.scatter(slot, gout);
    return;
  }
  Tensor slot = in.grad();
  if (slot.defined() && slot.storage().use_count() > 1) slot = copy_of(slot);
  node.scatter(slot, gout);
  const_cast<Tensor&>(in).set_grad(slot);
}

// For each node of `order`, the leaves whose last consumer it is: after that
// node has run, nothing adds to their .grad in this pass.
static std::vector<std::vector<Tensor>> leaves_done_after(const std::vector<std::shared_ptr<Node>>& order) {
  std::unordered_map<const void*, size_t> last;
  for (size_t i = 0; i < order.size(); i++)
    for (const Tensor& in : order[i]->inputs)
      if (in.defined() && in.requires_grad() && !in.grad_fn()) last[in.impl()] = i;
  std::vector<std::vector<Tensor>> done(order.size());
  for (size_t i = 0; i < order.size(); i++)
    for (const Tensor& in : order[i]->inputs)
      if (in.defined() && in.requires_grad() && !in.grad_fn()) {
        auto it = last.find(in.impl());
        if (it != last.end() && it->second == i) {
          done[i].push_back(in);
          last.erase(it);  // a leaf used twice by one node is reported once
        }
      }
  return done;
}

void backward(const Tensor& root, const Tensor& grad_root, bool retain_graph, const LeafHook& on_leaf_ready) {
  NALA_CHECK(root.requires_grad(), "backward: the tensor ", root.desc(), " does not require grad");
  Tensor g0 = grad_root;
  if (!g0.defined()) {
    NALA_CHECK(root.numel() == 1, "backward: a gradient is needed for the non-scalar root ", root.desc());
    g0 = Tensor::full(root.shape(), 1.0f, root.device());
  }
  NALA_CHECK(g0.shape() == root.shape(), "backward: gradient ", g0.desc(), " for root ", root.desc());
  // A tensor's gradient has its dtype: an f32 gradient for a bf16 root is rounded first.
  if (g0.dtype() != root.dtype()) g0 = detail::cast_values(g0, root.dtype(), "backward");
  if (!root.grad_fn()) {  // a leaf
    Tensor slot = root.grad();
    add_grad_leaf(slot, g0);
    const_cast<Tensor&>(root).set_grad(slot);
    if (on_leaf_ready) on_leaf_ready(const_cast<Tensor&>(root));
    return;
  }
  std::vector<std::shared_ptr<Node>> order = topo_order(root.grad_fn());
  std::vector<std::vector<Tensor>> leaves_done;
  if (on_leaf_ready) leaves_done = leaves_done_after(order);
  auto report = [&](size_t i) {
    if (on_leaf_ready)
      for (Tensor& leaf : leaves_done[i]) on_leaf_ready(leaf);
  };
  std::unordered_map<Node*, Tensor> grads;
  grads[order[0].get()] = g0;
  for (size_t n = 0; n < order.size(); n++) {
    Node* node = order[n].get();
    auto it = grads.find(node);
    if (it == grads.end()) {  // no gradient flows here
      report(n);
      continue;
    }
    Tensor gout = it->second;
    grads.erase(it);
    NALA_CHECK(node->backward, "backward: the graph through '", op_name(node->op),
               "' was already freed; pass retain_graph=true to run backward twice");
    if (node->scatter && node->inputs.size() == 1 && node->inputs[0].defined() &&
        node->inputs[0].requires_grad()) {
      scatter_grad(*node, gout, grads);
      if (!retain_graph) {
        node->backward = nullptr;
        node->scatter = nullptr;
        node->inputs.clear();
      }
      report(n);
      continue;
    }
    std::vector<Tensor> gin = node->backward(gout);
    NALA_CHECK(gin.size() == node->inputs.size(), "backward of '", op_name(node->op), "' returned ", gin.size(),
               " gradients for ", node->inputs.size(), " inputs");
    for (size_t i = 0; i < gin.size(); i++) {
      Tensor& in = node->inputs[i];
      if (!gin[i].defined() || !in.defined() || !in.requires_grad()) continue;
      NALA_CHECK(gin[i].shape() == in.shape(), "backward of '", op_name(node->op), "': gradient ",
                 gin[i].desc(), " for input ", i, " of shape ", in.desc());
      NALA_CHECK(gin[i].dtype() == in.dtype(), "backward of '", op_name(node->op), "': gradient ", gin[i].desc(),
                 " for input ", i, " ", in.desc(), ": a gradient has its tensor's dtype");
      if (in.grad_fn()) {
        add_grad_interior(grads[in.grad_fn().get()], gin[i]);
      } else {
        Tensor slot = in.grad();
        add_grad_leaf(slot, gin[i]);
        in.set_grad(slot);
      }
    }
    if (!retain_graph) {
      node->backward = nullptr;
      node->scatter = nullptr;
      node->inputs.clear();
    }
    report(n);
  }
}

}  // namespace nala
