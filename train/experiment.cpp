#include "train/experiment.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "eval/stats.h"
#include "io/files.h"
#include "train/checkpoint.h"
#include "train/comparison.h"
#include "train/progress.h"
#include "train/trainer.h"

namespace cpets::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string method_label(const std::string& kind) {
  if (kind == "causal-pets") return "Causal PETS";
  if (kind == "unet") return "U-Net w/o condition";
  if (kind == "unet-cond") return "U-Net w/ condition";
  if (kind == "pix2pix") return "Pix2Pix";
  if (kind == "cyclegan") return "CycleGAN";
  if (kind == "bmgan") return "BMGAN";
  if (kind == "bpgan") return "BPGAN";
  return kind;
}

// What every method shares from the base config; the rest of a baseline's train section are its
// own reference defaults.
json shared_part(const json& base) {
  json out = json::object();
  if (base.contains("data")) out["data"] = base["data"];
  if (base.contains("model"))
    for (const char* key : {"preset", "volume"})
      if (base["model"].contains(key)) out["model"][key] = base["model"][key];
  if (base.contains("train"))
    for (const char* key : {"batch_size", "epochs", "seed", "data_seed", "validate_every", "checkpoint_every",
                            "checkpoint_every_steps", "keep_last", "threads"})
      if (base["train"].contains(key)) out["train"][key] = base["train"][key];
  return out;
}

// The run's budget as its log tells it: steps done, wall time of steps and validations, the CPU
// kernels and thread counts it ran with (several when it was resumed on another machine).
struct Budget {
  int64_t steps = 0;
  double seconds = 0;
  std::set<std::string> machines;
};
Budget read_budget(const std::string& folder) {
  Budget b;
  std::ifstream in(fs::path(folder) / "train.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;
    const std::string type = j.value("type", "");
    if (type == "start") {
      const std::string device = j.value("device", std::string("cpu"));
      std::string precision = "fp32";
      if (j.contains("backends") && j["backends"].is_object()) precision = j["backends"].value("precision", precision);
      b.machines.insert(device == "cpu" ? "CPU, " + j.value("cpu_isa", std::string("?")) + " kernels, " +
                                              std::to_string(j.value("threads", 0)) + " threads"
                                        : device + ", " + precision);
    }
    if (type == "step") b.steps = std::max<int64_t>(b.steps, j.value("step", int64_t(0)));
    if ((type == "step" || type == "validation") && j.contains("seconds") && j["seconds"].is_number())
      b.seconds += j["seconds"].get<double>();
  }
  return b;
}

std::string number(double v, int precision) {
  if (!std::isfinite(v)) return "–";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", precision, v);
  return buf;
}

// Table 1's columns: the paper's units (MAE ×10⁻¹, SSIM %).
struct Column {
  std::string key, header;
  double scale;
  int precision;
};
const std::vector<Column>& table_columns() {
  static const std::vector<Column> c = {{"mae", "MAE (×10⁻¹) ↓", 10, 3},
                                        {"ssim", "SSIM (%) ↑", 100, 2},
                                        {"psnr", "PSNR (dB) ↑", 1, 2},
                                        {"suvr_error", "SUVR error ↓", 1, 4}};
  return c;
}

const eval::Comparison* find_comparison(const eval::Report& r, const std::string& b, const std::string& metric) {
  for (const auto& c : r.comparisons)
    if (c.method_b == b && c.metric == metric) return &c;
  return nullptr;
}

struct Row {
  std::string name, label;
  const Budget* budget = nullptr;  // null: not a trained run (mean-PET); with seeds, all of them together
  const std::map<std::string, double>* seed_std = nullptr;  // per metric: std of the mean over seeds
};

