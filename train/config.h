// The training configuration: one JSON document with three sections,
//
//   { "model": { "preset": "demo", …ModelConfig fields… },   models/config.h
//     "data":  { "cohort": "out/demo/cohort", "tracer": "AV45", … },
//     "train": { "lr": 1e-4, "batch_size": 2, "lambda_adv": 0.005, … } }
//
// read from configs/*.json, then overridden key by key from the command line
// (`--set train.lr=2e-4 --set model.fusion_tokens=4`). Every key a user writes must exist in
// the defaults and have their type (a float key takes any number, an integer key an integer, an
// array the same length): an unknown key, a wrong type or an impossible value throws
// ConfigError naming the dotted key and the fix, because a typo that silently keeps a default
// wastes a day of training.
//
// The model section starts from model_preset(model.preset, data.tracer). The paper's ablations
// (Table 5) are train.* switches, not model.* ones, so there is one place to set each:
// train.t1_reconstruction, train.discriminator, train.perceptual, train.eps_pet (see
// configs/README.md); the resolved ModelConfig gets the network-shaping ones copied in.
#pragma once
#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/config.h"
#include "models/synthesis_model.h"

namespace cpets::train {

// A configuration problem; what() names the dotted key ("train.lr") and how to fix it.
struct ConfigError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

struct DataConfig {
  // A cohort folder: cohort.csv + t1/… + pet/… (io/cohort.h layout, as cpets-phantom writes).
  std::string cohort;
  // Optional: an existing paired table (cpets-data pair's output, with its split column); when
  // empty the cohort table is read, paired and split here. Relative paths are taken relative
  // to the cohort folder.
  std::string paired_csv;
  std::string tracer = "AV45";      // "AV45" | "AV1451"
  uint64_t split_seed = 100;        // subject-level 4:1:1 split (io::assign_splits)
  std::string on_missing = "fail";  // cohort rows with missing values: "fail" | "skip"
  bool prefetch = true;             // load the next batch on a background thread
  int64_t cache_mb = 4096;          // keep prepared volumes in memory up to this size (0 = off)
  int64_t max_val_sessions = 0;     // validate on the first N val sessions only (0 = all)
};

struct TrainConfig {
  // Optimisers (model.md §5): Adam β (0.9, 0.999), eps 1e-8, no weight decay.
  double lr = 1e-4;                 // everything but D
  double lr_discriminator = 5e-4;   // D (paper; the reference code used 1e-3)
  // Learning rate of the conditional path (f and G_P's cross-attention to B) as a multiple of
  // lr; 1 is model.md's single rate (docs/causal-fidelity.md measures why more helps).
  double lr_conditional_scale = 1.0;
  double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
  int64_t batch_size = 2;
  int64_t epochs = 1000;
  int64_t max_steps = 0;            // stop after this many steps in total (0 = no limit)
  uint64_t seed = 777;              // initial weights and all noise (ε_T1, ε_PET, slice subsets)
  uint64_t data_seed = 777;         // the per-epoch shuffles

  // Objective (models::ObjectiveConfig; each model kind reads the weights it has) and the
  // paper's Table-5 ablations. The defaults depend on model.kind (train_defaults).
  double lambda_l1 = 1.0;           // weight of the PET L1 term (Pix2Pix 100)
  double lambda_cycle = 10.0;       // CycleGAN: weight of the two cycle-consistency L1 terms
  double lambda_identity = 0.5;     // CycleGAN: identity L1 weight, as a fraction of lambda_cycle
  double lambda_gp = 100.0;         // BPGAN: gradient profile loss weight
  double lambda_ssim = 10.0;        // BPGAN: SSIM loss weight
  double lambda_perceptual = 0.02;  // λ_p
  double lambda_adv = 0.005;        // λ_adv
  double beta_kl = 0.001;           // β
  std::string t1_loss = "l1";       // "l1" (reference code) | "mse" (paper eq. 6)
  bool t1_reconstruction = true;    // false: no G_T1, no L_T1          ("w/o T1 reconstruction")
  bool discriminator = true;        // false: no D, no adversarial term ("w/o discriminator")
  std::string perceptual = "lpips-squeeze";  // "none" | "lpips-squeeze" ("w/o perceptual loss")
  std::string perceptual_weights;   // converted LPIPS-squeeze safetensors (tools/convert_lpips.py)
  bool eps_pet = true;              // false: G_P decodes μ             ("w/o ε_PET")
  double perceptual_slice_ratio = 0.5;

