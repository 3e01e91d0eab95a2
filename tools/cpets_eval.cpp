// cpets-eval: compare methods side by side on a cohort split (docs/model.md §6).
//
//   cpets-eval --checkpoint RUN --cohort DIR [--split test] --out OUT [--untrained] [--montages 3]
//
// Methods: "trained" (the checkpoint, ε = 0), "untrained" (--untrained: the same config and
// seed at step 0, i.e. the weights training started from) and "mean-PET" (the voxel-wise mean of
// the training split's PET volumes, the trivial baseline). Per session: MAE, PSNR (data range 1),
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
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "eval/evaluation.h"
#include "eval/inference.h"
#include "eval/report.h"
#include "eval/suvr.h"
#include "io/cohort.h"
#include "train/checkpoint.h"
#include "train/causal_monitor.h"
#include "train/data.h"

namespace {

using namespace cpets;
namespace fs = std::filesystem;

using tools::UsageError;

struct Args {
  std::string checkpoint, cohort, split = "test", out, atlas;
  bool untrained = false, no_mean_pet = false, pad_ms_ssim = false, no_ms_ssim = false, reference_protocol = false;
  bool quiet = false;
  int montages = 3, threads = 0, max_sessions = 0;
  std::vector<std::string> interventions;
};

// The run's train.jsonl: beside a run folder's checkpoints/ (a run folder or a checkpoint in it).
std::string run_log(const std::string& checkpoint) {
  for (fs::path p : {fs::path(checkpoint), fs::path(checkpoint).parent_path().parent_path()})
    if (fs::is_regular_file(p / "train.jsonl")) return (p / "train.jsonl").string();
  return "";
}

// The voxel-wise mean of the training PETs on the model grid.
io::Volume mean_training_pet(const std::vector<train::Session>& train_split, std::array<int64_t, 3> volume) {
  if (train_split.empty()) throw std::runtime_error("mean-PET baseline: the training split is empty");
  std::vector<double> sum;
  io::Volume mean;
  for (const auto& s : train_split) {
    const train::PreparedVolume p = train::prepare_volume(s.pet_path, volume);
    if (sum.empty()) sum.assign(p.volume.data.size(), 0.0), mean = p.volume;
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += p.volume.data[i];
  }
  for (size_t i = 0; i < sum.size(); ++i) mean.data[i] = float(sum[i] / double(train_split.size()));
  return mean;
}

// "true" when the trained model's mean MAE is lower and mean SSIM (σ 1.5) higher than the mean
// training PET's on these sessions — the bar `tools/cpets.sh demo --long` trains to; nullopt
// without both methods.
std::optional<std::string> beats_mean_pet(const std::vector<eval::MethodResult>& methods) {
  const eval::MethodResult* trained = nullptr;
  const eval::MethodResult* mean_pet = nullptr;
  for (const auto& m : methods) {
    if (m.name == "trained") trained = &m;
    if (m.name == "mean-PET") mean_pet = &m;
  }
  if (!trained || !mean_pet) return std::nullopt;
  const auto t = eval::summarise(*trained).metrics, b = eval::summarise(*mean_pet).metrics;
  if (!t.count("mae") || !t.count("ssim") || !b.count("mae") || !b.count("ssim")) return std::nullopt;
  const bool wins = t.at("mae").mean < b.at("mae").mean && t.at("ssim").mean > b.at("ssim").mean;
  return wins ? "true" : "false";
}

std::string fmt_shape(const std::array<int64_t, 3>& s) { return io::shape_string(s); }

int run(const Args& a) {
  if (a.threads > 0) omp_set_num_threads(a.threads);
  if (a.split != "train" && a.split != "val" && a.split != "test")
    throw UsageError("--split is train, val or test, got '" + a.split + "'");
  if (a.montages < 0) throw UsageError("--montages must be ≥ 0");
  const auto t0 = std::chrono::steady_clock::now();

  const train::InferenceBundle bundle = train::load_for_inference(a.checkpoint);
  const auto volume = bundle.model_config.volume;
  train::DataConfig cfg = bundle.meta.config.data;
  cfg.cohort = a.cohort;
  cfg.paired_csv.clear();
  cfg.tracer = bundle.tracer;
  const train::CohortSplits splits = train::open_cohort(cfg, &bundle.ranges);
  std::vector<train::Session> sessions = a.split == "test" ? splits.test : a.split == "val" ? splits.val : splits.train;
  if (a.max_sessions > 0 && int(sessions.size()) > a.max_sessions) sessions.resize(size_t(a.max_sessions));
  if (sessions.empty())
    throw std::runtime_error("the " + a.split + " split of " + a.cohort + " has no " + bundle.tracer +
                             " session; a cohort this small cannot be evaluated (more subjects: cpets-phantom --subjects)");

  // The models and baselines.
  std::vector<std::pair<std::string, std::shared_ptr<const models::SynthesisModel>>> models{{"trained", bundle.model}};
  if (a.untrained) {
    Generator init(bundle.meta.config.train.seed);  // what the run's step 0 drew
    auto m = models::make_model(bundle.model_config, init);
    m->eval();
    models.push_back({"untrained", m});
  }
  std::optional<io::Volume> mean_pet;
  if (!a.no_mean_pet) mean_pet = mean_training_pet(splits.train, volume);

  std::optional<eval::Atlas> atlas;
  std::string atlas_path = a.atlas;
  if (atlas_path.empty() && fs::is_regular_file(fs::path(a.cohort) / "atlas" / "regions.json")) atlas_path = a.cohort;
  if (!atlas_path.empty()) atlas = eval::load_atlas(atlas_path);

  eval::Report report;
  std::vector<eval::MethodResult> methods;
  for (const auto& [name, m] : models) {
    eval::MethodResult r;
    r.name = name;
    methods.push_back(r);
  }
  methods[0].description = "checkpoint " + bundle.path + " (step " + std::to_string(bundle.meta.state.step) + "), ε = 0";
  if (a.untrained)
    methods[1].description = "the same configuration at step 0 (weights drawn from seed " +
                             std::to_string(bundle.meta.config.train.seed) + ")";
  if (mean_pet) {
    eval::MethodResult r;
    r.name = "mean-PET";
    r.description = "voxel-wise mean of the " + std::to_string(splits.train.size()) + " training-split PET volumes";
    methods.push_back(r);
  }

  eval::EvalOptions eo;
  eo.pad_small_ms_ssim = a.pad_ms_ssim;
  eo.ms_ssim = !a.no_ms_ssim;
  eo.reference_protocol = a.reference_protocol;
  const fs::path out(a.out);
  std::vector<eval::Synthesiser> synths;
  for (const auto& [name, m] : models) synths.emplace_back(m);

  // Causal fidelity of the trained model: SUVR against the tabular reference, interventions
  // (--do, or a phantom's counterfactual worlds) against the truth where it is known.
  std::vector<eval::Intervention> ivs;
  for (const auto& text : a.interventions) {
    try {
      ivs.push_back(eval::parse_intervention(text));
      eval::check_intervention_for_tracer(ivs.back(), bundle.tracer);
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
  }
  const train::Dataset train_set(splits.train, volume, 0), eval_set(sessions, volume, 0);
  std::unique_ptr<train::CausalMonitor> causal;
  if (!splits.train.empty() && !atlas_path.empty()) {
    try {
      causal = train::CausalMonitor::open(splits, train_set, eval_set, ivs);
    } catch (const std::invalid_argument& e) {
      std::fprintf(stderr, "warning: no counterfactual or tabular-reference metrics: %s\n", e.what());
    }
  }
  if (!ivs.empty() && !causal)
    throw std::runtime_error("--do needs SUVR: give the cohort an atlas (atlas/regions.json) or --atlas");
  if (causal) causal->begin();
  const bool live = isatty(STDERR_FILENO);
  for (size_t i = 0; i < sessions.size(); ++i) {
    const auto& s = sessions[i];
    const std::string date = io::format_date(s.record.pet_date);
    const train::PreparedVolume t1 = train::prepare_volume(s.t1_path, volume);
    const train::PreparedVolume pet = train::prepare_volume(s.pet_path, volume);
    std::optional<eval::Atlas> here;
    if (atlas) {
      try {
        here = eval::atlas_on_grid(*atlas, pet.volume.shape, pet.volume.affine);
      } catch (const std::invalid_argument& e) {  // e.g. the model volume crops the reference region away
        std::fprintf(stderr, "warning: no SUVR metrics: the atlas does not fit the model grid %s: %s\n",
                     fmt_shape(volume).c_str(), e.what());
        atlas.reset();
      }
    }
    const eval::TabularInputs tab = eval::tabular_inputs(s.record, bundle.ranges, bundle.tracer);
    std::vector<io::Volume> outputs;
    const models::Abduction abduction = synths[0].abduct(t1.volume, tab.covariates);
    outputs.push_back(synths[0].synthesise(abduction, tab, t1.volume));
    if (causal) causal->add(synths[0], int64_t(i), abduction, outputs[0]);
    for (size_t k = 1; k < synths.size(); ++k) outputs.push_back(synths[k].synthesise(t1.volume, tab));
    if (mean_pet) {
      io::Volume m = *mean_pet;
      m.affine = pet.volume.affine;
      outputs.push_back(std::move(m));
    }
    for (size_t k = 0; k < outputs.size(); ++k) {
      eval::SessionResult r = eval::evaluate_session(pet.volume, outputs[k], here ? &*here : nullptr, eo);
      r.subject = s.record.subject;
      r.session = date;
      methods[k].sessions.push_back(std::move(r));
    }
    if (int(i) < a.montages) {
      std::vector<eval::MontageMethod> mm;
      for (size_t k = 0; k < outputs.size(); ++k) mm.push_back({methods[k].name, &outputs[k]});
      const std::string rel = "montage/" + s.record.subject + "_" + date + ".png";
      eval::write_comparison_montage((out / rel).string(), pet.volume, mm);
      report.montages.push_back({s.record.subject + " " + date + ": real, then each method and its error (synthetic − real)", rel});
    }
    // A live line on a terminal; in a log file one line per tenth of the sessions.
    if (!a.quiet && (live || (i + 1) % std::max<size_t>(1, sessions.size() / 10) == 0 || i + 1 == sessions.size()))
      std::fprintf(stderr, live ? "\r[cpets-eval] %zu/%zu sessions" : "[cpets-eval] %zu/%zu sessions\n", i + 1,
                   sessions.size()),
          std::fflush(stderr);
  }
  if (!a.quiet && live) std::fprintf(stderr, "\n");

  // Paired t-tests of trained against each baseline.
  report.methods = methods;
  for (size_t k = 1; k < methods.size(); ++k)
    for (const auto& d : eval::session_metrics()) {
      bool present = true;
      for (const auto* m : {&methods[0], &methods[k]})
        for (const auto& x : m->sessions) present = present && x.metrics.count(d.key);
      if (!present || methods[0].sessions.size() < 2) continue;
      try {
        report.comparisons.push_back(eval::compare_methods(methods[0], methods[k], d.key));
      } catch (const std::invalid_argument& e) {
        report.notes.push_back(std::string("no paired test: ") + e.what());
      }
    }

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report.title = "Causal PETS evaluation: " + std::to_string(sessions.size()) + " " + a.split + " sessions";
  report.facts = {{"checkpoint", bundle.path + " (step " + std::to_string(bundle.meta.state.step) + ")"},
                  {"model", bundle.model_config.preset + " preset, " + bundle.tracer + ", volume " + fmt_shape(volume)},
                  {"cohort", a.cohort},
                  {"split", a.split + " (" + std::to_string(sessions.size()) + " sessions, split seed " +
                                std::to_string(cfg.split_seed) + ")"},
                  {"atlas", atlas ? atlas->source : atlas_path.empty() ? "none (no SUVR metrics)" : "unusable on the model grid (no SUVR metrics)"},
                  {"time", std::to_string(int(seconds + 0.5)) + " s"}};
  report.notes.push_back("Metrics on the model grid " + fmt_shape(volume) +
                         ": real PET divided by its maximum and padded/cropped as in training; synthetic PET as the "
                         "generator outputs it (ε = 0); whole volume, no mask; PSNR and SSIM with data range 1.");
  report.notes.push_back("MS-SSIM σ1.5 (window 11): " + eval::ms_ssim_protocol(volume, eval::ssim_reference(), eo) +
                         "; MS-SSIM σ0.5 (window 5): " + eval::ms_ssim_protocol(volume, eval::ssim_small(), eo) + ".");
  if (eo.reference_protocol)
    report.notes.push_back("ref-protocol: the reference metrics.py's way — synthetic × mean(real)/mean(synthetic), both "
                           "zero-padded to 192×224×192, metrics over the padded volume (MAE diluted, PSNR raised).");
  if (atlas)
    report.notes.push_back("SUVR = mean over the atlas's " + atlas->roi + " / mean over " + atlas->reference +
                           "; SUVR error = |real − synthetic| per session; std is the population std.");

  if (const auto verdict = beats_mean_pet(methods)) report.facts.push_back({"beats_mean_pet_on_mae_and_ssim", *verdict});
  for (const auto& m : methods) {  // NaN SUVRs are results, but say why
    int failed = 0;
    std::string why;
    for (const auto& x : m.sessions)
      if (!x.suvr_failure.empty()) ++failed, why = why.empty() ? x.suvr_failure : why;
    if (!failed) continue;
    const std::string note = m.name + ": no synthetic SUVR for " + std::to_string(failed) + " of " +
                             std::to_string(m.sessions.size()) + " sessions (first reason: " + why + ")";
    report.notes.push_back(note);
    std::fprintf(stderr, "warning: %s\n", note.c_str());
  }
  if (causal) {
    causal->finish();
    report.tabular_reference = causal->tabular_fidelity();
    for (const auto& e : causal->effects()) report.effects.push_back(e.summary());
    if (causal->mediator())
      report.notes.push_back("[CSF follows M]: model.md keeps B_CSF as measured under do(M); these rows move it by "
                             "a regression on the covariates fitted on the training split (" +
                             causal->mediator()->describe() + "), keeping each session's residual.");
  }
  if (const std::string log = run_log(a.checkpoint); !log.empty()) report.curves = eval::training_curves(log);

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
  app.add_flag("--quiet", a.quiet, "no progress line");
  app.add_option("--do", a.interventions,
                 "intervention to measure on the split (apoe4-1, apoe4+1, abeta*0.5, abeta=800, …; repeatable); "
                 "default on a phantom cohort: its counterfactual worlds, with the true ΔSUVR beside the model's");
  return tools::run_main<>(app, argc, argv, [&] { return run(a); });
}
