#include "models/causal_pets.h"

#include <cmath>
#include <set>
#include <stdexcept>
#include <string>

#include "engine/ops_elementwise.h"
#include "engine/autograd.h"
#include "engine/ops_shape.h"
#include "models/objective.h"

namespace cpets::models {

namespace {
// The vae latent's clamp of log σ² (as MONAI's AutoencoderKL), so exp never overflows.
constexpr float kLogVarMin = -30.f, kLogVarMax = 20.f;

std::string volume_str(const std::array<int64_t, 3>& v) {
  return std::to_string(v[0]) + "×" + std::to_string(v[1]) + "×" + std::to_string(v[2]);
}
}  // namespace

CausalPETS::CausalPETS(const ModelConfig& c, Generator& init) : SynthesisModel(c) {
  c.validate();
  if (c.kind != "causal-pets") throw std::invalid_argument("CausalPETS: model kind is \"" + c.kind + "\", not \"causal-pets\"");
  encoder = register_module("encoder", std::make_shared<Encoder>(c, init));
  fusion = register_module("fusion", std::make_shared<FusionMLP>(c.fusion_inputs(), c, init));
  if (c.t1_reconstruction) t1_decoder = register_module("t1_decoder", std::make_shared<T1Decoder>(c, init));
  pet_generator = register_module("pet_generator", std::make_shared<PETGenerator>(c, init));
  if (c.discriminator)
    discriminator = register_module("discriminator", std::make_shared<PatchDiscriminator>(1, c, init));
}

Latent CausalPETS::encode(const Tensor& t1, const Tensor& covariates) const {
  const auto& v = config().volume;
  if (t1.dim() != 5 || t1.size(1) != 1 || t1.size(2) != v[0] || t1.size(3) != v[1] || t1.size(4) != v[2])
    throw std::invalid_argument("CausalPETS: T1 must be (B, 1, " + volume_str(v) + ") as the model's volume, got " +
                                t1.str() + "; pad/crop the images to the configured volume");
  if (covariates.dim() != 2 || covariates.size(0) != t1.size(0) || covariates.size(1) != config().covariate_inputs)
    throw std::invalid_argument("CausalPETS: covariates must be (B = " + std::to_string(t1.size(0)) + ", " +
                                std::to_string(config().covariate_inputs) + ") [Age, Sex, APOE4, PTEDUCAT], got " +
                                covariates.str());
  const Tensor h = encoder->forward(t1, covariates);
  const int64_t z = config().latent_channels;
  return {slice(h, 1, 0, z), slice(h, 1, z, 2 * z)};
}

Tensor CausalPETS::fuse(const Tensor& csf, const Tensor& covariates) const {
  if (csf.dim() != 2 || csf.size(1) != config().csf_inputs || covariates.dim() != 2 ||
      covariates.size(1) != config().covariate_inputs || csf.size(0) != covariates.size(0))
    throw std::invalid_argument("CausalPETS: csf must be (B, " + std::to_string(config().csf_inputs) +
                                ") and covariates (B, " + std::to_string(config().covariate_inputs) + "), got " +
                                csf.str() + " and " + covariates.str());
  return fusion->forward(concat({csf, covariates}, 1));  // [B_CSF, M], the reference's order
}

Tensor CausalPETS::log_variance(const Latent& latent) const {
  return config().latent == "vae" ? clamp(latent.s, kLogVarMin, kLogVarMax) : latent.s;
}

Tensor CausalPETS::reparameterise(const Latent& latent, const Tensor& eps) const {
  if (!eps.defined()) return latent.mu;
  if (eps.shape() != latent.mu.shape())
    throw std::invalid_argument("CausalPETS: noise " + eps.str() + " must have the latent's shape " + latent.mu.str() +
                                " (use sample_noise)");
  // reference: s is σ itself (it may be negative); vae: σ = exp(½ log σ²).
  const Tensor sigma = config().latent == "vae" ? exp(mul_scalar(log_variance(latent), 0.5f)) : latent.s;
  return add(latent.mu, mul(eps, sigma));
}

Tensor CausalPETS::reconstruct_t1(const Tensor& z) const {
  if (!t1_decoder)
    throw std::logic_error("CausalPETS: reconstruct_t1 called but the model has no T1 decoder (t1_reconstruction = false)");
  return t1_decoder->forward(z);
}

Tensor CausalPETS::synthesise_pet(const Tensor& z, const Tensor& tokens) const { return pet_generator->forward(z, tokens); }

Tensor CausalPETS::discriminate(const Tensor& pet) const {
  if (!discriminator)
    throw std::logic_error("CausalPETS: discriminate called but the model has no discriminator (discriminator = false)");
  return discriminator->forward(pet);
}

Outputs CausalPETS::forward(const Inputs& in, const Noise& noise) const {
  Outputs out;
  out.latent = encode(in.t1, in.covariates);  // S = E(I_T1, M)
  out.tokens = fuse(in.csf, in.covariates);   // B = f(B_CSF, M)
  if (t1_decoder) out.t1_rec = reconstruct_t1(reparameterise(out.latent, noise.eps_t1));
  out.pet_syn = synthesise_pet(reparameterise(out.latent, noise.eps_pet), out.tokens);
  return out;
}

Tensor CausalPETS::sample_noise(int64_t batch, Generator& gen, BatchShard shard, Device device) const {
  if (batch < 1) throw std::invalid_argument("CausalPETS::sample_noise: batch must be positive, got " + std::to_string(batch));
  const auto g = config().latent_grid();
  return batch_noise({batch, config().latent_channels, g[0], g[1], g[2]}, gen, shard, device);
}

NamedTensors CausalPETS::generator_parameters() const {
  NamedTensors all;
  auto append = [&all](const std::shared_ptr<Module>& m, const char* prefix) {
    if (!m) return;
    for (auto& p : m->named_parameters(prefix)) all.push_back(std::move(p));
  };
  append(encoder, "encoder.");
  append(fusion, "fusion.");
  append(t1_decoder, "t1_decoder.");
  append(pet_generator, "pet_generator.");
  return all;
}

std::pair<NamedTensors, NamedTensors> CausalPETS::split_conditional_path() const {
  std::set<const TensorImpl*> cross;
  for (const Tensor& p : pet_generator->cross_attention_parameters()) cross.insert(p.impl());
  NamedTensors conditional, rest;
  for (auto& [name, p] : generator_parameters()) {
    const bool on_path = name.rfind("fusion.", 0) == 0 || cross.count(p.impl()) > 0;
    (on_path ? conditional : rest).emplace_back(name, p);
  }
  return {std::move(conditional), std::move(rest)};
}

NamedTensors CausalPETS::discriminator_parameters() const {
  return discriminator ? discriminator->named_parameters("discriminator.") : NamedTensors{};
}

Abduction CausalPETS::abduct(const Tensor& t1, const Tensor& covariates) const { return {t1, encode(t1, covariates)}; }

Tensor CausalPETS::synthesise(const Abduction& a, const Tensor& csf, const Tensor& covariates) const {
  if (!a.latent.mu.defined())
    throw std::invalid_argument("CausalPETS::synthesise: the abduction has no latent S; make it with CausalPETS::abduct");
  return synthesise_pet(reparameterise(a.latent, Tensor()), fuse(csf, covariates));  // ε = 0: decode μ_S
}

namespace {
double value_of(const Tensor& t) { return t.defined() ? static_cast<double>(t.item()) : std::nan(""); }
}  // namespace

LossTerms CausalPETS::generator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& ctx) const {
  const int64_t b = in.t1.size(0);
  Noise noise;
  if (t1_decoder) noise.eps_t1 = sample_noise(b, ctx.noise, ctx.shard, in.t1.device());
  if (ctx.objective.eps_pet) noise.eps_pet = sample_noise(b, ctx.noise, ctx.shard, in.t1.device());
  GeneratorLosses g = generator_objective(*this, in, pet, noise, ctx.objective, ctx.perceptual, &ctx.noise);
  return {g.total,
          {{"pet_l1", value_of(g.pet_l1)},
           {"t1", value_of(g.t1)},
           {"kl", value_of(g.kl)},
           {"adv", value_of(g.adv)},
           {"perceptual", value_of(g.perceptual)}}};
}

