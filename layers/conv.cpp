#include "layers/conv.h"

#include <stdexcept>
#include <string>

#include "engine/init.h"
#include "engine/ops_conv.h"

namespace cpets::layers {

Conv3d::Conv3d(int64_t in_channels, int64_t out_channels, int64_t kernel, Generator& init, ConvOptions options)
    : in_(in_channels), out_(out_channels), kernel_(kernel), options_(options) {
  if (in_channels < 1 || out_channels < 1 || kernel < 1 || options.stride < 1 || options.padding < 0)
    throw std::invalid_argument("Conv3d: channels (" + std::to_string(in_channels) + " → " + std::to_string(out_channels) +
                                "), kernel " + std::to_string(kernel) + " and stride " + std::to_string(options.stride) +
                                " must be positive and padding " + std::to_string(options.padding) + " non-negative");
  weight = register_parameter("weight", Tensor::empty({out_channels, in_channels, kernel, kernel, kernel}));
  kaiming_uniform_(weight, init);
  if (options.bias) {
    bias = register_parameter("bias", Tensor::empty({out_channels}));
    bias_uniform_(bias, fan_in(weight), init);
  }
}

Tensor Conv3d::forward(const Tensor& x) const {
  if (x.dim() != 5 || x.size(1) != in_)
    throw std::invalid_argument("Conv3d(" + std::to_string(in_) + " → " + std::to_string(out_) +
                                "): input must be (B, " + std::to_string(in_) + ", D, H, W), got " + x.str());
  return conv3d(x, weight, bias, options_.stride, options_.padding);
}

void Conv3d::zero_() {
  weight.fill_(0.f);
  if (bias.defined()) bias.fill_(0.f);
}

ConvTranspose3d::ConvTranspose3d(int64_t in_channels, int64_t out_channels, int64_t kernel, Generator& init,
                                 ConvOptions options)
    : in_(in_channels), out_(out_channels), options_(options) {
  if (in_channels < 1 || out_channels < 1 || kernel < 1 || options.stride < 1 || options.padding < 0 ||
      options.padding >= kernel)
    throw std::invalid_argument("ConvTranspose3d: channels (" + std::to_string(in_channels) + " → " +
                                std::to_string(out_channels) + "), kernel " + std::to_string(kernel) + " and stride " +
                                std::to_string(options.stride) + " must be positive and padding " +
                                std::to_string(options.padding) + " in [0, kernel)");
  weight = register_parameter("weight", Tensor::empty({in_channels, out_channels, kernel, kernel, kernel}));
  kaiming_uniform_(weight, init);
  if (options.bias) {
    bias = register_parameter("bias", Tensor::empty({out_channels}));
    bias_uniform_(bias, fan_in(weight), init);
  }
}

Tensor ConvTranspose3d::forward(const Tensor& x) const {
  if (x.dim() != 5 || x.size(1) != in_)
    throw std::invalid_argument("ConvTranspose3d(" + std::to_string(in_) + " → " + std::to_string(out_) +
                                "): input must be (B, " + std::to_string(in_) + ", D, H, W), got " + x.str());
  return conv_transpose3d(x, weight, bias, options_.stride, options_.padding);
}

Upsample::Upsample(int64_t channels, Generator& init) {
  conv = register_module("conv", std::make_shared<Conv3d>(channels, channels, 3, init, ConvOptions{1, 1, true}));
}

Tensor Upsample::forward(const Tensor& x) const { return conv->forward(upsample_nearest2x(x)); }

}  // namespace cpets::layers
