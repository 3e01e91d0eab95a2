// BPGAN (Zhang et al., "BPGAN: Brain PET synthesis from MRI using generative adversarial network
// for multi-modal Alzheimer's disease diagnosis", CMPB 217, 2022), the paper's Table-1 baseline.
// Its code is not public and we know the paper from its abstract: a 3-D "multiple convolution
// U-Net" (MCU) generator trained with a "hybrid loss" of an adversarial term, a voxel-wise
// reconstruction term, a 3-D gradient profile (GP) loss and an SSIM loss. Everything below that
// the abstract does not fix is our assumption, chosen to be the plainest reading:
//   - MCU: a 3-D U-Net with max-pool ×2 downs and nearest ×2 + Conv3³ ups (three of each; the
//     attention U-Nets' widths baseline_channels per preset), whose every level is a
//     multiple-convolution block: three parallel branches — Conv1³, Conv3³ and Conv3³ → LeakyReLU
//     → Conv3³ (a 5³ receptive field) — summed, then BatchNorm and LeakyReLU 0.2; skips are
//     concatenated before the up level's block; a Conv3³ head and ½(tanh + 1) map to [0, 1] (with a
//     Conv1³ head on the last block's zero-mean channels the tiny test cohort's L1 fell 3 % in 30
//     steps, with the Conv3³ 35 %);
//   - Pix2Pix's conditional PatchGAN on (T1, PET) and the least-squares GAN loss;
//   - the hybrid loss λ_l1·L1 + λ_gp·GP + λ_ssim·(1 − SSIM) + λ_adv·LSGAN with λ 100 / 100 / 10 / 1
//     (the L1 weight from pix2pix, GP in the L1's units, SSIM scaled to a comparable size);
//   - GP: the L1 distance between the forward differences of the synthetic and the real PET,
//     averaged over the three axes; SSIM: Gaussian window σ 1.5 (11 taps, cpets-eval's), K1 0.01,
//     K2 0.03, data range 1, averaged over the voxels whose window lies inside the volume;
//   - Adam 2e-4, β1 0.5, weights N(0, 0.02), BatchNorm γ ~ N(1, 0.02) (pix2pix's), no dropout.
#pragma once
#include <memory>
#include <vector>

#include "layers/conv.h"
#include "layers/norm.h"
#include "models/baselines/pix2pix.h"
#include "models/networks.h"
#include "models/synthesis_model.h"

namespace cpets::models {

// The hybrid loss's structural terms, composed of engine ops (so every device that has them has
// these). Both take (B, 1, D, H, W) volumes of one shape; SSIM needs every axis ≥ 11 voxels.
Tensor gradient_profile_loss(const Tensor& fake, const Tensor& real);  // mean over axes of L1(Δ fake, Δ real)
Tensor ssim_loss(const Tensor& fake, const Tensor& real);              // 1 − mean SSIM over the valid windows

// Three parallel convolutions (1³, 3³, 3³→3³) summed, BatchNorm, LeakyReLU 0.2.
class MultiConvBlock : public Module {
 public:
  MultiConvBlock(int64_t in, int64_t out, const ModelConfig& config, Generator& init);
  Tensor forward(const Tensor& x) const;

 private:
  std::shared_ptr<layers::Conv3d> point_, cube_, wide_in_, wide_out_;
  std::shared_ptr<layers::BatchNorm3d> norm_;
};

// T1 → PET: the multiple-convolution U-Net.
class MultiConvUNet : public Module {
 public:
  MultiConvUNet(const ModelConfig& config, Generator& init);
  Tensor forward(const Tensor& t1) const;

 private:
  std::vector<std::shared_ptr<MultiConvBlock>> down_, up_;  // down_: levels 0…3; up_: levels 2…0
  std::vector<std::shared_ptr<layers::Conv3d>> up_conv_;    // the ×2 up-sampling convs, deepest first
  std::shared_ptr<layers::Conv3d> head_;
};

class BPGAN : public ConditionalGAN {
 public:
  BPGAN(const ModelConfig& config, Generator& init);
  std::shared_ptr<MultiConvUNet> generator;

 private:
  Tensor translate(const Tensor& t1) const override { return generator->forward(t1); }
  const Module& generator_module() const override { return *generator; }
  // λ_gp·GP + λ_ssim·(1 − SSIM), logged as "gp" and "ssim_loss".
  void add_terms(const Tensor& fake, const Tensor& pet, const ObjectiveConfig& o, LossTerms& loss) const override;
};

}  // namespace cpets::models
