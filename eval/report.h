// The evaluation report: a PNG montage per shown session (real | each method's synthetic | each
// method's error), a compact text table for the terminal, a JSON file of every number, and one
// self-contained HTML page (tables per method, paired t-tests, inline SVG plots of per-session
// MAE / SSIM and of synthetic-vs-real cortical SUVR, the montages by relative path).
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/causal.h"
#include "eval/evaluation.h"
#include "io/png.h"
#include "io/volume.h"

namespace cpets::eval {

struct ReportMontage {
  std::string caption;
  std::string path;  // relative to the HTML file
};

// One plot of training curves: each series is (step, value) points.
struct ReportCurve {
  std::string title, ylabel;
  struct Series {
    std::string name;
    std::vector<double> step, value;  // x and y (x is a training step unless xlabel says otherwise)
  };
  std::vector<Series> series;
  std::string xlabel = "training step";
};

// A table made by the caller (cpets-experiment's Table 1 and Table 5): a header row and rows of
// cells as they are to be shown, shown above the per-method metrics.
struct ReportTable {
  std::string title;
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> notes;  // under the table (legend of stars, units, budgets)
};

struct Report {
  std::string title = "Causal PETS evaluation";
  std::vector<std::pair<std::string, std::string>> facts;  // "checkpoint" → "run/ckpt…", shown on top
  std::vector<ReportTable> tables;                         // shown next, before the metrics
  std::vector<MethodResult> methods;                       // the first is the one being evaluated
  std::vector<Comparison> comparisons;
  std::vector<ReportMontage> montages;
  std::vector<std::string> notes;                          // protocol remarks (MS-SSIM padding, …)
  // Causal fidelity (eval/causal.h): the tabular reference's SUVR error and r, the interventions'
  // per-region effects (model against truth), and the run's curves over training steps.
  std::optional<SuvrFidelity> tabular_reference;
  std::vector<EffectSummary> effects;
  std::vector<ReportCurve> curves;
  std::string curves_title = "Training curves (validation)";
};

// The curves of a run's train.jsonl validation lines: L1 and SSIM; cortical SUVR error beside the
// mean training PET and the tabular reference; r(synthetic, real); and per intervention the
// per-session r(model Δ, true Δ) and the mean cortical Δ of model and truth. Empty when the file
// is absent; lines that are not JSON are skipped.
std::vector<ReportCurve> training_curves(const std::string& train_jsonl);
// The curves alone as a small HTML page (cpets-train writes one into its run folder), atomic.
void write_curves_html(const std::string& path, const std::string& title, const std::vector<ReportCurve>& curves);

// Rows: REAL, then per method its synthetic volume (same hot colour range as REAL) and its error
// synthetic − real (diverging, one symmetric range shared by all methods). Labels are upper-cased
// for the montage font. All volumes must share the real volume's shape.
struct MontageMethod {
  std::string label;
  const io::Volume* volume = nullptr;
};
io::Image render_comparison_montage(const io::Volume& real, const std::vector<MontageMethod>& methods,
                                    const io::MontageOptions& opt = {});
void write_comparison_montage(const std::string& path, const io::Volume& real, const std::vector<MontageMethod>& methods,
                              const io::MontageOptions& opt = {});

// A fixed-width table (metric rows × method columns, mean ± std), the SUVR correlations and the
// comparisons, for stdout.
std::string text_summary(const Report& r);

// Every number: per method the summary and the per-session values; comparisons; facts; notes.
// NaN and infinity become null.
nlohmann::ordered_json report_json(const Report& r);
void write_report_json(const std::string& path, const Report& r);  // atomic

// The HTML page (atomic write). Creates the parent folder if needed.
void write_html_report(const std::string& path, const Report& r);
std::string html_report(const Report& r);

}  // namespace cpets::eval
