#include "models/baselines/bmgan.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "engine/ops_elementwise.h"
#include "engine/ops_loss.h"
#include "engine/ops_norm.h"
#include "engine/ops_shape.h"
#include "models/baselines/common.h"

namespace cpets::models {

namespace bmgan {

namespace {
constexpr float kSlope = 0.2f;
constexpr float kInstanceNormEps = 1e-5f;  // nn.InstanceNorm3d's default

// InstanceNorm3d(affine = False): a GroupNorm with one channel per group and no γ, β.
Tensor instance_norm(const Tensor& x) { return group_norm(x, x.size(1), Tensor(), Tensor(), kInstanceNormEps); }
}  // namespace

ConvNormAct::ConvNormAct(int64_t in, int64_t out, int64_t stride, Activation act, Generator& init) : act_(act) {
  conv_ = register_module("conv", std::make_shared<layers::Conv3d>(in, out, 3, init, layers::ConvOptions{stride, 1, true}));
  if (act == Activation::prelu) {
    prelu_weight_ = register_parameter("prelu", Tensor::empty({1}));
    prelu_weight_.fill_(0.25f);  // nn.PReLU's init
  }
}

Tensor ConvNormAct::forward(const Tensor& x) const {
  const Tensor h = instance_norm(conv_->forward(x));
  switch (act_) {
    case Activation::relu: return relu(h);
    case Activation::leaky_relu: return leaky_relu(h, kSlope);
    case Activation::prelu: return sub(relu(h), mul(relu(neg(h)), prelu_weight_));  // max(h, 0) + a·min(h, 0)
  }
  throw std::logic_error("ConvNormAct: unknown activation");
}

ResidualUnit::ResidualUnit(int64_t in, int64_t out, int64_t stride, int64_t subunits, Activation act, Generator& init) {
  for (int64_t u = 0; u < subunits; ++u)
    units_.push_back(register_module("unit" + std::to_string(u),
                                     std::make_shared<ConvNormAct>(u == 0 ? in : out, out, u == 0 ? stride : 1, act, init)));
  if (stride != 1)
    shortcut_ = register_module("residual", std::make_shared<layers::Conv3d>(in, out, 3, init, layers::ConvOptions{stride, 1, true}));
  else if (in != out)
    shortcut_ = register_module("residual", std::make_shared<layers::Conv3d>(in, out, 1, init, layers::ConvOptions{1, 0, true}));
}

Tensor ResidualUnit::forward(const Tensor& x) const {
  Tensor h = x;
  for (const auto& u : units_) h = u->forward(h);
  return add(h, shortcut_ ? shortcut_->forward(x) : x);
}

DenseBlock::DenseBlock(int64_t in, int64_t out, Generator& init) {
  dense1_ = register_module("dense1", std::make_shared<ResidualUnit>(in, out, 1, 1, Activation::leaky_relu, init));
  conv1_ = register_module("conv1", std::make_shared<ConvNormAct>(in + out, out, 1, Activation::leaky_relu, init));
  dense2_ = register_module("dense2", std::make_shared<ResidualUnit>(out, out, 1, 1, Activation::leaky_relu, init));
  conv2_ = register_module("conv2", std::make_shared<ConvNormAct>(2 * out, out, 1, Activation::leaky_relu, init));
}

Tensor DenseBlock::forward(const Tensor& x) const {
  const Tensor h = conv1_->forward(concat({x, dense1_->forward(x)}, 1));
  return conv2_->forward(concat({h, dense2_->forward(h)}, 1));
}

}  // namespace bmgan

namespace {

using bmgan::Activation;
using bmgan::ConvNormAct;

// The reference's widths (bmgan_model.py) before bmgan_width_divisor.
constexpr int64_t kStem = 64, kEncoderInput = 32;
constexpr int64_t kDown[4] = {128, 256, 256, 512};
constexpr int64_t kUp[5] = {512, 256, 256, 256, 128};
constexpr int64_t kEncoder[6] = {64, 128, 128, 128, 128, 128};  // bmgan_levels + 2 of them

int64_t stride2_size(int64_t n) { return (n - 1) / 2 + 1; }  // Conv3³, stride 2, padding 1

}  // namespace

DenseUNetGenerator::DenseUNetGenerator(const ModelConfig& config, Generator& init) {
  const int64_t div = config.bmgan_width_divisor, levels = config.bmgan_levels, stem = kStem / div;
  auto cna = [&](const std::string& name, int64_t in, int64_t out, int64_t stride) {
    return register_module(name, std::make_shared<ConvNormAct>(in, out, stride, Activation::leaky_relu, init));
  };
  stem_ = {cna("stem0", 1 + kCodeSize, stem, 1), cna("stem1", stem, stem, 1), cna("stem2", stem, stem, 2)};
  std::vector<int64_t> skips = {stem};
  int64_t current = stem;
  for (int64_t l = 0; l < levels; ++l) {
    const int64_t c = kDown[l] / div;
    down_blocks_.push_back(register_module("down" + std::to_string(l), std::make_shared<bmgan::DenseBlock>(current, c, init)));
    down_convs_.push_back(cna("down" + std::to_string(l) + "_conv", c, c, 2));
    skips.push_back(c);
    current = c;
  }
  middle_ = register_module("middle", std::make_shared<bmgan::DenseBlock>(current, current, init));
  for (int64_t i = 0; i <= levels; ++i) {
    const int64_t c = kUp[4 - levels + i] / div, skip = skips[skips.size() - 1 - i];
    up_blocks_.push_back(register_module("up" + std::to_string(i), std::make_shared<bmgan::DenseBlock>(current + skip, c, init)));
    up_convs_.push_back(register_module("up" + std::to_string(i) + "_conv",
                                        std::make_shared<layers::ConvTranspose3d>(c, c, 4, init, layers::ConvOptions{2, 1, true})));
    current = c;
  }
  output_ = {cna("out0", current, stem, 1), cna("out1", stem, stem, 1)};
  to_pet_ = register_module("to_pet", std::make_shared<layers::Conv3d>(stem, 1, 3, init, layers::ConvOptions{1, 1, true}));
}

Tensor DenseUNetGenerator::forward(const Tensor& t1, const Tensor& code) const {
  baselines::require_image(t1, 1, "BMGAN generator", "T1");
  if (!code.defined() || code.dim() != 2 || code.size(0) != t1.size(0) || code.size(1) != kCodeSize)
    throw std::invalid_argument("BMGAN generator: the code must be (B, 8) for a batch of " + std::to_string(t1.size(0)) +
                                ", got " + (code.defined() ? code.str() : std::string("none")));
  // The code as 8 constant channels beside the T1.
  const Tensor planes = add(Tensor::zeros({t1.size(0), kCodeSize, t1.size(2), t1.size(3), t1.size(4)}, t1.device()),
                            reshape(code, {t1.size(0), kCodeSize, 1, 1, 1}));
  Tensor h = concat({t1, planes}, 1);
  for (const auto& s : stem_) h = s->forward(h);
  std::vector<Tensor> skips = {h};
  for (size_t l = 0; l < down_blocks_.size(); ++l) {
    h = down_convs_[l]->forward(down_blocks_[l]->forward(h));
    skips.push_back(h);
  }
  h = middle_->forward(h);
  for (size_t i = 0; i < up_blocks_.size(); ++i) {
    h = up_blocks_[i]->forward(concat({h, skips[skips.size() - 1 - i]}, 1));
    h = leaky_relu(bmgan::instance_norm(up_convs_[i]->forward(h)), bmgan::kSlope);
  }
  for (const auto& o : output_) h = o->forward(h);
  return tanh(to_pet_->forward(h));
}

ResNetEncoder::ResNetEncoder(const ModelConfig& config, Generator& init) {
  const int64_t div = config.bmgan_width_divisor;
  input_ = register_module("input", std::make_shared<ConvNormAct>(1, kEncoderInput / div, 1, Activation::relu, init));
  int64_t current = kEncoderInput / div;
  std::array<int64_t, 3> grid = config.volume;
  // The reference's six stages take 96 × 128 × 96 to 2 × 2 × 2; with fewer generator levels (the
  // smaller presets) the encoder stops as early, so that no InstanceNorm sees a single voxel.
  for (int64_t i = 0; i < config.bmgan_levels + 2; ++i) {
    const int64_t c = kEncoder[i] / div;
    stages_.push_back(register_module("stage" + std::to_string(i),
                                      std::make_shared<bmgan::ResidualUnit>(current, c, 2, 2, Activation::prelu, init)));
    current = c;
    for (auto& n : grid) n = stride2_size(n);
  }
  const int64_t features = current * grid[0] * grid[1] * grid[2];  // 128 × 2 × 2 × 2 on 96 × 128 × 96
  mu_ = register_module("mu", std::make_shared<layers::Linear>(features, DenseUNetGenerator::kCodeSize, init));
  log_variance_ = register_module("log_variance", std::make_shared<layers::Linear>(features, DenseUNetGenerator::kCodeSize, init));
}

std::pair<Tensor, Tensor> ResNetEncoder::forward(const Tensor& pet) const {
  baselines::require_image(pet, 1, "BMGAN encoder", "PET");
  Tensor h = input_->forward(pet);
  for (const auto& s : stages_) h = s->forward(h);
  h = reshape(h, {h.size(0), -1});
  return {mu_->forward(h), log_variance_->forward(h)};
}


BMGAN::BMGAN(const ModelConfig& config, Generator& init) : SynthesisModel(config) {
  if (config.kind != "bmgan") throw std::invalid_argument("BMGAN: model kind is \"" + config.kind + "\"");
  generator = register_module("generator", std::make_shared<DenseUNetGenerator>(config, init));
  encoder = register_module("encoder", std::make_shared<ResNetEncoder>(config, init));
  if (config.discriminator)
    discriminator = register_module("discriminator",
                                    std::make_shared<PatchDiscriminator>(1, config, init));
}

Tensor BMGAN::synthesise(const Abduction& a, const Tensor& /*csf*/, const Tensor& /*covariates*/) const {
  return generator->forward(a.t1, Tensor::zeros({a.t1.size(0), DenseUNetGenerator::kCodeSize}, a.t1.device()));
}

NamedTensors BMGAN::generator_parameters() const {
  NamedTensors p = generator->named_parameters("generator.");
  for (auto& named : encoder->named_parameters("encoder.")) p.push_back(named);
  return p;
}

NamedTensors BMGAN::discriminator_parameters() const {
  return discriminator ? discriminator->named_parameters("discriminator.") : NamedTensors{};
}

LossTerms BMGAN::generator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& ctx) const {
  const Tensor code = batch_noise({in.t1.size(0), DenseUNetGenerator::kCodeSize}, ctx.noise, ctx.shard, in.t1.device());
  const Tensor fake = generator->forward(in.t1, code);
  baselines::Critic critic;
  if (discriminator) critic = [&](const Tensor& x) { return discriminator->forward(x); };
  LossTerms g = baselines::l1_adversarial_loss(fake, pet, ctx.objective, critic);
  // E's own objective; the fake is detached, so no gradient of it reaches G.
  // The reference's −½ Σ(1 + log σ² − μ² − σ²), summed over the code and averaged over the batch.
  const auto [mu_real, lv_real] = encoder->forward(pet);
  const auto [mu_fake, lv_fake] = encoder->forward(fake.detach());
  const Tensor kl = add(kl_gaussian(mu_real, lv_real), kl_gaussian(mu_fake, lv_fake));
  g.total = add(g.total, kl);
  g.terms.push_back({"encoder_kl", kl.item()});
  return g;
}

LossTerms BMGAN::discriminator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& ctx) const {
  if (!discriminator) throw std::logic_error("BMGAN: no discriminator (discriminator = false); skip the D step");
  Tensor fake;
  {
    NoGradGuard no_grad;
    fake = generator->forward(in.t1, batch_noise({in.t1.size(0), DenseUNetGenerator::kCodeSize}, ctx.noise, ctx.shard,
                                                 in.t1.device()));
  }
  return baselines::lsgan_discriminator_loss([&](const Tensor& x) { return discriminator->forward(x); }, fake.detach(),
                                             pet);
}

std::vector<std::pair<std::string, int64_t>> BMGAN::parameter_table() const {
  return {{"G  dense U-Net generator", generator->num_parameters()},
          {"E  ResNet encoder (KL only)", encoder->num_parameters()},
          {"D  discriminator", discriminator ? discriminator->num_parameters() : 0},
          {"total", num_parameters()}};
}

}  // namespace cpets::models
