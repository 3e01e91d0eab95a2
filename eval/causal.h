// Causal fidelity (docs/causal-fidelity.md): does the synthetic PET carry the tabular inputs'
// information, and do interventions move it the way the truth does?
//
// - SUVR fidelity: cortical SUVR error and r(synthetic, real) over a set of sessions, beside two
//   lines to beat — the mean training PET (one image for everyone) and the tabular reference, a
//   least-squares regression of real cortical SUVR on the model's normalised tabular inputs
//   fitted on the training split (what the inputs allow without any image).
// - Counterfactual accuracy, where the truth is known (a phantom cohort: truth.csv and
//   counterfactual/<world>/truth.csv): per region, the model's per-session ΔSUVR against the
//   true ΔSUVR — correlation, slope, means and whether the signs agree.
#pragma once
#include <array>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "eval/inference.h"
#include "eval/stats.h"
#include "eval/suvr.h"

namespace cpets::eval {

// Cortical SUVR then the six ROIs (six_rois() order); NaN where absent.
using RegionSuvr = std::array<double, 7>;
RegionSuvr region_suvr(const Suvr& s);
const std::string& region_name(size_t region);  // "cortex", "FC", …

// ---- the truth of a phantom cohort ------------------------------------------------------------------
// Noise-free SUVRs by (Subject, PET date "YYYY-MM-DD").
using SuvrTruth = std::map<std::pair<std::string, std::string>, RegionSuvr>;
// truth.csv's SUVR_<tracer> columns. nullopt when the file is absent; throws naming the file, the
// row and the column when a value is not a number or a needed column is missing.
std::optional<SuvrTruth> read_suvr_truth(const std::string& truth_csv, const std::string& tracer);
// The phantom's folder under counterfactual/ for an intervention as written ("apoe4-1,abeta*1" →
// "apoe4-1_abetax1"; io/phantom.h).
std::string phantom_world_folder(const std::string& intervention);
// Its inverse, for the folders the phantom wrote ("apoe4-1_abetax1" → "apoe4-1,abeta*1").
std::string phantom_world_intervention(std::string folder);

// ---- the tabular reference --------------------------------------------------------------------------
// y ≈ b0 + Σ b_i x_i by least squares (normal equations in double, with a tiny ridge so a constant
// input — e.g. a censored CSF column — does not make them singular).
class LinearReference {
 public:
  // rows: one input vector per session (same length); y: the target. Throws on < 2 rows or
  // ragged rows.
  static LinearReference fit(const std::vector<std::vector<double>>& rows, const std::vector<double>& y);
  double predict(const std::vector<double>& x) const;
  const std::vector<double>& coefficients() const { return coef_; }  // b0, b1, …

 private:
  std::vector<double> coef_;
};

// ---- interventions whose effect runs through B_CSF -----------------------------------------------------
// model.md's graph has no edge M → B, so do(APOE4 − 1) keeps B_CSF as measured and gives the effect
// of APOE4 with the CSF held (the phantom's world "apoe4-1,abeta*1"). In the data APOE4 moves
// amyloid and so the CSF; the total effect needs B_CSF to follow M. CsfMediator estimates that
// mechanism from the training split — each raw CSF value regressed on the raw covariates (age,
// sex, APOE4, education) — and moves a session's CSF by the change of that prediction, keeping
// its own residual (abduction under an additive-noise model). Opt-in, and named as such.
class CsfMediator {
 public:
  // Throws when the tracer is unknown or fewer than 6 training records have the CSF values.
  static CsfMediator fit(const std::vector<io::PairedRecord>& training, const std::string& tracer);
  // True when the intervention changes a covariate and sets no CSF variable itself.
  static bool applies(const Intervention& iv);
  // `counterfactual` (the intervention applied) with its CSF moved by g(M') − g(M), kept within the
  // training values' span (an assay reads censored values at its bounds, so the data never go
  // beyond them either).
  io::PairedRecord mediate(const io::PairedRecord& factual, io::PairedRecord counterfactual) const;
  // "ABETA ≈ 1340 − 2.1·age … −220·APOE4 …" for reports.
  std::string describe() const;

 private:
  std::string tracer_;
  std::vector<std::string> outputs_;      // "ABETA" or "TAU", "PTAU"
  std::vector<LinearReference> models_;   // one per output, inputs age, sex, apoe4, education
  std::vector<std::pair<double, double>> range_;  // per output, the training values' span
};

// ---- summaries ---------------------------------------------------------------------------------------
struct SuvrFidelity {
  int64_t sessions = 0;
  double error = 0;     // mean |synthetic − real| cortical SUVR
  Correlation r;        // synthetic vs real (r = NaN below 3 sessions or without spread)
};
// Pairs with a NaN on either side are left out.
SuvrFidelity suvr_fidelity(const std::vector<double>& synthetic, const std::vector<double>& real);

struct RegionEffect {
  int64_t n = 0;
  double mean_model = 0, mean_true = 0;  // mean ΔSUVR (counterfactual − factual)
  double t = 0, p = 1;                   // paired t-test of the model's counterfactual against its factual SUVR
  double r = 0;                          // per-session model vs true Δ (NaN without spread)
  double slope = 0;                      // least-squares slope of model Δ on true Δ
  bool signs_agree = false;              // sign(mean_model) == sign(mean_true)
};
// model and truth deltas per session, same order; pairs with a NaN are left out. nullopt below 2.
std::optional<RegionEffect> region_effect(const std::vector<double>& model_delta, const std::vector<double>& true_delta);

struct EffectSummary {
  std::string intervention;  // as written, e.g. "apoe4-1"
  int64_t sessions = 0, skipped = 0;  // skipped: the world does not exist for them
  std::array<std::optional<RegionEffect>, 7> regions;
  nlohmann::json to_json() const;
};

// Accumulates one intervention's per-session SUVRs and builds its summary.
class EffectAccumulator {
 public:
  explicit EffectAccumulator(std::string intervention) : intervention_(std::move(intervention)) {}
  void skip() { ++skipped_; }
  // truth: the factual and counterfactual true SUVRs of this session, when known.
  void add(const RegionSuvr& factual, const RegionSuvr& counterfactual,
           const std::optional<std::pair<RegionSuvr, RegionSuvr>>& truth);
  EffectSummary summary() const;

 private:
  std::string intervention_;
  int64_t skipped_ = 0;
  std::array<std::vector<double>, 7> model_, true_;
};

}  // namespace cpets::eval
