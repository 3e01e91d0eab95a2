// GroupNorm, LayerNorm and BatchNorm3d with PyTorch's parameter and buffer names, so their
// state_dicts interchange with torch.nn's. All affine: weight = 1, bias = 0 at init.
#pragma once
#include "engine/module.h"

namespace cpets::layers {

class GroupNorm : public Module {
 public:
  GroupNorm(int64_t groups, int64_t channels, float eps);
  Tensor forward(const Tensor& x) const;       // x (B, C, …)
  Tensor forward_silu(const Tensor& x) const;  // SiLU(GN(x)) fused (the U-Net blocks' pair)

  int64_t groups() const { return groups_; }
  int64_t channels() const { return channels_; }
  Tensor weight, bias;

 private:
  void check(const Tensor& x) const;
  int64_t groups_, channels_;
  float eps_;
};

class LayerNorm : public Module {
 public:
  LayerNorm(int64_t features, float eps);
  Tensor forward(const Tensor& x) const;  // normalises the last dimension
  Tensor weight, bias;

 private:
  int64_t features_;
  float eps_;
};

// Training mode: batch statistics, and running_mean / running_var updated with `momentum`
// (unbiased variance) and num_batches_tracked incremented, as PyTorch. Eval: running statistics.
// num_batches_tracked is a float scalar here (PyTorch: int64); safetensors files written by
// PyTorch load into it by conversion, and PyTorch's load_state_dict converts ours back.
class BatchNorm3d : public Module {
 public:
  BatchNorm3d(int64_t channels, float eps = 1e-5f, float momentum = 0.1f);
  Tensor forward(const Tensor& x) const;  // x (B, C, D, H, W)
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  int64_t channels_;
  float eps_, momentum_;
};

}  // namespace cpets::layers
