// Causal fidelity measured at every validation (eval/causal.h, docs/causal-fidelity.md): when
// the cohort has an atlas, the validation sessions' cortical SUVR error and r(synthetic, real)
// beside the mean training PET and the tabular reference (fitted once, on the training split);
// when it is a phantom with counterfactual worlds, each world's per-session model ΔSUVR against
// the true ΔSUVR. Cheap: one extra G_P pass per session and world, E run once per session.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/causal.h"
#include "eval/inference.h"
#include "eval/suvr.h"
#include "train/data.h"

namespace cpets::train {

class CausalMonitor {
 public:
  // nullptr when the cohort has no atlas/regions.json (nothing to measure). Reads the training
  // split's PET once (SUVR targets of the tabular reference, the mean training PET) and measures
  // on `sessions` (validation during training, a test split in cpets-eval). The interventions
  // are `interventions` when given — with the phantom's truth where its world exists — or else
  // every counterfactual/<world>/ folder of a phantom cohort that applies to this tracer. An
  // intervention on covariates alone is measured twice: as model.md defines it (B_CSF held) and
  // with B_CSF following M ("apoe4-1 [CSF follows M]", eval::CsfMediator).
  static std::unique_ptr<CausalMonitor> open(const CohortSplits& data, const Dataset& train, const Dataset& sessions,
                                             const std::vector<eval::Intervention>& interventions = {});

  // One pass: `factual` is the synthesis of session i (ε = 0) on the model grid.
  void begin();
  void add(const eval::Synthesiser& model, int64_t i, const models::Abduction& abduction, const io::Volume& factual);
  // The summaries of the last pass (after finish), for reports.
  const std::vector<eval::EffectAccumulator>& effects() const { return effects_; }
  const std::optional<eval::CsfMediator>& mediator() const { return mediator_; }
  eval::SuvrFidelity tabular_fidelity() const { return eval::suvr_fidelity(tabular_suvr_, real_suvr_); }
  // {"suvr_error", "suvr_r", "mean_pet_error", "tabular_error", "tabular_r", "effects": […]}
  nlohmann::json finish();

  // Whether the tabular inputs have reached the image (`cpets-train --until-conditional`, the
  // demo): cortical SUVR error below the mean training PET's, r(synthetic, real) ≥ 0.8, and in
  // every world that changes a CSF value the model's per-session ΔSUVR correlates with the truth
  // (r ≥ 0.8), points the same way and has 0.5–2× its size. False without causal metrics.
  static bool conditional_path_on(const nlohmann::json& measured);

  // "SUVR err 0.081 r 0.62 (mean PET 0.137, tabular 0.067); do(apoe4-1) r +0.41 Δ −0.012 (true −0.098)"
  static std::string describe(const nlohmann::json& measured);

  const std::vector<std::string>& worlds() const { return world_names_; }

 private:
  struct World {
    eval::Intervention intervention;
    bool csf_follows = false;  // B_CSF moved by the CsfMediator (eval/causal.h)
    eval::SuvrTruth truth;
    bool has_truth = false;  // the phantom wrote this world
  };
  CausalMonitor() = default;

  std::string tracer_;
  io::NormRanges ranges_;
  eval::Atlas atlas_;  // on the model grid
  std::optional<eval::SuvrTruth> factual_truth_;
  std::optional<eval::CsfMediator> mediator_;
  std::vector<World> worlds_;
  std::vector<std::string> world_names_;
  const Dataset* sessions_ = nullptr;
  std::vector<double> real_suvr_, tabular_suvr_;  // per session
  double mean_pet_suvr_ = 0;
  // per pass
  std::vector<double> synthetic_suvr_;
  std::vector<eval::EffectAccumulator> effects_;
};

}  // namespace cpets::train
