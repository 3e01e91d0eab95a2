// What train/ and eval/ see of a PET synthesis network: Causal PETS and every baseline of the
// paper's comparison (Table 1) implement this one interface, so the trainer, the checkpoints,
// validation, cpets-eval and cpets-infer never name a model class.
//
// A model is a Module whose state_dict holds all its networks. Training alternates two phases
// per step, each with its own Adam optimiser over a parameter group:
//   1. the generator phase: generator_loss(), backward, step — discriminators frozen;
//   2. the discriminator phase (when discriminator_parameters() is not empty and the adversarial
//      weight is positive): discriminator_loss() on fakes regenerated without gradients.
// Inference is abduct() once per session, then synthesise() for the factual tabular inputs and
// for each intervention on them: whatever the model infers from the images alone (Causal PETS:
// S = E(I_T1, M)) is held fixed across worlds.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/module.h"
#include "engine/rng.h"
#include "models/config.h"

namespace cpets::models {

class LpipsSqueeze;

// One batch of model inputs. t1 (B, 1, D, H, W) in [0, 1]; csf (B, csf_inputs) and
// covariates (B, 4) normalised as model.md §4 (io::csf_inputs / io::covariate_inputs).
struct Inputs {
  Tensor t1, csf, covariates;
};

// E's output on the latent grid, (B, z, d, h, w) each: μ_S and s (σ or log σ²).
struct Latent {
  Tensor mu, s;
};

// What a model infers from a session's images (and covariates) before any intervention.
struct Abduction {
  Tensor t1;      // (B, 1, D, H, W): the image itself (models that read it at synthesis time)
  Latent latent;  // Causal PETS's S; undefined for models without a latent
};

// The loss weights and switches of every model's objective (train.* keys; each model reads the
// ones it has, the rest are ignored and say so in configs/README.md).
struct ObjectiveConfig {
  float lambda_l1 = 1.f;          // weight of L1(synthetic PET, real PET) (Pix2Pix 100, BMGAN 20)
  float lambda_cycle = 10.f;      // CycleGAN: weight of L1(F(G(T1)), T1) + L1(G(F(PET)), PET)
  float lambda_identity = 0.5f;   // CycleGAN: L1(G(PET), PET) + L1(F(T1), T1) at λ_cycle·λ_identity
  float lambda_gp = 100.f;        // BPGAN: weight of the gradient profile loss
  float lambda_ssim = 10.f;       // BPGAN: weight of 1 − SSIM(synthetic PET, real PET)
  float lambda_perceptual = 0.f;  // λ_p (needs a perceptual network when > 0)
  float lambda_adv = 0.005f;      // λ_adv (0 or no D: no adversarial term and no D step)
  float beta_kl = 0.001f;         // β (Causal PETS, BMGAN's encoder)
  std::string t1_loss = "l1";     // Causal PETS: "l1" (reference code) | "mse" (paper eq. 6)
  bool eps_pet = true;            // Causal PETS: false is the "no ε_PET" ablation, G_P decodes μ
  float perceptual_slice_ratio = 0.5f;
};

// One phase's loss: `total` is what backward runs on; `terms` are logged by name (train.jsonl
// keys such as "pet_l1", "kl", "adv"; NaN for a term that is switched off).
struct LossTerms {
  Tensor total;
  std::vector<std::pair<std::string, double>> terms;
  // The logged total is log_scale·total (Causal PETS's D logs ½(fake + real), as the reference).
  double log_scale = 1.0;
};

// Which rows of the global batch this process holds in data-parallel training (rows
// [offset, offset + B) of `global`); global 0: the whole batch is here.
struct BatchShard {
  int64_t offset = 0, global = 0;
};

// What a training phase may use besides the batch: the noise Generator (ε, slice subsets; its
// draws are part of the run's reproducible state), the perceptual network (null when λ_p = 0)
// and the batch shard.
struct PhaseContext {
  Generator& noise;
  const ObjectiveConfig& objective;
  const LpipsSqueeze* perceptual = nullptr;
  BatchShard shard{};
};

// Per-sample standard-normal noise of `shape` (shape[0] = this process's batch B): this
// process's rows of one draw for the global batch, so data-parallel ranks together draw exactly
// what one process with the whole batch would, and every rank's Generator stays in step.
Tensor batch_noise(const Shape& shape, Generator& gen, BatchShard shard = {}, Device device = Device::cpu());

class SynthesisModel : public Module {
 public:
  explicit SynthesisModel(const ModelConfig& config) : config_(config) {}
  const ModelConfig& config() const { return config_; }
  const std::string& kind() const { return config_.kind; }

  // ---- inference: no gradients are needed; ε = 0 where a model draws noise ----
  virtual Abduction abduct(const Tensor& t1, const Tensor& covariates) const;  // default {t1, {}}
  // I_PET for the tabular inputs (B, csf_inputs), (B, 4); models without a condition ignore them.
  virtual Tensor synthesise(const Abduction& a, const Tensor& csf, const Tensor& covariates) const = 0;
  Tensor synthesise(const Inputs& in) const { return synthesise(abduct(in.t1, in.covariates), in.csf, in.covariates); }

  // ---- training ----
  virtual NamedTensors generator_parameters() const = 0;
  virtual NamedTensors discriminator_parameters() const = 0;  // empty: no discriminator phase
  // The generator parameters split into the conditional path (what carries the tabular inputs
  // into the PET) and the rest, each in generator order. Models without one: ({}, all).
  virtual std::pair<NamedTensors, NamedTensors> split_conditional_path() const;
  // The generator phase's loss on a batch; discriminators are frozen by the caller.
  virtual LossTerms generator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& ctx) const = 0;
  // The discriminator phase's loss: fakes regenerated by the (updated) generator without gradients.
  virtual LossTerms discriminator_loss(const Inputs& in, const Tensor& pet, const PhaseContext& ctx) const = 0;
  // Whether the discriminator phase runs under this objective.
  bool trains_discriminator(const ObjectiveConfig& objective) const {
    return objective.lambda_adv > 0.f && !discriminator_parameters().empty();
  }
  void set_discriminator_trainable(bool on) const;

  // "encoder  1,234,567" rows for --print-model: (name, count) per network, then the total.
  virtual std::vector<std::pair<std::string, int64_t>> parameter_table() const;

 private:
  ModelConfig config_;
};

// The model config.kind names, initial weights drawn from `init` in registration order.
std::shared_ptr<SynthesisModel> make_model(const ModelConfig& config, Generator& init);

}  // namespace cpets::models
