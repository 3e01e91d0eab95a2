// The model's configuration (docs/model.md §3 and §5's table): every width, group count and head
// count of E, f, G_T1, G_P and D, and the switches of the paper's ablations that change which
// networks exist or how the latent is used. Training hyper-parameters (learning rates, loss
// weights, epochs) live in train/config.h; this struct is what a checkpoint needs to rebuild the
// networks, so it is saved with every checkpoint as JSON.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace cpets::models {

// The methods of the paper's comparison (Table 1), by config name: "causal-pets" (this paper),
// "unet" / "unet-cond" (the reference AttenUNet without / with the tabular condition), "pix2pix", "cyclegan",
// "bmgan", "bpgan".
const std::vector<std::string>& model_kinds();

struct ModelConfig {
  std::string kind = "causal-pets";            // one of model_kinds(); the networks below
  std::string preset = "full";                 // "full", "demo" or "tiny" (tests); informative
  std::array<int64_t, 3> volume{96, 128, 96};  // (D, H, W); each divisible by 8
  // The voxel size (mm, isotropic, canonical RAS+ axes) the model's grid has: every input volume
  // must be on such a grid (io::grid_mismatch; cpets-data prepare resamples a cohort onto it).
  // The paper's 1.5 mm; the demo's 3 mm; 0 = not checked (the tiny test preset).
  double voxel_mm = 1.5;
  int64_t latent_channels = 3;                 // z: μ and s have z channels each
  std::string latent = "reference";            // "reference" (s used as σ and as log σ²) | "vae"

  // Tabular inputs. csf_inputs = 1 for AV45 ([ABETA]), 2 for AV1451 ([TAU, PTAU]);
  // covariates M = [Age, Sex, APOE4, PTEDUCAT] always 4.
  int64_t csf_inputs = 1;
  int64_t covariate_inputs = 4;

  // E: conv_in 1→c0, levels c0, c1, c2 (2 ResnetBlocks + a ResnetBlock-down each), one
  // SpatialTransformer(c2) cross-attending to MLP_M(M), head GN→SiLU→Conv3³(c2→2z).
  std::array<int64_t, 3> encoder_channels{64, 128, 128};
  int64_t encoder_groups = 16;
  int64_t encoder_heads = 4;  // head dim = c2 / heads

  // f and MLP_M: Linear(n→w) → SiLU → Linear(w→w) → SiLU → Linear(w→K·c_ctx).
  // fusion = "mlp" (the paper) or "raw" (the reference code: K = 1, the normalised
  // [B_CSF, M] vector itself is the single token, c_ctx = csf_inputs + covariate_inputs; E then
  // has no demographic tokens and its transformer self-attends in both slots).
  std::string fusion = "mlp";
  int64_t fusion_width = 128;   // w
  int64_t fusion_tokens = 8;    // K
  int64_t context_width = 64;   // c_ctx

  // G_T1: channels from the latent level up: Conv3³(z→t0); 2×AE(t0); Up; AE(t0→t1), AE(t1); Up;
  // AE(t1→t2), AE(t2); Up; AE(t2→t3), AE(t3); GN(groups); Conv3³(t3→1).
  std::array<int64_t, 4> t1_decoder_channels{64, 64, 64, 32};
  int64_t t1_decoder_groups = 32;

  // G_P: conv_in z→g0; 3×[ResnetBlock(g0) + SpatialTransformer(g0)] (first cross-attends to B);
  // Up; 3×ResnetBlock(g1) (first g0→g1); Up; ResnetBlock(g1→g2), 2×ResnetBlock(g2); Up;
  // GN → SiLU → Conv3³(g2→1).
  std::array<int64_t, 3> generator_channels{64, 64, 32};
  int64_t generator_groups = 32;
  int64_t generator_heads = 8;  // head dim = g0 / heads

  // D: PatchGAN with d base channels and `discriminator_layers` BatchNorm layers (2 in Causal
  // PETS; 3 in the U-Net and Pix2Pix baselines).
  int64_t discriminator_channels = 64;
  int64_t discriminator_layers = 2;

  // The baselines (kind ≠ "causal-pets"): widths per level of their U-Net generators, the
  // GroupNorm group count and the attention heads where they have them. Unused by Causal PETS.
  std::array<int64_t, 4> baseline_channels{16, 32, 64, 128};
  int64_t baseline_groups = 16;
  int64_t baseline_heads = 4;
  // BMGAN: the reference's widths (stem 64, downs [128, 256, 256, 512], ups [512, 256, 256, 256,
  // 128], encoder 32 → [64, 128 ×5]) divided by bmgan_width_divisor, with the first
  // bmgan_levels down stages and the last bmgan_levels + 1 up stages (the reference: 4 and 1).
  int64_t bmgan_levels = 4;
  int64_t bmgan_width_divisor = 1;

  // Ablation switches that change which networks exist (paper Table 5). The other ablations
  // (no perceptual loss, no ε_PET) are objective switches in train/config.h.
  bool t1_reconstruction = true;  // false: no G_T1 (and no L_T1)
  bool discriminator = true;      // false: no D (λ_adv = 0, no D step)
  std::string perceptual = "none";  // "none" | "lpips-squeeze" (weights from a converted file)

  // true (model.md): every SpatialTransformer's proj_out starts at zero, so a fresh transformer
  // is the identity and the conditional path f → G_P's cross-attention gets no gradient at
  // first. false: proj_out keeps its random init (docs/causal-fidelity.md measures both).
  bool transformer_zero_init = true;
  float norm_eps = 1e-6f;      // GroupNorm
  float ln_eps = 1e-5f;        // LayerNorm
  float bn_eps = 1e-5f;        // BatchNorm3d
  float bn_momentum = 0.1f;

  std::array<int64_t, 3> latent_grid() const { return {volume[0] / 8, volume[1] / 8, volume[2] / 8}; }
  int64_t fusion_inputs() const { return csf_inputs + covariate_inputs; }
  // Throws std::invalid_argument naming the field and the fix (e.g. a channel count not divisible
  // by its group count, a volume not divisible by 8, an unknown latent form).
  void validate() const;

 private:
  void validate_discriminator() const;
  void validate_baseline() const;
};

// The presets of model.md §5 ("full", "demo") and a tiny one for fast tests ("tiny": 16×16×16
// volume, a few channels). `tracer` ("AV45" or "AV1451") sets csf_inputs; `kind` the
// baseline's widths (the full preset at the reference code's, reference-implementation.md §7).
ModelConfig model_preset(const std::string& name, const std::string& tracer = "AV45",
                         const std::string& kind = "causal-pets");

// JSON I/O: every field above, by its name. from_json starts from `base` and overrides the keys
// present; an unknown key throws naming it (a typo must not silently keep the default).
nlohmann::json to_json(const ModelConfig& c);
ModelConfig model_config_from_json(const nlohmann::json& j, ModelConfig base = {});

}  // namespace cpets::models