eval::ReportTable make_table(const std::string& title, const eval::Report& r, const std::vector<Row>& rows, int seeds,
                             std::vector<std::vector<std::string>>& csv) {
  eval::ReportTable t;
  t.title = title;
  t.header = {"method"};
  for (const auto& c : table_columns()) t.header.push_back(c.header);
  t.header.insert(t.header.end(), {"steps", "training time"});
  for (const auto& row : rows) {
    const auto method = std::find_if(r.methods.begin(), r.methods.end(), [&](const auto& m) { return m.name == row.name; });
    if (method == r.methods.end()) continue;
    const eval::MethodSummary s = eval::summarise(*method);
    std::vector<std::string> cells{row.label};
    std::vector<std::string> line{row.name, row.label};
    for (const auto& c : table_columns()) {
      const auto it = s.metrics.find(c.key);
      const eval::Comparison* cmp = method == r.methods.begin() ? nullptr : find_comparison(r, row.name, c.key);
      const double p = cmp ? cmp->test.p : kNaN;
      const double seed_std = row.seed_std && row.seed_std->count(c.key) ? row.seed_std->at(c.key) : kNaN;
      if (it == s.metrics.end()) {
        cells.push_back("–");
      } else {
        cells.push_back(number(it->second.mean * c.scale, c.precision) + " ± " + number(it->second.std * c.scale, c.precision) +
                        eval::significance_stars(p) +
                        (std::isfinite(seed_std) ? " [" + number(seed_std * c.scale, c.precision) + "]" : ""));
      }
      line.push_back(it == s.metrics.end() ? "" : number(it->second.mean, 6));
      line.push_back(it == s.metrics.end() ? "" : number(it->second.std, 6));
      line.push_back(std::isfinite(p) ? number(p, 8) : "");
      line.push_back(std::isfinite(seed_std) ? number(seed_std, 6) : "");
    }
    cells.push_back(row.budget ? std::to_string(row.budget->steps) : "–");
    cells.push_back(row.budget ? format_duration(row.budget->seconds) : "–");
    line.push_back(row.budget ? std::to_string(row.budget->steps) : "");
    line.push_back(row.budget ? number(row.budget->seconds, 1) : "");
    t.rows.push_back(std::move(cells));
    csv.push_back(std::move(line));
  }
  t.notes.push_back("mean ± std over the test sessions; paired t-test of each method against " + r.methods.front().name +
                    " on the same sessions: * p < 0.05, ** p < 0.01, *** p < 0.001 (no star: p ≥ 0.05).");
  if (seeds > 1)
    t.notes.push_back("Each method trained with " + std::to_string(seeds) +
                      " seeds: a session's value is the mean over the seeds' synthetic PETs; [x]: the standard deviation "
                      "of the method's mean over its seeds; training time: all seeds together.");
  return t;
}

void write_table_csv(const std::string& path, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::string> header = {"method", "label"};
  for (const auto& c : table_columns())
    header.insert(header.end(), {c.key + "_mean", c.key + "_std", c.key + "_p", c.key + "_seed_std"});
  header.insert(header.end(), {"steps", "train_seconds"});
  io::write_csv(path, header, rows);
}

// The validation curves of every run in one plot per quantity, a series per run.
std::vector<eval::ReportCurve> curves_by_run(const std::vector<PlannedRun>& runs) {
  eval::ReportCurve l1{"Validation L1 by method", "mean |synthetic − real|", {}};
  eval::ReportCurve ssim{"Validation SSIM by method", "SSIM", {}};
  eval::ReportCurve suvr{"Validation cortical SUVR error by method", "mean |synthetic − real|", {}};
  for (const auto& run : runs) {
    eval::ReportCurve::Series a{run.name, {}, {}}, b{run.name, {}, {}}, c{run.name, {}, {}};
    std::ifstream in(fs::path(run.folder) / "train.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      const json j = json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || j.value("type", "") != "validation") continue;
      const double step = j.value("step", 0.0);
      auto value = [](const json& o, const char* key) { return o.contains(key) && o[key].is_number() ? o[key].get<double>() : kNaN; };
      a.step.push_back(step), a.value.push_back(value(j, "l1"));
      b.step.push_back(step), b.value.push_back(value(j, "ssim"));
      if (j.contains("causal") && j["causal"].is_object()) c.step.push_back(step), c.value.push_back(value(j["causal"], "suvr_error"));
    }
    if (!a.step.empty()) l1.series.push_back(a), ssim.series.push_back(b);
    if (!c.step.empty()) suvr.series.push_back(c);
  }
  std::vector<eval::ReportCurve> out;
  for (auto* curve : {&l1, &ssim, &suvr})
    if (!curve->series.empty()) out.push_back(*curve);
  return out;
}

