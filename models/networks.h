// The five trained networks of Causal PETS, each a Module built from layers/ (docs/model.md §3).
// Constructors draw initial weights from a Generator in registration order.
#pragma once
#include <memory>

#include <vector>

#include "engine/module.h"
#include "engine/rng.h"
#include "layers/conv.h"
#include "layers/linear.h"
#include "layers/norm.h"
#include "layers/resnet.h"
#include "layers/transformer.h"
#include "models/config.h"

namespace cpets::models {

// MLP_M and f: Linear(n→w) → SiLU → Linear(w→w) → SiLU → Linear(w→K·c_ctx) → (B, K, c_ctx).
// With config.fusion == "raw" there is no MLP: forward returns the input as one token (B, 1, n).
class FusionMLP : public Module {
 public:
  FusionMLP(int64_t inputs, const ModelConfig& config, Generator& init);
  Tensor forward(const Tensor& x) const;  // x (B, inputs)
  int64_t tokens() const { return tokens_; }  // K
  int64_t width() const { return width_; }    // c_ctx

 private:
  std::shared_ptr<layers::Linear> fc1_, fc2_, fc3_;  // null with fusion == "raw"
  int64_t inputs_, tokens_, width_;
};

// E (g_S). forward returns the head's (B, 2z, d, h, w) output; channels [0, z) are μ, [z, 2z) s.
class Encoder : public Module {
 public:
  Encoder(const ModelConfig& config, Generator& init);
  Tensor forward(const Tensor& t1, const Tensor& covariates) const;
  std::shared_ptr<FusionMLP> demographics;  // MLP_M (null with fusion == "raw")
  std::shared_ptr<layers::SpatialTransformer> transformer;  // on the latent grid

 private:
  std::shared_ptr<layers::Conv3d> conv_in_, conv_out_;
  std::vector<std::shared_ptr<layers::ResnetBlock>> blocks_;  // per level: 2 plain + 1 down
  std::shared_ptr<layers::GroupNorm> norm_out_;
};

class T1Decoder : public Module {  // G_T1
 public:
  T1Decoder(const ModelConfig& config, Generator& init);
  Tensor forward(const Tensor& z) const;

 private:
  std::shared_ptr<layers::Conv3d> conv_in_, conv_out_;
  std::vector<std::shared_ptr<layers::Block>> blocks_;  // AE ResBlocks and Upsamples in order
  std::shared_ptr<layers::GroupNorm> norm_out_;
};

class PETGenerator : public Module {  // G_P
 public:
  PETGenerator(const ModelConfig& config, Generator& init);
  Tensor forward(const Tensor& z, const Tensor& tokens) const;
  // The attention that reads B (the cross-attention of the first transformer): with f, the
  // conditional path that train.lr_conditional_scale speeds up.
  std::vector<Tensor> cross_attention_parameters() const;

 private:
  struct Level {
    std::vector<std::shared_ptr<layers::ResnetBlock>> resnets;
    std::vector<std::shared_ptr<layers::SpatialTransformer>> attentions;  // level 0 only
    std::shared_ptr<layers::Upsample> upsampler;
  };
  std::shared_ptr<layers::Conv3d> conv_in_, conv_out_;
  std::vector<Level> levels_;
  std::shared_ptr<layers::GroupNorm> norm_out_;
};

// D: the PatchGAN of MONAI Generative's PatchDiscriminator (3-D, kernel 4, padding 1): an
// initial stride-2 conv + LeakyReLU(0.2), then `layers` convs without bias + BatchNorm +
// LeakyReLU doubling the width (stride 2 except the last), then a stride-1 conv to one logit map.
// Causal PETS: layers 2; the U-Net baselines' D: 64 channels, 3 layers (11,048,769 parameters).
class PatchDiscriminator : public Module {
 public:
  PatchDiscriminator(int64_t in_channels, int64_t channels, int64_t layers, float bn_eps, float bn_momentum,
                     Generator& init);
  // The config's discriminator_channels, discriminator_layers, bn_eps and bn_momentum.
  PatchDiscriminator(int64_t in_channels, const ModelConfig& config, Generator& init)
      : PatchDiscriminator(in_channels, config.discriminator_channels, config.discriminator_layers, config.bn_eps,
                           config.bn_momentum, init) {}
  Tensor forward(const Tensor& x) const;  // raw logits (B, 1, …)
  // The logit grid along an axis of n voxels (< 1: the volume is too small).
  static int64_t patch_size(int64_t n, int64_t layers);

 private:
  int64_t in_channels_;
  std::shared_ptr<layers::Conv3d> initial_conv_, final_conv_;
  std::vector<std::shared_ptr<layers::Conv3d>> convs_;
  std::vector<std::shared_ptr<layers::BatchNorm3d>> norms_;
};

}  // namespace cpets::models
