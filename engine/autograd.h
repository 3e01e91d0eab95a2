// Define-by-run reverse-mode autodiff. Each differentiable op calls `record` with its inputs and
// a backward closure; `Tensor::backward` sweeps the graph in topological order, accumulating
// gradients into leaves. A node's closure (and so its saved tensors) is released as soon as it
// has run, so activations are freed during the backward pass rather than after it.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace cpets {

// Gradient w.r.t. each input, in input order. `needs[i]` tells whether input i wants one; an
// undefined Tensor is fine where it does not. The closure must not capture its own output
// Tensor (that would be a reference cycle): capture `out.detach()` instead.
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_out, const std::vector<bool>& needs)>;

struct Node {
  explicit Node(std::string n) : name(std::move(n)) {}
  virtual ~Node() = default;
  virtual std::vector<Tensor> apply(const Tensor& grad_out) = 0;
  std::string name;
  std::vector<std::shared_ptr<Node>> next;  // one per input; null where no gradient flows
};

bool grad_enabled();

// Disables graph recording in its scope (inference, optimiser steps, EMA updates...).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;
 private:
  bool prev_;
};

// Attaches a backward to `out` if grad mode is on and any input requires grad. Returns `out`.
Tensor record(Tensor out, const char* name, const std::vector<Tensor>& inputs, BackwardFn fn);

// Reduces a broadcast gradient back to `shape` (sums over broadcast dimensions).
Tensor sum_to_shape(const Tensor& grad, const Shape& shape);

void run_backward(const Tensor& root, const Tensor& grad_output);

// Runs `hook` on the backward thread each time a backward pass has accumulated the last gradient
// it brings to `leaf` (its grad is then final for that pass), while the pass goes on with the
// rest of the graph: data-parallel training starts reducing gradients there. A leaf the pass
// gives no gradient does not call it. An empty function removes the hook.
void set_post_accumulate_grad_hook(const Tensor& leaf, std::function<void()> hook);

}  // namespace cpets