// A run folder made by an earlier experiment must have been made with the same configuration
// (the budget aside), or the tables would mix experiments.
void require_same_plan(const PlannedRun& run) {
  const fs::path saved = fs::path(run.folder) / "config.json";
  if (!fs::is_regular_file(saved)) return;
  // Through the parser, so that keys added since the run started compare at their defaults.
  json then = config_to_json(saved_config_from_json(read_config_file(saved.string()))), now = config_to_json(run.config);
  // The budget, and the gradient bucket size: buckets only group parameters for the all-reduce
  // (each gradient's sum over ranks is the same), so no result depends on it.
  for (const char* key : {"max_steps", "bucket_mb"}) then["train"].erase(key), now["train"].erase(key);
  if (then == now) return;
  std::string diff;
  for (const char* section : {"model", "data", "train"})
    for (const auto& [key, value] : now[section].items())
      if (!then[section].contains(key) || then[section][key] != value)
        diff += "\n  " + std::string(section) + "." + key + ": then " +
                (then[section].contains(key) ? then[section][key].dump() : std::string("absent")) + ", now " + value.dump();
  throw ConfigError("the run folder '" + run.folder + "' holds a run with another configuration:" + diff +
                    "\nuse another --out for a new experiment, or the same options as the first time");
}

// One method's results over its seeds as one result: per session the mean of each metric (and of
// the synthetic SUVRs) over the seeds. The seeds' runs were evaluated on the same sessions.
eval::MethodResult mean_over_seeds(const std::vector<eval::MethodResult>& seeds) {
  eval::MethodResult out = seeds.front();
  for (size_t i = 0; i < out.sessions.size(); ++i) {
    eval::SessionResult& s = out.sessions[i];
    for (const auto& other : seeds)
      if (other.sessions.size() != out.sessions.size() || other.sessions[i].subject != s.subject ||
          other.sessions[i].session != s.session)
        throw std::runtime_error("the seeds of " + out.name + " were evaluated on different sessions");
    auto mean = [&](auto value) {
      double sum = 0;
      for (const auto& other : seeds) sum += value(other.sessions[i]);
      return sum / double(seeds.size());
    };
    for (auto& [key, v] : s.metrics) {
      const bool everywhere = std::all_of(seeds.begin(), seeds.end(), [&](const eval::MethodResult& m) {
        return m.sessions[i].metrics.count(key) > 0;
      });
      v = everywhere ? mean([&](const eval::SessionResult& r) { return r.metrics.at(key); }) : kNaN;
    }
    s.suvr_syn = mean([](const eval::SessionResult& r) { return r.suvr_syn; });
    for (size_t k = 0; k < s.roi_syn.size(); ++k) s.roi_syn[k] = mean([&](const eval::SessionResult& r) { return r.roi_syn[k]; });
  }
  return out;
}

// Per table metric, the sample standard deviation over the seeds of the method's mean over sessions.
std::map<std::string, double> seed_spread(const std::vector<eval::MethodResult>& seeds) {
  std::map<std::string, double> out;
  for (const auto& c : table_columns()) {
    std::vector<double> means;
    for (const auto& m : seeds) {
      const eval::MethodSummary s = eval::summarise(m);
      if (auto it = s.metrics.find(c.key); it != s.metrics.end()) means.push_back(it->second.mean);
    }
    if (means.size() != seeds.size() || means.size() < 2) continue;
    double mu = 0, ss = 0;
    for (double v : means) mu += v / double(means.size());
    for (double v : means) ss += (v - mu) * (v - mu);
    out[c.key] = std::sqrt(ss / double(means.size() - 1));
  }
  return out;
}

}  // namespace

const std::vector<Ablation>& ablations() {
  static const std::vector<Ablation> a = {
      {"no-t1-reconstruction", "w/o T1 reconstruction", "train.t1_reconstruction=false"},
      {"no-discriminator", "w/o discriminator", "train.discriminator=false"},
      {"no-perceptual", "w/o perceptual loss", "train.perceptual=none"},
      {"no-eps-pet", "w/o ε_PET", "train.eps_pet=false"}};
  return a;
}

int64_t trained_steps(const std::string& folder) {
  const auto steps = list_step_checkpoints((fs::path(folder) / "checkpoints").string());
  return steps.empty() ? 0 : steps.back().first;
}

