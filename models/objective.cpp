#include "models/objective.h"

#include <stdexcept>
#include <string>

#include "engine/ops_elementwise.h"
#include "engine/ops_loss.h"

namespace cpets::models {

namespace {
void require_target(const Tensor& pet, const Tensor& t1) {
  if (!pet.defined() || pet.shape() != t1.shape())
    throw std::invalid_argument("generator_objective: the real PET must have the T1's shape " + t1.str() + ", got " +
                                (pet.defined() ? pet.str() : std::string("none")));
}

Tensor t1_reconstruction_loss(const std::string& kind, const Tensor& rec, const Tensor& t1) {
  if (kind == "l1") return l1_loss(rec, t1);
  if (kind == "mse") return mse_loss(rec, t1);
  throw std::invalid_argument("objective: t1_loss \"" + kind + "\" is unknown; use \"l1\" (reference code) or \"mse\" (paper eq. 6)");
}
}  // namespace

GeneratorLosses generator_objective(const CausalPETS& model, const Inputs& in, const Tensor& pet,
                                    const Noise& noise, const ObjectiveConfig& cfg,
                                    const LpipsSqueeze* perceptual, Generator* slice_gen) {
  require_target(pet, in.t1);
  if (cfg.lambda_perceptual > 0.f && (!perceptual || !slice_gen))
    throw std::invalid_argument("generator_objective: lambda_perceptual = " + std::to_string(cfg.lambda_perceptual) +
                                " needs a perceptual network and a slice generator, but " +
                                (!perceptual ? "none was given" : "no slice generator was given") +
                                "; load the converted LPIPS weights, or set lambda_perceptual to 0 / perceptual to \"none\"");
  Noise used = noise;
  if (!cfg.eps_pet) used.eps_pet = Tensor();  // the "no ε_PET" ablation: G_P decodes μ

  GeneratorLosses L;
  L.outputs = model.forward(in, used);
  const Outputs& out = L.outputs;

  L.pet_l1 = l1_loss(out.pet_syn, pet);
  Tensor total = L.pet_l1;
  if (out.t1_rec.defined()) {
    L.t1 = t1_reconstruction_loss(cfg.t1_loss, out.t1_rec, in.t1);
    total = add(total, L.t1);
  }
  // KL = −½ Σ(1 + s − μ² − eˢ) / B with s = log σ² in both latent forms.
  L.kl = kl_gaussian(out.latent.mu, model.log_variance(out.latent));
  total = add(total, mul_scalar(L.kl, cfg.beta_kl));
  if (cfg.lambda_adv > 0.f && model.discriminator) {
    L.adv = lsgan_loss(model.discriminate(out.pet_syn), 1.f);  // mean((D(fake) − 1)²)
    total = add(total, mul_scalar(L.adv, cfg.lambda_adv));
  }
  if (cfg.lambda_perceptual > 0.f) {
    L.perceptual = perceptual_loss_25d(*perceptual, out.pet_syn, pet, *slice_gen, cfg.perceptual_slice_ratio);
    total = add(total, mul_scalar(L.perceptual, cfg.lambda_perceptual));
  }
  L.total = total;
  return L;
}

DiscriminatorLosses discriminator_objective(const CausalPETS& model, const Tensor& fake_detached,
                                            const Tensor& real) {
  if (!model.discriminator)
    throw std::logic_error("discriminator_objective: the model has no discriminator (discriminator = false); skip the D step");
  if (fake_detached.requires_grad())
    throw std::invalid_argument("discriminator_objective: the fake PET must be detached from the generator's graph "
                                "(pass outputs.pet_syn.detach()), or the D step would back-propagate into G");
  if (fake_detached.shape() != real.shape())
    throw std::invalid_argument("discriminator_objective: fake " + fake_detached.str() + " and real " + real.str() +
                                " PET must have the same shape");
  DiscriminatorLosses L;
  // Separate forward calls, fake first: BatchNorm normalises each with its own batch statistics
  // and updates the running statistics in this order, as the reference.
  L.fake = lsgan_loss(model.discriminate(fake_detached), 0.f);
  L.real = lsgan_loss(model.discriminate(real), 1.f);
  L.total = add(L.fake, L.real);
  return L;
}

}  // namespace cpets::models
