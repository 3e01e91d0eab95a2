// cpets-experiment: the paper's comparison on one cohort — every method of Table 1 we build and
// every ablation of Table 5, trained with the same budget, evaluated together (train/experiment.h).
//
//   cpets-experiment --cohort out/demo/cohort --config configs/demo.json --steps 480 --out out/experiment
//   cpets-experiment … --methods causal-pets,unet-cond --ablations none     (a subset)
//   cpets-experiment … --minutes 30 --seeds 3        (a time budget per run; three seeds each)
//
// Each run is a folder OUT/runs/<method>; run the same command again after an interruption
// (Ctrl-C checkpoints the current run) and finished runs are not trained again. Writes
// OUT/report.html (Table 1, Table 5, budgets, montages, curves), OUT/metrics.json,
// OUT/table1.csv, OUT/table5.csv.
// Exit codes: 0 done, 1 runtime failure (files, data), 2 bad command line or configuration,
// 130 interrupted (resumable).
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "cli_main.h"
#include "train/config.h"
#include "train/experiment.h"

namespace {

using namespace cpets;

std::atomic<bool> g_stop{false};
extern "C" void on_interrupt(int) { g_stop = true; }

int run(train::ExperimentOptions o, const std::string& methods, const std::string& ablations, int threads) {
  o.methods = tools::split_list(methods);
  o.ablation_names = tools::split_list(ablations);
  if (threads > 0) o.overrides.insert(o.overrides.begin(), "train.threads=" + std::to_string(threads));
  o.progress = isatty(STDERR_FILENO);
  o.stop = &g_stop;
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  const eval::Report report = train::run_experiment(o);
  if (report.methods.empty()) return 130;  // interrupted; the message is printed
  std::printf("%s", eval::text_summary(report).c_str());
  std::printf("wrote %s/report.html, metrics.json, table1.csv%s\n", o.out.c_str(),
              report.tables.size() > 1 ? ", table5.csv" : "");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cpets-experiment: train Causal PETS, the baselines and the ablations with one budget on one cohort and "
               "write the paper's Tables 1 and 5 (HTML, JSON, CSV)"};
  train::ExperimentOptions o;
  std::string methods, ablation_list;
  int threads = 0;
  app.add_option("--cohort", o.cohort, "the cohort folder (cpets-phantom's, or your own data)")->required();
  app.add_option("--out", o.out, "experiment folder: runs/<method>/, report.html, metrics.json, table1.csv, table5.csv")
      ->required();
  app.add_option("--steps", o.steps, "the budget: optimiser steps per run, the same for every method")
      ->check(CLI::PositiveNumber);
  app.add_option("--minutes", o.minutes,
                 "or/and a time budget: minutes of training per run (steps and validations; resumed runs count what "
                 "they spent before); each method then takes the steps its speed allows")
      ->check(CLI::PositiveNumber);
  app.add_option("--seeds", o.seeds,
                 "runs per method and ablation (train.seed, +1, +2, …); the tables average each session over the seeds "
                 "and show the spread of each method's mean over them")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  app.add_option("--config", o.config,
                 "base config (configs/demo.json); baselines keep only its shared keys (preset, volume, data, batch "
                 "size, seeds, bookkeeping) and train with their reference optimiser and loss weights");
  app.add_option("--preset", o.preset, "model preset when no --config is given: demo, full or tiny")->capture_default_str();
  app.add_option("--tracer", o.tracer, "AV45 (CSF ABETA) or AV1451 (TAU, PTAU)")->capture_default_str();
  app.add_option("--methods", methods, "comma-separated model kinds (default: all: causal-pets,unet,unet-cond,pix2pix,cyclegan,bmgan,bpgan)");
  app.add_option("--ablations", ablation_list,
                 "comma-separated Table-5 ablations (default: all: no-t1-reconstruction,no-discriminator,no-perceptual,"
                 "no-eps-pet), or none");
  app.add_option("--set", o.overrides, "override one config key in every run, e.g. --set train.batch_size=1 (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--montages", o.montages, "test sessions shown as montages (default 3)")->check(CLI::NonNegativeNumber);
  app.add_option("--max-sessions", o.max_sessions, "evaluate only the first N test sessions (0 = all)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--threads", threads, "OpenMP threads (sets train.threads)")->check(CLI::NonNegativeNumber);
  return tools::run_main<train::ConfigError>(app, argc, argv, [&] { return run(o, methods, ablation_list, threads); });
}
