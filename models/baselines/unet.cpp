#include "models/baselines/unet.h"

#include <set>
#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "engine/ops_elementwise.h"
#include "engine/ops_loss.h"
#include "engine/ops_shape.h"
#include "models/baselines/common.h"

namespace cpets::models {

using layers::Conv3d;
using layers::ConvOptions;
using layers::GroupNorm;
using layers::Resample;
using layers::ResnetBlock;
using layers::SpatialTransformer;

AttentionUNet::AttentionUNet(const ModelConfig& config, int64_t context_channels, Generator& init) {
  const auto& ch = config.baseline_channels;
  const int64_t G = config.baseline_groups, levels = static_cast<int64_t>(ch.size());
  const float eps = config.norm_eps;
  auto transformer = [&](int64_t c) {
    return std::make_shared<SpatialTransformer>(c, config.baseline_heads, context_channels, G, eps, config.ln_eps, init,
                                                /*zero_init_out=*/true);
  };
  conv_in_ = register_module("conv_in", std::make_shared<Conv3d>(1, ch[0], 3, init, ConvOptions{1, 1, true}));

  // Down: level l has two ResnetBlocks (the first changes the width), a transformer after each
  // at the deepest level, and a ResnetBlock(down) except at the deepest level.
  auto down_blocks = register_module("down_blocks", std::make_shared<ModuleList>());
  int64_t width = ch[0];
  for (int64_t l = 0; l < levels; ++l) {
    const bool deepest = l == levels - 1;
    auto block = down_blocks->push_back(std::make_shared<Module>());
    auto resnets = block->register_module("resnets", std::make_shared<ModuleList>());
    std::shared_ptr<ModuleList> attentions;
    if (deepest) attentions = block->register_module("attentions", std::make_shared<ModuleList>());
    Level level;
    for (int j = 0; j < 2; ++j) {  // MONAI builds each resnet, then its transformer
      level.resnets.push_back(resnets->push_back(std::make_shared<ResnetBlock>(j == 0 ? width : ch[l], ch[l], G, eps, init)));
      if (deepest) level.attentions.push_back(attentions->push_back(transformer(ch[l])));
    }
    if (!deepest)
      level.resample = block->register_module("downsampler",
                                              std::make_shared<ResnetBlock>(ch[l], ch[l], G, eps, init, Resample::down));
    down_.push_back(std::move(level));
    width = ch[l];
  }

  auto mid = register_module("middle_block", std::make_shared<Module>());
  mid_resnet_1_ = mid->register_module("resnet_1", std::make_shared<ResnetBlock>(width, width, G, eps, init));
  mid_attention_ = mid->register_module("attention", transformer(width));
  mid_resnet_2_ = mid->register_module("resnet_2", std::make_shared<ResnetBlock>(width, width, G, eps, init));

  // Up, deepest first: three ResnetBlocks per level, each on the concatenation with a skip (the
  // third's skip comes from the level above, hence its width), transformers at the deepest level,
  // a ResnetBlock(up) except at the last.
  auto up_blocks = register_module("up_blocks", std::make_shared<ModuleList>());
  int64_t previous = ch[levels - 1];
  for (int64_t i = 0; i < levels; ++i) {
    const int64_t l = levels - 1 - i, out = ch[l], above = ch[std::max<int64_t>(l - 1, 0)];
    auto block = up_blocks->push_back(std::make_shared<Module>());
    auto resnets = block->register_module("resnets", std::make_shared<ModuleList>());
    std::shared_ptr<ModuleList> attentions;
    if (i == 0) attentions = block->register_module("attentions", std::make_shared<ModuleList>());
    Level level;
    for (int j = 0; j < 3; ++j) {
      const int64_t skip = j == 2 ? above : out, in = j == 0 ? previous : out;
      level.resnets.push_back(resnets->push_back(std::make_shared<ResnetBlock>(in + skip, out, G, eps, init)));
      if (i == 0) level.attentions.push_back(attentions->push_back(transformer(out)));
    }
    if (l > 0)
      level.resample =
          block->register_module("upsampler", std::make_shared<ResnetBlock>(out, out, G, eps, init, Resample::up));
    up_.push_back(std::move(level));
    previous = out;
  }
  out_norm_ = register_module("out_norm", std::make_shared<GroupNorm>(G, ch[0], eps));
  out_conv_ = register_module("out_conv", std::make_shared<Conv3d>(ch[0], 1, 3, init, ConvOptions{1, 1, true}));
  out_conv_->zero_();  // MONAI's zero_module: the untrained U-Net outputs zeros
}

Tensor AttentionUNet::forward(const Tensor& x, const Tensor& context) const {
  baselines::require_image(x, 1, "AttentionUNet", "T1");
  Tensor h = conv_in_->forward(x);
  std::vector<Tensor> skips{h};
  for (const Level& level : down_) {
    for (size_t j = 0; j < level.resnets.size(); ++j) {
      h = level.resnets[j]->forward(h);
      if (j < level.attentions.size()) h = level.attentions[j]->forward(h, context);
      skips.push_back(h);
    }
    if (level.resample) {
      h = level.resample->forward(h);
      skips.push_back(h);
    }
  }
  h = mid_resnet_2_->forward(mid_attention_->forward(mid_resnet_1_->forward(h), context));
  for (const Level& level : up_) {
    for (size_t j = 0; j < level.resnets.size(); ++j) {
      h = level.resnets[j]->forward(concat({h, skips.back()}, 1));
      skips.pop_back();
      if (j < level.attentions.size()) h = level.attentions[j]->forward(h, context);
    }
    if (level.resample) h = level.resample->forward(h);
  }
  return out_conv_->forward(out_norm_->forward_silu(h));
}

std::vector<Tensor> AttentionUNet::cross_attention_parameters() const {
  std::vector<Tensor> out;
  auto add = [&](const std::shared_ptr<SpatialTransformer>& t) {
    for (auto& [name, p] : t->attn2->named_parameters()) out.push_back(p);
  };
  for (const Level& level : down_)
    for (const auto& t : level.attentions) add(t);
  add(mid_attention_);
  for (const Level& level : up_)
    for (const auto& t : level.attentions) add(t);
  return out;
}

AttentionUNetModel::AttentionUNetModel(const ModelConfig& config, Generator& init) : SynthesisModel(config) {
  if (config.kind != "unet" && config.kind != "unet-cond")
    throw std::invalid_argument("AttentionUNetModel: model kind is \"" + config.kind + "\", not \"unet\" or \"unet-cond\"");
  unet = register_module("unet", std::make_shared<AttentionUNet>(config, config.fusion_inputs(), init));
  if (config.discriminator)
    discriminator = register_module("discriminator",
                                    std::make_shared<PatchDiscriminator>(1, config, init));
}

Tensor AttentionUNetModel::context(const Tensor& csf, const Tensor& covariates) const {
  const Tensor tabular = baselines::tabular_vector(config(), csf, covariates, "AttentionUNet");
  const Tensor token = reshape(tabular, {tabular.size(0), 1, tabular.size(1)});
  return conditional() ? token : mul_scalar(token, 0.f);
}

Tensor AttentionUNetModel::synthesise(const Abduction& a, const Tensor& csf, const Tensor& covariates) const {
  return unet->forward(a.t1, context(csf, covariates));
}

NamedTensors AttentionUNetModel::generator_parameters() const { return unet->named_parameters("unet."); }

NamedTensors AttentionUNetModel::discriminator_parameters() const {
  return discriminator ? discriminator->named_parameters("discriminator.") : NamedTensors{};
}

std::pair<NamedTensors, NamedTensors> AttentionUNetModel::split_conditional_path() const {
  if (!conditional()) return SynthesisModel::split_conditional_path();
  std::set<const TensorImpl*> cross;
  for (const Tensor& p : unet->cross_attention_parameters()) cross.insert(p.impl());
  NamedTensors conditional, rest;
  for (auto& [name, p] : generator_parameters()) (cross.count(p.impl()) ? conditional : rest).emplace_back(name, p);
  return {std::move(conditional), std::move(rest)};
}

LossTerms AttentionUNetModel::generator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& ctx) const {
  const Tensor fake = synthesise(Abduction{in.t1, {}}, in.csf, in.covariates);
  return baselines::l1_adversarial_loss(fake, pet, ctx.objective,
                                        discriminator ? [&](const Tensor& x) { return discriminator->forward(x); }
                                                      : baselines::Critic());
}

LossTerms AttentionUNetModel::discriminator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& /*ctx*/) const {
  if (!discriminator) throw std::logic_error("AttentionUNetModel: no discriminator (discriminator = false); skip the D step");
  Tensor fake;
  {
    NoGradGuard no_grad;
    fake = synthesise(Abduction{in.t1, {}}, in.csf, in.covariates);
  }
  return baselines::lsgan_discriminator_loss([&](const Tensor& x) { return discriminator->forward(x); }, fake.detach(),
                                             pet);
}

}  // namespace cpets::models
