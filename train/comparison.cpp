#include "train/comparison.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>

#include "eval/suvr.h"
#include "io/cohort.h"
#include "train/causal_monitor.h"
#include "train/checkpoint.h"
#include "train/data.h"

namespace cpets::train {

namespace fs = std::filesystem;

namespace {

// The voxel-wise mean of the training PETs on the model grid.
io::Volume mean_training_pet(const std::vector<Session>& train_split, std::array<int64_t, 3> volume, double voxel_mm) {
  if (train_split.empty()) throw std::runtime_error("mean-PET baseline: the training split is empty");
  std::vector<double> sum;
  io::Volume mean;
  for (const auto& s : train_split) {
    const PreparedVolume p = prepare_volume(s.pet_path, volume, voxel_mm);
    if (sum.empty()) sum.assign(p.volume.data.size(), 0.0), mean = p.volume;
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += p.volume.data[i];
  }
  for (size_t i = 0; i < sum.size(); ++i) mean.data[i] = float(sum[i] / double(train_split.size()));
  return mean;
}

// "true" when the first run's mean MAE is lower and mean SSIM (σ 1.5) higher than the mean
// training PET's on these sessions — the bar `tools/cpets.sh demo --long` trains to; nullopt
// without both methods.
std::optional<std::string> beats_mean_pet(const std::vector<eval::MethodResult>& methods) {
  const eval::MethodResult* mean_pet = nullptr;
  for (const auto& m : methods)
    if (m.name == "mean-PET") mean_pet = &m;
  if (methods.empty() || !mean_pet) return std::nullopt;
  const auto t = eval::summarise(methods[0]).metrics, b = eval::summarise(*mean_pet).metrics;
  if (!t.count("mae") || !t.count("ssim") || !b.count("mae") || !b.count("ssim")) return std::nullopt;
  const bool wins = t.at("mae").mean < b.at("mae").mean && t.at("ssim").mean > b.at("ssim").mean;
  return wins ? "true" : "false";
}

// A method that synthesises: a loaded run, or the first run's model at step 0.
struct Candidate {
  std::string name, description;
  std::shared_ptr<const models::SynthesisModel> model;
  io::NormRanges ranges;
};

void require_comparable(const InferenceBundle& first, const InferenceBundle& b, const std::string& name) {
  auto fail = [&](const std::string& what, const std::string& a, const std::string& other) {
    throw std::invalid_argument("run '" + name + "' (" + b.path + ") has " + what + " " + other + " but the first run (" +
                                first.path + ") has " + a + "; only runs on the same " + what + " can be compared");
  };
  if (b.tracer != first.tracer) fail("tracer", first.tracer, b.tracer);
  if (b.model_config.volume != first.model_config.volume)
    fail("model volume", io::shape_string(first.model_config.volume), io::shape_string(b.model_config.volume));
  if (b.model_config.voxel_mm != first.model_config.voxel_mm)
    fail("voxel size (mm)", std::to_string(first.model_config.voxel_mm), std::to_string(b.model_config.voxel_mm));
  const auto& d = b.meta.config.data;
  const auto& d0 = first.meta.config.data;
  if (d.split_seed != d0.split_seed)
    fail("data.split_seed", std::to_string(d0.split_seed), std::to_string(d.split_seed));
}

}  // namespace

std::string run_log(const std::string& checkpoint) {
  for (fs::path p : {fs::path(checkpoint), fs::path(checkpoint).parent_path().parent_path()})
    if (fs::is_regular_file(p / "train.jsonl")) return (p / "train.jsonl").string();
  return "";
}

eval::Report compare_runs(const std::vector<RunToCompare>& runs, const ComparisonOptions& a) {
  if (runs.empty()) throw std::invalid_argument("compare_runs: no run to evaluate");
  if (a.split != "train" && a.split != "val" && a.split != "test")
    throw std::invalid_argument("the split is train, val or test, got '" + a.split + "'");
  const auto t0 = std::chrono::steady_clock::now();

  std::vector<InferenceBundle> bundles;
  for (const auto& r : runs) {
    bundles.push_back(load_for_inference(r.checkpoint, a.device));
    if (bundles.size() > 1) require_comparable(bundles[0], bundles.back(), r.name);
  }
  const InferenceBundle& bundle = bundles[0];
  const auto volume = bundle.model_config.volume;
  DataConfig cfg = bundle.meta.config.data;
  cfg.cohort = a.cohort;
  cfg.paired_csv.clear();
  cfg.tracer = bundle.tracer;
  const CohortSplits splits = open_cohort(cfg, &bundle.ranges);
  std::vector<Session> sessions = a.split == "test" ? splits.test : a.split == "val" ? splits.val : splits.train;
  if (a.max_sessions > 0 && int(sessions.size()) > a.max_sessions) sessions.resize(size_t(a.max_sessions));
  if (sessions.empty())
    throw std::runtime_error("the " + a.split + " split of " + a.cohort + " has no " + bundle.tracer +
                             " session; a cohort this small cannot be evaluated (more subjects: cpets-phantom --subjects)");

  std::vector<Candidate> candidates;
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto& b = bundles[i];
    candidates.push_back({runs[i].name,
                          b.model_config.kind + ", checkpoint " + b.path + " (step " + std::to_string(b.meta.state.step) +
                              "), ε = 0",
                          b.model, b.ranges});
  }
  if (a.untrained) {
    Generator init(bundle.meta.config.train.seed);  // what the run's step 0 drew
    auto m = models::make_model(bundle.model_config, init);
    m->eval();
    m->to(bundle.model->device());
    candidates.push_back({"untrained",
                          "the same configuration at step 0 (weights drawn from seed " +
                              std::to_string(bundle.meta.config.train.seed) + ")",
                          m, bundle.ranges});
  }
  std::optional<io::Volume> mean_pet;
  if (a.mean_pet) mean_pet = mean_training_pet(splits.train, volume, bundle.model_config.voxel_mm);

