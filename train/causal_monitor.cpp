#include "train/causal_monitor.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>

namespace cpets::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::vector<double> tabular_row(const Session& s) {
  std::vector<double> x(s.csf.begin(), s.csf.end());
  x.insert(x.end(), s.covariates.begin(), s.covariates.end());
  return x;
}

json number(double v) { return std::isfinite(v) ? json(v) : json(); }

std::string fixed(const json& v, int digits, bool sign = false) {
  if (!v.is_number()) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, sign ? "%+.*f" : "%.*f", digits, v.get<double>());
  return buf;
}

}  // namespace

std::unique_ptr<CausalMonitor> CausalMonitor::open(const CohortSplits& data, const Dataset& train, const Dataset& val,
                                                   const std::vector<eval::Intervention>& interventions) {
  const fs::path cohort(data.cohort_dir);
  if (val.size() == 0 || train.size() < 2 || !fs::is_regular_file(cohort / "atlas" / "regions.json")) return nullptr;
  std::unique_ptr<CausalMonitor> m(new CausalMonitor());
  m->tracer_ = data.tracer;
  m->ranges_ = data.ranges;
  m->sessions_ = &val;
  const auto first = val.load(0);  // held: without the cache the shared pair is the only owner
  const io::Volume& grid = first->second.volume;
  try {
    m->atlas_ = eval::atlas_on_grid(eval::load_atlas(cohort.string()), grid.shape, grid.affine);
  } catch (const std::invalid_argument& e) {  // e.g. the model volume crops the reference region away
    std::fprintf(stderr, "warning: no SUVR or counterfactual metrics during validation: the atlas of %s does not fit "
                 "the model grid: %s\n", data.cohort_dir.c_str(), e.what());
    return nullptr;
  }

  // The lines to beat, from the training split only.
  std::vector<std::vector<double>> rows;
  std::vector<double> targets;
  io::Volume mean_pet = io::make_volume(grid.shape, 0.f, grid.affine);
  std::vector<double> sum(mean_pet.data.size(), 0.0);
  for (int64_t i = 0; i < train.size(); ++i) {
    const auto pair = train.load(i);
    const io::Volume& pet = pair->second.volume;
    for (size_t v = 0; v < sum.size(); ++v) sum[v] += pet.data[v];
    const double suvr = eval::suvr_or_nan(pet, m->atlas_).cortical;
    if (!std::isfinite(suvr)) continue;
    rows.push_back(tabular_row(train.session(i)));
    targets.push_back(suvr);
  }
  for (size_t v = 0; v < sum.size(); ++v) mean_pet.data[v] = static_cast<float>(sum[v] / double(train.size()));
  m->mean_pet_suvr_ = eval::suvr_or_nan(mean_pet, m->atlas_).cortical;
  const eval::LinearReference reference = eval::LinearReference::fit(rows, targets);
  for (int64_t i = 0; i < val.size(); ++i) {
    m->real_suvr_.push_back(eval::suvr_or_nan(val.load(i)->second.volume, m->atlas_).cortical);
    m->tabular_suvr_.push_back(reference.predict(tabular_row(val.session(i))));
  }

  // A phantom's truth and its counterfactual worlds.
  m->factual_truth_ = eval::read_suvr_truth((cohort / "truth.csv").string(), data.tracer);
  auto world_truth = [&](const eval::Intervention& iv) {
    return eval::read_suvr_truth(
        (cohort / "counterfactual" / eval::phantom_world_folder(iv.name) / "truth.csv").string(), data.tracer);
  };
  std::vector<eval::Intervention> chosen = interventions;
  if (chosen.empty() && m->factual_truth_ && fs::is_directory(cohort / "counterfactual")) {
    std::vector<std::string> folders;
    for (const auto& e : fs::directory_iterator(cohort / "counterfactual"))
      if (e.is_directory()) folders.push_back(e.path().filename().string());
    std::sort(folders.begin(), folders.end());
    for (const auto& folder : folders) {
      try {
        eval::Intervention iv = eval::parse_intervention(eval::phantom_world_intervention(folder));
        eval::check_intervention_for_tracer(iv, data.tracer);
        chosen.push_back(std::move(iv));
      } catch (const std::invalid_argument&) {
        // not a world this model can be asked about (e.g. abeta for an AV1451 model)
      }
    }
  }
  std::vector<io::PairedRecord> training_records;
  for (const auto& s : data.train) training_records.push_back(s.record);
  for (auto& iv : chosen) {
    World w;
    auto truth = m->factual_truth_ ? world_truth(iv) : std::nullopt;
    w.has_truth = truth.has_value();
    if (truth) w.truth = std::move(*truth);
    w.intervention = std::move(iv);
    m->world_names_.push_back(w.intervention.name);
    m->worlds_.push_back(w);
    if (!eval::CsfMediator::applies(w.intervention)) continue;
    if (!m->mediator_) m->mediator_ = eval::CsfMediator::fit(training_records, data.tracer);
    w.csf_follows = true;
    m->world_names_.push_back(w.intervention.name + " [CSF follows M]");
    m->worlds_.push_back(std::move(w));
  }
  return m;
}

