// Inference with a trained model (docs/model.md §1 and §6), as cpets-infer and cpets-eval run it:
// abduct once (Causal PETS: S = E(I_T1, M)), then synthesise (I_PET = G_P(μ_S, f(B_CSF, M)) with
// ε = 0) for the factual tabular inputs and for interventions do(X = x) on them — the same
// abduction and the same (zero) noise, so counterfactual − factual is the intervention's effect
// alone. Any model kind (models/synthesis_model.h); one without a condition gives no effect.
//
// Volumes here are on the model grid (ModelConfig::volume), values in [0, 1]; moving them from
// and to a file's grid is train/data.h's prepare_volume / restore_to_grid (the tools call those).
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/cohort.h"
#include "io/volume.h"
#include "models/synthesis_model.h"

namespace cpets::eval {

// ---- interventions on the tabular inputs ---------------------------------------------------------
// Variables by their command-line names, values in raw units (years, 0/1, allele count, years of
// education, pg/mL): age, sex, apoe4, education, abeta, tau, ptau.
struct Assignment {
  enum class Op { set, add, scale };  // "apoe4=0", "apoe4-1" / "apoe4+1", "abeta*0.5"
  std::string variable;
  double value = 0;  // the value set, the signed amount added, or the factor
  Op op = Op::set;
};
struct Intervention {
  std::string name;  // as written, e.g. "apoe4=0" or "apoe4=0,abeta=800"; used in file names
  std::vector<Assignment> set;
};
const std::vector<std::string>& intervention_variables();
bool is_csf_variable(const std::string& variable);  // abeta, tau, ptau: B_CSF rather than M
// "apoe4=0" or several joined by commas (one world); relative forms change each session's own
// value: "apoe4-1", "age+5" (add, the paper's ΔnAPOE4 = ±1) and "abeta*0.5" (scale; CSF, age
// and education only). Throws std::invalid_argument naming the problem: unknown variable
// (listing the known ones), no operator, a value that is not a number, sex not 0/1, apoe4 not
// 0/1/2 (or a shift that is not a whole number), a negative CSF value or factor, scaling sex
// or apoe4, the same variable twice.
Intervention parse_intervention(const std::string& text);
// Throws when the intervention sets a CSF variable the tracer's model does not take (abeta for
// AV1451, tau/ptau for AV45).
void check_intervention_for_tracer(const Intervention& iv, const std::string& tracer);
// The record with the assignments applied (CSF values become uncensored; a censored value is
// scaled or shifted from its bound), or nullopt when the world does not exist for this session
// (APOE4 − 1 for a non-carrier, a negative CSF value or age after a shift).
std::optional<io::PairedRecord> apply_intervention(io::PairedRecord r, const Intervention& iv);
// A name safe for a folder: "do_apoe4=0", characters other than [A-Za-z0-9=._-] become '_'.
std::string intervention_folder(const Intervention& iv);

// ---- running the model ----------------------------------------------------------------------------
struct TabularInputs {
  std::vector<float> csf, covariates;  // normalised as model.md §4 (io::csf_inputs / covariate_inputs)
};
// io::csf_inputs / io::covariate_inputs with the checkpoint's ranges; throws when the record's
// tracer is not the model's.
TabularInputs tabular_inputs(const io::PairedRecord& r, const io::NormRanges& ranges, const std::string& tracer);

// Runs on the model's device (Module::device): inputs go there, volumes come back to the host.
class Synthesiser {
 public:
  explicit Synthesiser(std::shared_ptr<const models::SynthesisModel> model);

  // Causal PETS: S = E(I_T1, M). `t1` on the model grid. No gradients are recorded.
  models::Abduction abduct(const io::Volume& t1, const std::vector<float>& covariates) const;
  // The synthetic PET for the tabular inputs (Causal PETS: G_P(μ_S, f(B_CSF, M)), ε = 0), as a
  // volume with `grid`'s shape and affine (the T1's model-grid volume).
  io::Volume synthesise(const models::Abduction& s, const TabularInputs& tab, const io::Volume& grid) const;
  // Both at once: the factual synthesis.
  io::Volume synthesise(const io::Volume& t1, const TabularInputs& tab) const;

  const models::SynthesisModel& model() const { return *model_; }

 private:
  std::shared_ptr<const models::SynthesisModel> model_;
};

// counterfactual − factual, voxel by voxel (same grid required).
io::Volume difference(const io::Volume& counterfactual, const io::Volume& factual);

}  // namespace cpets::eval
