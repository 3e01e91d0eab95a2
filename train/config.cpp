#include "train/config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/backend.h"

namespace cpets::train {

using json = nlohmann::json;

std::vector<std::pair<std::string, std::string>> op_backends(const TrainConfig& t) {
  return {{"conv", t.conv_backend}, {"gemm", t.gemm_backend}, {"attention", t.attention_backend},
          {"precision", t.precision}};
}

DeviceChoice parse_device(const std::string& text) {
  try {
    return {Device::parse(text), text.find(':') != std::string::npos};
  } catch (const std::invalid_argument&) {
    throw ConfigError("config key 'train.device' is \"" + text + "\"; use cpu, cuda or cuda:N (N: the GPU's index)");
  }
}

namespace {

// The ablation switches that shape the networks: set in the train section only, copied into the
// ModelConfig, so a run cannot say "no discriminator" in one place and "discriminator" in another.
const std::vector<std::string>& ablation_model_keys() {
  static const std::vector<std::string> keys = {"t1_reconstruction", "discriminator", "perceptual"};
  return keys;
}

[[noreturn]] void fail(const std::string& key, const std::string& problem, const std::string& fix) {
  throw ConfigError("config key '" + key + "' " + problem + "; " + fix);
}

std::string kind_of(const json& v) {
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer() || v.is_number_unsigned()) return "an integer";
  if (v.is_number_float()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "a section";
  return "null";
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string join_path(const std::string& section, const std::string& key) {
  return section.empty() ? key : section + "." + key;
}

[[noreturn]] void unknown_key(const json& section_defaults, const std::string& section, const std::string& key) {
  const std::string dotted = join_path(section, key);
  if (section == "train" && key == "conv_precision")
    fail(dotted, "was renamed", "write train.precision (fp32 | tf32 | bf16): it now sets the arithmetic of GEMM too");
  if (section == "model" && std::find(ablation_model_keys().begin(), ablation_model_keys().end(), key) !=
                                ablation_model_keys().end())
    fail(dotted, "is an ablation switch, which is set in the train section",
         "write train." + key + " instead (see configs/README.md)");
  std::string best;
  size_t best_d = 4;
  std::string known;
  for (const auto& [k, _] : section_defaults.items()) {
    known += (known.empty() ? "" : ", ") + k;
    const size_t d = edit_distance(key, k);
    if (d < best_d) best_d = d, best = k;
  }
  fail(dotted, "is unknown",
       (best.empty() ? std::string() : "did you mean '" + join_path(section, best) + "'? ") + "known keys" +
           (section.empty() ? "" : " in '" + section + "'") + ": " + known);
}

// A value of the default's type: any number for a float key, an integral number for an integer
// key (a non-negative one for unsigned keys), same-length arrays element by element.
json checked_value(const json& def, const json& v, const std::string& key) {
  auto wrong = [&]() -> json {
    fail(key, "should be " + kind_of(def) + " like " + def.dump() + " but is " + kind_of(v) + " (" + v.dump() + ")",
         "write it as " + kind_of(def));
  };
  if (def.is_number_float()) {
    if (!v.is_number()) wrong();
    return v.get<double>();
  }
  if (def.is_number_integer() || def.is_number_unsigned()) {
    if (!v.is_number()) wrong();
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (!std::isfinite(d) || d != std::floor(d) || std::abs(d) > 9.0e15)
        fail(key, "must be an integer but is " + v.dump(), "write a whole number");
      if (def.is_number_unsigned() && d < 0) fail(key, "must not be negative (is " + v.dump() + ")", "write a whole number ≥ 0");
      return def.is_number_unsigned() ? json(static_cast<uint64_t>(d)) : json(static_cast<int64_t>(d));
    }
    if (def.is_number_unsigned() && v.is_number_integer() && v.get<int64_t>() < 0)
      fail(key, "must not be negative (is " + v.dump() + ")", "write a whole number ≥ 0");
    return v;
  }
  if (def.is_boolean() && !v.is_boolean()) wrong();
  if (def.is_string() && !v.is_string()) wrong();
  if (def.is_array()) {
    if (!v.is_array()) wrong();
    if (v.size() != def.size())
      fail(key, "needs " + std::to_string(def.size()) + " entries like " + def.dump() + " but has " +
                    std::to_string(v.size()) + " (" + v.dump() + ")",
           "write " + std::to_string(def.size()) + " values");
    json out = json::array();
    for (size_t i = 0; i < v.size(); ++i) out.push_back(checked_value(def[i], v[i], key + "[" + std::to_string(i) + "]"));
    return out;
  }
  return v;
}

// Overlays `given` on `target` (the defaults), checking every key and type.
void merge_checked(json& target, const json& given, const std::string& section) {
  if (!given.is_object())
    fail(section.empty() ? "(top level)" : section, "should be a section ({…}) but is " + kind_of(given),
         "write it as a JSON object");
  for (const auto& [key, value] : given.items()) {
    const std::string dotted = join_path(section, key);
    if (!target.contains(key)) unknown_key(target, section, key);
    json& def = target[key];
    if (def.is_object())
      merge_checked(def, value, dotted);
    else
      def = checked_value(def, value, dotted);
  }
}

std::string string_at(const json& j, const std::string& section, const std::string& key, const std::string& fallback) {
  if (j.is_object() && j.contains(section) && j[section].is_object() && j[section].contains(key) &&
      j[section][key].is_string())
    return j[section][key].get<std::string>();
  return fallback;
}

json data_to_json(const DataConfig& d) {
  return {{"cohort", d.cohort},           {"paired_csv", d.paired_csv}, {"tracer", d.tracer},
          {"split_seed", d.split_seed},   {"on_missing", d.on_missing}, {"prefetch", d.prefetch},
          {"cache_mb", d.cache_mb},             {"max_val_sessions", d.max_val_sessions}};
}

DataConfig data_from_json(const json& j) {
  DataConfig d;
  d.cohort = j.at("cohort").get<std::string>();
  d.paired_csv = j.at("paired_csv").get<std::string>();
  d.tracer = j.at("tracer").get<std::string>();
  d.split_seed = j.at("split_seed").get<uint64_t>();
  d.on_missing = j.at("on_missing").get<std::string>();
  d.prefetch = j.at("prefetch").get<bool>();
  d.cache_mb = j.at("cache_mb").get<int64_t>();
  d.max_val_sessions = j.at("max_val_sessions").get<int64_t>();
  return d;
}

json train_to_json(const TrainConfig& t) {
  return {{"lr", t.lr},
          {"lr_discriminator", t.lr_discriminator},
          {"lr_conditional_scale", t.lr_conditional_scale},
          {"beta1", t.beta1},
          {"beta2", t.beta2},
          {"adam_eps", t.adam_eps},
          {"batch_size", t.batch_size},
          {"epochs", t.epochs},
          {"max_steps", t.max_steps},
          {"seed", t.seed},
          {"data_seed", t.data_seed},
          {"lambda_l1", t.lambda_l1},
          {"lambda_cycle", t.lambda_cycle},
          {"lambda_identity", t.lambda_identity},
          {"lambda_gp", t.lambda_gp},
          {"lambda_ssim", t.lambda_ssim},
          {"lambda_perceptual", t.lambda_perceptual},
          {"lambda_adv", t.lambda_adv},
          {"beta_kl", t.beta_kl},
          {"t1_loss", t.t1_loss},
          {"t1_reconstruction", t.t1_reconstruction},
          {"discriminator", t.discriminator},
          {"perceptual", t.perceptual},
          {"perceptual_weights", t.perceptual_weights},
          {"eps_pet", t.eps_pet},
          {"perceptual_slice_ratio", t.perceptual_slice_ratio},
          {"validate_every", t.validate_every},
          {"checkpoint_every", t.checkpoint_every},
          {"checkpoint_every_steps", t.checkpoint_every_steps},
          {"keep_last", t.keep_last},
          {"device", t.device},
          {"bucket_mb", t.bucket_mb},
          {"sync_batchnorm", t.sync_batchnorm},
          {"threads", t.threads},
          {"conv_backend", t.conv_backend},
          {"gemm_backend", t.gemm_backend},
          {"attention_backend", t.attention_backend},
          {"precision", t.precision}};
}

TrainConfig train_from_json(const json& j) {
  TrainConfig t;
  t.lr = j.at("lr").get<double>();
  t.lr_discriminator = j.at("lr_discriminator").get<double>();
  t.lr_conditional_scale = j.at("lr_conditional_scale").get<double>();
  t.beta1 = j.at("beta1").get<double>();
  t.beta2 = j.at("beta2").get<double>();
  t.adam_eps = j.at("adam_eps").get<double>();
  t.batch_size = j.at("batch_size").get<int64_t>();
  t.epochs = j.at("epochs").get<int64_t>();
  t.max_steps = j.at("max_steps").get<int64_t>();
  t.seed = j.at("seed").get<uint64_t>();
  t.data_seed = j.at("data_seed").get<uint64_t>();
  t.lambda_l1 = j.at("lambda_l1").get<double>();
  t.lambda_cycle = j.at("lambda_cycle").get<double>();
  t.lambda_identity = j.at("lambda_identity").get<double>();
  t.lambda_gp = j.at("lambda_gp").get<double>();
  t.lambda_ssim = j.at("lambda_ssim").get<double>();
  t.lambda_perceptual = j.at("lambda_perceptual").get<double>();
  t.lambda_adv = j.at("lambda_adv").get<double>();
  t.beta_kl = j.at("beta_kl").get<double>();
  t.t1_loss = j.at("t1_loss").get<std::string>();
  t.t1_reconstruction = j.at("t1_reconstruction").get<bool>();
  t.discriminator = j.at("discriminator").get<bool>();
  t.perceptual = j.at("perceptual").get<std::string>();
  t.perceptual_weights = j.at("perceptual_weights").get<std::string>();
  t.eps_pet = j.at("eps_pet").get<bool>();
  t.perceptual_slice_ratio = j.at("perceptual_slice_ratio").get<double>();
  t.validate_every = j.at("validate_every").get<int64_t>();
  t.checkpoint_every = j.at("checkpoint_every").get<int64_t>();
  t.checkpoint_every_steps = j.at("checkpoint_every_steps").get<int64_t>();
  t.keep_last = j.at("keep_last").get<int64_t>();
  // Configs saved before device placement and data-parallel training lack these three.
  t.device = j.value("device", TrainConfig{}.device);
  t.bucket_mb = j.value("bucket_mb", TrainConfig{}.bucket_mb);
  t.sync_batchnorm = j.value("sync_batchnorm", TrainConfig{}.sync_batchnorm);
  t.threads = j.at("threads").get<int64_t>();
  t.conv_backend = j.at("conv_backend").get<std::string>();
  t.gemm_backend = j.at("gemm_backend").get<std::string>();
  t.attention_backend = j.at("attention_backend").get<std::string>();
  t.precision = j.at("precision").get<std::string>();
  return t;
}

std::string number(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

void require_one_of(const std::string& key, const std::string& v, const std::vector<std::string>& allowed) {
  if (std::find(allowed.begin(), allowed.end(), v) != allowed.end()) return;
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "\"" : ", \"") + a + "\"";
  fail(key, "is \"" + v + "\"", "use one of " + list);
}

void require_at_least(const std::string& key, double v, double lo, const std::string& why = "") {
  if (!(v >= lo)) {
    std::ostringstream s;
    s << "is " << v;
    std::ostringstream fix;
    fix << "it must be ≥ " << lo << why;
    fail(key, s.str(), fix.str());
  }
}

void require_positive(const std::string& key, double v) {
  if (!(v > 0) || !std::isfinite(v)) {
    std::ostringstream s;
    s << "is " << v;
    fail(key, s.str(), "it must be a positive number");
  }
}

void validate_data(const DataConfig& d) {
  require_one_of("data.tracer", d.tracer, {"AV45", "AV1451"});
  require_one_of("data.on_missing", d.on_missing, {"fail", "skip"});
  require_at_least("data.cache_mb", static_cast<double>(d.cache_mb), 0, " (0 = no cache)");
  require_at_least("data.max_val_sessions", static_cast<double>(d.max_val_sessions), 0, " (0 = all)");
}

void validate_train(const TrainConfig& t) {
  require_positive("train.lr", t.lr);
  require_positive("train.lr_discriminator", t.lr_discriminator);
  require_positive("train.lr_conditional_scale", t.lr_conditional_scale);
  if (!(t.beta1 >= 0 && t.beta1 < 1)) fail("train.beta1", "is " + number(t.beta1), "it must lie in [0, 1)");
  if (!(t.beta2 >= 0 && t.beta2 < 1)) fail("train.beta2", "is " + number(t.beta2), "it must lie in [0, 1)");
  require_positive("train.adam_eps", t.adam_eps);
  require_at_least("train.batch_size", static_cast<double>(t.batch_size), 1);
  require_at_least("train.epochs", static_cast<double>(t.epochs), 1);
  require_at_least("train.max_steps", static_cast<double>(t.max_steps), 0, " (0 = no limit)");
  require_positive("train.lambda_l1", t.lambda_l1);
  require_positive("train.lambda_cycle", t.lambda_cycle);
  require_at_least("train.lambda_identity", t.lambda_identity, 0);
  require_at_least("train.lambda_gp", t.lambda_gp, 0);
  require_at_least("train.lambda_ssim", t.lambda_ssim, 0);
  require_at_least("train.lambda_perceptual", t.lambda_perceptual, 0);
  require_at_least("train.lambda_adv", t.lambda_adv, 0);
  require_at_least("train.beta_kl", t.beta_kl, 0);
  require_one_of("train.t1_loss", t.t1_loss, {"l1", "mse"});
  require_one_of("train.perceptual", t.perceptual, {"none", "lpips-squeeze"});
  if (!(t.perceptual_slice_ratio > 0 && t.perceptual_slice_ratio <= 1))
    fail("train.perceptual_slice_ratio", "is " + number(t.perceptual_slice_ratio), "it must lie in (0, 1]");
  if (t.perceptual == "lpips-squeeze" && t.lambda_perceptual > 0 && t.perceptual_weights.empty())
    fail("train.perceptual_weights",
         "is empty while train.perceptual is \"lpips-squeeze\" with lambda_perceptual " + number(t.lambda_perceptual),
         "convert the LPIPS-squeeze weights once (tools/convert_lpips.py) and set train.perceptual_weights=FILE, "
         "or switch the perceptual loss off explicitly with train.perceptual=none (or train.lambda_perceptual=0)");
  require_at_least("train.validate_every", static_cast<double>(t.validate_every), 0, " (0 = never)");
  require_at_least("train.checkpoint_every", static_cast<double>(t.checkpoint_every), 0, " (0 = only at the end)");
  require_at_least("train.checkpoint_every_steps", static_cast<double>(t.checkpoint_every_steps), 0, " (0 = off)");
  require_at_least("train.keep_last", static_cast<double>(t.keep_last), 1);
  require_at_least("train.bucket_mb", t.bucket_mb, 0.001);
  parse_device(t.device);  // throws naming the key
  require_at_least("train.threads", static_cast<double>(t.threads), 0, " (0 = OMP_NUM_THREADS or all cores)");
  for (const auto& [family, value] : op_backends(t))
    if (!value.empty()) {
      std::vector<std::string> allowed = backend_choices(family);
      allowed.insert(allowed.begin(), "");
      require_one_of("train." + std::string(family == "precision" ? family : family + "_backend"), value, allowed);
    }
  const bool on_cpu = parse_device(t.device).device.is_cpu();
  if (on_cpu && !t.precision.empty() && t.precision != "fp32")
    fail("train.precision", "is \"" + t.precision + "\" but train.device is \"" + t.device + "\"",
         "the CPU kernels compute in fp32 only (tf32 and bf16 are tensor-core arithmetic): on the CPU use "
         "--set train.precision=fp32 (also to resume a GPU run there), or train on a GPU with --device cuda");
  if (t.precision == "bf16" && t.conv_backend == "cudnn")
    fail("train.precision", "is \"bf16\" with train.conv_backend \"cudnn\"",
         "the cuDNN reference convolution runs in fp32 and tf32 only: use train.precision=tf32 with cuDNN, or our "
         "kernels (train.conv_backend=cuda) in bf16");
}

std::string known_kinds() {
  std::string list;
  for (const auto& k : models::model_kinds()) list += (list.empty() ? "\"" : ", \"") + k + "\"";
  return list;
}

json model_section_defaults(const std::string& preset, const std::string& tracer, const std::string& kind) {
  const auto& kinds = models::model_kinds();
  if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end())
    fail("model.kind", "is \"" + kind + "\"", "use one of " + known_kinds());
  models::ModelConfig base;
  try {
    base = models::model_preset(preset, tracer, kind);
  } catch (const std::invalid_argument& e) {
    // The preset and the tracer are the two inputs here; say which is wrong.
    const bool tracer_bad = tracer != "AV45" && tracer != "AV1451";
    fail(tracer_bad ? "data.tracer" : "model.preset", std::string("is not usable: ") + e.what(),
         tracer_bad ? "use \"AV45\" or \"AV1451\"" : "use \"full\", \"demo\" or \"tiny\"");
  }
  json m = models::to_json(base);
  for (const auto& k : ablation_model_keys()) m.erase(k);
  return m;
}

// The full document for the preset/tracer/kind the (possibly partial) document `j` asks for.
json defaults_for(const json& j) {
  return default_config_json(string_at(j, "model", "preset", "full"), string_at(j, "data", "tracer", "AV45"),
                             string_at(j, "model", "kind", "causal-pets"));
}

}  // namespace

