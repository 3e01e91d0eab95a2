// Pieces the baselines share: input checks, the tabular vector, and the L1 + least-squares GAN
// objective that the U-Net, Pix2Pix (and Causal PETS, in models/objective.h) use.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "layers/conv.h"
#include "layers/norm.h"
#include "models/config.h"
#include "models/synthesis_model.h"

namespace cpets::models::baselines {

// pix2pix's "normal" initialisation (Pix2Pix, CycleGAN's generators, BPGAN), drawn after the
// layer's own default draws: conv weights N(0, 0.02) and zero bias; BatchNorm γ ~ N(1, 0.02).
std::shared_ptr<layers::Conv3d> normal_init(std::shared_ptr<layers::Conv3d> conv, Generator& init);
std::shared_ptr<layers::BatchNorm3d> normal_init(std::shared_ptr<layers::BatchNorm3d> norm, Generator& init);

// Throws naming `who` and `what` unless x is (B, channels, D, H, W).
void require_image(const Tensor& x, int64_t channels, const char* who, const char* what);

// [B_CSF, M] as one (B, csf_inputs + 4) tensor (the reference's order); throws naming `who`.
Tensor tabular_vector(const ModelConfig& config, const Tensor& csf, const Tensor& covariates, const char* who);

// A discriminator as its forward: image(s) → raw patch logits. Empty: no discriminator.
using Critic = std::function<Tensor(const Tensor&)>;

// λ_l1·L1(fake, real) + λ_adv·mean((critic(fake) − 1)²); terms "pet_l1" and "adv" (NaN when
// there is no critic or λ_adv = 0). A conditional critic (Pix2Pix) joins the T1 inside its Critic.
LossTerms l1_adversarial_loss(const Tensor& fake, const Tensor& real, const ObjectiveConfig& objective,
                              const Critic& critic);

// mean(critic(fake)²) + mean((critic(real) − 1)²), fake first (BatchNorm batch statistics per
// call, as the reference); logged as ½(fake + real) with terms "d_fake", "d_real". The fake must
// be detached from the generator's graph.
LossTerms lsgan_discriminator_loss(const Critic& critic, const Tensor& fake_detached, const Tensor& real);

}  // namespace cpets::models::baselines
