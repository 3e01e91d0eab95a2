#include "layers/norm.h"

#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "engine/ops_elementwise.h"
#include "engine/ops_norm.h"

namespace cpets::layers {

GroupNorm::GroupNorm(int64_t groups, int64_t channels, float eps) : groups_(groups), channels_(channels), eps_(eps) {
  if (groups < 1 || channels < 1 || channels % groups != 0)
    throw std::invalid_argument("GroupNorm: " + std::to_string(channels) + " channels cannot be split into " +
                                std::to_string(groups) + " groups; choose a group count that divides the channel count");
  weight = register_parameter("weight", Tensor::ones({channels}));
  bias = register_parameter("bias", Tensor::zeros({channels}));
}

void GroupNorm::check(const Tensor& x) const {
  if (x.dim() < 2 || x.size(1) != channels_)
    throw std::invalid_argument("GroupNorm(" + std::to_string(groups_) + ", " + std::to_string(channels_) +
                                "): input must be (B, " + std::to_string(channels_) + ", …), got " + x.str());
}

Tensor GroupNorm::forward(const Tensor& x) const {
  check(x);
  return group_norm(x, groups_, weight, bias, eps_);
}

Tensor GroupNorm::forward_silu(const Tensor& x) const {
  check(x);
  return group_norm_silu(x, groups_, weight, bias, eps_);
}

LayerNorm::LayerNorm(int64_t features, float eps) : features_(features), eps_(eps) {
  if (features < 1) throw std::invalid_argument("LayerNorm: features must be positive, got " + std::to_string(features));
  weight = register_parameter("weight", Tensor::ones({features}));
  bias = register_parameter("bias", Tensor::zeros({features}));
}

Tensor LayerNorm::forward(const Tensor& x) const {
  if (x.dim() < 1 || x.size(-1) != features_)
    throw std::invalid_argument("LayerNorm(" + std::to_string(features_) + "): input must end in " +
                                std::to_string(features_) + " features, got " + x.str());
  return layer_norm(x, weight, bias, eps_);
}

BatchNorm3d::BatchNorm3d(int64_t channels, float eps, float momentum) : channels_(channels), eps_(eps), momentum_(momentum) {
  if (channels < 1) throw std::invalid_argument("BatchNorm3d: channels must be positive, got " + std::to_string(channels));
  weight = register_parameter("weight", Tensor::ones({channels}));
  bias = register_parameter("bias", Tensor::zeros({channels}));
  running_mean = register_buffer("running_mean", Tensor::zeros({channels}));
  running_var = register_buffer("running_var", Tensor::ones({channels}));
  num_batches_tracked = register_buffer("num_batches_tracked", Tensor::zeros({}));
}

Tensor BatchNorm3d::forward(const Tensor& x) const {
  if (x.dim() != 5 || x.size(1) != channels_)
    throw std::invalid_argument("BatchNorm3d(" + std::to_string(channels_) + "): input must be (B, " +
                                std::to_string(channels_) + ", D, H, W), got " + x.str());
  const bool training = is_training();
  if (training) {
    // The handles share storage with the registered buffers: the counter lives in the state_dict.
    // Incremented by an op, not through data(): on a GPU the buffer is device memory.
    NoGradGuard no_grad;
    Tensor counter = num_batches_tracked;
    counter.copy_from(add_scalar(counter.detach(), 1.f));
  }
  return batch_norm3d(x, weight, bias, running_mean, running_var, training, momentum_, eps_);
}

}  // namespace cpets::layers
