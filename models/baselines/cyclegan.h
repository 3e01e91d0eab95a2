// CycleGAN (Zhu et al. 2017) in 3-D, the paper's Table-1 baseline: two generators, G: T1 → PET
// and F: PET → T1, and two PatchGANs, D_PET and D_T1, trained with least-squares GAN losses,
// cycle consistency (T1 → PET → T1 and PET → T1 → PET) and identity terms. No term of its loss
// ever compares G(T1) with the same session's PET, so the paired batches are used as unpaired
// data without reshuffling them. What we had to choose (the reference ships no CycleGAN):
//   - both generators are Pix2Pix's 3-D U-Net (CycleGAN's `--netG unet_*` option; its default
//     ResNet generator at 96×128×96 would need a 9-block trunk at full resolution), with
//     Pix2Pix's widths per preset; the discriminators are unconditional PatchGANs (64 × 3);
//   - CycleGAN's defaults: λ_cycle 10, identity 0.5·λ_cycle, Adam 2e-4, β1 0.5;
//   - no history pool of generated images (the D sees the newest fakes; the pool would be
//     unreproducible state outside the checkpoint), no dropout, no learning-rate decay;
//   - the logged "pet_l1" is L1(G(T1), PET), measured for comparison only (not in the loss).
#pragma once
#include <memory>

#include "models/baselines/pix2pix.h"
#include "models/networks.h"
#include "models/synthesis_model.h"

namespace cpets::models {

class CycleGAN : public SynthesisModel {
 public:
  CycleGAN(const ModelConfig& config, Generator& init);

  Tensor synthesise(const Abduction& a, const Tensor& csf, const Tensor& covariates) const override;
  NamedTensors generator_parameters() const override;
  NamedTensors discriminator_parameters() const override;
  LossTerms generator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& ctx) const override;
  LossTerms discriminator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& ctx) const override;

  std::shared_ptr<Pix2PixGenerator> t1_to_pet, pet_to_t1;             // G and F
  std::shared_ptr<PatchDiscriminator> pet_discriminator, t1_discriminator;  // null when discriminator is off
};

}  // namespace cpets::models