  // Bookkeeping.
  int64_t validate_every = 1;       // epochs between validations (0 = never)
  int64_t checkpoint_every = 1;     // epochs between checkpoints (0 = only at the end)
  int64_t checkpoint_every_steps = 0;  // additionally every N steps (0 = off)
  int64_t keep_last = 3;            // step checkpoints kept (the best one is kept apart)
  std::string device = "cpu";       // "cpu" | "cuda" | "cuda:N" (several ranks: "cuda" = cuda:<local rank>)
  double bucket_mb = 25;            // data-parallel training: gradient bucket size (dist/reducer.h)
  bool sync_batchnorm = false;      // data-parallel training: BatchNorm statistics over all ranks' batches
  int64_t threads = 0;              // OpenMP threads (0 = OMP_NUM_THREADS / all cores)
  // Implementation per op family on CUDA tensors (engine/backend.h; "" = the CPETS_*_BACKEND /
  // CPETS_PRECISION environment variable, or ours in fp32): conv "cuda" | "cudnn", gemm "cuda" |
  // "cublas", attention "cuda" | "cublas"; precision "fp32" | "tf32" | "bf16", the arithmetic of conv3d and
  // GEMM (tensor cores for tf32/bf16; weights, norms, losses, reductions and Adam stay fp32).
  // Recorded in train.jsonl's start line.
  std::string conv_backend, gemm_backend, attention_backend, precision;
};

// The op families of engine/backend.h with the config's choice for each ("" = not set).
std::vector<std::pair<std::string, std::string>> op_backends(const TrainConfig& t);

// train.device: "cpu", "cuda" (cuda:0, or the local rank's GPU when several ranks train) or
// "cuda:N". Throws ConfigError naming the key and the accepted forms.
struct DeviceChoice {
  Device device;
  bool index_given = false;  // "cuda:N" rather than "cuda"
};
DeviceChoice parse_device(const std::string& text);

struct Config {
  models::ModelConfig model;  // resolved: preset + overrides + the ablation switches above
  DataConfig data;
  TrainConfig train;

  // The objective's settings as the model wants them (λ_adv 0 without D, λ_p 0 with
  // perceptual "none").
  models::ObjectiveConfig objective() const;
};

// The train section's defaults for a model kind: model.md §5 for Causal PETS; for a baseline its
// reference training script's optimiser and loss weights (configs/README.md lists them).
TrainConfig train_defaults(const std::string& kind = "causal-pets");

// Every default, as the JSON document a user edits (model section from the preset/tracer/kind
// given, train section from the kind).
nlohmann::json default_config_json(const std::string& preset = "full", const std::string& tracer = "AV45",
                                   const std::string& kind = "causal-pets");

// JSON → Config: keys checked against the defaults (names and types), then values validated
// (ranges, enumerations, ModelConfig::validate, consistency between sections).
Config config_from_json(const nlohmann::json& j);
// A configuration a run saved (its config.json, a checkpoint's): renamed keys are carried to
// their new names first (train.conv_precision → train.precision), then config_from_json. What
// people write gets config_from_json's error naming the new key instead.
Config saved_config_from_json(nlohmann::json j);
// Config → JSON, complete (every key); config_from_json(config_to_json(c)) == c.
nlohmann::json config_to_json(const Config& c);

// "train.lr=2e-4": the value is parsed as JSON when it is valid JSON (numbers, true/false,
// arrays like [48,64,48]) and taken as a string otherwise. Throws ConfigError on a malformed
// assignment (no '=', empty key). The key is checked later by config_from_json.
void apply_override(nlohmann::json& j, const std::string& assignment);

// A config file's JSON as written (errors name the file and line), not yet checked or resolved.
nlohmann::json read_config_file(const std::string& path);
// A (possibly partial) document with the overrides applied in order, resolved against the
// defaults of its preset/tracer/kind; `source` names the document in errors.
Config config_from_document(const nlohmann::json& document, const std::vector<std::string>& overrides,
                            const std::string& source);
// Reads a JSON file (errors name the file and line), applies the overrides in order, resolves.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// The same from defaults only (no file): `cpets-train --set …` alone, and the tests.
Config make_config(const std::string& preset, const std::vector<std::string>& overrides = {});

}  // namespace cpets::train