std::vector<PlannedRun> plan_experiment(const ExperimentOptions& opt) {
  if (opt.steps < 0 || opt.minutes < 0 || !std::isfinite(opt.minutes) || (opt.steps == 0 && opt.minutes == 0))
    throw ConfigError("the experiment needs a budget, the same for every method: --steps N (optimiser steps, ≥ 1) "
                      "and/or --minutes M (training time per run, > 0)");
  if (opt.seeds < 1) throw ConfigError("--seeds must be at least 1 (runs per method)");
  if (opt.cohort.empty() || opt.out.empty()) throw ConfigError("the experiment needs --cohort and --out");
  const json base = opt.config.empty() ? json{{"model", {{"preset", opt.preset}}}} : read_config_file(opt.config);
  const std::string source = opt.config.empty() ? "preset " + opt.preset : opt.config;
  std::vector<std::string> common = {"data.cohort=" + opt.cohort, "train.max_steps=" + std::to_string(opt.steps)};  // 0: none
  if (!opt.tracer.empty()) common.push_back("data.tracer=" + opt.tracer);
  common.insert(common.end(), opt.overrides.begin(), opt.overrides.end());

  std::vector<std::string> methods = opt.methods;
  if (methods.empty()) methods = models::model_kinds();
  std::vector<PlannedRun> plan;
  // The method's run as planned (seed 1), then its other seeds: train.seed + 1, + 2, … .
  auto add_with_seeds = [&](PlannedRun run, const json& document, std::vector<std::string> overrides) {
    run.method = run.name;
    const uint64_t first_seed = run.config.train.seed;
    plan.push_back(run);
    for (int k = 1; k < opt.seeds; ++k) {
      PlannedRun other = run;
      other.seed_index = k;
      other.name = run.method + "/seed" + std::to_string(k + 1);
      other.folder = run.folder + "-seed" + std::to_string(k + 1);
      overrides.push_back("train.seed=" + std::to_string(first_seed + uint64_t(k)));
      other.config = config_from_document(document, overrides, source);
      overrides.pop_back();
      plan.push_back(std::move(other));
    }
  };
  for (const auto& kind : methods) {
    const auto& kinds = models::model_kinds();
    if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) {
      std::string known;
      for (const auto& k : kinds) known += (known.empty() ? "" : ", ") + k;
      throw ConfigError("method '" + kind + "' is unknown; the methods are " + known);
    }
    std::vector<std::string> o = {"model.kind=" + kind};
    o.insert(o.end(), common.begin(), common.end());
    PlannedRun run;
    run.name = kind;
    run.label = method_label(kind);
    const json document = kind == "causal-pets" ? base : shared_part(base);
    run.config = config_from_document(document, o, source);
    run.folder = (fs::path(opt.out) / "runs" / kind).string();
    add_with_seeds(std::move(run), document, o);
  }

  std::vector<std::string> names = opt.ablation_names;
  if (names.empty())
    for (const auto& a : ablations()) names.push_back(a.name);
  if (names == std::vector<std::string>{"none"}) names.clear();
  const bool has_causal = std::find(methods.begin(), methods.end(), "causal-pets") != methods.end();
  if (!names.empty() && !has_causal)
    throw ConfigError("the ablations are of Causal PETS: add causal-pets to --methods, or give --ablations none");
  for (const auto& name : names) {
    const auto it = std::find_if(ablations().begin(), ablations().end(), [&](const Ablation& a) { return a.name == name; });
    if (it == ablations().end()) {
      std::string known;
      for (const auto& a : ablations()) known += (known.empty() ? "" : ", ") + a.name;
      throw ConfigError("ablation '" + name + "' is unknown; the ablations are " + known + " (or none)");
    }
    std::vector<std::string> o = {"model.kind=causal-pets"};
    o.insert(o.end(), common.begin(), common.end());
    o.push_back(it->override);
    PlannedRun run;
    run.name = "causal-pets/" + it->name;
    run.label = it->label;
    run.ablation = true;
    run.config = config_from_document(base, o, source);
    run.folder = (fs::path(opt.out) / "runs" / ("causal-pets-" + it->name)).string();
    add_with_seeds(std::move(run), base, o);
  }
  return plan;
}

