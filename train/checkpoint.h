// Checkpoints: everything a run needs to continue bit for bit, and everything inference needs.
//
// One checkpoint = two files written atomically (temporary + rename), in this order:
//   <name>.safetensors  the model's state_dict under its own names ("encoder.…", "pet_generator.…",
//                       "discriminator.…" — loadable into the PyTorch build as they are), the
//                       generator Adam's state under "optim.generator.", D's under
//                       "optim.discriminator.", and the JSON state below as metadata "cpets"
//   <name>.json         the same JSON state, for people and scripts
// The safetensors file is self-contained (its metadata is what loading reads), so the pair can
// never disagree in a way that matters.
//
// JSON state: format version, epoch/batch position of the next batch, step count, the noise
// Generator's state, the normalisation ranges (fitted on the training split, never refitted),
// the tracer, the full training config (config_to_json) and the resolved ModelConfig, the last
// validation metrics and the best validation L1 so far.
//
// In a run's folder: checkpoints/step-<8-digit step>.{safetensors,json} (the last
// train.keep_last are kept) and checkpoints/best.{safetensors,json} (lowest validation L1).
#pragma once
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/optim.h"
#include "engine/rng.h"
#include "io/cohort.h"
#include "models/synthesis_model.h"
#include "train/config.h"
#include "train/data.h"

namespace cpets::train {

inline constexpr int kCheckpointFormat = 1;

struct TrainingState {
  int64_t step = 0;            // optimiser steps done
  LoaderPosition position;     // the next batch
  GeneratorState noise;        // the noise Generator (ε_T1, ε_PET, slice subsets)
  double best_val_l1 = std::numeric_limits<double>::infinity();
  int64_t best_step = -1;
  nlohmann::json last_validation = nlohmann::json::object();
  int64_t ranks = 1;           // data-parallel ranks that trained it (global batch = batch_size × ranks)
};

struct CheckpointMeta {
  Config config;               // full training config (model section resolved)
  io::NormRanges ranges;
  std::string tracer;
  TrainingState state;
};

nlohmann::json checkpoint_meta_to_json(const CheckpointMeta& m);
CheckpointMeta checkpoint_meta_from_json(const nlohmann::json& j, const std::string& source);

// Writes <dir>/<name>.safetensors then <dir>/<name>.json, each atomically; creates `dir`.
// `d_optimizer` may be null (no discriminator). Returns the safetensors path.
std::string save_checkpoint(const std::string& dir, const std::string& name, const models::SynthesisModel& model,
                            const Adam& g_optimizer, const Adam* d_optimizer, const CheckpointMeta& meta);

// The checkpoint a path designates: a .safetensors file; a .json file (its sibling
// .safetensors); a run folder or its checkpoints/ folder → the newest step checkpoint (for
// resume) or, with prefer_best, best.safetensors when present. Throws naming the path when
// there is none.
std::string resolve_checkpoint(const std::string& path, bool prefer_best = false);

struct LoadedCheckpoint {
  std::string path;      // the .safetensors file
  CheckpointMeta meta;
  NamedTensors model;    // state_dict entries
  NamedTensors g_optimizer, d_optimizer;  // Adam state, prefixes stripped
};
LoadedCheckpoint read_checkpoint(const std::string& path);

// Step checkpoints in `dir`, oldest first, as (step, safetensors path).
std::vector<std::pair<int64_t, std::string>> list_step_checkpoints(const std::string& dir);
// Deletes all but the newest `keep` step checkpoints (both files). best.* is never touched.
void prune_step_checkpoints(const std::string& dir, int64_t keep);
std::string step_checkpoint_name(int64_t step);  // "step-00000123"

// For inference (cpets-infer, eval): the model rebuilt from the checkpoint's ModelConfig (its
// model.kind; checkpoints written before model.kind existed are Causal PETS) and loaded
// (strict), in eval mode, with what preparing inputs needs. `path` as resolve_checkpoint
// with prefer_best = true.
struct InferenceBundle {
  std::shared_ptr<models::SynthesisModel> model;
  models::ModelConfig model_config;
  io::NormRanges ranges;
  std::string tracer;
  std::string path;
  CheckpointMeta meta;
};
// `device` (train.device's forms: cpu, cuda, cuda:N) is where the model is placed.
InferenceBundle load_for_inference(const std::string& path, const std::string& device = "cpu");

// The device a train.device / --device text names, made current when it is a GPU (cuda:N
// selects GPU N, cuda GPU 0). Throws naming the text and why (no CUDA build, no such GPU).
Device open_device(const std::string& text);

}  // namespace cpets::train
