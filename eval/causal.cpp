#include "eval/causal.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "io/cohort.h"

namespace cpets::eval {

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double number_or_nan(double v) { return std::isfinite(v) ? v : kNaN; }
nlohmann::json json_number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }
}  // namespace

RegionSuvr region_suvr(const Suvr& s) {
  RegionSuvr r;
  r[0] = s.cortical;
  for (size_t i = 0; i < 6; ++i) r[i + 1] = s.roi[i];
  return r;
}

const std::string& region_name(size_t region) {
  static const std::string cortex = "cortex";
  return region == 0 ? cortex : six_rois().at(region - 1);
}

std::optional<SuvrTruth> read_suvr_truth(const std::string& truth_csv, const std::string& tracer) {
  if (!std::filesystem::is_regular_file(truth_csv)) return std::nullopt;
  const io::CsvTable t = io::read_csv(truth_csv);
  std::string base = "SUVR_";
  for (char c : tracer) base += char(std::tolower(static_cast<unsigned char>(c)));
  auto column = [&](const std::string& name, bool required) -> std::optional<size_t> {
    for (size_t i = 0; i < t.header.size(); ++i)
      if (t.header[i] == name) return i;
    if (required)
      throw std::runtime_error(truth_csv + ": no column '" + name + "' (a phantom truth table written for " + tracer +
                               " has it; regenerate the cohort with cpets-phantom --tracer including " + tracer + ")");
    return std::nullopt;
  };
  const size_t subj = *column("Subject", true), date = *column("PET_date", true);
  std::array<std::optional<size_t>, 7> cols;
  cols[0] = column(base, true);
  for (size_t r = 0; r < 6; ++r) cols[r + 1] = column(base + "_" + six_rois()[r], false);
  SuvrTruth out;
  for (size_t i = 0; i < t.rows.size(); ++i) {
    const auto& row = t.rows[i];
    RegionSuvr v;
    v.fill(kNaN);
    for (size_t r = 0; r < 7; ++r) {
      if (!cols[r]) continue;
      const std::string& cell = row.at(*cols[r]);
      char* end = nullptr;
      v[r] = std::strtod(cell.c_str(), &end);
      if (cell.empty() || *end != '\0')
        throw std::runtime_error(truth_csv + ": row " + std::to_string(i + 2) + ", column " + t.header[*cols[r]] + ": '" +
                                 cell + "' is not a number");
    }
    out[{row.at(subj), row.at(date)}] = v;
  }
  return out;
}

std::string phantom_world_folder(const std::string& intervention) {
  std::string s = intervention;
  std::replace(s.begin(), s.end(), ',', '_');
  std::replace(s.begin(), s.end(), '*', 'x');
  return s;
}

std::string phantom_world_intervention(std::string folder) {
  std::replace(folder.begin(), folder.end(), '_', ',');
  for (size_t at = folder.find("abetax"); at != std::string::npos; at = folder.find("abetax", at)) folder[at + 5] = '*';
  return folder;
}

LinearReference LinearReference::fit(const std::vector<std::vector<double>>& rows, const std::vector<double>& y) {
  if (rows.size() < 2 || rows.size() != y.size())
    throw std::invalid_argument("LinearReference::fit: need ≥ 2 rows and one target per row, got " +
                                std::to_string(rows.size()) + " rows and " + std::to_string(y.size()) + " targets");
  const size_t p = rows[0].size() + 1;
  std::vector<double> ata(p * p, 0.0), aty(p, 0.0);
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].size() + 1 != p) throw std::invalid_argument("LinearReference::fit: row " + std::to_string(i) + " has another length");
    std::vector<double> x(p, 1.0);
    std::copy(rows[i].begin(), rows[i].end(), x.begin() + 1);
    for (size_t a = 0; a < p; ++a) {
      aty[a] += x[a] * y[i];
      for (size_t b = 0; b < p; ++b) ata[a * p + b] += x[a] * x[b];
    }
  }
  for (size_t a = 1; a < p; ++a) ata[a * p + a] += 1e-9 * static_cast<double>(rows.size());
  // Gaussian elimination with partial pivoting on the (p × p) normal equations.
  for (size_t c = 0; c < p; ++c) {
    size_t pivot = c;
    for (size_t r = c + 1; r < p; ++r)
      if (std::fabs(ata[r * p + c]) > std::fabs(ata[pivot * p + c])) pivot = r;
    if (std::fabs(ata[pivot * p + c]) < 1e-300) throw std::runtime_error("LinearReference::fit: singular inputs");
    for (size_t k = 0; k < p; ++k) std::swap(ata[c * p + k], ata[pivot * p + k]);
    std::swap(aty[c], aty[pivot]);
    for (size_t r = 0; r < p; ++r) {
      if (r == c) continue;
      const double f = ata[r * p + c] / ata[c * p + c];
      for (size_t k = c; k < p; ++k) ata[r * p + k] -= f * ata[c * p + k];
      aty[r] -= f * aty[c];
    }
  }
  LinearReference ref;
  ref.coef_.resize(p);
  for (size_t c = 0; c < p; ++c) ref.coef_[c] = aty[c] / ata[c * p + c];
  return ref;
}

