// eval/evaluation, eval/report and eval/inference: per-session metrics agree with the metric
// functions, summaries and comparisons with eval/stats computed here, the HTML / JSON / PNG outputs
// are written and hold the numbers, and inference is the model's forward with ε = 0 while a
// counterfactual keeps the abducted S.
#include <doctest/doctest.h>

#include <limits>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "eval/evaluation.h"
#include "models/causal_pets.h"
#include "eval/inference.h"
#include "models/causal_pets.h"
#include "eval/report.h"
#include "gradcheck.h"
#include "io/png.h"

using namespace cpets;
using namespace cpets::eval;
namespace fs = std::filesystem;

namespace {

// 10×12×14 atlas: D slabs of cortex (label 1), reference (label 91), background.
Atlas slab_atlas() {
  io::Volume labels = io::make_volume({10, 12, 14});
  for (int64_t d = 0; d < 10; ++d)
    for (int64_t h = 0; h < 12; ++h)
      for (int64_t w = 0; w < 14; ++w) labels.at(d, h, w) = d < 4 ? 1.f : d < 7 ? 91.f : 0.f;
  std::map<std::string, std::vector<int>> regions{{"cerebral_cortex", {1}}, {"cerebellar_cortex", {91}}};
  for (const auto& r : six_rois()) regions[r] = {1};
  return make_atlas(labels, regions);
}

// A "real" PET: cortex 0.8 + a ripple, reference 0.5, background 0.05; the subject index shifts
// cortex uptake so SUVRs vary across sessions.
io::Volume real_pet(int subject) {
  io::Volume v = io::make_volume({10, 12, 14});
  for (int64_t d = 0; d < 10; ++d)
    for (int64_t h = 0; h < 12; ++h)
      for (int64_t w = 0; w < 14; ++w)
        v.at(d, h, w) = d < 4 ? 0.6f + 0.05f * float(subject) + 0.02f * float((h + w) % 3) : d < 7 ? 0.5f : 0.05f;
  return v;
}

io::Volume perturbed(const io::Volume& v, float scale, float offset) {
  io::Volume o = v;
  for (size_t i = 0; i < o.data.size(); ++i) o.data[i] = std::min(1.f, v.data[i] * scale + offset * float(i % 5) / 4.f);
  return o;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Fixture {
  Atlas atlas = slab_atlas();
  Report report;
  std::vector<io::Volume> reals, goods, bads;
  Fixture() {
    MethodResult good{"trained", "close to the real PET", {}}, bad{"mean-PET", "far from it", {}};
    for (int s = 0; s < 5; ++s) {
      reals.push_back(real_pet(s));
      goods.push_back(perturbed(reals.back(), 0.97f, 0.01f));
      bads.push_back(perturbed(reals.back(), 0.8f, 0.08f));
      EvalOptions no_padding;  // 10×12×14 is too small for MS-SSIM; keep the test fast
      no_padding.pad_small_ms_ssim = false;
      auto g = evaluate_session(reals.back(), goods.back(), &atlas, no_padding);
      auto b = evaluate_session(reals.back(), bads.back(), &atlas, no_padding);
      g.subject = b.subject = "SUBJ_" + std::to_string(s);
      g.session = b.session = "2020-01-0" + std::to_string(s + 1);
      good.sessions.push_back(g);
      bad.sessions.push_back(b);
    }
    report.methods = {good, bad};
    report.facts = {{"checkpoint", "run/ckpt-000300"}, {"sessions", "5"}};
    for (const char* m : {"mae", "ssim", "suvr_error"}) report.comparisons.push_back(compare_methods(good, bad, m));
    report.montages = {{"SUBJ_0 2020-01-01", "montage/SUBJ_0.png"}};
    report.notes = {"MS-SSIM not computed: 10×12×14 too small"};
  }
};

}  // namespace

TEST_CASE("evaluation: a session's metrics are the metric functions' values; SUVR error is |real − syn|") {
  const Atlas atlas = slab_atlas();
  const io::Volume real = real_pet(2), syn = perturbed(real, 0.9f, 0.03f);
  EvalOptions opt;
  opt.pad_small_ms_ssim = false;
  const SessionResult r = evaluate_session(real, syn, &atlas, opt);
  CHECK(r.metrics.at("mae") == mae(syn, real));
  CHECK(r.metrics.at("psnr") == psnr(syn, real));
  CHECK(r.metrics.at("ssim") == ssim3d(syn, real));
  CHECK(r.metrics.at("ssim_s05") == ssim3d(syn, real, ssim_small()));
  CHECK_FALSE(r.metrics.count("ms_ssim"));  // 10×12×14 is too small and padding is off
  const double sr = compute_suvr(real, atlas).cortical, ss = compute_suvr(syn, atlas).cortical;
  CHECK(r.suvr_real == sr);
  CHECK(r.suvr_syn == ss);
  CHECK(r.metrics.at("suvr_error") == doctest::Approx(std::fabs(sr - ss)));
  CHECK(r.roi_real[0] == doctest::Approx(sr));  // FC = cortex in this atlas
  CHECK(ms_ssim_protocol({10, 12, 14}, ssim_small(), opt).find("not computed") == 0);
  EvalOptions pad;
  pad.pad_small_ms_ssim = true;
  CHECK(ms_ssim_protocol({48, 64, 48}, ssim_small(), pad) == "zero-padded to 48×80×80");
  CHECK(ms_ssim_protocol({48, 64, 48}, ssim_small(), {}).find("not computed") == 0);
  CHECK(ms_ssim_protocol({96, 128, 96}, ssim_small(), {}) == "native");
  // With padding switched on, a small volume gets the padded value.
  const SessionResult padded = evaluate_session(real, syn, &atlas, pad);
  CHECK(padded.metrics.at("ms_ssim_s05") == ms_ssim3d_padded(syn, real, ssim_small()).value);

  // A synthetic PET that is empty in the reference region: SUVR NaN, not an exception.
  const SessionResult z = evaluate_session(real, io::make_volume(real.shape), &atlas, opt);
  CHECK(std::isnan(z.suvr_syn));
  CHECK(z.suvr_failure.find("reference") != std::string::npos);  // and why, for the report
  // Without an atlas there are no SUVR metrics.
  CHECK_FALSE(evaluate_session(real, syn, nullptr, opt).metrics.count("suvr_error"));
}

TEST_CASE("evaluation: summaries and paired comparisons against eval/stats on the columns") {
  Fixture f;
  const auto& good = f.report.methods[0];
  const auto& bad = f.report.methods[1];
  const MethodSummary s = summarise(good);
  const auto col = metric_column(good, "mae");
  CHECK(s.metrics.at("mae").mean == doctest::Approx(mean(col)));
  CHECK(s.metrics.at("mae").std == doctest::Approx(stddev(col)));
  REQUIRE(s.suvr_correlation.has_value());
  std::vector<double> real, syn;
  for (const auto& x : good.sessions) real.push_back(x.suvr_real), syn.push_back(x.suvr_syn);
  CHECK(s.suvr_correlation->r == doctest::Approx(pearson(syn, real).r));
  const Comparison c = compare_methods(good, bad, "mae");
  CHECK(c.test.t == doctest::Approx(paired_t_test(col, metric_column(bad, "mae")).t));
  CHECK(c.a_better == 5);
  CHECK(compare_methods(bad, good, "ssim").a_better == 0);
  MethodResult shuffled = bad;
  std::swap(shuffled.sessions[0], shuffled.sessions[1]);
  CHECK_THROWS_WITH_AS(compare_methods(good, shuffled, "mae"), doctest::Contains("SUBJ_1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(compare_methods(good, bad, "ms_ssim"), doctest::Contains("available for 0 of"), std::invalid_argument);
  // A session without a value (e.g. SUVR of a synthetic PET with nothing in the reference region)
  // drops out of the pairing; the test runs on the rest.
  MethodResult gap = bad;
  gap.sessions[0].metrics["mae"] = std::numeric_limits<double>::quiet_NaN();
  const Comparison partial = compare_methods(good, gap, "mae");
  CHECK(partial.n == int(col.size()) - 1);
  const auto bad_col = metric_column(bad, "mae");
  CHECK(partial.test.t == doctest::Approx(paired_t_test(std::vector<double>(col.begin() + 1, col.end()),
                                                        std::vector<double>(bad_col.begin() + 1, bad_col.end())).t));
  CHECK_THROWS_AS(metric_def("nope"), std::invalid_argument);
}

TEST_CASE("report: HTML, JSON and text hold the numbers") {
  Fixture f;
  const fs::path dir = fs::temp_directory_path() / ("cpets_test_report_" + std::to_string(::getpid()));
  write_html_report((dir / "report.html").string(), f.report);
  write_report_json((dir / "metrics.json").string(), f.report);
  REQUIRE(fs::is_regular_file(dir / "report.html"));
  const std::string html = slurp(dir / "report.html");
  const MethodSummary s = summarise(f.report.methods[0]);
  char mae_text[64];
  std::snprintf(mae_text, sizeof mae_text, "%.4f ± %.4f", s.metrics.at("mae").mean, s.metrics.at("mae").std);
  CHECK(html.find(mae_text) != std::string::npos);
  CHECK(html.find("<svg") != std::string::npos);
  CHECK(html.find("montage/SUBJ_0.png") != std::string::npos);
  CHECK(html.find("run/ckpt-000300") != std::string::npos);
  CHECK(html.find("Paired t-tests") != std::string::npos);
  CHECK(html.find("SUBJ_4") != std::string::npos);
  CHECK(html.find("FC") != std::string::npos);
  CHECK(html.rfind("</html>") != std::string::npos);

  const auto j = nlohmann::json::parse(slurp(dir / "metrics.json"));
  CHECK(j["methods"][0]["name"] == "trained");
  CHECK(j["methods"][0]["summary"]["mae"]["mean"].get<double>() == doctest::Approx(s.metrics.at("mae").mean));
  CHECK(j["methods"][1]["sessions"].size() == 5);
  CHECK(j["comparisons"][0]["a_better"] == 5);
  CHECK(j["methods"][0]["sessions"][0]["metrics"].contains("ssim_s05"));
  // Six-ROI SUVR against the real one, with the paired t-test computed here.
  std::vector<double> fc_real, fc_syn;
  for (const auto& x : f.report.methods[1].sessions) fc_real.push_back(x.roi_real[0]), fc_syn.push_back(x.roi_syn[0]);
  CHECK(j["methods"][1]["roi_suvr"]["FC"]["p"].get<double>() == doctest::Approx(paired_t_test(fc_syn, fc_real).p));
  CHECK(j["methods"][1]["roi_suvr"]["FC"]["mean_syn"].get<double>() == doctest::Approx(mean(fc_syn)));

  const std::string text = text_summary(f.report);
  CHECK(text.find(mae_text) != std::string::npos);
  CHECK(text.find("trained vs mean-PET") != std::string::npos);
  CHECK(text.find("trained better") != std::string::npos);
  CHECK(text.find("5/5") != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("report: PSNR of identical volumes (infinity) is written as null / ∞, not as a broken number") {
  Fixture f;
  f.report.methods[0].sessions[0].metrics["psnr"] = INFINITY;
  const auto j = report_json(f.report);
  CHECK(j["methods"][0]["sessions"][0]["metrics"]["psnr"].is_null());
  CHECK(html_report(f.report).find("∞") != std::string::npos);
}

TEST_CASE("report: the comparison montage has a row per volume and error maps") {
  Fixture f;
  const io::Image one = render_comparison_montage(f.reals[0], {{"trained", &f.goods[0]}});
  const io::Image two = render_comparison_montage(f.reals[0], {{"trained", &f.goods[0]}, {"mean-PET", &f.bads[0]}});
  CHECK(one.width > 0);
  CHECK(two.height > one.height);  // five rows instead of three
  const fs::path png = fs::temp_directory_path() / ("cpets_test_montage_" + std::to_string(::getpid())) / "m.png";
  write_comparison_montage(png.string(), f.reals[0], {{"trained", &f.goods[0]}});
  const io::Image back = io::read_png(png.string());
  CHECK(back.width == one.width);
  CHECK(back.height == one.height);
  fs::remove_all(png.parent_path());
  const io::Volume wrong = io::make_volume({4, 4, 4});
  CHECK_THROWS_WITH_AS(render_comparison_montage(f.reals[0], {{"x", &wrong}}), doctest::Contains("4×4×4"),
                       std::invalid_argument);
}

// ---- inference ---------------------------------------------------------------------------------

namespace {

// The tiny model with every parameter randomised (at initialisation the zero-initialised output
// convolutions would hide how the PET depends on the tokens and S on the demographics).
std::shared_ptr<models::CausalPETS> random_tiny_model() {
  Generator init(5);
  auto m = std::make_shared<models::CausalPETS>(models::model_preset("tiny"), init);
  uint32_t seed = 100;
  for (auto& p : m->parameters()) {
    const Tensor r = cpets::testing::random_tensor(p.shape(), seed++, -0.3f, 0.3f);
    std::copy(r.data(), r.data() + r.numel(), p.data());
  }
  m->eval();
  return m;
}

io::PairedRecord toy_record() {
  io::PairedRecord r;
  r.subject = "SUBJ";
  r.tracer = "AV45";
  r.age = 71;
  r.sex = 1;
  r.apoe4 = 1;
  r.pteducat = 14;
  r.abeta.value = 900;
  return r;
}

io::NormRanges toy_ranges() {
  return {{"ABETA", {200, 1700}}, {"TAU", {80, 500}}, {"PTAU", {8, 60}}, {"Age", {55, 92}}, {"PTEDUCAT", {6, 20}}};
}

Tensor as_tensor(const std::vector<float>& v) { return Tensor::from_vector({1, int64_t(v.size())}, v); }

}  // namespace

TEST_CASE("inference: the factual synthesis is the model's forward with ε = 0") {
  const auto model = random_tiny_model();
  const Synthesiser syn(model);
  const io::Volume t1 = perturbed(io::make_volume({16, 16, 16}, 0.5f), 1.f, 0.4f);
  const TabularInputs tab = tabular_inputs(toy_record(), toy_ranges(), "AV45");
  CHECK(tab.csf.size() == 1);
  CHECK(tab.csf[0] == doctest::Approx((900.0 - 200) / 1500));
  CHECK(tab.covariates == std::vector<float>{float((71.0 - 55) / 37), 1.f, 1.f, float((14.0 - 6) / 14)});
  const io::Volume pet = syn.synthesise(t1, tab);
  models::Inputs in{Tensor::from_vector({1, 1, 16, 16, 16}, t1.data), as_tensor(tab.csf), as_tensor(tab.covariates)};
  const Tensor ref = model->forward(in, models::Noise{}).pet_syn;
  REQUIRE(ref.numel() == pet.numel());
  for (int64_t i = 0; i < ref.numel(); ++i) REQUIRE(pet.data[size_t(i)] == ref.data()[i]);
  CHECK_THROWS_WITH_AS(syn.abduct(io::make_volume({8, 16, 16}), tab.covariates), doctest::Contains("8×16×16"),
                       std::invalid_argument);
  io::PairedRecord tau = toy_record();
  tau.tracer = "AV1451";
  CHECK_THROWS_WITH_AS(tabular_inputs(tau, toy_ranges(), "AV45"), doctest::Contains("AV1451"), std::invalid_argument);
}

TEST_CASE("inference: a counterfactual keeps the abducted S and changes only the tabular path") {
  const auto model = random_tiny_model();
  const Synthesiser syn(model);
  const io::Volume t1 = perturbed(io::make_volume({16, 16, 16}, 0.5f), 1.f, 0.4f);
  const io::PairedRecord factual_record = toy_record();
  const TabularInputs tab = tabular_inputs(factual_record, toy_ranges(), "AV45");
  const models::Abduction s = syn.abduct(t1, tab.covariates);
  const io::Volume factual = syn.synthesise(s, tab, t1);

  const Intervention iv = parse_intervention("apoe4=2");
  const io::PairedRecord cf_record = *apply_intervention(factual_record, iv);
  CHECK(cf_record.apoe4 == 2);
  CHECK(cf_record.age == factual_record.age);
  const TabularInputs cf_tab = tabular_inputs(cf_record, toy_ranges(), "AV45");
  const io::Volume cf = syn.synthesise(s, cf_tab, t1);
  // By hand: G_P(μ_S of the factual T1 and M, f(B_CSF, M_cf)).
  NoGradGuard no_grad;
  const Tensor by_hand = model->synthesise_pet(s.latent.mu, model->fuse(as_tensor(cf_tab.csf), as_tensor(cf_tab.covariates)));
  for (int64_t i = 0; i < by_hand.numel(); ++i) REQUIRE(cf.data[size_t(i)] == by_hand.data()[i]);
  const io::Volume diff = difference(cf, factual);
  double change = 0;
  for (float v : diff.data) change = std::max(change, double(std::fabs(v)));
  CHECK(change > 1e-4);  // the intervention does something
  // Re-encoding with the counterfactual demographics would move S (the M → S edge): the
  // counterfactual is not the plain forward pass on the changed inputs.
  models::Inputs in{Tensor::from_vector({1, 1, 16, 16, 16}, t1.data), as_tensor(cf_tab.csf), as_tensor(cf_tab.covariates)};
  const Tensor reencoded = model->forward(in, models::Noise{}).pet_syn;
  double moved = 0;
  for (int64_t i = 0; i < reencoded.numel(); ++i) moved = std::max(moved, double(std::fabs(reencoded.data()[i] - cf.data[size_t(i)])));
  CHECK(moved > 1e-6);
}

TEST_CASE("inference: parsing interventions") {
  const Intervention joint = parse_intervention("APOE4=0,abeta=800.5");
  REQUIRE(joint.set.size() == 2);
  CHECK(joint.set[0].variable == "apoe4");
  CHECK(joint.set[0].value == 0);
  CHECK(joint.set[1].value == 800.5);
  CHECK(intervention_folder(joint) == "do_APOE4=0_abeta=800.5");
  CHECK(parse_intervention("pteducat=12").set[0].variable == "education");
  const io::PairedRecord r = *apply_intervention(toy_record(), joint);
  CHECK(r.apoe4 == 0);
  CHECK(r.abeta.value == 800.5);
  CHECK(r.abeta.censored == io::Censor::none);
  for (const char* bad : {"", "apoe4", "=1", "iq=1", "apoe4=x", "apoe4=1.5", "sex=2", "apoe4=1,apoe4=2", "abeta=-1",
                          "age=70,"})
    CHECK_THROWS_AS(parse_intervention(bad), std::invalid_argument);
  CHECK_THROWS_WITH_AS(parse_intervention("iq=1"), doctest::Contains("known: age, sex, apoe4"), std::invalid_argument);
  CHECK_NOTHROW(check_intervention_for_tracer(parse_intervention("abeta=800"), "AV45"));
  CHECK_THROWS_WITH_AS(check_intervention_for_tracer(parse_intervention("abeta=800"), "AV1451"),
                       doctest::Contains("tau or ptau"), std::invalid_argument);
  CHECK_THROWS_AS(check_intervention_for_tracer(parse_intervention("ptau=30"), "AV45"), std::invalid_argument);

  // Relative forms (the paper's ΔnAPOE4 = ±1): each session's own value changes; a world that
  // does not exist for a session is nullopt, not a clamped value.
  const Intervention minus = parse_intervention("apoe4-1"), plus = parse_intervention("APOE4+1"),
                     half = parse_intervention("abeta*0.5");
  CHECK(minus.set[0].op == Assignment::Op::add);
  CHECK(minus.set[0].value == -1);
  CHECK(plus.set[0].value == 1);
  CHECK(half.set[0].op == Assignment::Op::scale);
  CHECK(intervention_folder(half) == "do_abeta_0.5");
  io::PairedRecord carrier = toy_record();
  carrier.apoe4 = 1;
  CHECK(apply_intervention(carrier, minus)->apoe4 == 0);
  CHECK(apply_intervention(carrier, plus)->apoe4 == 2);
  carrier.apoe4 = 0;
  CHECK_FALSE(apply_intervention(carrier, minus).has_value());
  carrier.apoe4 = 2;
  CHECK_FALSE(apply_intervention(carrier, plus).has_value());
  const io::PairedRecord halved = *apply_intervention(toy_record(), half);
  CHECK(halved.abeta.value == doctest::Approx(0.5 * toy_record().abeta.value));
  CHECK(halved.abeta.censored == io::Censor::none);
  CHECK(apply_intervention(toy_record(), parse_intervention("age+5"))->age == doctest::Approx(toy_record().age + 5));
  for (const char* bad : {"apoe4-0.5", "sex+1", "apoe4*2", "abeta*-1", "abeta*x"})
    CHECK_THROWS_AS(parse_intervention(bad), std::invalid_argument);
  CHECK_THROWS_WITH_AS(parse_intervention("apoe4"), doctest::Contains("apoe4-1"), std::invalid_argument);
}
