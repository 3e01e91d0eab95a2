// cpets-eval: compare methods side by side on a cohort split (docs/model.md §6).
//
//   cpets-eval --checkpoint RUN --cohort DIR [--split test] --out OUT [--untrained] [--montages 3]
//              [--compare NAME=RUN …]
//
// Methods: "trained" (the checkpoint, ε = 0), each --compare run (another model kind or an
// ablation, any kind of train/comparison.h), "untrained" (--untrained: the same config and seed
// at step 0, i.e. the weights training started from) and "mean-PET" (the voxel-wise mean of the
// training split's PET volumes, the trivial baseline). Per session: MAE, PSNR (data range 1),
// SSIM with σ 1.5 and σ 0.5, MS-SSIM with both where the volume is large enough for it (or
// zero-padded with --pad-ms-ssim, see eval/metrics.h), cortical SUVR error and six-ROI SUVR from
// the cohort's atlas. Prints mean ± std per method, the correlation of synthetic with real
// cortical SUVR, paired t-tests of trained against the baselines and how often trained wins;
// writes OUT/report.html, OUT/metrics.json and OUT/montage/*.png.
//
// Metrics are computed on the model grid (the volumes as training sees them: each divided by its
// maximum and padded/cropped to the model volume), whole volume, no masking.
// Exit codes: 0 done, 1 runtime failure (files, data), 2 bad command line.
#include <CLI/CLI.hpp>

#include "cli_main.h"
#include <omp.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "eval/inference.h"
#include "eval/report.h"
#include "train/comparison.h"
#include "train/config.h"

namespace {

using namespace cpets;
namespace fs = std::filesystem;

using tools::UsageError;

struct Args {
  std::string checkpoint, cohort, split = "test", out, atlas;
  bool untrained = false, no_mean_pet = false, pad_ms_ssim = false, no_ms_ssim = false, reference_protocol = false;
  bool quiet = false;
  int montages = 3, threads = 0, max_sessions = 0;
  std::vector<std::string> interventions, compare;
  std::string device = "cpu";
};

int run(const Args& a) {
  if (a.threads > 0) omp_set_num_threads(a.threads);
  if (a.split != "train" && a.split != "val" && a.split != "test")
    throw UsageError("--split is train, val or test, got '" + a.split + "'");
  if (a.montages < 0) throw UsageError("--montages must be ≥ 0");
  std::vector<train::RunToCompare> runs{{"trained", a.checkpoint}};
  for (const auto& text : a.compare) {
    const size_t eq = text.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == text.size())
      throw UsageError("--compare takes NAME=RUN (e.g. unet-cond=out/exp/runs/unet-cond), got '" + text + "'");
    runs.push_back({text.substr(0, eq), text.substr(eq + 1)});
  }
  train::ComparisonOptions o;
  o.cohort = a.cohort;
  o.split = a.split;
  o.atlas = a.atlas;
  o.out = a.out;
  o.montages = a.montages;
  o.max_sessions = a.max_sessions;
  o.untrained = a.untrained;
  o.mean_pet = !a.no_mean_pet;
  o.metrics.pad_small_ms_ssim = a.pad_ms_ssim;
  o.metrics.ms_ssim = !a.no_ms_ssim;
  o.metrics.reference_protocol = a.reference_protocol;
  o.quiet = a.quiet;
  o.device = a.device;
  for (const auto& text : a.interventions) {
    try {
      o.interventions.push_back(eval::parse_intervention(text));
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
  }
  const eval::Report report = train::compare_runs(runs, o);
  const fs::path out(a.out);
  fs::create_directories(out);
  eval::write_report_json((out / "metrics.json").string(), report);
  eval::write_html_report((out / "report.html").string(), report);
  std::printf("%s", eval::text_summary(report).c_str());
  std::printf("wrote %s, %s", (out / "report.html").string().c_str(), (out / "metrics.json").string().c_str());
  if (!report.montages.empty()) std::printf(", %zu montage%s in %s", report.montages.size(),
                                            report.montages.size() == 1 ? "" : "s", (out / "montage").string().c_str());
  std::printf("\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cpets-eval: compare a Causal PETS checkpoint with baselines on a cohort split (MAE, PSNR, SSIM, "
               "MS-SSIM, SUVR; paired t-tests); writes an HTML report, a JSON of the numbers and montages"};
  Args a;
  app.add_option("--checkpoint", a.checkpoint, "a run folder (its best checkpoint) or a .safetensors/.json checkpoint")
      ->required();
  app.add_option("--cohort", a.cohort, "the cohort folder (cohort.csv, t1/, pet/, atlas/); split as the run did")
      ->required();
  app.add_option("--out", a.out, "output folder for report.html, metrics.json, montage/")->required();
  app.add_option("--split", a.split, "train, val or test (default)");
  app.add_option("--atlas", a.atlas, "atlas for SUVR (regions.json or its folder); default: the cohort's atlas/");
  app.add_flag("--untrained", a.untrained, "also evaluate the same model at step 0 (same config and seed)");
  app.add_option("--compare", a.compare,
                 "NAME=RUN: another trained run (a baseline, an ablation) evaluated on the same sessions and tested "
                 "against --checkpoint (repeatable)");
  app.add_flag("--no-mean-pet", a.no_mean_pet, "leave out the mean-training-PET baseline");
  app.add_flag("--pad-ms-ssim", a.pad_ms_ssim,
               "where the volume is too small for MS-SSIM, zero-pad it to the smallest legal shape (the reference "
               "metrics.py protocol) instead of leaving MS-SSIM out");
  app.add_flag("--no-ms-ssim", a.no_ms_ssim, "skip MS-SSIM altogether");
  app.add_flag("--reference-protocol", a.reference_protocol,
               "also MAE/PSNR/MS-SSIM as the reference metrics.py computes them (synthetic mean-matched to the real, "
               "both zero-padded to 192×224×192); slow");
  app.add_option("--montages", a.montages, "how many sessions get a montage (default 3)");
  app.add_option("--max-sessions", a.max_sessions, "evaluate only the first N sessions of the split (0 = all)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--threads", a.threads, "OpenMP threads (default: OMP_NUM_THREADS / all cores)")->check(CLI::NonNegativeNumber);
  app.add_option("--device", a.device, "where the models run: cpu (default), cuda or cuda:N");
  app.add_flag("--quiet", a.quiet, "no progress line");
  app.add_option("--do", a.interventions,
                 "intervention to measure on the split (apoe4-1, apoe4+1, abeta*0.5, abeta=800, …; repeatable); "
                 "default on a phantom cohort: its counterfactual worlds, with the true ΔSUVR beside the model's");
  return tools::run_main<train::ConfigError>(app, argc, argv, [&] { return run(a); });
}
