#include "models/config.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace cpets::models {

namespace {

[[noreturn]] void invalid(const std::string& field, const std::string& problem, const std::string& fix) {
  throw std::invalid_argument("model config: " + field + " " + problem + "; " + fix);
}

std::string list_str(const int64_t* v, size_t n) {
  std::string s = "[";
  for (size_t i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

template <size_t N>
void require_divisible(const char* field, const std::array<int64_t, N>& channels, const char* groups_field,
                       int64_t groups) {
  if (groups < 1) invalid(groups_field, "is " + std::to_string(groups), "it must be a positive group count");
  for (int64_t c : channels)
    if (c < 1 || c % groups != 0)
      invalid(field, list_str(channels.data(), N) + " has a channel count not divisible by " + groups_field + " = " +
                         std::to_string(groups),
              "every entry must be a positive multiple of the group count");
}

void require_positive(const char* field, int64_t v) {
  if (v < 1) invalid(field, "is " + std::to_string(v), "it must be at least 1");
}

// PatchGAN: `layers` stride-2 and two stride-1 4³ convolutions with padding 1
// (PatchDiscriminator::patch_size; models/ may not depend on networks.h here).
int64_t patch_grid(int64_t n, int64_t layers) {
  for (int64_t i = 0; i < layers; ++i) n = (n - 2) / 2 + 1;
  return n - 2;
}

bool is_causal_pets(const ModelConfig& c) { return c.kind == "causal-pets"; }

// The baselines' widths per preset: "full" is the reference code's (AttenUNet [16, 32, 64, 128],
// GroupNorm 16, 4 heads of 32, D 64 channels × 3 layers; Pix2Pix ngf 64), "demo" a quarter of
// the U-Net widths at the demo volume, "tiny" a few channels.
void apply_baseline_preset(ModelConfig& c) {
  if (is_causal_pets(c)) return;
  const bool pix2pix = c.kind == "pix2pix" || c.kind == "cyclegan";  // the same U-Net generator
  c.discriminator_layers = 3;
  if (c.kind == "bmgan") {  // its D: PatchDiscriminator(32 channels, 4 layers)
    const bool full = c.preset == "full", demo = c.preset == "demo";
    c.bmgan_levels = full ? 4 : demo ? 3 : 2;  // the demo volume 48×64×48 allows four halvings, not five
    c.bmgan_width_divisor = full ? 1 : demo ? 4 : 16;
    c.discriminator_channels = full ? 32 : demo ? 8 : 4;
    c.discriminator_layers = full || demo ? 4 : 2;
    return;
  }
  if (c.preset == "full") {
    c.baseline_channels = pix2pix ? std::array<int64_t, 4>{64, 128, 256, 512} : std::array<int64_t, 4>{16, 32, 64, 128};
    c.baseline_groups = 16;
    c.baseline_heads = 4;
    c.discriminator_channels = 64;
  } else if (c.preset == "demo") {
    c.baseline_channels = pix2pix ? std::array<int64_t, 4>{16, 32, 64, 128} : std::array<int64_t, 4>{8, 16, 32, 64};
    c.baseline_groups = 8;
    c.baseline_heads = 2;
    c.discriminator_channels = 16;
  } else {  // tiny
    c.baseline_channels = {4, 8, 8, 8};
    c.baseline_groups = 2;
    c.baseline_heads = 2;
    c.discriminator_channels = 4;
    c.discriminator_layers = 2;  // a 16³ volume leaves no patch grid after four stride-2 convolutions
  }
}

}  // namespace

const std::vector<std::string>& model_kinds() {
  static const std::vector<std::string> kinds = {"causal-pets", "unet", "unet-cond", "pix2pix", "cyclegan", "bmgan", "bpgan"};
  return kinds;
}

void ModelConfig::validate() const {
  if (!(voxel_mm >= 0 && voxel_mm < 100))
    invalid("voxel_mm", "is " + std::to_string(voxel_mm), "give the grid's voxel size in mm (1.5 in the paper), or 0 not to check it");
  if (std::find(model_kinds().begin(), model_kinds().end(), kind) == model_kinds().end()) {
    std::string known;
    for (const auto& k : model_kinds()) known += (known.empty() ? "\"" : ", \"") + k + "\"";
    invalid("kind", "is \"" + kind + "\"", "use one of " + known);
  }
  if (!is_causal_pets(*this)) {
    validate_baseline();
    return;
  }
  for (int i = 0; i < 3; ++i)
    if (volume[i] < 8 || volume[i] % 8 != 0)
      invalid("volume", list_str(volume.data(), 3) + " has a size not divisible by 8",
              "pad or crop the volume so that D, H and W are positive multiples of 8 (three ×2 down-samplings)");
  require_positive("latent_channels", latent_channels);
  if (latent != "reference" && latent != "vae")
    invalid("latent", "is \"" + latent + "\"", "use \"reference\" or \"vae\"");
  require_positive("csf_inputs", csf_inputs);
  require_positive("covariate_inputs", covariate_inputs);

  require_divisible("encoder_channels", encoder_channels, "encoder_groups", encoder_groups);
  require_positive("encoder_heads", encoder_heads);
  if (encoder_channels[2] % encoder_heads != 0)
    invalid("encoder_heads", "= " + std::to_string(encoder_heads) + " does not divide encoder_channels[2] = " +
                                 std::to_string(encoder_channels[2]),
            "choose a head count that divides the latent-level width");

  if (fusion != "mlp" && fusion != "raw") invalid("fusion", "is \"" + fusion + "\"", "use \"mlp\" or \"raw\"");
  if (fusion == "mlp") {
    require_positive("fusion_width", fusion_width);
    require_positive("fusion_tokens", fusion_tokens);
    require_positive("context_width", context_width);
  }

  require_divisible("t1_decoder_channels", t1_decoder_channels, "t1_decoder_groups", t1_decoder_groups);
  require_divisible("generator_channels", generator_channels, "generator_groups", generator_groups);
  require_positive("generator_heads", generator_heads);
  if (generator_channels[0] % generator_heads != 0)
    invalid("generator_heads", "= " + std::to_string(generator_heads) + " does not divide generator_channels[0] = " +
                                   std::to_string(generator_channels[0]),
            "choose a head count that divides the first generator width");

  validate_discriminator();
  if (perceptual != "none" && perceptual != "lpips-squeeze")
    invalid("perceptual", "is \"" + perceptual + "\"", "use \"none\" or \"lpips-squeeze\"");
  if (!(norm_eps > 0.f)) invalid("norm_eps", "is " + std::to_string(norm_eps), "it must be positive");
  if (!(ln_eps > 0.f)) invalid("ln_eps", "is " + std::to_string(ln_eps), "it must be positive");
  if (!(bn_eps > 0.f)) invalid("bn_eps", "is " + std::to_string(bn_eps), "it must be positive");
  if (!(bn_momentum >= 0.f && bn_momentum <= 1.f))
    invalid("bn_momentum", "is " + std::to_string(bn_momentum), "it must lie in [0, 1]");
}

void ModelConfig::validate_discriminator() const {
  if (!discriminator) return;
  require_positive("discriminator_channels", discriminator_channels);
  require_positive("discriminator_layers", discriminator_layers);
  for (int i = 0; i < 3; ++i)
    if (patch_grid(volume[i], discriminator_layers) < 1)
      invalid("volume", list_str(volume.data(), 3) + " is too small for the PatchGAN discriminator with " +
                            std::to_string(discriminator_layers) + " layers",
              "use larger sizes, fewer model.discriminator_layers, or set discriminator to false");
}

void ModelConfig::validate_baseline() const {
  // ×2 down-samplings in the generators: three in the attention U-Net and BPGAN's, four in Pix2Pix,
  // the stem's and bmgan_levels in BMGAN.
  const bool pix2pix_generator = kind == "pix2pix" || kind == "cyclegan";
  if (kind == "bmgan") {
    if (bmgan_levels < 1 || bmgan_levels > 4)
      invalid("bmgan_levels", "is " + std::to_string(bmgan_levels), "use 1 to 4 (the reference has 4 down stages)");
    if (bmgan_width_divisor < 1 || 32 % bmgan_width_divisor != 0)
      invalid("bmgan_width_divisor", "is " + std::to_string(bmgan_width_divisor),
              "use a divisor of the reference's narrowest width (32): 1, 2, 4, 8, 16 or 32");
  }
  const int64_t levels = pix2pix_generator ? 4 : kind == "bmgan" ? bmgan_levels + 1 : 3, multiple = int64_t(1) << levels;
  for (int i = 0; i < 3; ++i)
    if (volume[i] < multiple || volume[i] % multiple != 0)
      invalid("volume", list_str(volume.data(), 3) + " has a size not divisible by " + std::to_string(multiple),
              "the " + kind + " generator halves each axis " + std::to_string(levels) +
                  " times; pad or crop to multiples of " + std::to_string(multiple));
  if (kind == "bpgan")
    for (int i = 0; i < 3; ++i)
      if (volume[i] < 11)
        invalid("volume", list_str(volume.data(), 3) + " has an axis shorter than BPGAN's 11-voxel SSIM window",
                "use at least 16 voxels per axis");
  require_positive("csf_inputs", csf_inputs);
  require_positive("covariate_inputs", covariate_inputs);
  if (pix2pix_generator || kind == "bpgan") {
    for (int64_t c : baseline_channels) require_positive("baseline_channels", c);
  } else if (kind != "bmgan") {  // the attention U-Nets
    require_divisible("baseline_channels", baseline_channels, "baseline_groups", baseline_groups);
    require_positive("baseline_heads", baseline_heads);
    if (baseline_channels[3] % baseline_heads != 0)
      invalid("baseline_heads", "= " + std::to_string(baseline_heads) + " does not divide baseline_channels[3] = " +
                                    std::to_string(baseline_channels[3]),
              "choose a head count that divides the deepest width");
  }
  validate_discriminator();
  if (!(norm_eps > 0.f)) invalid("norm_eps", "is " + std::to_string(norm_eps), "it must be positive");
  if (!(ln_eps > 0.f)) invalid("ln_eps", "is " + std::to_string(ln_eps), "it must be positive");
  if (!(bn_eps > 0.f)) invalid("bn_eps", "is " + std::to_string(bn_eps), "it must be positive");
}

ModelConfig model_preset(const std::string& name, const std::string& tracer, const std::string& kind) {
  ModelConfig c;  // the defaults are the full preset
  c.kind = kind;
  c.preset = name;
  if (name == "full") {
    c.perceptual = "lpips-squeeze";
  } else if (name == "demo") {
    c.volume = {48, 64, 48};
    c.voxel_mm = 3.0;
    c.encoder_channels = {16, 32, 32};
    c.encoder_groups = 8;
    c.encoder_heads = 2;
    c.t1_decoder_channels = {32, 32, 32, 16};
    c.t1_decoder_groups = 8;
    c.generator_channels = {32, 32, 16};
    c.generator_groups = 8;
    c.generator_heads = 4;
    c.fusion_width = 64;
    c.fusion_tokens = 4;
    c.context_width = 32;
    c.discriminator_channels = 16;
    c.perceptual = "none";
  } else if (name == "tiny") {
    // Small enough for finite differences and a PyTorch fixture, but every structural feature
    // present: ≥ 2 heads, K > 1 tokens, channel changes in every network, a 2³ patch grid.
    c.volume = {16, 16, 16};
    c.voxel_mm = 0;  // test cohorts come on any grid
    c.encoder_channels = {4, 8, 8};
    c.encoder_groups = 2;
    c.encoder_heads = 2;
    c.t1_decoder_channels = {8, 8, 4, 4};
    c.t1_decoder_groups = 2;
    c.generator_channels = {8, 8, 4};
    c.generator_groups = 2;
    c.generator_heads = 2;
    c.fusion_width = 8;
    c.fusion_tokens = 3;
    c.context_width = 6;
    c.discriminator_channels = 4;
    c.perceptual = "none";
  } else {
    throw std::invalid_argument("model preset \"" + name + "\" is unknown; use \"full\", \"demo\" or \"tiny\"");
  }
  apply_baseline_preset(c);
  if (tracer == "AV45") {
    c.csf_inputs = 1;
  } else if (tracer == "AV1451") {
    c.csf_inputs = 2;
  } else {
    throw std::invalid_argument("tracer \"" + tracer + "\" is unknown; use \"AV45\" (CSF ABETA) or \"AV1451\" (TAU, PTAU)");
  }
  return c;
}

nlohmann::json to_json(const ModelConfig& c) {
  return nlohmann::json{{"kind", c.kind},
                        {"voxel_mm", c.voxel_mm},
                        {"preset", c.preset},
                        {"volume", c.volume},
                        {"latent_channels", c.latent_channels},
                        {"latent", c.latent},
                        {"csf_inputs", c.csf_inputs},
                        {"covariate_inputs", c.covariate_inputs},
                        {"encoder_channels", c.encoder_channels},
                        {"encoder_groups", c.encoder_groups},
                        {"encoder_heads", c.encoder_heads},
                        {"fusion", c.fusion},
                        {"fusion_width", c.fusion_width},
                        {"fusion_tokens", c.fusion_tokens},
                        {"context_width", c.context_width},
                        {"t1_decoder_channels", c.t1_decoder_channels},
                        {"t1_decoder_groups", c.t1_decoder_groups},
                        {"generator_channels", c.generator_channels},
                        {"generator_groups", c.generator_groups},
                        {"generator_heads", c.generator_heads},
                        {"discriminator_channels", c.discriminator_channels},
                        {"discriminator_layers", c.discriminator_layers},
                        {"baseline_channels", c.baseline_channels},
                        {"baseline_groups", c.baseline_groups},
                        {"baseline_heads", c.baseline_heads},
                        {"bmgan_levels", c.bmgan_levels},
                        {"bmgan_width_divisor", c.bmgan_width_divisor},
                        {"t1_reconstruction", c.t1_reconstruction},
                        {"discriminator", c.discriminator},
                        {"perceptual", c.perceptual},
                        {"transformer_zero_init", c.transformer_zero_init},
                        {"norm_eps", c.norm_eps},
                        {"ln_eps", c.ln_eps},
                        {"bn_eps", c.bn_eps},
                        {"bn_momentum", c.bn_momentum}};
}

namespace {
template <class T>
void read_field(const nlohmann::json& value, const std::string& key, T& out) {
  try {
    out = value.get<T>();
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument("model config: key \"" + key + "\" has the wrong type or length (" + value.dump() +
                                "): " + e.what());
  }
}
}  // namespace

ModelConfig model_config_from_json(const nlohmann::json& j, ModelConfig base) {
  if (!j.is_object()) throw std::invalid_argument("model config: expected a JSON object, got " + j.dump());
  ModelConfig& c = base;
  for (const auto& [key, value] : j.items()) {
    if (key == "kind") read_field(value, key, c.kind);
    else if (key == "preset") read_field(value, key, c.preset);
    else if (key == "volume") read_field(value, key, c.volume);
    else if (key == "voxel_mm") read_field(value, key, c.voxel_mm);
    else if (key == "latent_channels") read_field(value, key, c.latent_channels);
    else if (key == "latent") read_field(value, key, c.latent);
    else if (key == "csf_inputs") read_field(value, key, c.csf_inputs);
    else if (key == "covariate_inputs") read_field(value, key, c.covariate_inputs);
    else if (key == "encoder_channels") read_field(value, key, c.encoder_channels);
    else if (key == "encoder_groups") read_field(value, key, c.encoder_groups);
    else if (key == "encoder_heads") read_field(value, key, c.encoder_heads);
    else if (key == "fusion") read_field(value, key, c.fusion);
    else if (key == "fusion_width") read_field(value, key, c.fusion_width);
    else if (key == "fusion_tokens") read_field(value, key, c.fusion_tokens);
    else if (key == "context_width") read_field(value, key, c.context_width);
    else if (key == "t1_decoder_channels") read_field(value, key, c.t1_decoder_channels);
    else if (key == "t1_decoder_groups") read_field(value, key, c.t1_decoder_groups);
    else if (key == "generator_channels") read_field(value, key, c.generator_channels);
    else if (key == "generator_groups") read_field(value, key, c.generator_groups);
    else if (key == "generator_heads") read_field(value, key, c.generator_heads);
    else if (key == "discriminator_channels") read_field(value, key, c.discriminator_channels);
    else if (key == "discriminator_layers") read_field(value, key, c.discriminator_layers);
    else if (key == "baseline_channels") read_field(value, key, c.baseline_channels);
    else if (key == "baseline_groups") read_field(value, key, c.baseline_groups);
    else if (key == "baseline_heads") read_field(value, key, c.baseline_heads);
    else if (key == "bmgan_levels") read_field(value, key, c.bmgan_levels);
    else if (key == "bmgan_width_divisor") read_field(value, key, c.bmgan_width_divisor);
    else if (key == "t1_reconstruction") read_field(value, key, c.t1_reconstruction);
    else if (key == "discriminator") read_field(value, key, c.discriminator);
    else if (key == "perceptual") read_field(value, key, c.perceptual);
    else if (key == "transformer_zero_init") read_field(value, key, c.transformer_zero_init);
    else if (key == "norm_eps") read_field(value, key, c.norm_eps);
    else if (key == "ln_eps") read_field(value, key, c.ln_eps);
    else if (key == "bn_eps") read_field(value, key, c.bn_eps);
    else if (key == "bn_momentum") read_field(value, key, c.bn_momentum);
    else
      throw std::invalid_argument("model config: unknown key \"" + key +
                                  "\" (a typo would silently keep the default); known keys are those of to_json, e.g. "
                                  "\"encoder_channels\", \"fusion_tokens\", \"latent\"");
  }
  return c;
}

}  // namespace cpets::models
