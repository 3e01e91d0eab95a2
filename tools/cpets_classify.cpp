// cpets-classify: the paper's downstream diagnosis (Tables 2, 3 and 7) — classifiers trained on
// real images of the training split over several seeds, tested on real PET and on the synthetic
// PET of each synthesis run (train/classify.h).
//
//   cpets-classify --cohort out/demo/cohort --experiment out/experiment --out out/classify
//   cpets-classify … --task pmci-vs-smci,ad-vs-cn --inputs table3 --seeds 10 --steps 300
//   cpets-classify … --synthetic causal-pets=out/demo/run --synthetic unet=runs/unet
//
// Each classifier is a folder OUT/<task>/<inputs>/seed-<seed>; run the same command again after
// an interruption (Ctrl-C checkpoints) and finished classifiers are not trained again. Writes
// OUT/report.html (tables, ROC curves), OUT/metrics.json, OUT/table2.csv, table3.csv, table7.csv.
// Exit codes: 0 done, 1 runtime failure (files, data), 2 bad command line, 130 interrupted.
#include <CLI/CLI.hpp>

#include <omp.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "cli_main.h"
#include "train/classify.h"

namespace {

using namespace cpets;

std::atomic<bool> g_stop{false};
extern "C" void on_interrupt(int) { g_stop = true; }

struct Args {
  train::ClassifyOptions o;
  std::string tasks = "pmci-vs-smci", inputs = "pet", experiment;
  std::vector<std::string> synthetic;
  int threads = 0;
  bool no_progress = false;
};

int run(Args a) {
  train::ClassifyOptions& o = a.o;
  o.tasks.clear();
  for (const auto& t : tools::split_list(a.tasks)) o.tasks.push_back(train::parse_task(t));
  o.inputs.clear();
  for (const auto& i : tools::split_list(a.inputs)) {
    if (i == "table3") {
      o.inputs.insert(o.inputs.end(), train::table3_inputs().begin(), train::table3_inputs().end());
      continue;
    }
    train::parse_classifier_inputs(i);  // a typo fails here, before any training
    o.inputs.push_back(i);
  }
  if (!a.experiment.empty()) o.synthetic = train::experiment_sources(a.experiment);
  for (const auto& s : a.synthetic) {
    const auto eq = s.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == s.size())
      throw tools::UsageError("--synthetic '" + s + "': write NAME=RUN_FOLDER, e.g. causal-pets=out/demo/run");
    o.synthetic.push_back({s.substr(0, eq), s.substr(eq + 1)});
  }
  if (a.threads > 0) omp_set_num_threads(a.threads);
  o.progress = !a.no_progress && isatty(STDERR_FILENO);
  o.stop = &g_stop;
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  const eval::Report report = train::run_classification(o);
  if (report.tables.empty()) return 130;
  for (const auto& t : report.tables) {
    std::printf("%s\n", t.title.c_str());
    for (const auto& row : t.rows) {
      std::printf("  %-44s", row.front().c_str());
      for (size_t i = 1; i + 1 < row.size(); ++i) std::printf("  %s=%s", t.header[i].c_str(), row[i].c_str());
      std::printf("\n");
    }
  }
  std::printf("wrote %s/report.html, metrics.json and the tables' CSV files\n", o.out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cpets-classify: train diagnosis classifiers (pMCI vs sMCI, AD vs CN) on real images over several seeds and "
               "test them on real and synthetic PET — the paper's Tables 2, 3 and 7 (HTML, JSON, CSV)"};
  Args a;
  app.add_option("--cohort", a.o.cohort, "the cohort folder (cohort.csv with DX_36m and Conversion_date for pMCI vs sMCI)")
      ->required();
  app.add_option("--out", a.o.out, "study folder: <task>/<inputs>/seed-<seed>/, report.html, metrics.json, table*.csv")
      ->required();
  app.add_option("--task", a.tasks, "pmci-vs-smci, ad-vs-cn, or both comma-separated")->capture_default_str();
  app.add_option("--inputs", a.inputs,
                 "classifiers, comma-separated: pet, t1, tab joined by '+' (pet, pet+tab, pet+t1+tab, tab, …), or "
                 "table3 for all seven of Table 3")
      ->capture_default_str();
  app.add_option("--experiment", a.experiment,
                 "a cpets-experiment folder: test the PET classifier on the synthetic PET of each of its methods");
  app.add_option("--synthetic", a.synthetic, "NAME=RUN: test on this synthesis run's PET as well (repeatable)");
  app.add_option("--tracer", a.o.tracer, "AV45 or AV1451")->capture_default_str();
  app.add_option("--split-seed", a.o.split_seed, "subject split seed; the synthesis runs' (checked)")->capture_default_str();
  app.add_option("--preset", a.o.preset, "classifier preset: demo (48×64×48), full (the reference's) or tiny")
      ->capture_default_str();
  app.add_option("--seeds", a.o.seeds, "classifiers per input, seeds first-seed, first-seed+1, …")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--first-seed", a.o.first_seed, "the first seed (the reference's is 777)")->capture_default_str();
  app.add_option("--steps", a.o.steps, "optimiser steps per classifier")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--batch-size", a.o.batch_size, "sessions per step")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--lr", a.o.lr, "Adam learning rate")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--class-weights", a.o.class_weights,
                 "cross-entropy weights: reference ([1,4] for pMCI vs sMCI, balanced for AD vs CN), balanced, none, or "
                 "W0,W1")
      ->capture_default_str();
  app.add_option("--checkpoint-every", a.o.checkpoint_every, "steps between checkpoints")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--threads", a.threads, "OpenMP threads")->check(CLI::NonNegativeNumber);
  app.add_flag("--no-progress", a.no_progress, "plain log lines instead of a live progress line");
  return tools::run_main<std::invalid_argument>(app, argc, argv, [&] { return run(a); });
}
