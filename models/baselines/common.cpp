#include "models/baselines/common.h"

#include <cmath>
#include <stdexcept>

#include "engine/init.h"
#include "engine/ops_elementwise.h"
#include "engine/ops_loss.h"
#include "engine/ops_shape.h"

namespace cpets::models::baselines {

std::shared_ptr<layers::Conv3d> normal_init(std::shared_ptr<layers::Conv3d> conv, Generator& init) {
  normal_(conv->weight, init, 0.f, 0.02f);
  if (conv->bias.defined()) conv->bias.fill_(0.f);
  return conv;
}

std::shared_ptr<layers::BatchNorm3d> normal_init(std::shared_ptr<layers::BatchNorm3d> norm, Generator& init) {
  normal_(norm->weight, init, 1.f, 0.02f);
  return norm;
}

void require_image(const Tensor& x, int64_t channels, const char* who, const char* what) {
  if (!x.defined() || x.dim() != 5 || x.size(1) != channels)
    throw std::invalid_argument(std::string(who) + ": the " + what + " must be (B, " + std::to_string(channels) +
                                ", D, H, W), got " + (x.defined() ? x.str() : std::string("none")));
}

Tensor tabular_vector(const ModelConfig& config, const Tensor& csf, const Tensor& covariates, const char* who) {
  if (!csf.defined() || !covariates.defined() || csf.dim() != 2 || covariates.dim() != 2 ||
      csf.size(1) != config.csf_inputs || covariates.size(1) != config.covariate_inputs || csf.size(0) != covariates.size(0))
    throw std::invalid_argument(std::string(who) + ": csf must be (B, " + std::to_string(config.csf_inputs) +
                                ") and covariates (B, " + std::to_string(config.covariate_inputs) + "), got " +
                                (csf.defined() ? csf.str() : std::string("none")) + " and " +
                                (covariates.defined() ? covariates.str() : std::string("none")));
  return concat({csf, covariates}, 1);
}

LossTerms l1_adversarial_loss(const Tensor& fake, const Tensor& real, const ObjectiveConfig& objective,
                              const Critic& critic) {
  if (!real.defined() || real.shape() != fake.shape())
    throw std::invalid_argument("generator loss: the real PET must have the synthetic PET's shape " + fake.str() +
                                ", got " + (real.defined() ? real.str() : std::string("none")));
  const Tensor l1 = l1_loss(fake, real);
  Tensor total = objective.lambda_l1 == 1.f ? l1 : mul_scalar(l1, objective.lambda_l1);
  double adv_value = std::nan("");
  if (critic && objective.lambda_adv > 0.f) {
    const Tensor adv = lsgan_loss(critic(fake), 1.f);
    total = add(total, mul_scalar(adv, objective.lambda_adv));
    adv_value = adv.item();
  }
  return {total, {{"pet_l1", l1.item()}, {"adv", adv_value}}};
}

LossTerms lsgan_discriminator_loss(const Critic& critic, const Tensor& fake_detached, const Tensor& real) {
  if (fake_detached.requires_grad())
    throw std::invalid_argument("discriminator loss: the fake must be detached from the generator's graph, or the D step "
                                "would back-propagate into G");
  if (fake_detached.shape() != real.shape())
    throw std::invalid_argument("discriminator loss: fake " + fake_detached.str() + " and real " + real.str() +
                                " must have the same shape");
  const Tensor fake = lsgan_loss(critic(fake_detached), 0.f);
  const Tensor truth = lsgan_loss(critic(real), 1.f);
  return {add(fake, truth), {{"d_fake", fake.item()}, {"d_real", truth.item()}}, /*log_scale=*/0.5};
}

}  // namespace cpets::models::baselines
