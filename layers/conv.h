// Conv3d (PyTorch's parameters "weight" (out, in, k, k, k) and "bias" (out), PyTorch's default
// init), ConvTranspose3d (BMGAN's learnt up-sampling) and Upsample (nearest ×2, then a 3³
// convolution: what the MONAI U-Nets use).
#pragma once
#include "engine/rng.h"
#include "layers/block.h"

namespace cpets::layers {

struct ConvOptions {
  int64_t stride = 1;
  int64_t padding = 0;
  bool bias = true;
};

class Conv3d : public Block {
 public:
  // Weight ~ kaiming_uniform(a = √5), bias ~ U(±1/√fan_in), drawn in that order from `init`.
  Conv3d(int64_t in_channels, int64_t out_channels, int64_t kernel, Generator& init, ConvOptions options = {});
  Tensor forward(const Tensor& x) const override;
  // Zeroes weight and bias (the "zero_module" of the U-Net blocks: their residual branch starts
  // as nothing). The default draws were made first, as PyTorch does.
  void zero_();

  int64_t in_channels() const { return in_; }
  int64_t out_channels() const { return out_; }

  Tensor weight, bias;  // bias undefined when options.bias is false

 private:
  int64_t in_, out_, kernel_;
  ConvOptions options_;
};

// PyTorch's ConvTranspose3d without output padding: "weight" (in, out, k, k, k), "bias" (out);
// the default init draws as PyTorch's (fan_in = out · k³, from the weight's second axis).
class ConvTranspose3d : public Block {
 public:
  ConvTranspose3d(int64_t in_channels, int64_t out_channels, int64_t kernel, Generator& init, ConvOptions options = {});
  Tensor forward(const Tensor& x) const override;

  Tensor weight, bias;

 private:
  int64_t in_, out_;
  ConvOptions options_;
};

class Upsample : public Block {
 public:
  Upsample(int64_t channels, Generator& init);
  Tensor forward(const Tensor& x) const override;  // (B, C, 2D, 2H, 2W)
  std::shared_ptr<Conv3d> conv;
};

}  // namespace cpets::layers
