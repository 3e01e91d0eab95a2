// The training objective of docs/model.md §5: the generator's L_G (one backward over E, MLP_M, f,
// G_T1, G_P) and the discriminator's least-squares loss. The trainer (trainer.h) calls these in
// the step order of §5; the golden test compares them with a PyTorch build of model.md.
#pragma once
#include <string>

#include "engine/rng.h"
#include "models/causal_pets.h"
#include "models/perceptual.h"

namespace cpets::train {

struct ObjectiveConfig {
  float lambda_perceptual = 0.f;  // λ_p (needs a perceptual network when > 0)
  float lambda_adv = 0.005f;      // λ_adv (0 or no D: no adversarial term)
  float beta_kl = 0.001f;         // β
  std::string t1_loss = "l1";     // "l1" (reference code) | "mse" (paper eq. 6)
  bool eps_pet = true;            // false: the "no ε_PET" ablation, G_P decodes μ
  float perceptual_slice_ratio = 0.5f;
};

// Each term as a scalar tensor; terms that are switched off are undefined. `total` is L_G.
struct GeneratorLosses {
  Tensor total, pet_l1, t1, kl, adv, perceptual;
  models::Outputs outputs;  // what the generator produced (for logging / pictures)
};

// L_G = L1(G_P out, PET) + λ_p·L_perc + λ_adv·mean((D(fake) − 1)²) + L_T1 + β·KL.
// D's parameters must be frozen by the caller (the trainer does it); `perceptual` may be null
// when λ_p = 0, and `slice_gen` draws the perceptual slice subsets.
GeneratorLosses generator_objective(const models::CausalPETS& model, const models::Inputs& in, const Tensor& pet,
                                    const models::Noise& noise, const ObjectiveConfig& cfg,
                                    const models::LpipsSqueeze* perceptual = nullptr, Generator* slice_gen = nullptr);

// mean(D(fake)²) and mean((D(real) − 1)²): the gradient used is that of fake + real (no ½);
// the logged value is ½·(fake + real), as the reference.
struct DiscriminatorLosses {
  Tensor fake, real, total;  // total = fake + real
};
DiscriminatorLosses discriminator_objective(const models::CausalPETS& model, const Tensor& fake_detached,
                                            const Tensor& real);

}  // namespace cpets::train
