#include "engine/autograd.h"

#include <chrono>
#include <stdexcept>
#include <unordered_map>

#include "engine/profiler.h"
#include "engine/device.h"
#include "engine/dispatch.h"

namespace cpets {
namespace {

thread_local bool g_grad_enabled = true;

class FunctionNode final : public Node {
 public:
  FunctionNode(const char* n, BackwardFn fn, std::vector<bool> needs)
      : Node(n), fn_(std::move(fn)), needs_(std::move(needs)) {}
  std::vector<Tensor> apply(const Tensor& grad_out) override {
    if (!fn_) throw std::logic_error("backward through '" + name + "' a second time: its saved tensors were released");
    std::vector<Tensor> grads = fn_(grad_out, needs_);
    fn_ = nullptr;  // release saved tensors now
    if (grads.size() != next.size())
      throw std::logic_error("backward of '" + name + "' returned " + std::to_string(grads.size()) +
                             " gradients for " + std::to_string(next.size()) + " inputs");
    return grads;
  }
 private:
  BackwardFn fn_;
  std::vector<bool> needs_;
};

void accumulate_into(std::shared_ptr<TensorImpl>& slot, const Tensor& g) {
  if (!slot) {
    slot = g.clone().impl_ptr();  // copy: g may alias a buffer that is reused downstream
    return;
  }
  Tensor acc(slot);
  if (acc.shape() != g.shape())
    throw std::logic_error("gradient of shape " + g.str() + " accumulated into " + acc.str());
  // Each element is summed on its own, so any split over threads gives the same bits.
  dispatch::add_inplace(dispatch::same_device("gradient accumulation", {acc, g}), acc.data(), g.data(), acc.numel());
}

// a + b into a new tensor: neither may be written in place (either may alias a buffer an op
// returned or still holds). One parallel pass; it replaced a serial clone plus an in-place add.
Tensor gradient_sum(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape())
    throw std::logic_error("gradient of shape " + b.str() + " accumulated into " + a.str());
  const Device d = dispatch::same_device("gradient accumulation", {a, b});
  Tensor out = Tensor::empty(a.shape(), d);
  dispatch::binary_broadcast(d, dispatch::BinaryOp::Add, a.data(), a.shape(), b.data(), b.shape(), out.data(),
                             out.shape());
  return out;
}

class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(const std::shared_ptr<TensorImpl>& leaf) : Node("AccumulateGrad"), leaf_(leaf) {}
  std::vector<Tensor> apply(const Tensor& grad_out) override {
    if (auto leaf = leaf_.lock()) {
      if (grad_out.shape() != leaf->shape)
        throw std::logic_error("gradient " + grad_out.str() + " for leaf of shape " + shape_str(leaf->shape));
      accumulate_into(leaf->grad, grad_out);
      if (leaf->post_accumulate_hook) leaf->post_accumulate_hook();
    }
    return {};
  }
 private:
  std::weak_ptr<TensorImpl> leaf_;
};

std::shared_ptr<Node> gradient_edge(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return nullptr;
  TensorImpl* impl = t.impl();
  if (impl->grad_fn) return impl->grad_fn;
  auto acc = impl->grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t.impl_ptr());
    impl->grad_accumulator = acc;
  }
  return acc;
}

// Runs a node's backward, timing it for the profiler when that is on.
std::vector<Tensor> timed_apply(Node& node, const Tensor& grad) {
  if (!profiler::enabled()) return node.apply(grad);
  cuda_synchronize();  // device work is asynchronous: time the node's kernels, not their launch
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Tensor> grads = node.apply(grad);
  cuda_synchronize();
  profiler::backward_op(node.name.c_str(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return grads;
}

}  // namespace

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev_; }

Tensor record(Tensor out, const char* name, const std::vector<Tensor>& inputs, BackwardFn fn) {
  if (profiler::enabled()) profiler::forward_op_done(name);
  if (!g_grad_enabled) return out;
  std::vector<bool> needs(inputs.size());
  bool any = false;
  for (size_t i = 0; i < inputs.size(); ++i) any |= (needs[i] = inputs[i].requires_grad());
  if (!any) return out;
  auto node = std::make_shared<FunctionNode>(name, std::move(fn), needs);
  node->next.reserve(inputs.size());
  for (const Tensor& in : inputs) node->next.push_back(gradient_edge(in));
  out.impl()->requires_grad = true;
  out.impl()->grad_fn = std::move(node);
  return out;
}

