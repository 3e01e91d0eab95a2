// The trainer: model.md §5's step order, validation, checkpoints, logs.
//
// One step on a batch:
//   1. D frozen; L_G = generator_objective(…) with ε_T1, ε_PET drawn from the noise Generator;
//      backward; Adam(G) step.
//   2. When D exists and λ_adv > 0: the generator's output regenerated with a NEW ε_PET (no
//      gradients needed: NoGradGuard), D on the fake and on the real PET in separate forward
//      calls (separate BatchNorm batch statistics), backward of fake + real, Adam(D) step.
// All randomness comes from one Philox Generator seeded by train.seed (initial weights are drawn
// from a separate Generator with the same seed, before training), saved in every checkpoint, so
// a resumed run repeats an uninterrupted one bit for bit.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/optim.h"
#include "engine/rng.h"
#include "models/causal_pets.h"
#include "models/perceptual.h"
#include "train/causal_monitor.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/data.h"
#include "train/objective.h"

namespace cpets::train {

// The loss values of one step, as logged (NaN for terms that are off).
struct StepLosses {
  int64_t step = 0, epoch = 0, batch = 0;
  double g_total = 0, pet_l1 = 0, t1 = 0, kl = 0, adv = 0, perceptual = 0;
  double d_total = 0, d_fake = 0, d_real = 0;  // d_total = ½(fake + real), as the reference logs
  // L2 norms of the generator gradient on the conditional path (f and G_P's cross-attention to
  // B) and on the rest, before the Adam step: how much the tabular inputs are being learnt.
  double grad_conditional = 0, grad_rest = 0;
  double seconds = 0;                           // wall time of the step (not part of equality)
  nlohmann::json to_json() const;
};

struct ValidationResult {
  int64_t step = 0, epoch = 0, sessions = 0;
  double l1 = 0, psnr = 0, ssim = 0;  // means over the sessions, ε = 0
  nlohmann::json causal;              // CausalMonitor::finish(); null without an atlas
  double seconds = 0;
  nlohmann::json to_json() const;
};

struct RunOptions {
  std::string out_dir;            // checkpoints/, train.jsonl, config.json; empty: nothing written
  int64_t max_steps = 0;          // overrides train.max_steps when > 0
  std::optional<int64_t> epochs;  // overrides train.epochs
  bool progress = true;           // a live progress line on `progress_stream`
  std::ostream* progress_stream = nullptr;  // default std::cerr
  // Checked after every step: when it turns true (SIGINT), run() writes a checkpoint and returns.
  const std::atomic<bool>* stop = nullptr;
  // Stop after the first validation at which CausalMonitor::conditional_path_on holds.
  bool until_conditional = false;
};

// What one training step works on: the model, the two optimisers (d_opt null: no D step), the
// perceptual network (null when λ_p = 0) and the noise Generator (advanced by the step).
struct StepContext {
  models::CausalPETS& model;
  Adam& g_opt;
  Adam* d_opt;
  const models::LpipsSqueeze* perceptual;
  Generator& noise;
  ObjectiveConfig objective;
};

// One step of model.md §5 on `batch`: generator forward + backward + Adam step with D frozen,
// then (when d_opt is given, D exists and λ_adv > 0) the D step on a fake regenerated with a
// new ε_PET. D's parameters must be frozen on entry and are frozen again on return.
// `step_number` only labels errors and the returned losses. Trainer::step and
// `cpets-bench train` both run this.
StepLosses training_step(const StepContext& ctx, const Batch& batch, int64_t step_number);

class Trainer {
 public:
  // Builds the data (open_cohort), the model (weights from Generator(train.seed)), the
  // optimisers and the noise Generator. `data` may be given to share an opened cohort.
  explicit Trainer(Config config, std::optional<CohortSplits> data = std::nullopt);
  ~Trainer();

  // Restores model, optimisers, noise Generator, data position, best-so-far and the ranges
  // from a checkpoint (a file or a run folder: the newest step checkpoint). The checkpoint's
  // model config must equal this one's; other differences (e.g. epochs) are allowed.
  void resume(const std::string& path);

  // One training step on the next batch; returns its losses.
  StepLosses step();
  // The whole run: steps until max_steps or the end of train.epochs, validating and
  // checkpointing on epoch boundaries as configured, a final checkpoint at the end.
  void run(const RunOptions& opt);

  ValidationResult validate();
  // Writes a step checkpoint (and best.* when `validation` improved the best L1) under
  // <out_dir>/checkpoints, pruning to train.keep_last. Returns the path written.
  std::string save(const std::string& out_dir, const std::optional<ValidationResult>& validation = std::nullopt);

  int64_t step_count() const { return state_.step; }
  // After run(opt) with opt.until_conditional: whether it stopped because the path was on.
  bool conditional_on() const { return conditional_on_; }
  int64_t total_steps(const RunOptions& opt) const;  // the step at which run() stops
  const Config& config() const { return config_; }
  const CohortSplits& data() const { return data_; }
  models::CausalPETS& model() { return *model_; }
  const TrainingState& state() const { return state_; }
  Adam& generator_optimizer() { return *g_opt_; }
  Adam* discriminator_optimizer() { return d_opt_.get(); }

 private:
  void build_datasets();  // train_set_ and val_set_ from data_
  bool discriminator_step_enabled() const;
  CheckpointMeta meta() const;

  Config config_;
  CohortSplits data_;
  std::unique_ptr<Dataset> train_set_, val_set_;
  std::unique_ptr<CausalMonitor> causal_;  // null when the cohort has no atlas
  bool conditional_on_ = false;
  std::shared_ptr<models::CausalPETS> model_;
  std::shared_ptr<models::LpipsSqueeze> perceptual_;
  std::unique_ptr<Adam> g_opt_, d_opt_;
  Generator noise_;
  std::unique_ptr<BatchLoader> loader_;
  TrainingState state_;
};

// "encoder  1,234,567" lines for --print-model.
std::string describe_parameters(const models::CausalPETS& model);

}  // namespace cpets::train
