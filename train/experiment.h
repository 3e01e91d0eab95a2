// The paper's comparison on our engine (Tables 1 and 5): every method of Table 1 that we build
// (Causal PETS and the baselines of models/baselines/) and every ablation of Table 5, trained on
// one cohort with one budget, then evaluated together on its test split (train/comparison.h).
//
// Each method is a normal run folder OUT/runs/<name> (config.json, train.jsonl, checkpoints/),
// so an interrupted experiment resumes: a run that reached the budget is not trained again, a
// run that stopped part-way resumes exactly from its last checkpoint. The report (OUT/report.html,
// OUT/metrics.json, OUT/table1.csv, OUT/table5.csv, OUT/montage/) shows Table 1 and Table 5
// (mean ± std over the test sessions, paired t-tests against Causal PETS with the paper's stars;
// with several seeds each session's metric is the mean over the method's seeds, and the spread of
// the method's mean over its seeds is shown beside),
// every method's budget (steps, wall time, CPU kernels, threads, device), montages side by side
// and the training curves of every run.
#pragma once
#include <atomic>
#include <string>
#include <vector>

#include "eval/report.h"
#include "train/config.h"

namespace cpets::train {

// The Table-5 ablations by name, each as the config override that makes it.
struct Ablation {
  std::string name, label, override;
};
const std::vector<Ablation>& ablations();  // no-t1-reconstruction, no-discriminator, no-perceptual, no-eps-pet

struct ExperimentOptions {
  std::string cohort, out;
  std::string config;                 // a config file (configs/demo.json); empty: `preset` with defaults
  std::string preset = "demo";
  std::string tracer = "AV45";
  // The budget per run, the same for every run: optimiser steps, and/or minutes of training
  // (steps and validations, as the run's train.jsonl counts them; resumed runs count what they
  // spent before). At least one; with both, a run stops at whichever it reaches first.
  int64_t steps = 0;
  double minutes = 0;
  int seeds = 1;                      // runs per method and ablation, train.seed = the config's + 0, 1, …
  std::vector<std::string> methods;   // model kinds; empty: all (causal-pets first)
  std::vector<std::string> ablation_names;  // empty: all four; {"none"}: no ablation
  std::vector<std::string> overrides;       // --set KEY=VALUE for every run
  int montages = 3;
  int max_sessions = 0;               // evaluate on the first N test sessions (0 = all)
  bool progress = true;
  const std::atomic<bool>* stop = nullptr;  // SIGINT: checkpoint the current run and return
};

struct PlannedRun {
  std::string name;    // the run: its method, plus "/seed<k>" for the k-th seed when k ≥ 2
  std::string method;  // row of the tables: the kind ("causal-pets", "unet", …) or "causal-pets/<ablation>"
  std::string label;   // row label: "Causal PETS", "U-Net w/ condition", "w/o discriminator", …
  bool ablation = false;
  int seed_index = 0;  // 0 … seeds − 1
  Config config;
  std::string folder;  // OUT/runs/<name with '/' as '-'>
};

// The runs an experiment consists of, configs resolved, each method's seeds together (seed 1 in
// OUT/runs/<method>, seed k ≥ 2 in OUT/runs/<method>-seed<k> with train.seed + k − 1). A baseline keeps from the base config
// only what every method shares (model.preset and volume, the data section, batch size, seeds,
// epochs, bookkeeping), so it trains with its own reference optimiser and loss weights
// (train_defaults). Throws ConfigError naming an unknown method or ablation.
std::vector<PlannedRun> plan_experiment(const ExperimentOptions& opt);

// Trains what is missing, evaluates everything, writes the report; returns it. Returns an empty
// report (no methods) when opt.stop turned true during training.
eval::Report run_experiment(const ExperimentOptions& opt);

// The step of the newest checkpoint in a run folder (0 when there is none).
int64_t trained_steps(const std::string& folder);

}  // namespace cpets::train
