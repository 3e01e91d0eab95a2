// Several trained runs side by side on one split of a cohort (docs/model.md §6): what cpets-eval
// does for one checkpoint (with the untrained model and the mean training PET beside it) and
// cpets-experiment for every method of the paper's Table 1 and every ablation of Table 5.
//
// Every run is synthesised on the same sessions (ε = 0), each with its own checkpoint's
// normalisation; the first run is the reference: the paired t-tests compare it with each other
// method, and the causal-fidelity metrics (tabular reference, interventions, a phantom's worlds)
// are measured on it. The runs must share the tracer, the model volume and the split seed (so no
// run's training split overlaps the sessions evaluated).
#pragma once
#include <string>
#include <vector>

#include "eval/evaluation.h"
#include "eval/inference.h"
#include "eval/report.h"

namespace cpets::train {

struct RunToCompare {
  std::string name;        // the method's column, e.g. "trained", "unet-cond"
  std::string checkpoint;  // a run folder (its best checkpoint) or a checkpoint file
};

struct ComparisonOptions {
  std::string cohort;  // the cohort folder (split as the runs were)
  std::string split = "test";
  std::string atlas;   // empty: the cohort's atlas/ when it has one
  std::string out;     // report.html, metrics.json, montage/
  int montages = 3;
  int max_sessions = 0;           // 0: all sessions of the split
  bool untrained = false;         // also the first run's model at step 0
  bool mean_pet = true;           // also the voxel-wise mean of the training PETs
  eval::EvalOptions metrics;
  std::vector<eval::Intervention> interventions;  // measured on the first run
  bool quiet = false;
  std::string device = "cpu";  // where the models run (cpu, cuda, cuda:N)
};

// Evaluates, writes the montages into OUT/montage/ and returns the report (the caller adds what
// it knows and writes it: eval::write_html_report, write_report_json).
// Throws naming the run when runs cannot be compared (tracer, volume, split seed).
eval::Report compare_runs(const std::vector<RunToCompare>& runs, const ComparisonOptions& opt);

// The run's train.jsonl: beside a run folder's checkpoints/ (a run folder or a checkpoint in it);
// empty when there is none.
std::string run_log(const std::string& checkpoint);

}  // namespace cpets::train