models::ObjectiveConfig Config::objective() const {
  models::ObjectiveConfig o;
  o.lambda_l1 = static_cast<float>(train.lambda_l1);
  o.lambda_cycle = static_cast<float>(train.lambda_cycle);
  o.lambda_identity = static_cast<float>(train.lambda_identity);
  o.lambda_gp = static_cast<float>(train.lambda_gp);
  o.lambda_ssim = static_cast<float>(train.lambda_ssim);
  o.lambda_perceptual = train.perceptual == "none" ? 0.f : static_cast<float>(train.lambda_perceptual);
  o.lambda_adv = train.discriminator ? static_cast<float>(train.lambda_adv) : 0.f;
  o.beta_kl = static_cast<float>(train.beta_kl);
  o.t1_loss = train.t1_loss;
  o.eps_pet = train.eps_pet;
  o.perceptual_slice_ratio = static_cast<float>(train.perceptual_slice_ratio);
  return o;
}

TrainConfig train_defaults(const std::string& kind) {
  TrainConfig t;
  if (kind == "unet" || kind == "unet-cond") {  // unet/config/training.json
    t.lr = 5e-4;
    t.lr_discriminator = 1e-4;
    t.lambda_adv = 0.1;
    t.perceptual = "none";  // computed by the reference with weight 0
  } else if (kind == "pix2pix") {  // the pix2pix paper: Adam 2e-4, β1 0.5, λ_L1 100
    t.lr = t.lr_discriminator = 2e-4;
    t.beta1 = 0.5;
    t.lambda_l1 = 100;
    t.lambda_adv = 1;
    t.perceptual = "none";
  } else if (kind == "bpgan") {  // our assumptions (models/baselines/bpgan.h): pix2pix's Adam and L1 weight
    t.lr = t.lr_discriminator = 2e-4;
    t.beta1 = 0.5;
    t.lambda_l1 = 100;
    t.lambda_adv = 1;
    t.perceptual = "none";
  } else if (kind == "bmgan") {  // bl_methods/BMGAN: Adam 2e-4 for G, E and D; λ_L1 20, LSGAN weight 1
    t.lr = t.lr_discriminator = 2e-4;
    t.lambda_l1 = 20;
    t.lambda_adv = 1;
    t.perceptual = "none";  // the reference's LPIPS-AlexNet (λ 8) cannot ship (models/baselines/bmgan.h)
  } else if (kind == "cyclegan") {  // the CycleGAN paper: Adam 2e-4, β1 0.5, λ_cyc 10, identity 0.5·λ_cyc
    t.lr = t.lr_discriminator = 2e-4;
    t.beta1 = 0.5;
    t.lambda_adv = 1;
    t.perceptual = "none";
  }
  return t;
}