  std::optional<eval::Atlas> atlas;
  std::string atlas_path = a.atlas;
  if (atlas_path.empty() && fs::is_regular_file(fs::path(a.cohort) / "atlas" / "regions.json")) atlas_path = a.cohort;
  if (!atlas_path.empty()) atlas = eval::load_atlas(atlas_path);

  eval::Report report;
  std::vector<eval::MethodResult> methods;
  for (const auto& c : candidates) methods.push_back({c.name, c.description, {}});
  if (mean_pet)
    methods.push_back({"mean-PET", "voxel-wise mean of the " + std::to_string(splits.train.size()) + " training-split PET volumes", {}});

  const fs::path out(a.out);
  std::vector<eval::Synthesiser> synths;
  for (const auto& c : candidates) synths.emplace_back(c.model);

  // Causal fidelity of the first run: SUVR against the tabular reference, interventions (given,
  // or a phantom's counterfactual worlds) against the truth where it is known.
  for (const auto& iv : a.interventions) eval::check_intervention_for_tracer(iv, bundle.tracer);
  const Dataset train_set(splits.train, volume, 0), eval_set(sessions, volume, 0);
  std::unique_ptr<CausalMonitor> causal;
  if (!splits.train.empty() && !atlas_path.empty()) {
    try {
      causal = CausalMonitor::open(splits, train_set, eval_set, a.interventions);
    } catch (const std::invalid_argument& e) {
      std::fprintf(stderr, "warning: no counterfactual or tabular-reference metrics: %s\n", e.what());
    }
  }
  if (!a.interventions.empty() && !causal)
    throw std::runtime_error("interventions need SUVR: give the cohort an atlas (atlas/regions.json) or --atlas");
  if (causal) causal->begin();
  const bool live = isatty(STDERR_FILENO);
  for (size_t i = 0; i < sessions.size(); ++i) {
    const auto& s = sessions[i];
    const std::string date = io::format_date(s.record.pet_date);
    const PreparedVolume t1 = prepare_volume(s.t1_path, volume, bundle.model_config.voxel_mm);
    const PreparedVolume pet = prepare_volume(s.pet_path, volume, bundle.model_config.voxel_mm);
    std::optional<eval::Atlas> here;
    if (atlas) {
      try {
        here = eval::atlas_on_grid(*atlas, pet.volume.shape, pet.volume.affine);
      } catch (const std::invalid_argument& e) {  // e.g. the model volume crops the reference region away
        std::fprintf(stderr, "warning: no SUVR metrics: the atlas does not fit the model grid %s: %s\n",
                     io::shape_string(volume).c_str(), e.what());
        atlas.reset();
      }
    }
    std::vector<io::Volume> outputs;
    for (size_t k = 0; k < candidates.size(); ++k) {
      const eval::TabularInputs tab = eval::tabular_inputs(s.record, candidates[k].ranges, bundle.tracer);
      const models::Abduction abduction = synths[k].abduct(t1.volume, tab.covariates);
      outputs.push_back(synths[k].synthesise(abduction, tab, t1.volume));
      if (k == 0 && causal) causal->add(synths[0], int64_t(i), abduction, outputs[0]);
    }
    if (mean_pet) {
      io::Volume m = *mean_pet;
      m.affine = pet.volume.affine;
      outputs.push_back(std::move(m));
    }
    for (size_t k = 0; k < outputs.size(); ++k) {
      eval::SessionResult r = eval::evaluate_session(pet.volume, outputs[k], here ? &*here : nullptr, a.metrics);
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

  // Paired t-tests of the first run against each other method.
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
  for (size_t i = 0; i < runs.size(); ++i)
    report.facts.push_back({runs.size() == 1 ? "checkpoint" : "checkpoint " + runs[i].name,
                            bundles[i].path + " (step " + std::to_string(bundles[i].meta.state.step) + ")"});
  report.facts.push_back({"model", bundle.model_config.preset + " preset, " + bundle.tracer + ", volume " +
                                       io::shape_string(volume)});
  report.facts.push_back({"cohort", a.cohort});
  report.facts.push_back({"split", a.split + " (" + std::to_string(sessions.size()) + " sessions, split seed " +
                                       std::to_string(cfg.split_seed) + ")"});
  report.facts.push_back(
      {"atlas", atlas ? atlas->source : atlas_path.empty() ? "none (no SUVR metrics)" : "unusable on the model grid (no SUVR metrics)"});
  report.facts.push_back({"time", std::to_string(int(seconds + 0.5)) + " s"});
  report.notes.push_back("Metrics on the model grid " + io::shape_string(volume) +
                         ": real PET divided by its maximum and padded/cropped as in training; synthetic PET as the "
                         "generator outputs it (ε = 0); whole volume, no mask; PSNR and SSIM with data range 1.");
  report.notes.push_back("MS-SSIM σ1.5 (window 11): " + eval::ms_ssim_protocol(volume, eval::ssim_reference(), a.metrics) +
                         "; MS-SSIM σ0.5 (window 5): " + eval::ms_ssim_protocol(volume, eval::ssim_small(), a.metrics) + ".");
  if (a.metrics.reference_protocol)
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
  if (const std::string log = run_log(runs[0].checkpoint); !log.empty()) report.curves = eval::training_curves(log);

  return report;
}

}  // namespace cpets::train
