// The U-Net baselines of the paper's Table 1, as the reference code trains them
// (reference-implementation.md §7, `unet/scripts/train_unet.py`): MONAI Generative's
// DiffusionModelUNet without its time embedding ("AttenUNet"), T1 in, PET out, attention at the
// deepest level only, cross-attending to a context of one token.
//   kind "unet-cond": the context is the normalised tabular vector [B_CSF, M] (B × 1 × n);
//   kind "unet":      the context is zeros (the attention is still there; with one zero token
//                     its cross-attention adds only to_out's bias), as the reference.
// Loss: λ_l1·L1 + λ_adv·LSGAN with a PatchDiscriminator (64 channels, 3 layers in the full preset).
#pragma once
#include <memory>
#include <vector>

#include "layers/conv.h"
#include "layers/norm.h"
#include "layers/resnet.h"
#include "layers/transformer.h"
#include "models/networks.h"
#include "models/synthesis_model.h"

namespace cpets::models {

// channels c[0..3], two ResnetBlocks per level, down/up-sampling by ResnetBlocks (resblock_updown),
// a SpatialTransformer after every ResnetBlock of the deepest level and in the middle block,
// skip concatenation, GN → SiLU → zero-initialised Conv3³ out. State-dict names as MONAI
// Generative's (conv_in, down_blocks.i.resnets.j, middle_block.attention, up_blocks.i.upsampler…).
class AttentionUNet : public Module {
 public:
  AttentionUNet(const ModelConfig& config, int64_t context_channels, Generator& init);
  Tensor forward(const Tensor& x, const Tensor& context) const;  // x (B, 1, D, H, W), context (B, 1, n)
  // Every transformer's cross-attention (attn2): what reads the context.
  std::vector<Tensor> cross_attention_parameters() const;

 private:
  struct Level {
    std::vector<std::shared_ptr<layers::ResnetBlock>> resnets;
    std::vector<std::shared_ptr<layers::SpatialTransformer>> attentions;  // deepest level only
    std::shared_ptr<layers::ResnetBlock> resample;                        // null at the ends
  };
  std::shared_ptr<layers::Conv3d> conv_in_, out_conv_;
  std::vector<Level> down_, up_;
  std::shared_ptr<layers::ResnetBlock> mid_resnet_1_, mid_resnet_2_;
  std::shared_ptr<layers::SpatialTransformer> mid_attention_;
  std::shared_ptr<layers::GroupNorm> out_norm_;
};

class AttentionUNetModel : public SynthesisModel {
 public:
  AttentionUNetModel(const ModelConfig& config, Generator& init);

  bool conditional() const { return config().kind == "unet-cond"; }
  // (B, 1, csf_inputs + 4): [B_CSF, M] for "unet-cond", zeros for "unet".
  Tensor context(const Tensor& csf, const Tensor& covariates) const;

  Tensor synthesise(const Abduction& a, const Tensor& csf, const Tensor& covariates) const override;
  NamedTensors generator_parameters() const override;
  NamedTensors discriminator_parameters() const override;
  std::pair<NamedTensors, NamedTensors> split_conditional_path() const override;  // "unet-cond": cross-attentions
  LossTerms generator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& ctx) const override;
  LossTerms discriminator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& ctx) const override;

  std::shared_ptr<AttentionUNet> unet;
  std::shared_ptr<PatchDiscriminator> discriminator;  // null when config.discriminator is off
};

}  // namespace cpets::models
