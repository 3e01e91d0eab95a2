// eval/evaluation and eval/report: per-session metrics agree with the metric functions, summaries
// and comparisons with eval/stats computed here, and the HTML / JSON / PNG outputs are written and
// hold the numbers.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "eval/evaluation.h"
#include "eval/report.h"
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
  CHECK(ms_ssim_protocol({48, 64, 48}, ssim_small(), {}) == "zero-padded to 48×80×80");
  CHECK(ms_ssim_protocol({96, 128, 96}, ssim_small(), {}) == "native");

  // A synthetic PET that is empty in the reference region: SUVR NaN, not an exception.
  const SessionResult z = evaluate_session(real, io::make_volume(real.shape), &atlas, opt);
  CHECK(std::isnan(z.suvr_syn));
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
  CHECK_THROWS_WITH_AS(compare_methods(good, bad, "ms_ssim"), doctest::Contains("missing"), std::invalid_argument);
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