json default_config_json(const std::string& preset, const std::string& tracer, const std::string& kind) {
  DataConfig d;
  d.tracer = tracer;
  return {{"model", model_section_defaults(preset, tracer, kind)},
          {"data", data_to_json(d)},
          {"train", train_to_json(train_defaults(kind))}};
}

namespace {

// A train key that only some kinds read, set away from its default for a kind that does not read
// it, is refused: the switch would silently do nothing.
void refuse_keys_the_kind_lacks(const Config& c) {
  const std::string& kind = c.model.kind;
  const TrainConfig d = train_defaults(kind);
  auto only = [&](const std::string& key, const std::vector<std::string>& readers, bool changed) {
    if (!changed || std::find(readers.begin(), readers.end(), kind) != readers.end()) return;
    std::string who;
    for (const auto& r : readers) who += (who.empty() ? "" : " and ") + r;
    fail("train." + key, "is set but model.kind \"" + kind + "\" has no such part (only " + who + " reads it)",
         "leave it at its default for this kind (configs/README.md lists what each kind reads)");
  };
  only("t1_reconstruction", {"causal-pets"}, c.train.t1_reconstruction != d.t1_reconstruction);
  only("eps_pet", {"causal-pets"}, c.train.eps_pet != d.eps_pet);
  only("beta_kl", {"causal-pets"}, c.train.beta_kl != d.beta_kl);
  only("t1_loss", {"causal-pets"}, c.train.t1_loss != d.t1_loss);
  only("perceptual", {"causal-pets"}, c.train.perceptual != "none" && c.train.lambda_perceptual > 0);
  only("lambda_cycle", {"cyclegan"}, c.train.lambda_cycle != d.lambda_cycle);
  only("lambda_identity", {"cyclegan"}, c.train.lambda_identity != d.lambda_identity);
  only("lambda_gp", {"bpgan"}, c.train.lambda_gp != d.lambda_gp);
  only("lambda_ssim", {"bpgan"}, c.train.lambda_ssim != d.lambda_ssim);
}

}  // namespace

