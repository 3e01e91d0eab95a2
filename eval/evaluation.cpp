#include "eval/evaluation.h"

#include <cmath>
#include <stdexcept>

namespace cpets::eval {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// MS-SSIM under the options, or nullopt when it is not computed.
std::optional<double> ms_ssim_value(const io::Volume& real, const io::Volume& syn, const SsimOptions& so,
                                    const EvalOptions& eo) {
  if (!eo.ms_ssim) return std::nullopt;
  if (ms_ssim_problem(real.shape, so).empty()) return ms_ssim3d(syn, real, so);
  if (!eo.pad_small_ms_ssim) return std::nullopt;
  return ms_ssim3d_padded(syn, real, so).value;
}

}  // namespace

const std::vector<MetricDef>& session_metrics() {
  static const std::vector<MetricDef> defs = {
      {"mae", "MAE", false, 4},
      {"psnr", "PSNR dB", true, 2},
      {"ssim", "SSIM σ1.5", true, 4},
      {"ssim_s05", "SSIM σ0.5", true, 4},
      {"ms_ssim", "MS-SSIM σ1.5", true, 4},
      {"ms_ssim_s05", "MS-SSIM σ0.5", true, 4},
      {"suvr_error", "SUVR err", false, 4},
      {"mae_ref", "MAE ref-protocol", false, 4},
      {"psnr_ref", "PSNR ref-protocol", true, 2},
      {"ms_ssim_ref", "MS-SSIM ref-protocol", true, 4},
  };
  return defs;
}

const MetricDef& metric_def(const std::string& key) {
  for (const auto& d : session_metrics())
    if (d.key == key) return d;
  std::string known;
  for (const auto& d : session_metrics()) known += (known.empty() ? "" : ", ") + d.key;
  throw std::invalid_argument("unknown metric '" + key + "' (known: " + known + ")");
}

std::string ms_ssim_protocol(Shape3 shape, const SsimOptions& opt, const EvalOptions& eo) {
  if (!eo.ms_ssim) return "not computed (switched off)";
  const std::string why = ms_ssim_problem(shape, opt);
  if (why.empty()) return "native";
  if (eo.pad_small_ms_ssim) return "zero-padded to " + io::shape_string(ms_ssim_legal_shape(shape, opt));
  return "not computed (" + io::shape_string(shape) + " too small)";
}

SessionResult evaluate_session(const io::Volume& real, const io::Volume& syn, const Atlas* atlas, const EvalOptions& opt) {
  SessionResult r;
  r.metrics["mae"] = mae(syn, real);
  r.metrics["psnr"] = psnr(syn, real);
  r.metrics["ssim"] = ssim3d(syn, real, ssim_reference());
  r.metrics["ssim_s05"] = ssim3d(syn, real, ssim_small());
  if (auto v = ms_ssim_value(real, syn, ssim_reference(), opt)) r.metrics["ms_ssim"] = *v;
  if (auto v = ms_ssim_value(real, syn, ssim_small(), opt)) r.metrics["ms_ssim_s05"] = *v;
  if (opt.reference_protocol) {
    const ReferenceProtocolMetrics ref = reference_protocol_metrics(real, syn, kReferencePaddedShape, opt.ms_ssim);
    r.metrics["mae_ref"] = ref.mae;
    r.metrics["psnr_ref"] = ref.psnr;
    if (opt.ms_ssim) r.metrics["ms_ssim_ref"] = ref.ms_ssim;
  }
  r.roi_real.fill(kNaN);
  r.roi_syn.fill(kNaN);
  if (atlas) {
    const Suvr sr = compute_suvr(real, *atlas);
    r.suvr_real = sr.cortical;
    r.roi_real = sr.roi;
    // A synthetic PET with nothing in the reference region has no SUVR; that is a (bad) result,
    // not an error, so it is recorded as NaN and shows up in the tables.
    const Suvr ss = suvr_or_nan(syn, *atlas, &r.suvr_failure);
    r.suvr_syn = ss.cortical;
    r.roi_syn = ss.roi;
    r.metrics["suvr_error"] = std::fabs(r.suvr_real - r.suvr_syn);
  }
  return r;
}

