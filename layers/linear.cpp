#include "layers/linear.h"

#include <stdexcept>
#include <string>

#include "engine/init.h"
#include "engine/ops_linalg.h"

namespace cpets::layers {

Linear::Linear(int64_t in_features, int64_t out_features, Generator& init, bool with_bias)
    : in_(in_features), out_(out_features) {
  if (in_features < 1 || out_features < 1)
    throw std::invalid_argument("Linear: features must be positive, got " + std::to_string(in_features) + " → " +
                                std::to_string(out_features));
  weight = register_parameter("weight", Tensor::empty({out_features, in_features}));
  kaiming_uniform_(weight, init);
  if (with_bias) {
    bias = register_parameter("bias", Tensor::empty({out_features}));
    bias_uniform_(bias, in_features, init);
  }
}

Tensor Linear::forward(const Tensor& x) const {
  if (x.dim() < 1 || x.size(-1) != in_)
    throw std::invalid_argument("Linear(" + std::to_string(in_) + " → " + std::to_string(out_) +
                                "): input must end in " + std::to_string(in_) + " features, got " + x.str());
  return linear(x, weight, bias);
}

void Linear::zero_() {
  weight.fill_(0.f);
  if (bias.defined()) bias.fill_(0.f);
}

}  // namespace cpets::layers