Config saved_config_from_json(json j) {
  if (j.is_object() && j.contains("train") && j["train"].is_object() && j["train"].contains("conv_precision")) {
    // Runs saved before the precision covered GEMM too named it conv_precision.
    json& t = j["train"];
    if (!t.contains("precision")) t["precision"] = t["conv_precision"];
    t.erase("conv_precision");
  }
  return config_from_json(j);
}

Config config_from_json(const json& j) {
  if (!j.is_object()) fail("(top level)", "should be a JSON object with model, data and train sections", "see configs/");
  json doc = defaults_for(j);
  merge_checked(doc, j, "");

  Config c;
  c.data = data_from_json(doc["data"]);
  c.train = train_from_json(doc["train"]);
  validate_data(c.data);
  validate_train(c.train);

  json model = doc["model"];
  model["t1_reconstruction"] = c.train.t1_reconstruction;
  model["discriminator"] = c.train.discriminator;
  model["perceptual"] = c.train.perceptual;
  try {
    c.model = models::model_config_from_json(model, models::ModelConfig{});
    c.model.validate();
  } catch (const std::invalid_argument& e) {
    throw ConfigError(std::string("in the model section: ") + e.what());
  }
  refuse_keys_the_kind_lacks(c);
  const int64_t want_csf = c.data.tracer == "AV45" ? 1 : 2;
  if (c.model.csf_inputs != want_csf)
    fail("model.csf_inputs",
         "is " + std::to_string(c.model.csf_inputs) + " but data.tracer " + c.data.tracer + " gives " +
             std::to_string(want_csf) + " CSF input(s)",
         "leave model.csf_inputs out (the tracer sets it)");
  if (c.model.covariate_inputs != 4)
    fail("model.covariate_inputs", "is " + std::to_string(c.model.covariate_inputs),
         "the data gives 4 covariates (Age, Sex, APOE4, PTEDUCAT); leave it at 4");
  return c;
}

