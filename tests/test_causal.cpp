// Causal fidelity metrics (eval/causal.h) and their use during validation
// (train/causal_monitor.h) on a small phantom cohort whose truth is known.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <nlohmann/json.hpp>

#include "eval/causal.h"
#include "eval/report.h"
#include "io/phantom.h"
#include "train/trainer.h"

using namespace cpets;
using namespace cpets::eval;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / ("cpets_test_causal_" + std::to_string(getpid()) + "_" + name)) {
    fs::remove_all(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

}  // namespace

TEST_CASE("LinearReference: recovers an exact linear law, survives a constant column, refuses bad shapes") {
  std::vector<std::vector<double>> rows;
  std::vector<double> y;
  for (int i = 0; i < 20; ++i) {
    const double a = 0.1 * i, b = std::sin(i), c = 0.5;  // c constant: the ridge keeps it solvable
    rows.push_back({a, b, c});
    y.push_back(1.25 - 0.4 * a + 2.0 * b);
  }
  const LinearReference ref = LinearReference::fit(rows, y);
  for (size_t i = 0; i < rows.size(); ++i) CHECK(ref.predict(rows[i]) == doctest::Approx(y[i]).epsilon(1e-6));
  CHECK(ref.coefficients()[1] == doctest::Approx(-0.4).epsilon(1e-5));
  CHECK(ref.coefficients()[2] == doctest::Approx(2.0).epsilon(1e-5));
  CHECK_THROWS_AS(LinearReference::fit({{1.0}}, {1.0}), std::invalid_argument);
  CHECK_THROWS_AS(LinearReference::fit({{1.0}, {1.0, 2.0}}, {1.0, 2.0}), std::invalid_argument);
  CHECK_THROWS_AS(ref.predict({1.0}), std::invalid_argument);
}

TEST_CASE("suvr_fidelity and region_effect: errors, correlation, slope and signs, NaN pairs left out") {
  const SuvrFidelity f = suvr_fidelity({1.1, 1.3, NAN, 1.6}, {1.0, 1.2, 1.3, 1.5});
  CHECK(f.sessions == 3);
  CHECK(f.error == doctest::Approx(0.1));
  CHECK(f.r.r == doctest::Approx(1.0));
  CHECK(std::isnan(suvr_fidelity({1.0}, {2.0}).r.r));  // < 3 sessions

  // Model Δ = half the true Δ: r = 1, slope 0.5, signs agree.
  const auto e = region_effect({-0.05, -0.1, -0.025, -0.04}, {-0.1, -0.2, -0.05, -0.08});
  REQUIRE(e);
  CHECK(e->n == 4);
  CHECK(e->r == doctest::Approx(1.0));
  CHECK(e->slope == doctest::Approx(0.5));
  CHECK(e->mean_model == doctest::Approx(-0.05375));
  CHECK(e->signs_agree);
  CHECK(e->p < 0.05);  // four consistent negative changes
  const auto wrong = region_effect({0.01, 0.02, 0.03}, {-0.1, -0.2, -0.3});
  REQUIRE(wrong);
  CHECK_FALSE(wrong->signs_agree);
  CHECK(wrong->r == doctest::Approx(-1.0));
  // Without truth: the model's mean only.
  const auto no_truth = region_effect({0.1, 0.2}, {NAN, NAN});
  REQUIRE(no_truth);
  CHECK(std::isnan(no_truth->mean_true));
  CHECK_FALSE(region_effect({0.1}, {0.1}).has_value());

  EffectAccumulator acc("apoe4-1");
  RegionSuvr f0, c0, tf, tc;
  f0.fill(1.2), c0.fill(1.1), tf.fill(1.3), tc.fill(1.1);
  acc.add(f0, c0, std::make_pair(tf, tc));
  c0.fill(1.15), tc.fill(1.2);
  acc.add(f0, c0, std::make_pair(tf, tc));
  acc.skip();
  const EffectSummary s = acc.summary();
  CHECK(s.sessions == 2);
  CHECK(s.skipped == 1);
  REQUIRE(s.regions[0]);
  CHECK(s.regions[0]->mean_model == doctest::Approx(-0.075));
  CHECK(s.regions[0]->mean_true == doctest::Approx(-0.15));
  const nlohmann::json j = s.to_json();
  CHECK(j["do"] == "apoe4-1");
  CHECK(j["regions"]["FC"]["true"].get<double>() == doctest::Approx(-0.15));
}

TEST_CASE("CsfMediator: B_CSF follows M by the training split's regression, keeping the session's residual") {
  std::vector<io::PairedRecord> train;
  for (int i = 0; i < 30; ++i) {
    io::PairedRecord r;
    r.tracer = "AV45";
    r.age = 60 + i;
    r.sex = i % 2;
    r.apoe4 = i % 3;
    r.pteducat = 10 + i % 7;
    r.abeta.value = 1500 - 5 * r.age - 200 * r.apoe4 + 3 * r.pteducat;
    train.push_back(r);
  }
  const CsfMediator m = CsfMediator::fit(train, "AV45");
  io::PairedRecord f = train[16];  // APOE4 1, ABETA 956
  f.abeta.value += 40;            // its own residual
  const io::PairedRecord cf = m.mediate(f, *apply_intervention(f, parse_intervention("apoe4-1")));
  CHECK(cf.apoe4 == 0);
  CHECK(cf.abeta.value == doctest::Approx(f.abeta.value + 200).epsilon(1e-6));
  CHECK(cf.abeta.censored == io::Censor::none);
  // Kept within the training span.
  io::PairedRecord high = train[0];
  high.apoe4 = 2;
  high.abeta.value = 1190;
  CHECK(m.mediate(high, *apply_intervention(high, parse_intervention("apoe4-1"))).abeta.value == doctest::Approx(1230));  // the largest training value
  CHECK(CsfMediator::applies(parse_intervention("apoe4-1")));
  CHECK_FALSE(CsfMediator::applies(parse_intervention("apoe4-1,abeta*1")));
  CHECK_FALSE(CsfMediator::applies(parse_intervention("abeta=800")));
  CHECK(m.describe().find("APOE4") != std::string::npos);
  CHECK_THROWS_WITH(CsfMediator::fit({train[0]}, "AV45"), doctest::Contains("at least 6"));
}

TEST_CASE("read_suvr_truth and phantom_world_folder") {
  TempDir dir("truth");
  CHECK_FALSE(read_suvr_truth((dir.path / "absent.csv").string(), "AV45").has_value());
  write(dir.path / "truth.csv", "Subject,PET_date,SUVR_av45,SUVR_av45_FC\n002_S_0001,2012-01-02,1.25,1.5\n");
  const auto t = read_suvr_truth((dir.path / "truth.csv").string(), "AV45");
  REQUIRE(t);
  const RegionSuvr& v = t->at({"002_S_0001", "2012-01-02"});
  CHECK(v[0] == 1.25);
  CHECK(v[1] == 1.5);
  CHECK(std::isnan(v[2]));  // no TC column
  CHECK_THROWS_WITH(read_suvr_truth((dir.path / "truth.csv").string(), "AV1451"), doctest::Contains("SUVR_av1451"));
  write(dir.path / "bad.csv", "Subject,PET_date,SUVR_av45\n002_S_0001,2012-01-02,oops\n");
  CHECK_THROWS_WITH(read_suvr_truth((dir.path / "bad.csv").string(), "AV45"), doctest::Contains("row 2, column SUVR_av45"));
  CHECK(phantom_world_folder("apoe4-1,abeta*1") == "apoe4-1_abetax1");
  CHECK(phantom_world_folder("apoe4-1,abeta*1") == io::phantom::parse_intervention("apoe4-1,abeta*1").name);
  for (const char* text : {"apoe4-1", "apoe4-1,abeta*1", "abeta*0.5", "apoe4=0,abeta=800"})
    CHECK(phantom_world_intervention(phantom_world_folder(text)) == text);
  CHECK(is_csf_variable("ptau"));
  CHECK_FALSE(is_csf_variable("apoe4"));
}

TEST_CASE("validation measures SUVR fidelity and counterfactual accuracy on a phantom cohort") {
  TempDir dir("cohort");
  io::phantom::Options opt;
  opt.out_dir = dir.path.string();
  opt.subjects = 16;
  opt.seed = 5;
  opt.grid = io::phantom::GridSpec{{24, 32, 24}, 6.0, {0, -17, 11}};
  opt.interventions = {io::phantom::parse_intervention("apoe4-1"), io::phantom::parse_intervention("abeta*0.5")};
  opt.progress = false;
  io::phantom::generate_cohort(opt);

  const train::Config c = train::make_config(
      "tiny", {"data.cohort=" + dir.path.string(), "model.volume=24,32,24", "train.perceptual=none", "train.batch_size=2"});
  train::Trainer trainer(c);
  trainer.step();
  const train::ValidationResult v = trainer.validate();
  REQUIRE(v.causal.is_object());
  const nlohmann::json& m = v.causal;
  CHECK(m["suvr_sessions"].get<int64_t>() == v.sessions);
  CHECK(m["tabular_error"].get<double>() > 0);
  CHECK(m["tabular_error"].get<double>() < 0.5);
  CHECK(m["mean_pet_error"].get<double>() > 0);
  REQUIRE(m["effects"].size() == 3);
  // Worlds in folder order; every session is measured or skipped (non-carriers for apoe4-1);
  // the covariate intervention a second time with B_CSF following M.
  const nlohmann::json &halve = m["effects"][0], &minus = m["effects"][1];  // abetax0.5/ sorts first
  CHECK(m["effects"][2]["do"] == "apoe4-1 [CSF follows M]");
  CHECK(m["effects"][2]["sessions"] == minus["sessions"]);
  CHECK(halve["do"] == "abeta*0.5");
  CHECK(minus["do"] == "apoe4-1");
  CHECK(halve["sessions"].get<int64_t>() == v.sessions);
  CHECK(minus["sessions"].get<int64_t>() + minus["skipped"].get<int64_t>() == v.sessions);
  // Halving CSF Aβ42 means more amyloid: the true cortical SUVR rises.
  CHECK(halve["regions"]["cortex"]["true"].get<double>() > 0);
  if (minus["sessions"].get<int64_t>() >= 2) CHECK(minus["regions"]["cortex"]["true"].get<double>() < 0);
  CHECK(halve["regions"]["cortex"]["model"].is_number());
  CHECK(train::CausalMonitor::describe(m).find("do(abeta*0.5)") != std::string::npos);
  // In the log line.
  CHECK(v.to_json()["causal"] == m);

  // A run logs it at each validation and draws the curves into its folder.
  TempDir run("run");
  train::RunOptions ro;
  ro.out_dir = run.path.string();
  ro.max_steps = 2;
  ro.progress = false;
  std::ostringstream progress;
  ro.progress_stream = &progress;
  trainer.run(ro);
  CHECK(progress.str().find("causal: SUVR err") != std::string::npos);
  const auto curves = training_curves((run.path / "train.jsonl").string());
  REQUIRE(curves.size() == 5);
  CHECK(curves[1].title == "Cortical SUVR error");
  CHECK(curves[1].series[2].name == "tabular reference");
  CHECK(curves[3].series.size() == 3);  // one r curve per world
  std::ifstream html(run.path / "curves.html");
  const std::string page((std::istreambuf_iterator<char>(html)), std::istreambuf_iterator<char>());
  CHECK(page.find("<svg") != std::string::npos);
  CHECK(page.find("do(apoe4-1)") != std::string::npos);
  CHECK(training_curves((run.path / "absent.jsonl").string()).empty());

  // The "conditional path is on" rule, on hand-made measurements.
  nlohmann::json on = {{"suvr_error", 0.06}, {"mean_pet_error", 0.13}, {"suvr_r", 0.9},
                       {"effects", {{{"do", "abeta*0.5"}, {"regions", {{"cortex", {{"model", 0.2}, {"true", 0.24}, {"r", 0.93}}}}}},
                                    {{"do", "apoe4-1"}, {"regions", {{"cortex", {{"model", 0.0}, {"true", -0.1}, {"r", 0.1}}}}}},
                                    {{"do", "apoe4-1,abeta*1"}, {"regions", {{"cortex", {{"model", -0.03}, {"true", 0.002}, {"r", 0.4}}}}}}}}};
  // Neither do(APOE4 − 1) nor the joint world that holds the CSF while changing APOE4 is a criterion.
  CHECK(train::CausalMonitor::conditional_path_on(on));
  nlohmann::json weak = on;
  weak["effects"][0]["regions"]["cortex"]["model"] = 0.05;  // a quarter of the true effect
  CHECK_FALSE(train::CausalMonitor::conditional_path_on(weak));
  nlohmann::json worse = on;
  worse["suvr_error"] = 0.2;
  CHECK_FALSE(train::CausalMonitor::conditional_path_on(worse));
  CHECK_FALSE(train::CausalMonitor::conditional_path_on(nlohmann::json()));

  // The evaluation report's counterfactual table and JSON.
  Report report;
  EffectAccumulator acc("abeta*0.5");
  RegionSuvr a, b;
  a.fill(1.1), b.fill(1.3);
  acc.add(a, b, std::make_pair(a, b));
  acc.add(a, b, std::make_pair(a, b));
  report.effects.push_back(acc.summary());
  report.curves = curves;
  const std::string page2 = html_report(report);
  CHECK(page2.find("Counterfactuals: ΔSUVR") != std::string::npos);
  CHECK(page2.find("do(abeta*0.5)") != std::string::npos);
  CHECK(page2.find("Training curves") != std::string::npos);
  CHECK(report_json(report)["effects"][0]["regions"]["cortex"]["true"].get<double>() == doctest::Approx(0.2));
  CHECK(text_summary(report).find("do(abeta*0.5): 2 sessions") != std::string::npos);
}