LossTerms CausalPETS::discriminator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& ctx) const {
  Tensor fake;
  {
    NoGradGuard no_grad;
    const Latent latent = encode(in.t1, in.covariates);
    const Tensor tokens = fuse(in.csf, in.covariates);
    const Tensor eps = ctx.objective.eps_pet ? sample_noise(in.t1.size(0), ctx.noise, ctx.shard, in.t1.device()) : Tensor();
    fake = synthesise_pet(reparameterise(latent, eps), tokens);
  }
  DiscriminatorLosses d = discriminator_objective(*this, fake.detach(), pet);
  return {d.total, {{"d_fake", value_of(d.fake)}, {"d_real", value_of(d.real)}}, /*log_scale=*/0.5};
}

std::vector<std::pair<std::string, int64_t>> CausalPETS::parameter_table() const {
  const ParameterCounts c = count_parameters(*this);
  return {{"E  encoder (total)", c.encoder},
          {"     MLP_M demographics", c.encoder_demographics},
          {"     latent SpatialTransformer", c.encoder_transformer},
          {"f  fusion", c.fusion},
          {"G_T1 t1_decoder", c.t1_decoder},
          {"G_P pet_generator", c.pet_generator},
          {"D  discriminator", c.discriminator},
          {"total", c.total}};
}

ParameterCounts count_parameters(const CausalPETS& model) {
  ParameterCounts c;
  c.encoder = model.encoder->num_parameters();
  c.encoder_demographics = model.encoder->demographics ? model.encoder->demographics->num_parameters() : 0;
  c.encoder_transformer = model.encoder->transformer->num_parameters();
  c.fusion = model.fusion->num_parameters();
  c.t1_decoder = model.t1_decoder ? model.t1_decoder->num_parameters() : 0;
  c.pet_generator = model.pet_generator->num_parameters();
  c.discriminator = model.discriminator ? model.discriminator->num_parameters() : 0;
  c.total = model.num_parameters();
  return c;
}

}  // namespace cpets::models
