// BMGAN (Hu et al., "Bidirectional mapping generative adversarial networks for brain MR to PET
// synthesis"), as the reference repository's `bl_methods/BMGAN` builds it
// (reference-implementation.md §7):
//   - G, a dense U-Net: T1 concatenated with an 8-dimensional code broadcast to 8 constant
//     channels; a stem of three Conv3³ + InstanceNorm + LeakyReLU(0.2) (the last stride 2); down
//     stages of a dense block and a stride-2 convolution; a dense middle block; up stages that
//     concatenate the skip, run a dense block and a ConvTranspose(4, 2, 1); three output
//     convolutions and Tanh. Dense block = MONAI ConvDenseBlock (x ⊕ ResidualUnit(x)) → Conv3³,
//     twice. InstanceNorm has no affine parameters (PyTorch's and MONAI's default).
//   - E, a ResNet encoder: Conv3³ + InstanceNorm + ReLU, six (bmgan_levels + 2) MONAI ResidualUnits of stride 2
//     (two Conv + InstanceNorm + PReLU subunits, a strided Conv3³ shortcut), two Linear heads μ,
//     log σ². As in the reference, E learns only KL(E(PET) ‖ N(0, I)) + KL(E(G(T1, z)) ‖ N(0, I))
//     and never feeds G (reference-implementation.md §8.27): it is trained and checkpointed, and
//     changes no synthetic PET.
//   - D: the PatchGAN (32 channels, 4 layers) on the PET alone.
//   - L_G = LSGAN + λ_l1·L1 (λ_l1 20), Adam 2e-4 for G, E and D.
// Where we differ from the reference, and why:
//   - **The discriminator is trained.** The reference creates D's optimiser and calls backward
//     on D's losses but never steps it (§8.27), so its adversarial term pushes G towards a frozen
//     random critic. Ours steps D each iteration, as BMGAN's paper intends.
//   - No perceptual term by default: the reference's is LPIPS-AlexNet with λ 8, whose ImageNet
//     weights cannot ship; we have no AlexNet LPIPS (train.perceptual is refused for BMGAN).
//   - E is updated in the generator phase from the same batch, with G's fake detached (one Adam
//     group with G at the same rate — E's loss reaches no G parameter, so this equals a separate
//     optimiser), instead of after G's step on a regenerated fake; the D phase draws a fresh code
//     z instead of reusing the generator phase's.
//   - At inference the code is z = 0 (the mode of N(0, I)), so synthesis is deterministic.
//   - The output is the raw Tanh in [−1, 1] (the reference's; the data lie in [0, 1]).
// Widths: ModelConfig::bmgan_levels / bmgan_width_divisor (full = the reference's).
#pragma once
#include <memory>
#include <vector>

#include "layers/conv.h"
#include "layers/linear.h"
#include "models/networks.h"
#include "models/synthesis_model.h"

namespace cpets::models {

namespace bmgan {

enum class Activation { relu, leaky_relu, prelu };

// Conv3d → InstanceNorm (no affine) → activation: MONAI's Convolution with "NDA" ordering.
class ConvNormAct : public layers::Block {
 public:
  ConvNormAct(int64_t in, int64_t out, int64_t stride, Activation act, Generator& init);
  Tensor forward(const Tensor& x) const override;

 private:
  std::shared_ptr<layers::Conv3d> conv_;
  Activation act_;
  Tensor prelu_weight_;  // PReLU's single slope (init 0.25); undefined for the other activations
};

// MONAI's ResidualUnit: `subunits` ConvNormAct (the first with `stride`) plus a shortcut —
// identity, a 1³ convolution when only the width changes, a strided 3³ one when the grid does.
class ResidualUnit : public layers::Block {
 public:
  ResidualUnit(int64_t in, int64_t out, int64_t stride, int64_t subunits, Activation act, Generator& init);
  Tensor forward(const Tensor& x) const override;

 private:
  std::vector<std::shared_ptr<ConvNormAct>> units_;
  std::shared_ptr<layers::Conv3d> shortcut_;  // null: identity
};

// The reference's get_dense_block(in, out): x ⊕ ResidualUnit(x) → ConvNormAct(in + out → out),
// then h ⊕ ResidualUnit(h) → ConvNormAct(2·out → out); LeakyReLU(0.2) throughout.
class DenseBlock : public layers::Block {
 public:
  DenseBlock(int64_t in, int64_t out, Generator& init);
  Tensor forward(const Tensor& x) const override;

 private:
  std::shared_ptr<ResidualUnit> dense1_, dense2_;
  std::shared_ptr<ConvNormAct> conv1_, conv2_;
};

}  // namespace bmgan

// G: (T1, z) → PET in [−1, 1].
class DenseUNetGenerator : public Module {
 public:
  static constexpr int64_t kCodeSize = 8;
  DenseUNetGenerator(const ModelConfig& config, Generator& init);
  Tensor forward(const Tensor& t1, const Tensor& code) const;  // code (B, 8)

 private:
  std::vector<std::shared_ptr<bmgan::ConvNormAct>> stem_, output_;
  std::shared_ptr<layers::Conv3d> to_pet_;
  std::vector<std::shared_ptr<bmgan::DenseBlock>> down_blocks_, up_blocks_;
  std::vector<std::shared_ptr<bmgan::ConvNormAct>> down_convs_;
  std::shared_ptr<bmgan::DenseBlock> middle_;
  std::vector<std::shared_ptr<layers::ConvTranspose3d>> up_convs_;
};

// E: PET → (μ, log σ²), (B, 8) each.
class ResNetEncoder : public Module {
 public:
  ResNetEncoder(const ModelConfig& config, Generator& init);
  std::pair<Tensor, Tensor> forward(const Tensor& pet) const;

 private:
  std::shared_ptr<bmgan::ConvNormAct> input_;
  std::vector<std::shared_ptr<bmgan::ResidualUnit>> stages_;
  std::shared_ptr<layers::Linear> mu_, log_variance_;
};

class BMGAN : public SynthesisModel {
 public:
  BMGAN(const ModelConfig& config, Generator& init);

  Tensor synthesise(const Abduction& a, const Tensor& csf, const Tensor& covariates) const override;
  NamedTensors generator_parameters() const override;  // G and E (E's loss reaches only E)
  NamedTensors discriminator_parameters() const override;
  LossTerms generator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& ctx) const override;
  LossTerms discriminator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& ctx) const override;
  std::vector<std::pair<std::string, int64_t>> parameter_table() const override;

  std::shared_ptr<DenseUNetGenerator> generator;
  std::shared_ptr<ResNetEncoder> encoder;
  std::shared_ptr<PatchDiscriminator> discriminator;  // null when discriminator is off
};

}  // namespace cpets::models
