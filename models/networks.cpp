// The networks of docs/model.md §3. State-dict names follow MONAI GenerativeModels' U-Net and
// KL-autoencoder naming where one exists (conv_in, down_blocks.i.resnets.j, norm_out…);
// tools/torch_model.py builds the same names in PyTorch.
#include "models/networks.h"

#include <stdexcept>
#include <string>

#include "engine/init.h"
#include "engine/ops_elementwise.h"
#include "engine/ops_shape.h"

namespace cpets::models {

using layers::Conv3d;
using layers::ConvOptions;
using layers::GroupNorm;
using layers::Resample;
using layers::ResnetBlock;
using layers::SpatialTransformer;

namespace {
const ConvOptions kSame3{1, 1, true};  // 3³, stride 1, pad 1

// Width of the context tokens each transformer reads: c_ctx from an MLP, or the raw tabular
// vector (one token of csf + covariate values) in the reference code's "raw" fusion.
int64_t fusion_token_width(const ModelConfig& c) { return c.fusion == "raw" ? c.fusion_inputs() : c.context_width; }

void require_volume(const Tensor& x, int64_t channels, const char* who, const char* what) {
  if (x.dim() != 5 || x.size(1) != channels)
    throw std::invalid_argument(std::string(who) + ": " + what + " must be (B, " + std::to_string(channels) +
                                ", D, H, W), got " + x.str());
}
}  // namespace

// ---- f and MLP_M ------------------------------------------------------------------------------

FusionMLP::FusionMLP(int64_t inputs, const ModelConfig& config, Generator& init) : inputs_(inputs) {
  if (inputs < 1) throw std::invalid_argument("FusionMLP: needs at least one input, got " + std::to_string(inputs));
  if (config.fusion == "raw") {
    tokens_ = 1;
    width_ = inputs;
    return;
  }
  tokens_ = config.fusion_tokens;
  width_ = config.context_width;
  const int64_t w = config.fusion_width;
  fc1_ = register_module("fc1", std::make_shared<layers::Linear>(inputs, w, init));
  fc2_ = register_module("fc2", std::make_shared<layers::Linear>(w, w, init));
  fc3_ = register_module("fc3", std::make_shared<layers::Linear>(w, tokens_ * width_, init));
}

Tensor FusionMLP::forward(const Tensor& x) const {
  if (x.dim() != 2 || x.size(1) != inputs_)
    throw std::invalid_argument("FusionMLP: input must be (B, " + std::to_string(inputs_) +
                                ") normalised tabular values, got " + x.str());
  const int64_t B = x.size(0);
  if (!fc1_) return reshape(x, {B, 1, inputs_});
  const Tensor h = silu(fc2_->forward(silu(fc1_->forward(x))));
  return reshape(fc3_->forward(h), {B, tokens_, width_});
}

// ---- E ------------------------------------------------------------------------------------------

Encoder::Encoder(const ModelConfig& config, Generator& init) {
  const auto& ch = config.encoder_channels;
  const int64_t G = config.encoder_groups;
  const float eps = config.norm_eps;
  conv_in_ = register_module("conv_in", std::make_shared<Conv3d>(1, ch[0], 3, init, kSame3));
  auto levels = register_module("down_blocks", std::make_shared<ModuleList>());
  int64_t in = ch[0];
  for (int64_t out : ch) {
    auto level = levels->push_back(std::make_shared<Module>());
    auto resnets = level->register_module("resnets", std::make_shared<ModuleList>());
    blocks_.push_back(resnets->push_back(std::make_shared<ResnetBlock>(in, out, G, eps, init)));
    blocks_.push_back(resnets->push_back(std::make_shared<ResnetBlock>(out, out, G, eps, init)));
    blocks_.push_back(level->register_module("downsampler",
                                             std::make_shared<ResnetBlock>(out, out, G, eps, init, Resample::down)));
    in = out;
  }
  int64_t context = 0;
  if (config.fusion != "raw") {
    demographics = register_module("demographics", std::make_shared<FusionMLP>(config.covariate_inputs, config, init));
    context = config.context_width;
  }
  transformer = register_module("transformer", std::make_shared<SpatialTransformer>(
                                                   ch[2], config.encoder_heads, context, G, eps, config.ln_eps, init,
                                                   config.transformer_zero_init));
  norm_out_ = register_module("norm_out", std::make_shared<GroupNorm>(G, ch[2], eps));
  conv_out_ = register_module("conv_out", std::make_shared<Conv3d>(ch[2], 2 * config.latent_channels, 3, init, kSame3));
}

Tensor Encoder::forward(const Tensor& t1, const Tensor& covariates) const {
  require_volume(t1, 1, "Encoder", "T1");
  for (int d = 2; d < 5; ++d)
    if (t1.size(d) % 8 != 0)
      throw std::invalid_argument("Encoder: T1 " + t1.str() + " has a spatial size not divisible by 8; pad or crop it");
  Tensor h = conv_in_->forward(t1);
  for (const auto& block : blocks_) h = block->forward(h);
  const Tensor m = demographics ? demographics->forward(covariates) : Tensor();
  h = transformer->forward(h, m);
  return conv_out_->forward(norm_out_->forward_silu(h));
}

// ---- G_T1 ---------------------------------------------------------------------------------------

T1Decoder::T1Decoder(const ModelConfig& config, Generator& init) {
  const auto& ch = config.t1_decoder_channels;
  const int64_t G = config.t1_decoder_groups;
  const float eps = config.norm_eps;
  conv_in_ = register_module("conv_in", std::make_shared<Conv3d>(config.latent_channels, ch[0], 3, init, kSame3));
  auto blocks = register_module("blocks", std::make_shared<ModuleList>());
  // Per level: two AE ResBlocks (the first changes the width), then an Upsample except at the end.
  int64_t in = ch[0];
  for (size_t level = 0; level < ch.size(); ++level) {
    blocks_.push_back(blocks->push_back(std::make_shared<layers::AEResBlock>(in, ch[level], G, eps, init)));
    blocks_.push_back(blocks->push_back(std::make_shared<layers::AEResBlock>(ch[level], ch[level], G, eps, init)));
    in = ch[level];
    if (level + 1 < ch.size()) blocks_.push_back(blocks->push_back(std::make_shared<layers::Upsample>(in, init)));
  }
  norm_out_ = register_module("norm_out", std::make_shared<GroupNorm>(G, in, eps));
  conv_out_ = register_module("conv_out", std::make_shared<Conv3d>(in, 1, 3, init, kSame3));
}

Tensor T1Decoder::forward(const Tensor& z) const {
  require_volume(z, conv_in_->in_channels(), "T1Decoder", "latent z");
  Tensor h = conv_in_->forward(z);
  for (const auto& block : blocks_) h = block->forward(h);
  // No SiLU after the last GroupNorm and no output activation (faithful to the reference).
  return conv_out_->forward(norm_out_->forward(h));
}

// ---- G_P ----------------------------------------------------------------------------------------

PETGenerator::PETGenerator(const ModelConfig& config, Generator& init) {
  const auto& ch = config.generator_channels;
  const int64_t G = config.generator_groups;
  const float eps = config.norm_eps;
  conv_in_ = register_module("conv_in", std::make_shared<Conv3d>(config.latent_channels, ch[0], 3, init, kSame3));
  auto up_blocks = register_module("up_blocks", std::make_shared<ModuleList>());
  int64_t in = ch[0];
  for (size_t l = 0; l < ch.size(); ++l) {
    auto module = up_blocks->push_back(std::make_shared<Module>());
    auto resnets = module->register_module("resnets", std::make_shared<ModuleList>());
    Level level;
    for (int i = 0; i < 3; ++i) {
      level.resnets.push_back(resnets->push_back(std::make_shared<ResnetBlock>(i == 0 ? in : ch[l], ch[l], G, eps, init)));
    }
    if (l == 0) {  // three Atten-ResBlocks: the first cross-attends to B, the other two self-attend
      auto attentions = module->register_module("attentions", std::make_shared<ModuleList>());
      for (int i = 0; i < 3; ++i) {
        const int64_t context = i == 0 ? fusion_token_width(config) : 0;
        level.attentions.push_back(attentions->push_back(std::make_shared<SpatialTransformer>(
            ch[l], config.generator_heads, context, G, eps, config.ln_eps, init, config.transformer_zero_init)));
      }
      // Registration order (resnets, attentions, upsampler) only fixes names; forward interleaves.
    }
    level.upsampler = module->register_module("upsampler", std::make_shared<layers::Upsample>(ch[l], init));
    levels_.push_back(level);
    in = ch[l];
  }
  norm_out_ = register_module("norm_out", std::make_shared<GroupNorm>(G, in, eps));
  conv_out_ = register_module("conv_out", std::make_shared<Conv3d>(in, 1, 3, init, kSame3));
}

std::vector<Tensor> PETGenerator::cross_attention_parameters() const {
  std::vector<Tensor> out;
  for (const Level& level : levels_)
    for (const auto& t : level.attentions)
      if (t->has_context())
        for (auto& [name, p] : t->attn2->named_parameters()) out.push_back(p);
  return out;
}

Tensor PETGenerator::forward(const Tensor& z, const Tensor& tokens) const {
  require_volume(z, conv_in_->in_channels(), "PETGenerator", "latent z");
  Tensor h = conv_in_->forward(z);
  for (const auto& level : levels_) {
    for (size_t i = 0; i < level.resnets.size(); ++i) {
      h = level.resnets[i]->forward(h);
      if (i < level.attentions.size()) h = level.attentions[i]->forward(h, i == 0 ? tokens : Tensor());
    }
    h = level.upsampler->forward(h);
  }
  return conv_out_->forward(norm_out_->forward_silu(h));  // linear output
}

// ---- D ------------------------------------------------------------------------------------------

PatchDiscriminator::PatchDiscriminator(int64_t in_channels, int64_t channels, int64_t layers, float bn_eps,
                                       float bn_momentum, Generator& init) {
  if (in_channels < 1 || channels < 1 || layers < 1)
    throw std::invalid_argument("PatchDiscriminator: in_channels " + std::to_string(in_channels) + ", channels " +
                                std::to_string(channels) + " and layers " + std::to_string(layers) +
                                " must all be at least 1");
  in_channels_ = in_channels;
  // Conv weights N(0, 0.02) replace the default draws (biases keep the default), BatchNorm γ ~
  // N(1, 0.02), β = 0, as the reference's initialisation.
  auto conv = [&](const std::string& name, int64_t in, int64_t out, int64_t stride, bool bias) {
    auto c = register_module(name, std::make_shared<Conv3d>(in, out, 4, init, ConvOptions{stride, 1, bias}));
    normal_(c->weight, init, 0.f, 0.02f);
    return c;
  };
  initial_conv_ = conv("initial_conv", in_channels, channels, 2, true);
  int64_t width = channels;
  for (int64_t i = 1; i <= layers; ++i) {  // the last one keeps the resolution
    const std::string n = std::to_string(i);
    convs_.push_back(conv("conv" + n, width, 2 * width, i < layers ? 2 : 1, false));
    norms_.push_back(register_module("norm" + n, std::make_shared<layers::BatchNorm3d>(2 * width, bn_eps, bn_momentum)));
    normal_(norms_.back()->weight, init, 1.f, 0.02f);
    width *= 2;
  }
  final_conv_ = conv("final_conv", width, 1, 1, true);
}

int64_t PatchDiscriminator::patch_size(int64_t n, int64_t layers) {
  for (int64_t i = 0; i < layers; ++i) n = (n - 2) / 2 + 1;  // initial conv and conv1..conv(layers−1)
  return n - 2;                                              // two stride-1 4³ convolutions
}

Tensor PatchDiscriminator::forward(const Tensor& x) const {
  require_volume(x, in_channels_, "PatchDiscriminator", "input");
  constexpr float kSlope = 0.2f;
  Tensor h = leaky_relu(initial_conv_->forward(x), kSlope);
  for (size_t i = 0; i < convs_.size(); ++i) h = leaky_relu(norms_[i]->forward(convs_[i]->forward(h)), kSlope);
  return final_conv_->forward(h);
}

}  // namespace cpets::models
