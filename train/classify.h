// The downstream diagnosis study of the paper's Tables 2, 3 and 7 (reference-implementation.md
// §1.9): the DiagnosisClassifier trained on REAL images of the training split, once per seed,
// then evaluated on the test split with real PET and with the synthetic PET of each synthesis
// run it is given (Causal PETS and the baselines, from their run folders) — so the table says how
// much of the diagnostic information of real PET a method's synthetic PET keeps.
//
// Tasks: pMCI vs sMCI and AD vs CN (io::diagnosis_label: a converter's sessions on or after its
// conversion date are dropped, as the reference does). Inputs: PET, T1, both (PET first, as the
// reference concatenates them), each with or without the tabular token (cross-attention), and
// the tabular token alone: a class-weighted logistic regression fitted to convergence (the
// reference has no such model; a network on five numbers would measure its training budget).
//
// Every classifier is a folder OUT/<task>/<inputs>/seed-<seed>/ with checkpoint.{safetensors,json}
// (model, Adam, loader position, dropout stream: an interrupted study resumes bit for bit and a
// finished classifier is not trained again; a larger --steps continues it). The report
// (OUT/report.html, metrics.json, table2.csv, table3.csv, table7.csv) shows mean ± std over the
// seeds, paired t-tests over the seeds, and mean ROC curves.
#pragma once
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "eval/classification.h"
#include "eval/report.h"
#include "io/cohort.h"

namespace cpets::train {

// What one classifier sees.
struct ClassifierInputs {
  bool pet = false, t1 = false, tabular = false;
  std::string name() const;   // "pet", "t1", "pet+t1", "pet+tab", "tab", … (folder names)
  std::string label() const;  // "PET", "T1 + PET + tabular", "tabular (logistic regression)", …
  int64_t image_channels() const { return int64_t(pet) + int64_t(t1); }
};
// "pet", "t1" and "tab" joined by '+' in any order. Throws std::invalid_argument naming the text.
ClassifierInputs parse_classifier_inputs(const std::string& text);
// Table 3's rows: tab, t1, t1+tab, pet, pet+tab, pet+t1, pet+t1+tab.
const std::vector<std::string>& table3_inputs();

std::string task_name(io::DiagnosisTask task);   // "pmci-vs-smci", "ad-vs-cn"
std::string task_label(io::DiagnosisTask task);  // "pMCI vs sMCI", "AD vs CN"
io::DiagnosisTask parse_task(const std::string& text);  // the names above; throws naming the known ones

// A synthesis run whose synthetic PET the PET classifiers are tested on.
struct SyntheticSource {
  std::string name;  // column/row name, e.g. "causal-pets"
  std::string run;   // its run folder (best checkpoint) or a checkpoint file
};

// The methods of a cpets-experiment folder (OUT/runs/<method>, not the ablations) that have a
// checkpoint, Causal PETS first, then in the order of Table 1. Throws when there is none.
std::vector<SyntheticSource> experiment_sources(const std::string& experiment);

struct ClassifyOptions {
  std::string cohort, out;
  std::string tracer = "AV45";
  uint64_t split_seed = 100;  // the synthesis runs' (checked): their training split is not tested on
  std::vector<io::DiagnosisTask> tasks{io::DiagnosisTask::pmci_vs_smci};
  std::vector<std::string> inputs{"pet"};  // the classifiers to train, as parse_classifier_inputs
  std::string preset = "demo";             // models::classifier_preset: demo, full or tiny
  int seeds = 10;
  uint64_t first_seed = 777;  // the reference's seed; seed k is first_seed + k
  int64_t steps = 300;        // optimiser steps per classifier
  int64_t batch_size = 4;
  double lr = 1e-4;           // Adam, the reference's
  // "reference" (pMCI vs sMCI [1, 4] as the reference; AD vs CN has none there: balanced),
  // "balanced" ([1, n0/n1] from the training labels), "none", or "w0,w1".
  std::string class_weights = "reference";
  std::vector<SyntheticSource> synthetic;
  int64_t checkpoint_every = 100;
  int64_t cache_mb = 4096;
  bool progress = true;
  const std::atomic<bool>* stop = nullptr;  // SIGINT: checkpoint the current classifier and return
};

// The class weights the option string means for a task and its training labels. Throws naming
// the option when it is malformed or gives a weight that is not positive and finite.
std::vector<float> resolve_class_weights(const std::string& option, io::DiagnosisTask task, int64_t negatives,
                                         int64_t positives);

// Trains what is missing, evaluates every classifier on every test source, writes the report and
// returns it. Returns a report without tables when opt.stop turned true. Throws naming the
// problem: a task with no labelled session of a class in the training or test split, a synthesis
// run on another tracer, split seed or volume, a checkpoint trained with other settings.
eval::Report run_classification(const ClassifyOptions& opt);

}  // namespace cpets::train
