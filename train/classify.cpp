#include "train/classify.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "engine/autograd.h"
#include "engine/ops_loss.h"
#include "engine/ops_shape.h"
#include "engine/optim.h"
#include "engine/rng.h"
#include "engine/safetensors.h"
#include "eval/inference.h"
#include "eval/stats.h"
#include "io/files.h"
#include "kernels/cpu/isa.h"
#include "models/classifier.h"
#include "models/config.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/experiment.h"
#include "train/progress.h"

namespace cpets::train {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

// ---- names ---------------------------------------------------------------------------------------
std::string ClassifierInputs::name() const {
  std::string n;
  auto add = [&](bool on, const char* part) {
    if (on) n += (n.empty() ? "" : "+") + std::string(part);
  };
  add(pet, "pet"), add(t1, "t1"), add(tabular, "tab");
  return n;
}

std::string ClassifierInputs::label() const {
  std::string n;
  auto add = [&](bool on, const char* part) {
    if (on) n += (n.empty() ? "" : " + ") + std::string(part);
  };
  add(t1, "T1"), add(pet, "PET"), add(tabular, "tabular");
  return image_channels() == 0 ? n + " (logistic regression)" : n;
}

ClassifierInputs parse_classifier_inputs(const std::string& text) {
  ClassifierInputs in;
  std::stringstream s(text);
  std::string part;
  auto bad = [&](const std::string& why) {
    throw std::invalid_argument("classifier inputs '" + text + "': " + why +
                                "; write pet, t1 and tab joined by '+' (e.g. pet, pet+tab, pet+t1+tab, tab)");
  };
  while (std::getline(s, part, '+')) {
    bool* flag = part == "pet" ? &in.pet : part == "t1" ? &in.t1 : part == "tab" || part == "tabular" ? &in.tabular : nullptr;
    if (!flag) bad("'" + part + "' is not an input");
    if (*flag) bad("'" + part + "' is given twice");
    *flag = true;
  }
  if (!in.pet && !in.t1 && !in.tabular) bad("no input");
  return in;
}

const std::vector<std::string>& table3_inputs() {
  static const std::vector<std::string> rows = {"tab", "t1", "t1+tab", "pet", "pet+tab", "pet+t1", "pet+t1+tab"};
  return rows;
}

std::string task_name(io::DiagnosisTask task) {
  return task == io::DiagnosisTask::pmci_vs_smci ? "pmci-vs-smci" : "ad-vs-cn";
}
std::string task_label(io::DiagnosisTask task) {
  return task == io::DiagnosisTask::pmci_vs_smci ? "pMCI vs sMCI" : "AD vs CN";
}
io::DiagnosisTask parse_task(const std::string& text) {
  if (text == "pmci-vs-smci" || text == "pmci") return io::DiagnosisTask::pmci_vs_smci;
  if (text == "ad-vs-cn" || text == "ad") return io::DiagnosisTask::ad_vs_cn;
  throw std::invalid_argument("diagnosis task '" + text + "' is unknown; use pmci-vs-smci or ad-vs-cn");
}

std::vector<float> resolve_class_weights(const std::string& option, io::DiagnosisTask task, int64_t negatives,
                                         int64_t positives) {
  auto balanced = [&]() -> std::vector<float> {
    if (negatives < 1 || positives < 1)
      throw std::invalid_argument("class weights 'balanced' need both classes in the training split");
    return {1.f, float(double(negatives) / double(positives))};
  };
  if (option == "none") return {1.f, 1.f};
  if (option == "balanced") return balanced();
  if (option == "reference") return task == io::DiagnosisTask::pmci_vs_smci ? std::vector<float>{1.f, 4.f} : balanced();
  std::vector<float> w;
  std::stringstream s(option);
  std::string part;
  while (std::getline(s, part, ',')) {
    char* end = nullptr;
    const double v = std::strtod(part.c_str(), &end);
    if (part.empty() || *end != '\0' || !std::isfinite(v) || v <= 0)
      throw std::invalid_argument("class weights '" + option + "': '" + part +
                                  "' is not a positive number; use reference, balanced, none or two weights such as 1,4");
    w.push_back(float(v));
  }
  if (w.size() != 2)
    throw std::invalid_argument("class weights '" + option + "' give " + std::to_string(w.size()) +
                                " values; give two (negative class, positive class), e.g. 1,4");
  return w;
}

namespace {

constexpr int kClassifierFormat = 1;
constexpr uint64_t kInitTag = 0xC1A5'0001, kOrderTag = 0xC1A5'0002, kDropoutTag = 0xC1A5'0003;
constexpr const char* kOptimPrefix = "optim.";

// ---- data ------------------------------------------------------------------------------------------
// One split's sessions that have a label for the task, their labels, and the tabular tokens.
struct LabelledSplit {
  std::vector<Session> sessions;
  std::vector<int> labels;
  int64_t count(int label) const { return std::count(labels.begin(), labels.end(), label); }
};

LabelledSplit labelled(const std::vector<Session>& split, io::DiagnosisTask task) {
  LabelledSplit out;
  for (const Session& s : split)
    if (const auto label = io::diagnosis_label(s.record, task)) {
      out.sessions.push_back(s);
      out.labels.push_back(*label);
    }
  return out;
}

// B_CSF then M, normalised with the cohort's training ranges; ABETA enters as 1 − v (the
// reference inverts it so that every tabular variable grows with disease).
std::vector<float> tabular_token(const Session& s, const std::string& tracer) {
  std::vector<float> t = s.csf;
  if (tracer == "AV45" && !t.empty()) t[0] = 1.f - t[0];
  t.insert(t.end(), s.covariates.begin(), s.covariates.end());
  return t;
}

// The classifier's inputs for a list of sessions: images (PET then T1, as channels) and the token.
struct ClassifierBatch {
  Tensor images, context;
};

ClassifierBatch make_batch(const ClassifierInputs& in, const std::vector<const io::Volume*>& pet,
                           const std::vector<const io::Volume*>& t1, const std::vector<std::vector<float>>& tokens) {
  ClassifierBatch b;
  const int64_t n = int64_t(tokens.size());
  if (in.image_channels() > 0) {
    const auto shape = (in.pet ? pet : t1).front()->shape;
    const int64_t vox = shape[0] * shape[1] * shape[2], channels = in.image_channels();
    b.images = Tensor::empty({n, channels, shape[0], shape[1], shape[2]});
    float* out = b.images.data();
    for (int64_t i = 0; i < n; ++i) {
      int64_t c = 0;
      if (in.pet) std::copy(pet[i]->data.begin(), pet[i]->data.end(), out + (i * channels + c++) * vox);
      if (in.t1) std::copy(t1[i]->data.begin(), t1[i]->data.end(), out + (i * channels + c++) * vox);
    }
  }
  if (in.tabular) {
    const int64_t k = int64_t(tokens.front().size());
    b.context = Tensor::empty({n, 1, k});
    for (int64_t i = 0; i < n; ++i) std::copy(tokens[i].begin(), tokens[i].end(), b.context.data() + i * k);
  }
  return b;
}

// ---- one classifier: train (resumably), then evaluate --------------------------------------------
struct ClassifierSpec {
  io::DiagnosisTask task;
  ClassifierInputs inputs;
  uint64_t seed = 0;
  std::string folder;
  models::ClassifierConfig config;
  std::vector<float> class_weights;
};

ordered_json identity_json(const ClassifierSpec& c, const ClassifyOptions& opt) {
  return {{"task", task_name(c.task)},   {"inputs", c.inputs.name()},        {"preset", c.config.preset},
          {"seed", c.seed},              {"batch_size", opt.batch_size},     {"lr", opt.lr},
          {"class_weights", c.class_weights}, {"tracer", opt.tracer},        {"split_seed", opt.split_seed}};
}

struct Progress {
  int64_t step = 0;
  LoaderPosition position;
  std::string dropout;
  double seconds = 0;
};

std::string checkpoint_path(const ClassifierSpec& c) { return (fs::path(c.folder) / "checkpoint.safetensors").string(); }

void save(const ClassifierSpec& c, const ClassifyOptions& opt, const models::DiagnosisClassifier& model, const Adam& adam,
          const Progress& p) {
  NamedTensors tensors = model.state_dict();
  for (auto& t : adam.state_dict(kOptimPrefix)) tensors.push_back(std::move(t));
  const ordered_json meta = {{"format", kClassifierFormat},
                             {"step", p.step},
                             {"epoch", p.position.epoch},
                             {"batch", p.position.batch},
                             {"dropout", p.dropout},
                             {"seconds", p.seconds},
                             {"settings", identity_json(c, opt)}};
  fs::create_directories(c.folder);
  save_safetensors(checkpoint_path(c), tensors, {{"cpets", meta.dump()}});  // atomic
  io::write_text_atomic((fs::path(c.folder) / "checkpoint.json").string(), meta.dump(2) + "\n");
}

// Loads the folder's checkpoint into model and adam; nullopt when there is none. Throws when it
// was trained with other settings.
std::optional<Progress> load(const ClassifierSpec& c, const ClassifyOptions& opt, models::DiagnosisClassifier& model,
                             Adam& adam) {
  const std::string path = checkpoint_path(c);
  if (!fs::exists(path)) return std::nullopt;
  SafetensorsFile file = load_safetensors(path);
  const auto it = file.metadata.find("cpets");
  if (it == file.metadata.end()) throw std::runtime_error(path + ": no 'cpets' metadata; delete the folder to train again");
  const nlohmann::json meta = nlohmann::json::parse(it->second);
  const nlohmann::json want = nlohmann::json(identity_json(c, opt));
  for (const auto& [key, value] : want.items())
    if (!meta["settings"].contains(key) || meta["settings"][key] != value)
      throw std::runtime_error(path + " was trained with " + key + " = " +
                               (meta["settings"].contains(key) ? meta["settings"][key].dump() : "(absent)") + ", not " +
                               value.dump() + ": use another --out, or delete " + c.folder + " to train it again");
  NamedTensors weights, optim;
  for (auto& [name, t] : file.tensors) (name.rfind(kOptimPrefix, 0) == 0 ? optim : weights).emplace_back(name, t);
  model.load_state_dict(weights, true);
  adam.load_state_dict(optim, kOptimPrefix);
  Progress p;
  p.step = meta.at("step").get<int64_t>();
  p.position = {meta.at("epoch").get<int64_t>(), meta.at("batch").get<int64_t>()};
  p.dropout = meta.at("dropout").get<std::string>();
  p.seconds = meta.value("seconds", 0.0);
  return p;
}

std::string short_name(const ClassifierSpec& c) {
  return task_name(c.task) + " " + c.inputs.name() + " seed " + std::to_string(c.seed);
}

// Trains up to opt.steps; false when stopped by opt.stop (checkpoint written). Returns the
// training seconds through `seconds`.
bool train_classifier(const ClassifierSpec& c, const ClassifyOptions& opt, const Dataset& data, const LabelledSplit& split,
           models::DiagnosisClassifier& model, double& seconds) {
  Adam adam(model.named_parameters(), AdamOptions{opt.lr});
  Generator dropout(derive_seed(c.seed, kDropoutTag));
  Progress p;
  p.dropout = dropout.state_string();
  if (auto loaded = load(c, opt, model, adam)) {
    p = *loaded;
    dropout.set_state_string(p.dropout);
  }
  seconds = p.seconds;
  if (p.step > opt.steps)
    throw std::runtime_error(c.folder + " has " + std::to_string(p.step) + " steps, more than --steps " +
                             std::to_string(opt.steps) + ": give --steps " + std::to_string(p.step) +
                             " or more, or another --out");
  if (p.step == opt.steps) return true;

  BatchLoader loader(data, opt.batch_size, derive_seed(c.seed, kOrderTag), p.position);
  ProgressLine line(std::cerr, p.step, opt.steps, opt.progress, std::max<int64_t>(opt.steps / 10, 1));
  std::ofstream log((fs::path(c.folder) / "train.jsonl").string(), std::ios::app);
  line.message(short_name(c) + (p.step > 0 ? ": resuming at step " + std::to_string(p.step) : ""));
  model.train();
  while (p.step < opt.steps) {
    if (opt.stop && opt.stop->load()) {
      line.finish();
      save(c, opt, model, adam, p);
      return false;
    }
    const auto start = std::chrono::steady_clock::now();
    const Batch b = loader.next();
    std::vector<const io::Volume*> pet, t1;
    std::vector<std::vector<float>> tokens;
    std::vector<int> labels;
    std::vector<std::shared_ptr<const Dataset::Pair>> keep;  // the volumes stay alive while used
    for (int64_t i : b.sessions) {
      keep.push_back(data.load(i));
      t1.push_back(&keep.back()->first.volume);
      pet.push_back(&keep.back()->second.volume);
      tokens.push_back(tabular_token(data.session(i), opt.tracer));
      labels.push_back(split.labels[size_t(i)]);
    }
    const ClassifierBatch in = make_batch(c.inputs, pet, t1, tokens);
    const Tensor loss = cross_entropy(model.forward(in.images, in.context, &dropout), labels, c.class_weights);
    adam.zero_grad();
    loss.backward();
    adam.step();
    ++p.step;
    p.position = loader.position();
    p.dropout = dropout.state_string();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    p.seconds += dt;
    const float value = loss.item();
    if (!std::isfinite(value))
      throw std::runtime_error(short_name(c) + ": the loss is " + std::to_string(value) + " at step " +
                               std::to_string(p.step) + "; lower --lr");
    log << ordered_json{{"step", p.step}, {"loss", value}, {"seconds", dt}}.dump() << "\n";
    char text[64];
    std::snprintf(text, sizeof text, "loss %.4f", value);
    line.update(p.step, text);
    if (p.step % opt.checkpoint_every == 0 || p.step == opt.steps) save(c, opt, model, adam, p);
  }
  line.finish();
  seconds = p.seconds;
  return true;
}

struct SeedResult {
  uint64_t seed = 0;
  eval::BinaryClassification metrics;
  std::vector<double> scores;
  std::vector<int> predictions;
};

// Logits of class 1 (the score) and the predicted class of every test session, with the PET of
// `source` (null: the real PET).
SeedResult evaluate(const ClassifierSpec& c, const ClassifyOptions& opt, const models::DiagnosisClassifier& model,
                    const Dataset& data, const LabelledSplit& split, const std::vector<io::Volume>* source) {
  SeedResult r;
  r.seed = c.seed;
  NoGradGuard no_grad;
  const int64_t n = data.size();
  for (int64_t first = 0; first < n; first += opt.batch_size) {
    std::vector<const io::Volume*> pet, t1;
    std::vector<std::vector<float>> tokens;
    std::vector<std::shared_ptr<const Dataset::Pair>> keep;
    for (int64_t i = first; i < std::min(n, first + opt.batch_size); ++i) {
      keep.push_back(data.load(i));
      t1.push_back(&keep.back()->first.volume);
      pet.push_back(source ? &(*source)[size_t(i)] : &keep.back()->second.volume);
      tokens.push_back(tabular_token(data.session(i), opt.tracer));
    }
    const ClassifierBatch in = make_batch(c.inputs, pet, t1, tokens);
    const Tensor logits = model.forward(in.images, in.context);
    for (int64_t i = 0; i < logits.size(0); ++i) {
      const float l0 = logits.data()[i * 2], l1 = logits.data()[i * 2 + 1];
      r.scores.push_back(double(l1));
      r.predictions.push_back(l1 > l0 ? 1 : 0);
    }
  }
  r.metrics = eval::classify_metrics(split.labels, r.predictions, r.scores);
  return r;
}

// The tabular-only row: class-weighted logistic regression on the token (scikit-learn's defaults,
// C = 1), fitted to convergence on the training split — deterministic, so every seed gets the
// same result. A network on five numbers would mostly measure how far its training got.
SeedResult tabular_baseline(const LabelledSplit& train, const LabelledSplit& test, const std::vector<float>& weights,
                            const std::string& tracer) {
  auto features = [&](const LabelledSplit& s) {
    std::vector<std::vector<double>> x;
    for (const Session& session : s.sessions) {
      const std::vector<float> t = tabular_token(session, tracer);
      x.emplace_back(t.begin(), t.end());
    }
    return x;
  };
  const eval::LogisticRegression model =
      eval::fit_logistic_regression(features(train), train.labels, {double(weights[0]), double(weights[1])});
  SeedResult r;
  for (const auto& x : features(test)) {
    r.scores.push_back(model.decision(x));
    r.predictions.push_back(r.scores.back() > 0 ? 1 : 0);
  }
  r.metrics = eval::classify_metrics(test.labels, r.predictions, r.scores);
  return r;
}

// ---- synthetic PET of the test sessions ---------------------------------------------------------
// The run's model, refused when its tracer, split seed or volume is not the study's.
InferenceBundle load_source(const SyntheticSource& src, const ClassifyOptions& opt, const models::ClassifierConfig& config) {
  InferenceBundle bundle = load_for_inference(src.run);
  if (bundle.tracer != opt.tracer)
    throw std::runtime_error("synthesis run '" + src.name + "' (" + bundle.path + ") is for " + bundle.tracer +
                             ", the classifiers for " + opt.tracer + ": give --tracer " + bundle.tracer +
                             " or a run of this tracer");
  if (bundle.meta.config.data.split_seed != opt.split_seed)
    throw std::runtime_error("synthesis run '" + src.name + "' (" + bundle.path + ") was trained with split seed " +
                             std::to_string(bundle.meta.config.data.split_seed) + ", the classifiers use " +
                             std::to_string(opt.split_seed) +
                             ": its training subjects could be in this test split; give --split-seed " +
                             std::to_string(bundle.meta.config.data.split_seed));
  if (bundle.model_config.volume != config.volume)
    throw std::runtime_error("synthesis run '" + src.name + "' (" + bundle.path + ") makes " +
                             io::shape_string(bundle.model_config.volume) + " volumes, the classifier preset '" +
                             config.preset + "' reads " + io::shape_string(config.volume) +
                             ": use the classifier preset of the synthesis run's model preset");
  return bundle;
}

std::vector<io::Volume> synthesise_split(const SyntheticSource& src, const ClassifyOptions& opt, const Dataset& data,
                                         const models::ClassifierConfig& config) {
  const InferenceBundle bundle = load_source(src, opt, config);
  const eval::Synthesiser synth(bundle.model);
  std::vector<io::Volume> out;
  for (int64_t i = 0; i < data.size(); ++i) {
    const auto pair = data.load(i);
    out.push_back(synth.synthesise(pair->first.volume, eval::tabular_inputs(data.session(i).record, bundle.ranges, opt.tracer)));
  }
  return out;
}

// ---- tables ------------------------------------------------------------------------------------------
struct Column {
  std::string key, header;
  double eval::BinaryClassification::*field;
};
const std::vector<Column>& columns() {
  static const std::vector<Column> c = {{"f1", "F1 ↑", &eval::BinaryClassification::f1},
                                        {"auc", "AUC ↑", &eval::BinaryClassification::auc},
                                        {"accuracy", "accuracy ↑", &eval::BinaryClassification::accuracy},
                                        {"precision", "precision ↑", &eval::BinaryClassification::precision},
                                        {"recall", "recall ↑", &eval::BinaryClassification::recall}};
  return c;
}

std::vector<double> column_values(const std::vector<SeedResult>& seeds, const Column& c) {
  std::vector<double> v;
  for (const auto& s : seeds) v.push_back(s.metrics.*c.field);
  return v;
}

std::string number(double v) {
  if (!std::isfinite(v)) return "–";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}

struct TableRow {
  std::string name, label;
  const std::vector<SeedResult>* seeds = nullptr;
};

// Rows × (F1, AUC, accuracy, precision, recall) as mean ± std over seeds; each row but the
// reference (`reference` < 0: none) is compared with it by a paired t-test over the seeds.
eval::ReportTable make_table(const std::string& title, const std::string& table, const std::vector<TableRow>& rows,
                             int reference, std::vector<std::vector<std::string>>& csv) {
  eval::ReportTable t;
  t.title = title;
  t.header = {"classifier tested on"};
  for (const auto& c : columns()) t.header.push_back(c.header);
  t.header.push_back("seeds");
  for (size_t r = 0; r < rows.size(); ++r) {
    std::vector<std::string> cells{rows[r].label}, line{table, rows[r].name, rows[r].label};
    for (const auto& c : columns()) {
      const std::vector<double> v = column_values(*rows[r].seeds, c);
      double p = NAN;
      if (reference >= 0 && int(r) != reference && v.size() >= 2) {
        const std::vector<double> ref = column_values(*rows[size_t(reference)].seeds, c);
        if (ref.size() == v.size()) p = eval::paired_t_test(v, ref).p;
      }
      const eval::MeanStd m = eval::mean_std(v);
      cells.push_back(number(m.mean) + " ± " + number(m.std) + eval::significance_stars(p));
      line.insert(line.end(), {number(m.mean), number(m.std), std::isfinite(p) ? std::to_string(p) : ""});
    }
    cells.push_back(std::to_string(rows[r].seeds->size()));
    line.push_back(std::to_string(rows[r].seeds->size()));
    t.rows.push_back(std::move(cells));
    csv.push_back(std::move(line));
  }
  t.notes.push_back("mean ± std (population) over the seeds; F1, precision and recall weighted by class support, AUC "
                    "from the logit of the positive class.");
  if (reference >= 0)
    t.notes.push_back("paired t-test over the seeds against '" + rows[size_t(reference)].label +
                      "': * p < 0.05, ** p < 0.01, *** p < 0.001 (no star: p ≥ 0.05).");
  return t;
}

void write_table_csv(const std::string& path, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::string> header = {"table", "row", "label"};
  for (const auto& c : columns()) header.insert(header.end(), {c.key + "_mean", c.key + "_std", c.key + "_p"});
  header.push_back("seeds");
  io::write_csv(path, header, rows);
}

ordered_json seed_json(const SeedResult& s, const std::vector<int>& labels) {
  ordered_json j = {{"seed", s.seed}};
  for (const auto& c : columns()) {
    const double v = s.metrics.*c.field;
    j[c.key] = std::isfinite(v) ? ordered_json(v) : ordered_json(nullptr);
  }
  j["labels"] = labels;
  j["scores"] = s.scores;
  j["predictions"] = s.predictions;
  return j;
}

using Results = std::map<std::string, std::map<std::string, std::vector<SeedResult>>>;  // [inputs][source]

// One task's part of the report: its JSON (every seed's numbers and scores), Table 2 or 7 (the
// PET classifier on real and every method's synthetic PET), Table 3 (every input trained, on
// real data and on the first method's synthetic PET) and the mean ROC curves.
void add_task_report(io::DiagnosisTask task, const LabelledSplit& train, const LabelledSplit& test,
                     const std::vector<float>& weights, const std::vector<ClassifierInputs>& inputs, Results& results,
                     const ClassifyOptions& opt, eval::Report& report, ordered_json& json,
                     std::vector<std::vector<std::string>>& csv_pet, std::vector<std::vector<std::string>>& csv3) {
  // JSON: every seed's numbers and scores.
  ordered_json tj = {{"label", task_label(task)},
                     {"class_weights", weights},
                     {"train", {{"negative", train.count(0)}, {"positive", train.count(1)}}},
                     {"test", {{"negative", test.count(0)}, {"positive", test.count(1)}}},
                     {"classifiers", ordered_json::object()}};
  for (const auto& [name, sources] : results)
    for (const auto& [source, seeds] : sources)
      for (const auto& s : seeds) tj["classifiers"][name][source].push_back(seed_json(s, test.labels));
  json = tj;

  // Table 2 / 7: the PET classifier on real PET and on every method's synthetic PET.
  const bool pmci = task == io::DiagnosisTask::pmci_vs_smci;
  const std::string counts = std::to_string(test.count(1)) + " positive / " + std::to_string(test.count(0)) +
                             " negative test sessions; trained on " + std::to_string(train.count(1)) + " / " +
                             std::to_string(train.count(0)) + " real training sessions";
  if (results.count("pet")) {
    std::vector<TableRow> rows{{"real", "real PET", &results["pet"]["real"]}};
    for (const auto& src : opt.synthetic) rows.push_back({src.name, "synthetic PET: " + src.name, &results["pet"][src.name]});
    eval::ReportTable t = make_table(std::string(pmci ? "Table 2" : "Table 7") + ": " + task_label(task) +
                                         ", the PET classifier on real and synthetic PET",
                                     pmci ? "table2" : "table7", rows, opt.synthetic.empty() ? -1 : 1,
                                     csv_pet);
    t.notes.push_back(counts + ".");
    report.tables.push_back(std::move(t));
  }
  // Table 3: every input combination trained, on real data (and the first method's synthetic PET).
  if (inputs.size() > 1) {
    std::vector<TableRow> rows;
    int reference = -1;
    for (const auto& in : inputs) {
      if (in.name() == "tab") reference = int(rows.size());
      rows.push_back({in.name(), in.label(), &results[in.name()]["real"]});
    }
    if (!opt.synthetic.empty())
      for (const auto& in : inputs)
        if (in.pet)
          rows.push_back({in.name() + "@" + opt.synthetic.front().name,
                          in.label() + " (synthetic PET: " + opt.synthetic.front().name + ")",
                          &results[in.name()][opt.synthetic.front().name]});
    eval::ReportTable t = make_table("Table 3: " + task_label(task) + " by input, real data" +
                                         (opt.synthetic.empty() ? "" : " and " + opt.synthetic.front().name + "'s PET"),
                                     pmci ? "table3" : "table3-ad-vs-cn", rows, reference, csv3);
    t.notes.push_back(counts + ". 'tabular' is a class-weighted logistic regression on the tabular token (C = 1, "
                      "fitted to convergence: the same for every seed); the other rows are the network.");
    report.tables.push_back(std::move(t));
  }
  // ROC curves, one plot per classifier input.
  for (const auto& [name, sources] : results) {
    eval::ReportCurve curve{task_label(task) + ", " + parse_classifier_inputs(name).label() + " classifier", "true-positive rate", {},
                            "false-positive rate"};
    for (const auto& [source, seeds] : sources) {
      std::vector<eval::RocCurve> rocs;
      for (const auto& s : seeds) rocs.push_back(s.metrics.roc);
      const eval::RocCurve m = eval::mean_roc(rocs);
      curve.series.push_back({source == "real" ? "real PET" : source, m.fpr, m.tpr});
    }
    report.curves.push_back(std::move(curve));
  }
}

}  // namespace

std::vector<SyntheticSource> experiment_sources(const std::string& experiment) {
  std::vector<SyntheticSource> out;
  for (const auto& name : models::model_kinds()) {  // Table 1's order
    const fs::path run = fs::path(experiment) / "runs" / name;
    if (trained_steps(run.string()) > 0 || fs::exists(run / "checkpoints" / "best.safetensors")) out.push_back({name, run.string()});
  }
  if (out.empty())
    throw std::runtime_error(experiment + " has no trained method under runs/ (" +
                             "causal-pets, unet, …): give a cpets-experiment folder, or runs with --synthetic NAME=RUN");
  return out;
}

eval::Report run_classification(const ClassifyOptions& opt) {
  if (opt.seeds < 1) throw std::invalid_argument("--seeds is " + std::to_string(opt.seeds) + "; train at least one seed");
  if (opt.steps < 1) throw std::invalid_argument("--steps is " + std::to_string(opt.steps) + "; give at least 1");
  if (opt.batch_size < 1) throw std::invalid_argument("--batch-size must be at least 1");
  if (!(opt.lr > 0) || !std::isfinite(opt.lr)) throw std::invalid_argument("--lr must be a positive number");
  if (opt.tasks.empty() || opt.inputs.empty()) throw std::invalid_argument("no task or no classifier inputs given");
  std::vector<ClassifierInputs> inputs;
  for (const auto& text : opt.inputs) inputs.push_back(parse_classifier_inputs(text));
  for (const auto& s : opt.synthetic)
    if (s.name.empty() || s.name == "real" || s.name.find_first_of("/,= ") != std::string::npos)
      throw std::invalid_argument("synthetic PET source '" + s.name + "=" + s.run +
                                  "': give it a name without '/', ',', '=' or spaces, other than 'real'");
  const auto wall_start = std::chrono::steady_clock::now();
  for (const auto& src : opt.synthetic) load_source(src, opt, models::classifier_preset(opt.preset, 1, 0));  // fail fast

  DataConfig dc;
  dc.cohort = opt.cohort;
  dc.tracer = opt.tracer;
  dc.split_seed = opt.split_seed;
  dc.cache_mb = opt.cache_mb;
  const CohortSplits splits = open_cohort(dc);
  // The images are read as the synthesis model of the same preset reads them (voxel size checked).
  const models::ModelConfig volume_source = models::model_preset(opt.preset, opt.tracer);

  eval::Report report;
  report.title = "Downstream diagnosis: classifiers on real and synthetic PET (Tables 2, 3, 7)";
  report.curves_title = "ROC curves (mean over seeds)";
  std::vector<std::vector<std::string>> csv2, csv3, csv7;
  ordered_json all = ordered_json::object();
  int64_t classifiers = 0;
  double train_seconds = 0;

  for (const io::DiagnosisTask task : opt.tasks) {
    const LabelledSplit train = labelled(splits.train, task), test = labelled(splits.test, task);
    for (const auto* s : {&train, &test})
      if (s->count(0) == 0 || s->count(1) == 0)
        throw std::runtime_error(task_label(task) + ": the " + std::string(s == &train ? "training" : "test") +
                                 " split of " + opt.cohort + " has " + std::to_string(s->count(0)) + " negative and " +
                                 std::to_string(s->count(1)) +
                                 " positive sessions; both classes are needed (more subjects, another --split-seed, or "
                                 "a cohort with DX_36m and Conversion_date for pMCI vs sMCI)");
    const std::vector<float> weights = resolve_class_weights(opt.class_weights, task, train.count(0), train.count(1));
    const int64_t context = int64_t(tabular_token(train.sessions.front(), opt.tracer).size());
    const models::ClassifierConfig image_config = models::classifier_preset(opt.preset, 1, 0);
    const Dataset train_data(train.sessions, image_config.volume, opt.cache_mb, volume_source.voxel_mm);
    const Dataset test_data(test.sessions, image_config.volume, opt.cache_mb, volume_source.voxel_mm);
    if (int64_t(train.sessions.size()) < opt.batch_size)
      throw std::runtime_error(task_label(task) + ": " + std::to_string(train.sessions.size()) +
                               " training sessions, fewer than one batch of " + std::to_string(opt.batch_size) +
                               "; lower --batch-size");

    std::map<std::string, std::vector<io::Volume>> synthetic;  // source → test-session PET
    bool any_pet = false;
    for (const auto& in : inputs) any_pet = any_pet || in.pet;
    if (any_pet)
      for (const auto& src : opt.synthetic) {
        std::cerr << task_label(task) << ": synthesising the test PET with " << src.name << "\n";
        synthetic[src.name] = synthesise_split(src, opt, test_data, image_config);
      }

    Results results;
    for (const auto& in : inputs) {
      if (in.image_channels() == 0) {
        const SeedResult fitted = tabular_baseline(train, test, weights, opt.tracer);
        for (int k = 0; k < opt.seeds; ++k) {
          results[in.name()]["real"].push_back(fitted);
          results[in.name()]["real"].back().seed = opt.first_seed + uint64_t(k);
        }
        continue;
      }
      for (int k = 0; k < opt.seeds; ++k) {
        ClassifierSpec c{task, in, opt.first_seed + uint64_t(k), "", {}, weights};
        c.folder = (fs::path(opt.out) / task_name(task) / in.name() / ("seed-" + std::to_string(c.seed))).string();
        c.config = models::classifier_preset(opt.preset, in.image_channels(), in.tabular ? context : 0);
        Generator init(derive_seed(c.seed, kInitTag));
        models::DiagnosisClassifier model(c.config, init);
        double seconds = 0;
        if (!train_classifier(c, opt, train_data, train, model, seconds)) {
          std::cerr << "interrupted: " << short_name(c) << " checkpointed; run the same command again to resume\n";
          return eval::Report{};
        }
        train_seconds += seconds;
        ++classifiers;
        model.eval();
        results[in.name()]["real"].push_back(evaluate(c, opt, model, test_data, test, nullptr));
        if (in.pet)
          for (const auto& src : opt.synthetic)
            results[in.name()][src.name].push_back(evaluate(c, opt, model, test_data, test, &synthetic.at(src.name)));
      }
    }

    add_task_report(task, train, test, weights, inputs, results, opt, report, all[task_name(task)],
                    task == io::DiagnosisTask::pmci_vs_smci ? csv2 : csv7, csv3);
  }

  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  char lr_text[32];
  std::snprintf(lr_text, sizeof lr_text, "%g", opt.lr);
  report.facts = {{"cohort", opt.cohort},
                  {"tracer", opt.tracer},
                  {"split seed", std::to_string(opt.split_seed)},
                  {"classifier preset", opt.preset},
                  {"training", std::to_string(opt.steps) + " steps of batch " + std::to_string(opt.batch_size) +
                                   ", Adam lr " + lr_text + ", class weights " + opt.class_weights},
                  {"seeds", std::to_string(opt.seeds) + " (" + std::to_string(opt.first_seed) + " …)"},
                  {"classifiers", std::to_string(classifiers) + ", " + format_duration(train_seconds) + " of training"},
                  {"machine", std::string(kernels::cpu::cpu_isa_description()) + ", " +
                                  std::to_string(omp_get_max_threads()) + " threads"},
                  {"wall time", format_duration(wall)}};
  for (const auto& s : opt.synthetic) {
    const int64_t steps = trained_steps(s.run);
    report.facts.push_back({"synthetic PET: " + s.name, s.run + (steps > 0 ? " (" + std::to_string(steps) + " steps)" : "")});
  }
  report.notes = {
      "Classifiers are trained on the REAL images of the training split only and evaluated after the last step "
      "(the reference evaluates every epoch and picks a checkpoint by hand).",
      "Synthetic PET: each run's best checkpoint, ε = 0, from the session's own T1 and tabular inputs; the classifier "
      "trained on real PET is applied to it unchanged.",
      "pMCI vs sMCI: MCI sessions with DX_36m; a converter's sessions on or after its conversion date are dropped. AD vs "
      "CN: baseline diagnosis.",
      "The tabular token is B_CSF then age, sex, APOE4, education, min–max normalised on the training split, ABETA "
      "inverted (1 − v) as the reference does."};

  fs::create_directories(opt.out);
  io::write_text_atomic((fs::path(opt.out) / "metrics.json").string(),
                        ordered_json{{"facts", report.facts}, {"tasks", all}}.dump(2) + "\n");
  if (!csv2.empty()) write_table_csv((fs::path(opt.out) / "table2.csv").string(), csv2);
  if (!csv3.empty()) write_table_csv((fs::path(opt.out) / "table3.csv").string(), csv3);
  if (!csv7.empty()) write_table_csv((fs::path(opt.out) / "table7.csv").string(), csv7);
  eval::write_html_report((fs::path(opt.out) / "report.html").string(), report);
  return report;
}

}  // namespace cpets::train
