// Per-session evaluation of synthetic PET against real PET and the method-level summaries and
// comparisons of docs/model.md §6: MAE, PSNR, SSIM and MS-SSIM (both window settings), cortical
// SUVR error and six-ROI SUVRs; mean ± std per method, correlation of synthetic with real
// cortical SUVR, paired t-tests between methods and win counts.
#pragma once
#include <array>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "eval/metrics.h"
#include "eval/stats.h"
#include "eval/suvr.h"
#include "io/volume.h"

namespace cpets::eval {

struct MetricDef {
  std::string key, label;
  bool higher_is_better = false;
  int precision = 4;
};
// mae, psnr, ssim (σ 1.5), ssim_s05 (σ 0.5), ms_ssim, ms_ssim_s05, suvr_error, and the reference
// code's protocol mae_ref, psnr_ref, ms_ssim_ref (EvalOptions::reference_protocol) — table order.
const std::vector<MetricDef>& session_metrics();
const MetricDef& metric_def(const std::string& key);  // throws for an unknown key

struct EvalOptions {
  bool ms_ssim = true;
  // MS-SSIM is computed where it is legal for the volume's shape (eval/metrics.h). When true,
  // volumes too small for it are zero-padded first (ms_ssim3d_padded, the reference metrics.py
  // protocol; it changes the number, and costs up to 20× the voxels on the demo grid); when
  // false, MS-SSIM is left out for them.
  bool pad_small_ms_ssim = false;
  // Also MAE, PSNR and MS-SSIM under the reference metrics.py protocol (mean-matched, padded to
  // 192×224×192; reference_protocol_metrics) — slow: MS-SSIM on 8.3 M voxels.
  bool reference_protocol = false;
};

// "native" when MS-SSIM is legal on `shape`, "zero-padded to D×H×W" with padding, or "not
// computed (…reason…)".
std::string ms_ssim_protocol(Shape3 shape, const SsimOptions& opt, const EvalOptions& eo);

struct SessionResult {
  std::string subject, session;           // session: the PET date (or a file name)
  std::map<std::string, double> metrics;  // by MetricDef::key; absent when not computed
  double suvr_real = std::numeric_limits<double>::quiet_NaN(), suvr_syn = std::numeric_limits<double>::quiet_NaN();
  std::array<double, 6> roi_real{}, roi_syn{};  // six_rois() order
  std::string suvr_failure;  // why suvr_syn is NaN (e.g. no signal in the reference region)
  bool has_suvr() const { return !std::isnan(suvr_real); }
};

// `real` and `syn` on one grid, intensities in [0, 1] (data range 1). `atlas` may be null (no
// SUVR metrics); otherwise it must be on the same grid (atlas_on_grid).
SessionResult evaluate_session(const io::Volume& real, const io::Volume& syn, const Atlas* atlas,
                               const EvalOptions& opt = {});

struct MethodResult {
  std::string name;         // short, e.g. "trained"
  std::string description;  // e.g. "checkpoint run/ckpt-000300 (step 300)"
  std::vector<SessionResult> sessions;
};

// The values of one metric over the sessions, in session order; NaN where it is missing.
std::vector<double> metric_column(const MethodResult& m, const std::string& key);

struct MethodSummary {
  std::map<std::string, MeanStd> metrics;  // only metrics present for every session
  std::optional<Correlation> suvr_correlation;  // synthetic vs real cortical SUVR (≥ 3 sessions)
};
MethodSummary summarise(const MethodResult& m);

// Six-ROI SUVR of one method against the real PET (docs/model.md §6): per ROI, the mean real
// and synthetic SUVR over the sessions and the paired t-test synthetic − real; nullopt for an
// ROI that some session lacks (no atlas region, or no synthetic SUVR) or with < 2 sessions.
struct RoiComparison {
  double mean_real = 0, mean_syn = 0;
  PairedTTest test;
};
std::array<std::optional<RoiComparison>, 6> roi_comparisons(const MethodResult& m);

struct Comparison {
  std::string method_a, method_b, metric;
  PairedTTest test;  // a − b
  int a_better = 0;  // sessions where a beats b (by the metric's direction)
  int n = 0;
};
// Paired by session: both methods must list the same sessions in the same order (throws naming
// the first mismatch otherwise). Sessions where either value is missing or not finite are left
// out (n counts the pairs used); throws when fewer than 2 pairs remain.
Comparison compare_methods(const MethodResult& a, const MethodResult& b, const std::string& metric);

}  // namespace cpets::eval