json config_to_json(const Config& c) {
  json model = models::to_json(c.model);
  for (const auto& k : ablation_model_keys()) model.erase(k);
  return {{"model", model}, {"data", data_to_json(c.data)}, {"train", train_to_json(c.train)}};
}

void apply_override(json& j, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError("override '" + assignment + "' is not KEY=VALUE; write e.g. --set train.lr=2e-4");
  const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  std::vector<std::string> parts;
  for (size_t b = 0;;) {
    const size_t dot = key.find('.', b);
    parts.push_back(key.substr(b, dot - b));
    if (dot == std::string::npos) break;
    b = dot + 1;
  }
  for (const auto& p : parts)
    if (p.empty()) throw ConfigError("override '" + assignment + "' has an empty part in its key '" + key + "'");
  if (!j.is_object()) j = json::object();
  json* node = &j;
  std::string walked;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    walked = join_path(walked, parts[i]);
    json& next = (*node)[parts[i]];
    if (next.is_null()) next = json::object();
    if (!next.is_object()) fail(walked, "is a value, not a section", "set '" + walked + "' itself");
    node = &next;
  }
  const json* existing = node->contains(parts.back()) ? &(*node)[parts.back()] : nullptr;
  json value;
  if (existing && existing->is_string()) {
    value = text;  // a string key takes the text as written (a cohort folder named "2024" stays a string)
  } else {
    std::string source = text;
    if (existing && existing->is_array() && !text.empty() && text.front() != '[') source = "[" + text + "]";
    value = json::parse(source, nullptr, /*allow_exceptions=*/false);
    if (value.is_discarded()) value = text;
  }
  (*node)[parts.back()] = value;
}