std::vector<double> metric_column(const MethodResult& m, const std::string& key) {
  std::vector<double> v;
  v.reserve(m.sessions.size());
  for (const auto& s : m.sessions) {
    const auto it = s.metrics.find(key);
    v.push_back(it == s.metrics.end() ? kNaN : it->second);
  }
  return v;
}

MethodSummary summarise(const MethodResult& m) {
  MethodSummary s;
  if (m.sessions.empty()) return s;
  for (const auto& d : session_metrics()) {
    const auto col = metric_column(m, d.key);
    bool complete = true;
    for (double x : col) complete = complete && !std::isnan(x);
    if (complete) s.metrics[d.key] = mean_std(col);
  }
  std::vector<double> real, syn;
  for (const auto& x : m.sessions)
    if (x.has_suvr() && !std::isnan(x.suvr_syn)) real.push_back(x.suvr_real), syn.push_back(x.suvr_syn);
  if (real.size() >= 3) s.suvr_correlation = pearson(syn, real);
  return s;
}

std::array<std::optional<RoiComparison>, 6> roi_comparisons(const MethodResult& m) {
  std::array<std::optional<RoiComparison>, 6> out;
  if (m.sessions.size() < 2) return out;
  for (size_t k = 0; k < out.size(); ++k) {
    std::vector<double> real, syn;
    for (const auto& s : m.sessions)
      if (!std::isnan(s.roi_real[k]) && !std::isnan(s.roi_syn[k])) real.push_back(s.roi_real[k]), syn.push_back(s.roi_syn[k]);
    if (real.size() != m.sessions.size()) continue;
    out[k] = RoiComparison{mean(real), mean(syn), paired_t_test(syn, real)};
  }
  return out;
}

Comparison compare_methods(const MethodResult& a, const MethodResult& b, const std::string& metric) {
  const MetricDef& def = metric_def(metric);
  if (a.sessions.size() != b.sessions.size())
    throw std::invalid_argument("compare " + a.name + " vs " + b.name + ": " + std::to_string(a.sessions.size()) +
                                " and " + std::to_string(b.sessions.size()) + " sessions; they must be the same sessions");
  for (size_t i = 0; i < a.sessions.size(); ++i)
    if (a.sessions[i].subject != b.sessions[i].subject || a.sessions[i].session != b.sessions[i].session)
      throw std::invalid_argument("compare " + a.name + " vs " + b.name + ": session " + std::to_string(i) + " is " +
                                  a.sessions[i].subject + " " + a.sessions[i].session + " in one and " +
                                  b.sessions[i].subject + " " + b.sessions[i].session + " in the other");
  // Sessions where either method has no value (e.g. a synthetic PET with nothing in the SUVR
  // reference region) are left out of the pairing; c.n says how many pairs remain.
  std::vector<double> ca, cb;
  const auto all_a = metric_column(a, metric), all_b = metric_column(b, metric);
  for (size_t i = 0; i < all_a.size(); ++i)
    if (std::isfinite(all_a[i]) && std::isfinite(all_b[i])) ca.push_back(all_a[i]), cb.push_back(all_b[i]);
  if (ca.size() < 2)
    throw std::invalid_argument("compare " + a.name + " vs " + b.name + ": " + def.label + " is available for " +
                                std::to_string(ca.size()) + " of " + std::to_string(all_a.size()) +
                                " sessions; a paired t-test needs at least 2");
  Comparison c;
  c.method_a = a.name;
  c.method_b = b.name;
  c.metric = metric;
  c.n = int(ca.size());
  c.test = paired_t_test(ca, cb);
  for (size_t i = 0; i < ca.size(); ++i) c.a_better += def.higher_is_better ? ca[i] > cb[i] : ca[i] < cb[i];
  return c;
}

}  // namespace cpets::eval