void CausalMonitor::begin() {
  synthetic_suvr_.clear();
  effects_.clear();
  for (const auto& name : world_names_) effects_.emplace_back(name);
}

void CausalMonitor::add(const eval::Synthesiser& model, int64_t i, const models::Abduction& abduction,
                        const io::Volume& factual) {
  const eval::RegionSuvr f = eval::region_suvr(eval::suvr_or_nan(factual, atlas_));
  synthetic_suvr_.push_back(f[0]);
  const io::PairedRecord& record = sessions_->session(i).record;
  const std::pair<std::string, std::string> key{record.subject, io::format_date(record.pet_date)};
  for (size_t w = 0; w < worlds_.size(); ++w) {
    const auto cf_record = eval::apply_intervention(record, worlds_[w].intervention);
    const auto truth_cf = worlds_[w].truth.find(key);
    // The world does not exist for this session (APOE4 − 1 of a non-carrier; the phantom left it out).
    if (!cf_record || (worlds_[w].has_truth && truth_cf == worlds_[w].truth.end())) {
      effects_[w].skip();
      continue;
    }
    const io::PairedRecord input = worlds_[w].csf_follows ? mediator_->mediate(record, *cf_record) : *cf_record;
    const io::Volume cf = model.synthesise(abduction, eval::tabular_inputs(input, ranges_, tracer_), factual);
    std::optional<std::pair<eval::RegionSuvr, eval::RegionSuvr>> truth;
    const auto truth_f = factual_truth_ ? factual_truth_->find(key) : eval::SuvrTruth::const_iterator();
    if (worlds_[w].has_truth && truth_f != factual_truth_->end()) truth = std::make_pair(truth_f->second, truth_cf->second);
    effects_[w].add(f, eval::region_suvr(eval::suvr_or_nan(cf, atlas_)), truth);
  }
}

json CausalMonitor::finish() {
  const eval::SuvrFidelity model = eval::suvr_fidelity(synthetic_suvr_, real_suvr_);
  const eval::SuvrFidelity tabular = eval::suvr_fidelity(tabular_suvr_, real_suvr_);
  const eval::SuvrFidelity mean_pet =
      eval::suvr_fidelity(std::vector<double>(real_suvr_.size(), mean_pet_suvr_), real_suvr_);
  json effects = json::array();
  for (const auto& e : effects_) effects.push_back(e.summary().to_json());
  return {{"suvr_sessions", model.sessions}, {"suvr_error", number(model.error)},  {"suvr_r", number(model.r.r)},
          {"mean_pet_error", number(mean_pet.error)}, {"tabular_error", number(tabular.error)},
          {"tabular_r", number(tabular.r.r)},     {"effects", effects}};
}

bool CausalMonitor::conditional_path_on(const json& m) {
  auto value = [](const json& j, const char* key) {
    return j.is_object() && j.contains(key) && j[key].is_number() ? j[key].get<double>() : kNaN;
  };
  if (!(value(m, "suvr_error") < value(m, "mean_pet_error")) || !(value(m, "suvr_r") >= 0.8)) return false;
  // A world that changes B_CSF and nothing else (joint worlds such as "apoe4-1,abeta*1" hold
  // the CSF while changing M; "[CSF follows M]" rows are ours, not the model's).
  auto csf_only = [](const std::string& name) {
    if (name.find('[') != std::string::npos) return false;
    try {
      const eval::Intervention iv = eval::parse_intervention(name);
      for (const auto& a : iv.set)
        if (!eval::is_csf_variable(a.variable)) return false;
      return !iv.set.empty();
    } catch (const std::invalid_argument&) {
      return false;
    }
  };
  for (const auto& e : m.value("effects", json::array())) {
    if (!csf_only(e.value("do", ""))) continue;
    const json cortex = e.contains("regions") ? e["regions"].value("cortex", json::object()) : json::object();
    const double model = value(cortex, "model"), truth = value(cortex, "true"), r = value(cortex, "r");
    if (!std::isfinite(truth)) continue;  // no truth to compare with
    if (!(r >= 0.8) || !(model / truth >= 0.5 && model / truth <= 2.0)) return false;
  }
  return true;
}

std::string CausalMonitor::describe(const json& m) {
  std::string s = "SUVR err " + fixed(m.value("suvr_error", json()), 3) + " r " + fixed(m.value("suvr_r", json()), 2) +
                  " (mean PET " + fixed(m.value("mean_pet_error", json()), 3) + ", tabular " +
                  fixed(m.value("tabular_error", json()), 3) + ")";
  for (const auto& e : m.value("effects", json::array())) {
    const json cortex = e["regions"].value("cortex", json::object());
    s += "; do(" + e["do"].get<std::string>() + ") r " + fixed(cortex.value("r", json()), 2, true) + " Δ " +
         fixed(cortex.value("model", json()), 3, true) + " (true " + fixed(cortex.value("true", json()), 3, true) + ")";
  }
  return s;
}

}  // namespace cpets::train
