// The downstream diagnosis study (train/classify): names and options, the mean ROC curve, and
// run_classification end to end on a small phantom cohort with progression — every table cell
// present for both tasks, synthetic PET from a trained synthesis run, exact resume, refused
// settings, stop and errors that name the fix.
#include <doctest/doctest.h>

#include <omp.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "eval/classification.h"
#include "io/phantom.h"
#include "train/classify.h"
#include "train/config.h"
#include "train/trainer.h"
#include "test_support.h"

using namespace cpets;
using namespace cpets::train;
namespace fs = std::filesystem;
using cpets::testing::error_of;
using cpets::testing::TempDir;
using cpets::testing::ThreadCount;

namespace {

// A phantom cohort with converters (72 subjects: with split seed 100 both tasks have both classes
// in the training and the test split — checked by the first test).
const TempDir& cohort() {
  static TempDir dir;
  static bool written = false;
  if (!written) {
    io::phantom::Options o;
    o.out_dir = dir.str();
    o.subjects = 72;
    o.seed = 3;
    o.progress = false;
    io::phantom::generate_cohort(o);
    written = true;
  }
  return dir;
}

// A tiny Causal PETS run on that cohort, one step: a source of synthetic PET.
const TempDir& synthesis_run() {
  static TempDir dir;
  static bool trained = false;
  if (!trained) {
    Config cfg = make_config("tiny", {"data.cohort=" + cohort().str(), "train.perceptual=none", "train.batch_size=2",
                                      "data.max_val_sessions=2"});
    Trainer t(cfg);
    RunOptions ro;
    ro.out_dir = dir.str();
    ro.max_steps = 1;
    ro.progress = false;
    t.run(ro);
    trained = true;
  }
  return dir;
}

ClassifyOptions tiny_options(const std::string& out) {
  ClassifyOptions o;
  o.cohort = cohort().str();
  o.out = out;
  o.preset = "tiny";
  o.seeds = 2;
  o.steps = 2;
  o.batch_size = 2;
  o.progress = false;
  return o;
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

}  // namespace

TEST_CASE("classify: inputs, tasks and class weights parse; mistakes are named") {
  CHECK(parse_classifier_inputs("pet").name() == "pet");
  CHECK(parse_classifier_inputs("tab+t1+pet").name() == "pet+t1+tab");
  CHECK(parse_classifier_inputs("t1+pet").label() == "T1 + PET");
  CHECK(parse_classifier_inputs("pet+t1").image_channels() == 2);
  CHECK(parse_classifier_inputs("tab").image_channels() == 0);
  CHECK(parse_classifier_inputs("tab").label() == "tabular (logistic regression)");
  CHECK(table3_inputs().size() == 7);
  CHECK(error_of([] { parse_classifier_inputs("pet+ct"); }).find("'ct' is not an input") != std::string::npos);
  CHECK(error_of([] { parse_classifier_inputs("pet+pet"); }).find("given twice") != std::string::npos);
  CHECK(error_of([] { parse_classifier_inputs(""); }).find("no input") != std::string::npos);
  CHECK(parse_task("ad-vs-cn") == io::DiagnosisTask::ad_vs_cn);
  CHECK(task_name(parse_task("pmci-vs-smci")) == "pmci-vs-smci");
  CHECK(error_of([] { parse_task("mci"); }).find("pmci-vs-smci or ad-vs-cn") != std::string::npos);

  using io::DiagnosisTask;
  CHECK(resolve_class_weights("reference", DiagnosisTask::pmci_vs_smci, 60, 10) == std::vector<float>{1.f, 4.f});
  CHECK(resolve_class_weights("reference", DiagnosisTask::ad_vs_cn, 60, 20) == std::vector<float>{1.f, 3.f});
  CHECK(resolve_class_weights("balanced", DiagnosisTask::pmci_vs_smci, 30, 12) == std::vector<float>{1.f, 2.5f});
  CHECK(resolve_class_weights("none", DiagnosisTask::ad_vs_cn, 3, 1) == std::vector<float>{1.f, 1.f});
  CHECK(resolve_class_weights("1,3.5", DiagnosisTask::ad_vs_cn, 3, 1) == std::vector<float>{1.f, 3.5f});
  CHECK(error_of([] { resolve_class_weights("1,-2", DiagnosisTask::ad_vs_cn, 3, 1); }).find("'-2' is not a positive") !=
        std::string::npos);
  CHECK(error_of([] { resolve_class_weights("1,2,3", DiagnosisTask::ad_vs_cn, 3, 1); }).find("give two") !=
        std::string::npos);
  CHECK(error_of([] { resolve_class_weights("balanced", DiagnosisTask::ad_vs_cn, 3, 0); }).find("both classes") !=
        std::string::npos);
}

TEST_CASE("classify: the mean ROC curve averages each curve's staircase on an even grid") {
  eval::RocCurve perfect{{0, 0, 1}, {0, 1, 1}, {}}, chance{{0, 0.5, 1}, {0, 0.5, 1}, {}};
  const eval::RocCurve m = eval::mean_roc({perfect, chance}, 3);
  CHECK(m.fpr == std::vector<double>{0, 0.5, 1});
  CHECK(m.tpr == std::vector<double>{0.5, 0.75, 1});
  CHECK(eval::roc_auc(m) == doctest::Approx(0.75));
  CHECK_THROWS_AS(eval::mean_roc({}, 3), std::invalid_argument);
  CHECK_THROWS_AS(eval::mean_roc({perfect}, 1), std::invalid_argument);
}

TEST_CASE("classify: tables 2, 3 and 7 from real and synthetic PET, every cell present, files written") {
  ThreadCount one(1);
  TempDir out;
  ClassifyOptions o = tiny_options(out.str());
  o.tasks = {io::DiagnosisTask::pmci_vs_smci, io::DiagnosisTask::ad_vs_cn};
  o.inputs = {"tab", "pet", "pet+t1+tab"};
  o.synthetic = {{"causal-pets", synthesis_run().str()}};
  const eval::Report r = run_classification(o);

  // Table 2, Table 3 (pMCI), Table 7, Table 3 (AD vs CN): each with every row and every cell.
  REQUIRE(r.tables.size() == 4);
  CHECK(r.tables[0].title.find("Table 2") == 0);
  CHECK(r.tables[1].title.find("Table 3") == 0);
  CHECK(r.tables[2].title.find("Table 7") == 0);
  CHECK(r.tables[0].rows.size() == 2);      // real PET, causal-pets
  CHECK(r.tables[1].rows.size() == 3 + 2);  // three inputs on real data, two with PET on synthetic
  for (const auto& t : r.tables)
    for (const auto& row : t.rows) {
      REQUIRE(row.size() == t.header.size());
      for (const auto& cell : row) {
        CAPTURE(t.title);
        CAPTURE(cell);
        CHECK(!cell.empty());
        CHECK(cell.find("–") == std::string::npos);  // every metric defined: both classes in the test split
      }
      CHECK(row.back() == "2");  // seeds
    }
  // ROC curves: per task and input, one series per PET source, on the even grid.
  CHECK(r.curves.size() == 6);
  for (const auto& c : r.curves) {
    CHECK(c.xlabel == "false-positive rate");
    for (const auto& s : c.series) CHECK(s.step.size() == 51);
  }

  for (const char* f : {"report.html", "metrics.json", "table2.csv", "table3.csv", "table7.csv"})
    CHECK_MESSAGE(fs::exists(out.path / f), f);
  const nlohmann::json j = read_json(out.path / "metrics.json");
  const auto& pmci = j["tasks"]["pmci-vs-smci"];
  CHECK(pmci["class_weights"] == nlohmann::json{1.0, 4.0});
  CHECK(pmci["train"]["positive"].get<int>() > 0);
  const auto& seeds = pmci["classifiers"]["pet"]["causal-pets"];
  REQUIRE(seeds.size() == 2);
  CHECK(seeds[0]["scores"].size() == seeds[0]["labels"].size());
  CHECK(seeds[1]["seed"] == 778);
  CHECK(!pmci["classifiers"]["tab"].contains("causal-pets"));  // no PET input: real data only
  // The tabular row is a logistic regression fitted to convergence: the same for every seed.
  const auto& tab = pmci["classifiers"]["tab"]["real"];
  REQUIRE(tab.size() == 2);
  CHECK(tab[0]["scores"] == tab[1]["scores"]);
  CHECK(tab[1]["seed"] == 778);
  // The two seeds are two different classifiers.
  CHECK(seeds[0]["scores"] != seeds[1]["scores"]);
  std::ifstream html(out.path / "report.html");
  const std::string page((std::istreambuf_iterator<char>(html)), std::istreambuf_iterator<char>());
  CHECK(page.find("ROC curves") != std::string::npos);
  CHECK(page.find("Table 7") != std::string::npos);
  CHECK(page.find("Metrics, mean") == std::string::npos);  // no synthesis metrics section in this report
}

TEST_CASE("classify: an interrupted study resumes bit for bit; finished classifiers are not trained again") {
  ThreadCount one(1);
  TempDir straight, resumed;
  ClassifyOptions o = tiny_options(straight.str());
  o.seeds = 1;
  o.inputs = {"pet+tab"};
  o.steps = 4;
  run_classification(o);

  ClassifyOptions a = o;
  a.out = resumed.str();
  a.steps = 2;  // then continue to 4, like a larger --steps after an interruption
  run_classification(a);
  const fs::path ckpt = resumed.path / "pmci-vs-smci" / "pet+tab" / "seed-777" / "checkpoint.json";
  CHECK(read_json(ckpt)["step"] == 2);
  a.steps = 4;
  run_classification(a);
  CHECK(read_json(ckpt)["step"] == 4);
  CHECK(read_json(straight.path / "metrics.json")["tasks"] == read_json(resumed.path / "metrics.json")["tasks"]);

  // Finished: run again and nothing trains (the checkpoint file is untouched).
  const auto before = fs::last_write_time(resumed.path / "pmci-vs-smci" / "pet+tab" / "seed-777" / "checkpoint.safetensors");
  run_classification(a);
  CHECK(fs::last_write_time(resumed.path / "pmci-vs-smci" / "pet+tab" / "seed-777" / "checkpoint.safetensors") == before);

  // Other settings on the same folder are refused, naming the setting and the fix.
  ClassifyOptions other = a;
  other.lr = 3e-4;
  const std::string e = error_of([&] { run_classification(other); });
  CHECK(e.find("was trained with lr") != std::string::npos);
  CHECK(e.find("use another --out") != std::string::npos);
  other = a;
  other.steps = 3;
  CHECK(error_of([&] { run_classification(other); }).find("more than --steps 3") != std::string::npos);
}

TEST_CASE("classify: a stop request checkpoints the classifier and returns no tables") {
  ThreadCount one(1);
  TempDir out;
  ClassifyOptions o = tiny_options(out.str());
  o.seeds = 1;
  std::atomic<bool> stop{true};
  o.stop = &stop;
  CHECK(run_classification(o).tables.empty());
  CHECK(read_json(out.path / "pmci-vs-smci" / "pet" / "seed-777" / "checkpoint.json")["step"] == 0);
  stop = false;
  CHECK(run_classification(o).tables.size() == 1);
}

TEST_CASE("classify: bad inputs are refused with the fix") {
  ThreadCount one(1);
  TempDir out;
  ClassifyOptions o = tiny_options(out.str());
  o.seeds = 1;
  o.steps = 1;

  // A synthesis run split with another seed could have trained on the test subjects.
  ClassifyOptions split = o;
  split.split_seed = 5;
  split.synthetic = {{"causal-pets", synthesis_run().str()}};
  std::string e = error_of([&] { run_classification(split); });
  CHECK(e.find("split seed 100") != std::string::npos);
  CHECK(e.find("--split-seed 100") != std::string::npos);

  // A synthesis run whose volume is not the classifier's.
  ClassifyOptions volume = o;
  volume.preset = "demo";
  volume.synthetic = {{"causal-pets", synthesis_run().str()}};
  CHECK(error_of([&] { run_classification(volume); }).find("makes 16×16×16 volumes") != std::string::npos);

  // A cohort without the progression columns has no pMCI vs sMCI labels.
  TempDir bare;
  fs::create_symlink(cohort().path / "t1", bare.path / "t1");
  fs::create_symlink(cohort().path / "pet", bare.path / "pet");
  {
    std::ifstream in(cohort().path / "cohort.csv");
    std::ofstream csv(bare.path / "cohort.csv");
    std::string line;
    while (std::getline(in, line)) {  // the last two columns are DX_36m and Conversion_date
      for (int k = 0; k < 2; ++k) line = line.substr(0, line.rfind(','));
      csv << line << "\n";
    }
  }
  ClassifyOptions no_dx = o;
  no_dx.cohort = bare.str();
  e = error_of([&] { run_classification(no_dx); });
  CHECK(e.find("0 negative and 0 positive") != std::string::npos);
  CHECK(e.find("DX_36m") != std::string::npos);

  ClassifyOptions bad = o;
  bad.inputs = {"pet+ct"};
  CHECK(error_of([&] { run_classification(bad); }).find("'ct' is not an input") != std::string::npos);
  bad = o;
  bad.synthetic = {{"real", synthesis_run().str()}};
  CHECK(error_of([&] { run_classification(bad); }).find("other than 'real'") != std::string::npos);
  bad = o;
  bad.batch_size = 1000;
  CHECK(error_of([&] { run_classification(bad); }).find("lower --batch-size") != std::string::npos);
}