double LinearReference::predict(const std::vector<double>& x) const {
  if (x.size() + 1 != coef_.size())
    throw std::invalid_argument("LinearReference::predict: " + std::to_string(x.size()) + " inputs, fitted on " +
                                std::to_string(coef_.size() - 1));
  double y = coef_[0];
  for (size_t i = 0; i < x.size(); ++i) y += coef_[i + 1] * x[i];
  return y;
}

namespace {
std::vector<double> raw_covariates(const io::PairedRecord& r) { return {r.age, double(r.sex), double(r.apoe4), r.pteducat}; }
io::CsfValue& csf_field(io::PairedRecord& r, const std::string& name) {
  return name == "ABETA" ? r.abeta : name == "TAU" ? r.tau : r.ptau;
}
}  // namespace

CsfMediator CsfMediator::fit(const std::vector<io::PairedRecord>& training, const std::string& tracer) {
  CsfMediator m;
  m.tracer_ = tracer;
  if (tracer == "AV45") m.outputs_ = {"ABETA"};
  else if (tracer == "AV1451") m.outputs_ = {"TAU", "PTAU"};
  else throw std::invalid_argument("CsfMediator: unknown tracer '" + tracer + "' (AV45 or AV1451)");
  for (const auto& name : m.outputs_) {
    std::vector<std::vector<double>> rows;
    std::vector<double> y;
    for (io::PairedRecord r : training) {
      const double v = csf_field(r, name).value;
      if (r.tracer != tracer || !std::isfinite(v)) continue;
      rows.push_back(raw_covariates(r));
      y.push_back(v);
    }
    if (rows.size() < 6)
      throw std::invalid_argument("CsfMediator: only " + std::to_string(rows.size()) + " training " + tracer +
                                  " sessions with " + name + "; the CSF-follows-M estimate needs at least 6");
    m.models_.push_back(LinearReference::fit(rows, y));
    m.range_.emplace_back(*std::min_element(y.begin(), y.end()), *std::max_element(y.begin(), y.end()));
  }
  return m;
}

bool CsfMediator::applies(const Intervention& iv) {
  bool covariate = false;
  for (const auto& a : iv.set) {
    if (is_csf_variable(a.variable)) return false;
    covariate = true;
  }
  return covariate;
}

io::PairedRecord CsfMediator::mediate(const io::PairedRecord& factual, io::PairedRecord counterfactual) const {
  const std::vector<double> before = raw_covariates(factual), after = raw_covariates(counterfactual);
  for (size_t k = 0; k < outputs_.size(); ++k) {
    io::CsfValue& c = csf_field(counterfactual, outputs_[k]);
    c.value = std::clamp(c.value + models_[k].predict(after) - models_[k].predict(before), range_[k].first,
                         range_[k].second);
    c.raw = std::to_string(c.value);
    c.censored = io::Censor::none;
  }
  return counterfactual;
}

std::string CsfMediator::describe() const {
  static const char* names[] = {"age", "sex", "APOE4", "education"};
  std::string s;
  for (size_t k = 0; k < outputs_.size(); ++k) {
    const auto& c = models_[k].coefficients();
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s ≈ %.4g", outputs_[k].c_str(), c[0]);
    s += (k ? "; " : "") + std::string(buf);
    for (size_t i = 0; i < 4; ++i) {
      std::snprintf(buf, sizeof buf, " %+.4g·%s", c[i + 1], names[i]);
      s += buf;
    }
  }
  return s;
}

