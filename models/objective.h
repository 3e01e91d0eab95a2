// Causal PETS's training objective (docs/model.md §5): the generator's L_G (one backward over E,
// MLP_M, f, G_T1, G_P) and the discriminator's least-squares loss. CausalPETS::generator_loss and
// ::discriminator_loss (the SynthesisModel phases the trainer runs) call these; the golden test
// compares them with a PyTorch build of model.md.
#pragma once
#include <string>

#include "engine/rng.h"
#include "models/causal_pets.h"
#include "models/perceptual.h"

namespace cpets::models {

// Each term as a scalar tensor; terms that are switched off are undefined. `total` is L_G.
struct GeneratorLosses {
  Tensor total, pet_l1, t1, kl, adv, perceptual;
  Outputs outputs;  // what the generator produced (for logging / pictures)
};

// L_G = L1(G_P out, PET) + λ_p·L_perc + λ_adv·mean((D(fake) − 1)²) + L_T1 + β·KL.
// D's parameters must be frozen by the caller (the trainer does it); `perceptual` may be null
// when λ_p = 0, and `slice_gen` draws the perceptual slice subsets.
GeneratorLosses generator_objective(const CausalPETS& model, const Inputs& in, const Tensor& pet,
                                    const Noise& noise, const ObjectiveConfig& cfg,
                                    const LpipsSqueeze* perceptual = nullptr, Generator* slice_gen = nullptr);

// mean(D(fake)²) and mean((D(real) − 1)²): the gradient used is that of fake + real (no ½);
// the logged value is ½·(fake + real), as the reference.
struct DiscriminatorLosses {
  Tensor fake, real, total;  // total = fake + real
};
DiscriminatorLosses discriminator_objective(const CausalPETS& model, const Tensor& fake_detached,
                                            const Tensor& real);

}  // namespace cpets::models
