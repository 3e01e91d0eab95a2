#include "models/baselines/cyclegan.h"

#include <cmath>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/ops_elementwise.h"
#include "engine/ops_loss.h"
#include "models/baselines/common.h"

namespace cpets::models {

CycleGAN::CycleGAN(const ModelConfig& config, Generator& init) : SynthesisModel(config) {
  if (config.kind != "cyclegan") throw std::invalid_argument("CycleGAN: model kind is \"" + config.kind + "\"");
  t1_to_pet = register_module("t1_to_pet", std::make_shared<Pix2PixGenerator>(config, init));
  pet_to_t1 = register_module("pet_to_t1", std::make_shared<Pix2PixGenerator>(config, init));
  if (config.discriminator) {
    auto patch_gan = [&](const std::string& name) {
      return register_module(name, std::make_shared<PatchDiscriminator>(1, config, init));
    };
    pet_discriminator = patch_gan("pet_discriminator");
    t1_discriminator = patch_gan("t1_discriminator");
  }
}

Tensor CycleGAN::synthesise(const Abduction& a, const Tensor& /*csf*/, const Tensor& /*covariates*/) const {
  return t1_to_pet->forward(a.t1);
}

NamedTensors CycleGAN::generator_parameters() const {
  NamedTensors p = t1_to_pet->named_parameters("t1_to_pet.");
  for (auto& named : pet_to_t1->named_parameters("pet_to_t1.")) p.push_back(named);
  return p;
}

NamedTensors CycleGAN::discriminator_parameters() const {
  if (!pet_discriminator) return {};
  NamedTensors p = pet_discriminator->named_parameters("pet_discriminator.");
  for (auto& named : t1_discriminator->named_parameters("t1_discriminator.")) p.push_back(named);
  return p;
}

LossTerms CycleGAN::generator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& ctx) const {
  baselines::require_image(in.t1, 1, "CycleGAN", "T1");
  baselines::require_image(pet, 1, "CycleGAN", "PET");
  const ObjectiveConfig& o = ctx.objective;
  const Tensor fake_pet = t1_to_pet->forward(in.t1), fake_t1 = pet_to_t1->forward(pet);
  const Tensor cycle = add(l1_loss(pet_to_t1->forward(fake_pet), in.t1), l1_loss(t1_to_pet->forward(fake_t1), pet));
  Tensor total = mul_scalar(cycle, o.lambda_cycle);
  double identity_value = std::nan(""), adv_value = std::nan("");
  if (o.lambda_identity > 0.f) {
    const Tensor identity = add(l1_loss(t1_to_pet->forward(pet), pet), l1_loss(pet_to_t1->forward(in.t1), in.t1));
    total = add(total, mul_scalar(identity, o.lambda_cycle * o.lambda_identity));
    identity_value = identity.item();
  }
  if (pet_discriminator && o.lambda_adv > 0.f) {
    const Tensor adv = add(lsgan_loss(pet_discriminator->forward(fake_pet), 1.f),
                           lsgan_loss(t1_discriminator->forward(fake_t1), 1.f));
    total = add(total, mul_scalar(adv, o.lambda_adv));
    adv_value = adv.item();
  }
  double pet_l1;
  {
    NoGradGuard no_grad;
    pet_l1 = l1_loss(fake_pet.detach(), pet).item();
  }
  return {total, {{"pet_l1", pet_l1}, {"cycle", cycle.item()}, {"identity", identity_value}, {"adv", adv_value}}};
}

LossTerms CycleGAN::discriminator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& /*ctx*/) const {
  if (!pet_discriminator) throw std::logic_error("CycleGAN: no discriminators (discriminator = false); skip the D step");
  Tensor fake_pet, fake_t1;
  {
    NoGradGuard no_grad;
    fake_pet = t1_to_pet->forward(in.t1);
    fake_t1 = pet_to_t1->forward(pet);
  }
  auto critic = [](const std::shared_ptr<PatchDiscriminator>& d) {
    return [d](const Tensor& x) { return d->forward(x); };
  };
  const LossTerms on_pet = baselines::lsgan_discriminator_loss(critic(pet_discriminator), fake_pet.detach(), pet);
  const LossTerms on_t1 = baselines::lsgan_discriminator_loss(critic(t1_discriminator), fake_t1.detach(), in.t1);
  // Each D's own half: ½(fake + real), as the single-D models log it.
  return {add(on_pet.total, on_t1.total),
          {{"d_pet", 0.5 * on_pet.total.item()}, {"d_t1", 0.5 * on_t1.total.item()}},
          on_pet.log_scale};
}

}  // namespace cpets::models
