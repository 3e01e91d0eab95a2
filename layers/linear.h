// Linear: PyTorch's "weight" (out, in) and "bias" (out), PyTorch's default init.
#pragma once
#include "engine/module.h"
#include "engine/rng.h"

namespace cpets::layers {

class Linear : public Module {
 public:
  // Weight ~ kaiming_uniform(a = √5) = U(±1/√in), bias ~ U(±1/√in), drawn in that order.
  Linear(int64_t in_features, int64_t out_features, Generator& init, bool bias = true);
  Tensor forward(const Tensor& x) const;  // x (…, in) → (…, out)
  void zero_();

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

  Tensor weight, bias;

 private:
  int64_t in_, out_;
};

}  // namespace cpets::layers
