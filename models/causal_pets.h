// Causal PETS (docs/model.md): the networks of the causal graph
//
//   M ──► S ──► I_T1          S = E(I_T1, M)          encoder      (with MLP_M inside)
//   B ─────────┴──► I_PET     B = f(B_CSF, M)         fusion
//   B ──► B_CSF               I_T1_rec = G_T1(z_T1)   t1_decoder
//                             I_PET = G_P(z_PET, B)   pet_generator
//                             D(I_PET)                discriminator (PatchGAN)
//
// and its forward in the causal order of the graph. Losses and the training step live in
// models/objective.h (called by the SynthesisModel phases below) and the step order in train/.
//
// state_dict keys start with the paper's names: "encoder.", "fusion.", "t1_decoder.",
// "pet_generator.", "discriminator." (tools/torch_model.py builds the same names in PyTorch).
#pragma once
#include <memory>

#include "engine/module.h"
#include "engine/rng.h"
#include "models/config.h"
#include "models/networks.h"
#include "models/synthesis_model.h"

namespace cpets::models {

// Re-parameterisation noise, (B, z, d, h, w) each. An undefined tensor means ε = 0 (decode μ):
// inference, and the "no ε_PET" ablation for eps_pet.
struct Noise {
  Tensor eps_t1, eps_pet;
};

struct Outputs {
  Latent latent;
  Tensor tokens;   // B = f(B_CSF, M): (B, K, c_ctx)
  Tensor t1_rec;   // (B, 1, D, H, W); undefined without G_T1
  Tensor pet_syn;  // (B, 1, D, H, W)
};

class CausalPETS : public SynthesisModel {
 public:
  // Initial weights are drawn from `init` in registration order, so a seed fixes them.
  CausalPETS(const ModelConfig& config, Generator& init);

  // S = E(I_T1, M).
  Latent encode(const Tensor& t1, const Tensor& covariates) const;
  // B = f(B_CSF, M): (B, K, c_ctx).
  Tensor fuse(const Tensor& csf, const Tensor& covariates) const;
  // z = μ + σ·ε with σ = s (reference latent) or exp(½·clamp(s, −30, 20)) (vae); μ when ε is
  // undefined.
  Tensor reparameterise(const Latent& latent, const Tensor& eps) const;
  // log σ² for the KL term: s (reference) or clamp(s, −30, 20) (vae).
  Tensor log_variance(const Latent& latent) const;
  Tensor reconstruct_t1(const Tensor& z) const;                     // G_T1
  Tensor synthesise_pet(const Tensor& z, const Tensor& tokens) const;  // G_P
  Tensor discriminate(const Tensor& pet) const;                     // D: raw patch logits

  // The whole generator path in the graph's order: E, f, G_T1, G_P.
  Outputs forward(const Inputs& in, const Noise& noise) const;

  // Noise of the right shape for a batch of `batch` (standard normal, from `gen`; the shard's
  // rows of a global batch's draw in data-parallel training, models::batch_noise).
  Tensor sample_noise(int64_t batch, Generator& gen, BatchShard shard = {}, Device device = Device::cpu()) const;

  // ---- SynthesisModel ----
  // S = E(I_T1, M), held across interventions; synthesise decodes μ_S (ε = 0) with f(B_CSF, M).
  Abduction abduct(const Tensor& t1, const Tensor& covariates) const override;
  Tensor synthesise(const Abduction& a, const Tensor& csf, const Tensor& covariates) const override;
  // The two optimisers' parameters, named with the state_dict prefixes. The generator group is
  // everything but D (E with MLP_M, f, G_T1, G_P).
  NamedTensors generator_parameters() const override;
  // The conditional path is f and G_P's cross-attention to B.
  std::pair<NamedTensors, NamedTensors> split_conditional_path() const override;
  NamedTensors discriminator_parameters() const override;
  // L_G with ε_T1 then ε_PET drawn from ctx.noise; the D step on a fake regenerated with a new ε_PET.
  LossTerms generator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& ctx) const override;
  LossTerms discriminator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& ctx) const override;
  std::vector<std::pair<std::string, int64_t>> parameter_table() const override;

  std::shared_ptr<Encoder> encoder;
  std::shared_ptr<FusionMLP> fusion;                 // f
  std::shared_ptr<T1Decoder> t1_decoder;             // null when config.t1_reconstruction is off
  std::shared_ptr<PETGenerator> pet_generator;
  std::shared_ptr<PatchDiscriminator> discriminator;  // null when config.discriminator is off

};

// Parameter counts of each network, for `cpets-train --print-model` and the tests.
struct ParameterCounts {
  int64_t encoder = 0, encoder_demographics = 0, encoder_transformer = 0;
  int64_t fusion = 0, t1_decoder = 0, pet_generator = 0, discriminator = 0, total = 0;
};
ParameterCounts count_parameters(const CausalPETS& model);

}  // namespace cpets::models