json read_config_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw ConfigError("config '" + path + "' is a folder; give a JSON file (configs/demo.json, configs/full.json)");
  std::ifstream in(path);
  if (!in) throw ConfigError("cannot open config file '" + path + "'; check the path (configs/demo.json, configs/full.json)");
  json file;
  try {
    file = json::parse(in, nullptr, true, /*ignore_comments=*/true);
  } catch (const json::out_of_range& e) {  // e.g. 1e999: no double holds it
    throw ConfigError("config file '" + path + "' holds a number out of range (" + e.what() +
                      "); write a finite value");
  } catch (const std::exception& e) {  // parse errors, and read errors of a file that is not text
    throw ConfigError("config file '" + path + "' is not valid JSON: " + e.what());
  }
  if (!file.is_object()) throw ConfigError("config file '" + path + "' must hold a JSON object {\"model\": …, \"data\": …, \"train\": …}");
  return file;
}

Config config_from_document(const json& document, const std::vector<std::string>& overrides, const std::string& source) {
  // Overrides apply to the complete document, so each assignment's type is known when it is
  // parsed (a string key takes its text as it is).
  json scan = document;
  for (const auto& o : overrides) apply_override(scan, o);
  json doc = defaults_for(scan);
  try {
    merge_checked(doc, document, "");
  } catch (const ConfigError& e) {
    throw ConfigError(source + ": " + e.what());
  }
  for (const auto& o : overrides) apply_override(doc, o);
  return config_from_json(doc);
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  return config_from_document(read_config_file(path), overrides, path);
}

Config make_config(const std::string& preset, const std::vector<std::string>& overrides) {
  return config_from_document({{"model", {{"preset", preset}}}}, overrides, "preset " + preset);
}

}  // namespace cpets::train