SuvrFidelity suvr_fidelity(const std::vector<double>& synthetic, const std::vector<double>& real) {
  std::vector<double> s, r;
  for (size_t i = 0; i < std::min(synthetic.size(), real.size()); ++i)
    if (std::isfinite(synthetic[i]) && std::isfinite(real[i])) s.push_back(synthetic[i]), r.push_back(real[i]);
  SuvrFidelity f;
  f.sessions = static_cast<int64_t>(s.size());
  f.error = kNaN;
  f.r.r = f.r.p = kNaN;
  if (s.empty()) return f;
  double e = 0;
  for (size_t i = 0; i < s.size(); ++i) e += std::fabs(s[i] - r[i]);
  f.error = e / static_cast<double>(s.size());
  if (s.size() >= 3) f.r = pearson(s, r);
  f.r.r = number_or_nan(f.r.r);
  return f;
}

std::optional<RegionEffect> region_effect(const std::vector<double>& model_delta, const std::vector<double>& true_delta) {
  std::vector<double> m_all, m, t;
  for (size_t i = 0; i < model_delta.size(); ++i) {
    if (!std::isfinite(model_delta[i])) continue;
    m_all.push_back(model_delta[i]);
    if (i < true_delta.size() && std::isfinite(true_delta[i])) m.push_back(model_delta[i]), t.push_back(true_delta[i]);
  }
  if (m_all.size() < 2) return std::nullopt;
  RegionEffect e;
  e.n = static_cast<int64_t>(m_all.size());
  e.mean_model = mean(m_all);
  const PairedTTest test = paired_t_test(m_all, std::vector<double>(m_all.size(), 0.0));
  e.t = test.t;
  e.p = test.p;
  e.mean_true = e.r = e.slope = kNaN;
  if (t.size() >= 2) {
    e.mean_true = mean(t);
    const double mt = mean(t), mm = mean(m);
    double stt = 0, stm = 0;
    for (size_t i = 0; i < t.size(); ++i) stt += (t[i] - mt) * (t[i] - mt), stm += (t[i] - mt) * (m[i] - mm);
    if (stt > 0) e.slope = stm / stt;
    if (t.size() >= 3) e.r = number_or_nan(pearson(m, t).r);
    e.signs_agree = (e.mean_model > 0) == (e.mean_true > 0) && e.mean_model != 0 && e.mean_true != 0;
  }
  return e;
}

void EffectAccumulator::add(const RegionSuvr& factual, const RegionSuvr& counterfactual,
                            const std::optional<std::pair<RegionSuvr, RegionSuvr>>& truth) {
  for (size_t r = 0; r < 7; ++r) {
    model_[r].push_back(counterfactual[r] - factual[r]);
    true_[r].push_back(truth ? truth->second[r] - truth->first[r] : kNaN);
  }
}

EffectSummary EffectAccumulator::summary() const {
  EffectSummary s;
  s.intervention = intervention_;
  s.sessions = static_cast<int64_t>(model_[0].size());
  s.skipped = skipped_;
  for (size_t r = 0; r < 7; ++r) s.regions[r] = region_effect(model_[r], true_[r]);
  return s;
}

nlohmann::json EffectSummary::to_json() const {
  nlohmann::json regions_json = nlohmann::json::object();
  for (size_t r = 0; r < 7; ++r) {
    if (!regions[r]) continue;
    const RegionEffect& e = *regions[r];
    regions_json[region_name(r)] = {{"n", e.n},
                                    {"model", json_number(e.mean_model)},
                                    {"true", json_number(e.mean_true)},
                                    {"r", json_number(e.r)},
                                    {"t", json_number(e.t)},
                                    {"p", json_number(e.p)},
                                    {"slope", json_number(e.slope)},
                                    {"signs_agree", std::isfinite(e.mean_true) ? nlohmann::json(e.signs_agree) : nlohmann::json()}};
  }
  return {{"do", intervention}, {"sessions", sessions}, {"skipped", skipped}, {"regions", regions_json}};
}

}  // namespace cpets::eval
