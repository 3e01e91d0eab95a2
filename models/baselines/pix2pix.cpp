#include "models/baselines/pix2pix.h"

#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "engine/ops_conv.h"
#include "engine/ops_elementwise.h"
#include "engine/ops_shape.h"
#include "models/baselines/common.h"

namespace cpets::models {

using layers::BatchNorm3d;
using layers::Conv3d;
using layers::ConvOptions;

namespace {
constexpr float kSlope = 0.2f;
}  // namespace

Pix2PixGenerator::Pix2PixGenerator(const ModelConfig& config, Generator& init) {
  const auto& ch = config.baseline_channels;
  const int64_t levels = static_cast<int64_t>(ch.size());
  auto conv = [&](const std::string& name, int64_t in, int64_t out, int64_t kernel, int64_t stride, bool bias) {
    return baselines::normal_init(
        register_module(name, std::make_shared<Conv3d>(in, out, kernel, init, ConvOptions{stride, 1, bias})), init);
  };
  auto norm = [&](const std::string& name, int64_t channels) {
    return baselines::normal_init(
        register_module(name, std::make_shared<BatchNorm3d>(channels, config.bn_eps, config.bn_momentum)), init);
  };
  int64_t in = 1;
  for (int64_t l = 0; l < levels; ++l) {  // BatchNorm between the outermost and the innermost
    const bool normed = l > 0 && l < levels - 1;
    down_.push_back(conv("down" + std::to_string(l), in, ch[l], 4, 2, !normed));
    down_norm_.push_back(normed ? norm("down_norm" + std::to_string(l), ch[l]) : nullptr);
    in = ch[l];
  }
  // Up level l produces level l−1's width (1 for the outermost) from the deeper output
  // concatenated with level l's skip (the innermost has no skip).
  for (int64_t l = levels - 1; l >= 0; --l) {
    const int64_t from = l == levels - 1 ? ch[l] : 2 * ch[l], to = l == 0 ? 1 : ch[l - 1];
    const bool normed = l > 0;
    up_.push_back(conv("up" + std::to_string(l), from, to, 3, 1, !normed));
    up_norm_.push_back(normed ? norm("up_norm" + std::to_string(l), to) : nullptr);
  }
}

Tensor Pix2PixGenerator::forward(const Tensor& image) const {
  baselines::require_image(image, 1, "Pix2PixGenerator", "input image (T1, or PET for CycleGAN's inverse)");
  std::vector<Tensor> skips;
  Tensor h = image;
  for (size_t l = 0; l < down_.size(); ++l) {
    if (l > 0) h = leaky_relu(h, kSlope);
    h = down_[l]->forward(h);
    if (down_norm_[l]) h = down_norm_[l]->forward(h);
    skips.push_back(h);
  }
  skips.pop_back();  // the innermost output is h itself
  for (size_t i = 0; i < up_.size(); ++i) {
    h = up_[i]->forward(upsample_nearest2x(relu(h)));
    if (up_norm_[i]) {
      h = concat({up_norm_[i]->forward(h), skips.back()}, 1);
      skips.pop_back();
    }
  }
  return mul_scalar(add_scalar(tanh(h), 1.f), 0.5f);  // ½(tanh + 1): the data's [0, 1]
}

ConditionalGAN::ConditionalGAN(const ModelConfig& config, const char* kind) : SynthesisModel(config) {
  if (config.kind != kind)
    throw std::invalid_argument(std::string(kind) + ": model kind is \"" + config.kind + "\"");
}

void ConditionalGAN::add_discriminator(Generator& init) {
  if (config().discriminator)
    discriminator = register_module("discriminator", std::make_shared<PatchDiscriminator>(2, config(), init));
}

Tensor ConditionalGAN::synthesise(const Abduction& a, const Tensor& /*csf*/, const Tensor& /*covariates*/) const {
  return translate(a.t1);
}

NamedTensors ConditionalGAN::generator_parameters() const { return generator_module().named_parameters("generator."); }

NamedTensors ConditionalGAN::discriminator_parameters() const {
  return discriminator ? discriminator->named_parameters("discriminator.") : NamedTensors{};
}

LossTerms ConditionalGAN::generator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& ctx) const {
  const Tensor fake = translate(in.t1);
  baselines::Critic critic;
  if (discriminator) critic = [&](const Tensor& x) { return discriminator->forward(concat({in.t1, x}, 1)); };
  LossTerms loss = baselines::l1_adversarial_loss(fake, pet, ctx.objective, critic);
  add_terms(fake, pet, ctx.objective, loss);
  return loss;
}

LossTerms ConditionalGAN::discriminator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& /*ctx*/) const {
  if (!discriminator)
    throw std::logic_error(kind() + ": no discriminator (discriminator = false); skip the D step");
  Tensor fake;
  {
    NoGradGuard no_grad;
    fake = translate(in.t1);
  }
  return baselines::lsgan_discriminator_loss(
      [&](const Tensor& x) { return discriminator->forward(concat({in.t1, x}, 1)); }, fake.detach(), pet);
}

Pix2Pix::Pix2Pix(const ModelConfig& config, Generator& init) : ConditionalGAN(config, "pix2pix") {
  generator = register_module("generator", std::make_shared<Pix2PixGenerator>(config, init));
  add_discriminator(init);
}

}  // namespace cpets::models