eval::Report run_experiment(const ExperimentOptions& opt) {
  const std::vector<PlannedRun> plan = plan_experiment(opt);
  std::ostream& os = std::cerr;

  // An ablation whose switch the base config already has is the full model itself: say so and
  // do not train it twice.
  std::vector<const PlannedRun*> runs;
  std::vector<std::string> skipped;
  std::map<int, const PlannedRun*> reference;  // Causal PETS per seed
  for (const auto& run : plan) {
    if (run.method == "causal-pets") reference[run.seed_index] = &run;
    const PlannedRun* same = reference.count(run.seed_index) ? reference[run.seed_index] : nullptr;
    if (run.ablation && same && config_to_json(run.config) == config_to_json(same->config)) {
      if (run.seed_index == 0)
        skipped.push_back(run.label + ": the base configuration already has it (identical to Causal PETS), not trained");
      continue;
    }
    runs.push_back(&run);
  }

  for (const PlannedRun* run : runs) require_same_plan(*run);
  const double budget_seconds = opt.minutes * 60;
  for (size_t i = 0; i < runs.size(); ++i) {
    const PlannedRun& run = *runs[i];
    const int64_t done = trained_steps(run.folder);
    const double spent = read_budget(run.folder).seconds;
    // A run stopped before its first step still left a step-0 checkpoint: resume that too.
    const bool started = !list_step_checkpoints((fs::path(run.folder) / "checkpoints").string()).empty();
    os << "[cpets-experiment] " << (i + 1) << "/" << runs.size() << " " << run.name << " (" << run.label << "): ";
    if ((opt.steps > 0 && done >= opt.steps) || (budget_seconds > 0 && spent >= budget_seconds)) {
      os << "trained (step " << done << ", " << format_duration(spent) << "), skipping\n";
      continue;
    }
    os << (started ? "resuming at step " + std::to_string(done) : std::string("training"))
       << (opt.steps > 0 ? " → step " + std::to_string(opt.steps) : std::string())
       << (budget_seconds > 0 ? " (" + format_duration(budget_seconds - spent) + " of training left)" : std::string())
       << "\n";
    Trainer trainer(run.config);
    if (started) trainer.resume(run.folder);
    RunOptions ro;
    ro.out_dir = run.folder;
    ro.max_steps = opt.steps > 0 ? opt.steps : std::numeric_limits<int64_t>::max();
    ro.max_seconds = budget_seconds > 0 ? budget_seconds - spent : 0;
    ro.epochs = std::numeric_limits<int32_t>::max();  // the budget is steps; epochs only order the data
    ro.progress = opt.progress;
    ro.stop = opt.stop;
    trainer.run(ro);
    if (opt.stop && opt.stop->load()) {
      os << "[cpets-experiment] stopped; run the same command again to resume\n";
      return {};
    }
  }

  // Evaluate every run on the test split, Causal PETS (or the first method) first: the first
  // seed's runs with the montages, the mean training PET and the causal measures, then each
  // further seed's; with seeds, a method's per-session values are its seeds' means.
  os << "[cpets-experiment] evaluating " << runs.size() << " runs on the test split\n";
  auto runs_of_seed = [&](int k) {
    std::vector<RunToCompare> compare;
    for (const PlannedRun* run : runs)
      if (run->seed_index == k) compare.push_back({run->method, run->folder});
    return compare;
  };
  ComparisonOptions co;
  co.cohort = opt.cohort;
  co.out = opt.out;
  co.montages = opt.montages;
  co.max_sessions = opt.max_sessions;
  co.quiet = !opt.progress;
  eval::Report report = compare_runs(runs_of_seed(0), co);
  std::map<std::string, std::map<std::string, double>> seed_std;
  if (opt.seeds > 1) {
    std::map<std::string, std::vector<eval::MethodResult>> by_method;
    for (const auto& m : report.methods) by_method[m.name].push_back(m);
    ComparisonOptions more = co;
    more.montages = 0;
    more.mean_pet = false;
    for (int k = 1; k < opt.seeds; ++k)
      for (auto& m : compare_runs(runs_of_seed(k), more).methods) by_method[m.name].push_back(std::move(m));
    for (auto& m : report.methods)
      if (by_method[m.name].size() > 1) {
        seed_std[m.name] = seed_spread(by_method[m.name]);
        m = mean_over_seeds(by_method[m.name]);
      }
    auto method = [&](const std::string& name) -> const eval::MethodResult& {
      return *std::find_if(report.methods.begin(), report.methods.end(), [&](const auto& m) { return m.name == name; });
    };
    for (auto& c : report.comparisons) c = eval::compare_methods(method(c.method_a), method(c.method_b), c.metric);
  }

  std::map<std::string, Budget> run_budgets;  // per run, as its log tells it
  for (const PlannedRun* run : runs) run_budgets[run->name] = read_budget(run->folder);
  std::map<std::string, Budget> budgets;  // per method, its seeds together
  for (const PlannedRun* run : runs) {
    const Budget& b = run_budgets[run->name];
    Budget& sum = budgets[run->method];
    sum.steps = run->seed_index == 0 ? b.steps : std::min(sum.steps, b.steps);
    sum.seconds += b.seconds;
    sum.machines.insert(b.machines.begin(), b.machines.end());
  }
  std::vector<Row> table1, table5;
  auto row_of = [&](const PlannedRun& run) {
    return Row{run.method, run.label, &budgets[run.method], seed_std.count(run.method) ? &seed_std[run.method] : nullptr};
  };
  for (const PlannedRun* run : runs)
    if (run->seed_index == 0) (run->ablation ? table5 : table1).push_back(row_of(*run));
  table1.push_back({"mean-PET", "(mean training PET)", nullptr, nullptr});
  if (!table5.empty() && reference.count(0)) table5.insert(table5.begin(), row_of(*reference[0]));

  std::vector<std::vector<std::string>> csv1, csv5;
  report.tables.push_back(make_table("Table 1: Causal PETS against the baselines", report, table1, opt.seeds, csv1));
  if (table5.size() > 1)
    report.tables.push_back(make_table("Table 5: ablations of Causal PETS", report, table5, opt.seeds, csv5));
  for (const auto& s : skipped) report.tables.back().notes.push_back(s);
  std::string not_run;
  for (const auto& kind : models::model_kinds())
    if (std::none_of(runs.begin(), runs.end(), [&](const PlannedRun* r) { return !r->ablation && r->config.model.kind == kind; }))
      not_run += (not_run.empty() ? "" : ", ") + method_label(kind);
  if (!not_run.empty()) report.tables.front().notes.push_back("Not run in this experiment (--methods): " + not_run + ".");
  report.tables.front().notes.push_back(
      "Not built: the diffusion baselines (ControlNet, CLDM, PASTA). BPGAN is our reading of its abstract "
      "(models/baselines/bpgan.h) — see README.");

  // The budget, honestly: steps and wall time per run, where it ran, and a flag when they differ.
  std::set<int64_t> steps;
  std::set<std::string> machines;
  for (const auto& [name, b] : run_budgets) {
    steps.insert(b.steps);
    machines.insert(b.machines.begin(), b.machines.end());
  }
  std::string machine_list;
  for (const auto& m : machines) machine_list += (machine_list.empty() ? "" : "; ") + m;
  std::string budget;
  if (opt.steps > 0) budget = std::to_string(opt.steps) + " optimiser steps";
  if (opt.minutes > 0) budget += (budget.empty() ? "" : " or ") + format_duration(budget_seconds) + " of training";
  report.title = "Causal PETS experiment: " + std::to_string(runs.size()) + " runs, " + budget + " each";
  report.facts.insert(report.facts.begin(),
                      {{"budget", budget + " per run" + (opt.steps > 0 && opt.minutes > 0 ? ", whichever comes first" : "") +
                                      " (batch " + std::to_string(plan.front().config.train.batch_size) + ", preset " +
                                      plan.front().config.model.preset + ")" +
                                      (opt.minutes > 0 ? "; a time budget gives each method the steps its speed on "
                                                         "this machine allows"
                                                       : "")},
                       {"device", machine_list}});
  if (opt.seeds > 1)
    report.facts.insert(report.facts.begin() + 2,
                        {"seeds", std::to_string(opt.seeds) + " runs per method (train.seed " +
                                      std::to_string(plan.front().config.train.seed) + " … " +
                                      std::to_string(plan.front().config.train.seed + uint64_t(opt.seeds) - 1) +
                                      "); montages and causal measures from the first seed"});
  if (steps.size() > 1) {
    std::string list;
    for (const auto& [name, b] : run_budgets) list += (list.empty() ? "" : ", ") + name + " " + std::to_string(b.steps);
    report.facts.insert(report.facts.begin() + 2,
                        {opt.minutes > 0 ? "steps within the time budget" : "WARNING: unequal budgets", list});
  }
  report.curves = curves_by_run(plan);

  write_table_csv((fs::path(opt.out) / "table1.csv").string(), csv1);
  if (!csv5.empty()) write_table_csv((fs::path(opt.out) / "table5.csv").string(), csv5);
  eval::write_report_json((fs::path(opt.out) / "metrics.json").string(), report);
  eval::write_html_report((fs::path(opt.out) / "report.html").string(), report);
  return report;
}

}  // namespace cpets::train
