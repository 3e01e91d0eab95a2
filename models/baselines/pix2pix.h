// Pix2Pix (Isola et al. 2017) in 3-D, the paper's Table-1 baseline: the reference repository's
// `UnetGenerator3d` (reference-implementation.md §7: Conv4 stride-2 downs with LeakyReLU 0.2 and
// BatchNorm, ReLU + nearest ×2 + Conv3 ups, Tanh out; four levels) and a conditional PatchGAN
// that reads the T1 and the PET together. What we had to choose, because the reference ships the
// generator but no Pix2Pix training script:
//   - the least-squares GAN loss (pix2pix's `--gan_mode lsgan`; the paper used cross-entropy),
//     with λ_l1 = 100 as the paper, gradient of fake + real for D (Adam makes the paper's ½
//     immaterial);
//   - no dropout in the decoder (pix2pix's noise source; our runs are deterministic);
//   - the Tanh output mapped to the data's [0, 1] range as ½(tanh + 1);
//   - weights N(0, 0.02), BatchNorm γ ~ N(1, 0.02), as pix2pix's "normal" init.
#pragma once
#include <memory>
#include <vector>

#include "layers/conv.h"
#include "layers/norm.h"
#include "models/networks.h"
#include "models/synthesis_model.h"

namespace cpets::models {

// T1 → PET (and, in CycleGAN, PET → T1). channels c[0..3]: downs 1→c0 (no norm), c0→c1, c1→c2 (BatchNorm), c2→c3 (innermost,
// no norm); ups mirror them on the concatenation with the skip of the same level.
class Pix2PixGenerator : public Module {
 public:
  Pix2PixGenerator(const ModelConfig& config, Generator& init);
  Tensor forward(const Tensor& image) const;

 private:
  std::vector<std::shared_ptr<layers::Conv3d>> down_, up_;
  std::vector<std::shared_ptr<layers::BatchNorm3d>> down_norm_, up_norm_;  // null where a level has none
};

// A T1 → PET generator judged by a conditional PatchGAN on (T1, PET) with λ_l1·L1 + λ_adv·LSGAN:
// Pix2Pix, and BPGAN with its own generator and more loss terms. A subclass registers its
// generator (as "generator") and then calls add_discriminator, so the weights are drawn in that order.
class ConditionalGAN : public SynthesisModel {
 public:
  Tensor synthesise(const Abduction& a, const Tensor& csf, const Tensor& covariates) const override;
  NamedTensors generator_parameters() const override;
  NamedTensors discriminator_parameters() const override;
  LossTerms generator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& ctx) const override;
  LossTerms discriminator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& ctx) const override;

  std::shared_ptr<PatchDiscriminator> discriminator;  // reads (T1, PET); null when discriminator is off

 protected:
  ConditionalGAN(const ModelConfig& config, const char* kind);
  void add_discriminator(Generator& init);
  virtual Tensor translate(const Tensor& t1) const = 0;
  virtual const Module& generator_module() const = 0;
  // Terms a subclass adds to the generator phase's loss (in place).
  virtual void add_terms(const Tensor& /*fake*/, const Tensor& /*pet*/, const ObjectiveConfig& /*o*/,
                         LossTerms& /*loss*/) const {}
};

class Pix2Pix : public ConditionalGAN {
 public:
  Pix2Pix(const ModelConfig& config, Generator& init);
  std::shared_ptr<Pix2PixGenerator> generator;

 private:
  Tensor translate(const Tensor& t1) const override { return generator->forward(t1); }
  const Module& generator_module() const override { return *generator; }
};

}  // namespace cpets::models