Tensor sum_to_shape(const Tensor& grad, const Shape& shape) {
  if (grad.shape() == shape) return grad;
  const Shape& gs = grad.shape();
  const size_t nd = gs.size();
  if (shape.size() > nd) throw std::logic_error("sum_to_shape: " + grad.str() + " to " + shape_str(shape));
  // Align `shape` to the right, as broadcasting does.
  Shape target(nd, 1);
  for (size_t i = 0; i < shape.size(); ++i) target[nd - shape.size() + i] = shape[i];
  for (size_t i = 0; i < nd; ++i)
    if (target[i] != gs[i] && target[i] != 1)
      throw std::logic_error("sum_to_shape: " + grad.str() + " is not a broadcast of " + shape_str(shape));
  // Deterministic parallel sum over the broadcast dimensions (fixed chunking, double partials).
  std::vector<bool> reduce(nd);
  for (size_t i = 0; i < nd; ++i) reduce[i] = target[i] == 1;
  Tensor out = Tensor::empty(shape, grad.device());
  dispatch::sum_axes(grad.device(), grad.data(), gs, reduce, out.data());
  return out;
}

void run_backward(const Tensor& root, const Tensor& grad_output) {
  if (!root.requires_grad()) throw std::logic_error("backward() on a tensor that does not require grad");
  Tensor g = grad_output;
  if (!g.defined()) {
    if (root.numel() != 1) throw std::logic_error("backward() without a gradient needs a scalar, got " + root.str());
    g = Tensor::ones(root.shape(), root.device());
  } else if (g.shape() != root.shape()) {
    throw std::invalid_argument("backward(): gradient " + g.str() + " for tensor " + root.str());
  }
  std::shared_ptr<Node> start = root.is_leaf() ? nullptr : root.grad_fn();
  if (!start) {  // a leaf: accumulate directly
    std::shared_ptr<TensorImpl> impl = root.impl_ptr();
    accumulate_into(impl->grad, g);
    if (impl->post_accumulate_hook) impl->post_accumulate_hook();
    return;
  }
  // Count how many edges point at each node, so a node runs only once all its gradients arrived.
  std::unordered_map<Node*, int> deps;
  std::vector<Node*> stack{start.get()};
  deps[start.get()] = 0;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (auto& nx : n->next) {
      if (!nx) continue;
      auto [it, inserted] = deps.try_emplace(nx.get(), 0);
      it->second++;
      if (inserted) stack.push_back(nx.get());
    }
  }
  std::unordered_map<Node*, Tensor> pending;
  pending[start.get()] = g;
  std::vector<std::shared_ptr<Node>> ready{start};
  while (!ready.empty()) {
    std::shared_ptr<Node> node = std::move(ready.back());
    ready.pop_back();
    Tensor gin = std::move(pending[node.get()]);
    pending.erase(node.get());
    // A node whose every incoming gradient was undefined still runs its bookkeeping, so the
    // nodes below it see their dependency counts reach zero.
    std::vector<Tensor> grads = gin.defined() ? timed_apply(*node, gin) : std::vector<Tensor>(node->next.size());
    gin = Tensor();
    for (size_t i = 0; i < grads.size(); ++i) {
      const auto& nx = node->next[i];
      if (!nx) continue;
      if (grads[i].defined()) {
        auto it = pending.find(nx.get());
        if (it == pending.end()) {
          pending.emplace(nx.get(), grads[i]);
        } else {
          it->second = gradient_sum(it->second, grads[i]);
        }
      }
      if (--deps[nx.get()] == 0) ready.push_back(nx);
    }
    node->next.clear();  // drop references so the graph can be freed as we go
  }
}

void set_post_accumulate_grad_hook(const Tensor& leaf, std::function<void()> hook) {
  if (!leaf.defined() || !leaf.is_leaf())
    throw std::invalid_argument("set_post_accumulate_grad_hook: the tensor must be a leaf (a parameter), got " +
                                (leaf.defined() ? leaf.str() + " made by '" + leaf.grad_fn()->name + "'" : "undefined"));
  leaf.impl()->post_accumulate_hook = std::move(hook);
}

}  // namespace cpets
