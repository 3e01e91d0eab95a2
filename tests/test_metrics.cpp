// eval/metrics, eval/stats and eval/suvr against torchmetrics' algorithm and scipy (fixture from
// tools/make_metric_fixtures.py), a naive SSIM written here, analytic cases and hand-made atlases.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>
#include <unistd.h>

#include "eval/classification.h"
#include "eval/metrics.h"
#include "eval/stats.h"
#include "eval/suvr.h"
#include "gradcheck.h"
#include "io/cohort.h"
#include "io/nifti.h"
#include "io/phantom.h"

using namespace cpets;
using namespace cpets::eval;
using cpets::testing::with_threads;
namespace fs = std::filesystem;

namespace {

const nlohmann::json& fixture() {
  static const nlohmann::json j = [] {
    std::ifstream in(std::string(CPETS_FIXTURES) + "/metrics/metrics.json");
    REQUIRE(in.good());
    return nlohmann::json::parse(in);
  }();
  return j;
}

// The same integer formula as test_volume() in tools/make_metric_fixtures.py (values q/1024,
// exact in float32).
uint32_t hash32(uint64_t seed, uint64_t idx) {
  const uint64_t m = 0xFFFFFFFFull;
  uint64_t x = (idx * 0x9E3779B1ull + ((seed * 0x85EBCA77ull) & m)) & m;
  x ^= x >> 16;
  x = (x * 0x7FEB352Dull) & m;
  x ^= x >> 15;
  x = (x * 0x846CA68Bull) & m;
  x ^= x >> 16;
  return uint32_t(x);
}

struct Pair {
  io::Volume real, syn;
};

Pair test_volume(Shape3 s, uint64_t seed) {
  Pair p{io::make_volume(s), io::make_volume(s)};
  const int64_t D = s[0], H = s[1], W = s[2];
  for (int64_t d = 0; d < D; ++d)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w) {
        const int64_t e = (2 * d + 1 - D) * (2 * d + 1 - D) * (H * H * W * W) +
                          (2 * h + 1 - H) * (2 * h + 1 - H) * (D * D * W * W) +
                          (2 * w + 1 - W) * (2 * w + 1 - W) * (D * D * H * H);
        const bool inside = 5 * e < 4 * (D * D * H * H * W * W);
        const int64_t stripes = (d / 4 + h / 6 + w / 5) % 3;
        const uint64_t idx = uint64_t((d * H + h) * W + w);
        const int64_t n1 = hash32(seed, idx) % 61, n2 = hash32(seed + 1, idx) % 201;
        const int64_t q_real = inside ? 300 + 250 * stripes + n1 : n1 % 9;
        const int64_t q_syn = std::clamp<int64_t>(q_real + n2 - 100 + (inside ? 40 : 0), 0, 1024);
        p.real.at(d, h, w) = float(double(q_real) / 1024.0);
        p.syn.at(d, h, w) = float(double(q_syn) / 1024.0);
      }
  return p;
}

Shape3 shape_of(const nlohmann::json& c) { return {c["shape"][0].get<int64_t>(), c["shape"][1].get<int64_t>(), c["shape"][2].get<int64_t>()}; }

double checksum(const io::Volume& v) {
  double s = 0;
  for (float x : v.data) s += x;
  return s;
}

// SSIM straight from the definition: reflect-pad, full k³ Gaussian kernel, per-voxel formula.
SsimResult naive_ssim(const io::Volume& x, const io::Volume& y, double sigma) {
  const int k = 2 * int(3.5 * sigma + 0.5) + 1, p = (k - 1) / 2;
  std::vector<double> g(static_cast<size_t>(k));
  double gs = 0;
  for (int i = 0; i < k; ++i) gs += g[size_t(i)] = std::exp(-0.5 * std::pow((i - p) / sigma, 2));
  auto refl = [](int64_t i, int64_t n) { return i < 0 ? -i : i >= n ? 2 * (n - 1) - i : i; };
  const auto s = x.shape;
  double ssum = 0, csum = 0;
  int64_t inner = 0;
  for (int64_t d = 0; d < s[0]; ++d)
    for (int64_t h = 0; h < s[1]; ++h)
      for (int64_t w = 0; w < s[2]; ++w) {
        double m[5] = {0, 0, 0, 0, 0};
        for (int a = 0; a < k; ++a)
          for (int b = 0; b < k; ++b)
            for (int c = 0; c < k; ++c) {
              const double wt = g[size_t(a)] * g[size_t(b)] * g[size_t(c)] / (gs * gs * gs);
              const double xv = x.at(refl(d + a - p, s[0]), refl(h + b - p, s[1]), refl(w + c - p, s[2]));
              const double yv = y.at(refl(d + a - p, s[0]), refl(h + b - p, s[1]), refl(w + c - p, s[2]));
              m[0] += wt * xv, m[1] += wt * yv, m[2] += wt * xv * xv, m[3] += wt * yv * yv, m[4] += wt * xv * yv;
            }
        const double c1 = 1e-4, c2 = 9e-4;
        const double vx = std::max(m[2] - m[0] * m[0], 0.0), vy = std::max(m[3] - m[1] * m[1], 0.0);
        const double cov = m[4] - m[0] * m[1];
        const double cs = (2 * cov + c2) / (vx + vy + c2);
        ssum += (2 * m[0] * m[1] + c1) / (m[0] * m[0] + m[1] * m[1] + c1) * cs;
        if (d >= p && d < s[0] - p && h >= p && h < s[1] - p && w >= p && w < s[2] - p) csum += cs, ++inner;
      }
  return {ssum / double(x.numel()), csum / double(inner)};
}

void check_image_case(const nlohmann::json& c, bool with_ms) {
  const Shape3 s = shape_of(c);
  CAPTURE(io::shape_string(s));
  const auto p = test_volume(s, c["seed"].get<uint64_t>());
  REQUIRE(checksum(p.real) == doctest::Approx(c["checksum_real"].get<double>()).epsilon(1e-12));
  REQUIRE(checksum(p.syn) == doctest::Approx(c["checksum_syn"].get<double>()).epsilon(1e-12));
  CHECK(mae(p.syn, p.real) == doctest::Approx(c["mae"].get<double>()).epsilon(1e-12));
  CHECK(mse(p.syn, p.real) == doctest::Approx(c["mse"].get<double>()).epsilon(1e-12));
  CHECK(psnr(p.syn, p.real) == doctest::Approx(c["psnr"].get<double>()).epsilon(1e-12));
  for (double sigma : {1.5, 0.5}) {
    char key[32];
    std::snprintf(key, sizeof key, "sigma_%g", sigma);
    if (!c.contains(key)) continue;
    CAPTURE(sigma);
    const auto& e = c[key];
    const SsimOptions opt = sigma == 1.5 ? ssim_reference() : ssim_small();
    const SsimResult r = ssim3d_full(p.syn.data.data(), p.real.data.data(), s, opt);
    CHECK(r.ssim == doctest::Approx(e["ssim"].get<double>()).epsilon(1e-10));
    if (e["cs"].is_null())
      CHECK(std::isnan(r.cs));
    else
      CHECK(r.cs == doctest::Approx(e["cs"].get<double>()).epsilon(1e-10));
    // torchmetrics itself runs in float32; our double result is within float32 rounding of it.
    CHECK(r.ssim == doctest::Approx(e["ssim_float32"].get<double>()).epsilon(1e-5));
    if (with_ms) CHECK(ms_ssim3d(p.syn, p.real, opt) == doctest::Approx(e["ms_ssim"].get<double>()).epsilon(1e-10));
  }
}

}  // namespace

TEST_CASE("metrics: the Gaussian window sizes of the two reference settings") {
  CHECK(gaussian_window(1.5) == 11);
  CHECK(gaussian_window(0.5) == 5);
}

TEST_CASE("metrics: MAE, PSNR, SSIM on odd shapes against the torchmetrics algorithm") {
  for (const auto& c : fixture()["ssim"]) check_image_case(c, false);
}

TEST_CASE("metrics: MS-SSIM on legal shapes (odd sizes pool with floor) against the torchmetrics algorithm") {
  for (const auto& c : fixture()["ms_ssim"]) check_image_case(c, true);
}

TEST_CASE("metrics: SSIM equals a naive reflect-padded full-kernel computation") {
  for (double sigma : {0.5, 1.5}) {
    const Shape3 s{7, 12, 13};
    const auto p = test_volume(s, 11);
    const SsimResult fast = ssim3d_full(p.syn.data.data(), p.real.data.data(), s, {sigma, 0.01, 0.03, 1.0});
    const SsimResult slow = naive_ssim(p.syn, p.real, sigma);
    CHECK(fast.ssim == doctest::Approx(slow.ssim).epsilon(1e-12));
    if (sigma == 0.5) CHECK(fast.cs == doctest::Approx(slow.cs).epsilon(1e-12));
  }
}

TEST_CASE("metrics: analytic cases (identical volumes, constant offset)") {
  const auto p = test_volume({20, 34, 36}, 3);
  CHECK(mae(p.real, p.real) == 0.0);
  CHECK(std::isinf(psnr(p.real, p.real)));
  CHECK(psnr(p.real, p.real) > 0);
  CHECK(ssim3d(p.real, p.real) == doctest::Approx(1.0).epsilon(1e-12));
  CHECK(ssim3d(p.real, p.real, ssim_small()) == doctest::Approx(1.0).epsilon(1e-12));

  // y = x + 1/8 everywhere: MAE = 1/8, MSE = 1/64, PSNR = 10·log10(64).
  io::Volume shifted = p.real;
  for (auto& v : shifted.data) v += 0.125f;
  CHECK(mae(shifted, p.real) == doctest::Approx(0.125).epsilon(1e-12));
  CHECK(psnr(shifted, p.real) == doctest::Approx(10 * std::log10(64.0)).epsilon(1e-12));
  // A shift leaves every local variance and covariance alone: cs = 1 exactly in exact arithmetic.
  const SsimResult r = ssim3d_full(shifted.data.data(), p.real.data.data(), p.real.shape, ssim_small());
  CHECK(r.cs == doctest::Approx(1.0).epsilon(1e-9));

  // Two constant volumes a and b: SSIM is the luminance term (2ab + C1)/(a² + b² + C1).
  const io::Volume a = io::make_volume({9, 10, 11}, 0.25f), b = io::make_volume({9, 10, 11}, 0.75f);
  const double c1 = 1e-4, expect = (2 * 0.25 * 0.75 + c1) / (0.25 * 0.25 + 0.75 * 0.75 + c1);
  CHECK(ssim3d(a, b) == doctest::Approx(expect).epsilon(1e-12));
  CHECK(ssim3d(a, b, ssim_small()) == doctest::Approx(expect).epsilon(1e-12));

  const auto big = test_volume({48, 80, 80}, 4);
  CHECK(ms_ssim3d(big.real, big.real, ssim_small()) == doctest::Approx(1.0).epsilon(1e-12));
}

TEST_CASE("metrics: MS-SSIM legality, the error for small volumes and the documented padded fallback") {
  CHECK(ms_ssim_problem({96, 176, 176}, ssim_reference()).empty());
  CHECK(ms_ssim_problem({48, 80, 80}, ssim_small()).empty());
  CHECK(ms_ssim_problem({96, 128, 96}, ssim_small()).empty());
  CHECK_FALSE(ms_ssim_problem({96, 128, 96}, ssim_reference()).empty());
  const std::string why = ms_ssim_problem({48, 64, 48}, ssim_reference());
  CHECK(why.find("48×64×48") != std::string::npos);
  CHECK(why.find("H//16 = 4") != std::string::npos);
  CHECK(ms_ssim_legal_shape({48, 64, 48}, ssim_reference()) == Shape3{96, 176, 176});
  CHECK(ms_ssim_legal_shape({48, 64, 48}, ssim_small()) == Shape3{48, 80, 80});
  CHECK(ms_ssim_legal_shape({96, 128, 96}, ssim_reference()) == Shape3{96, 176, 176});
  for (const Shape3& legal : {Shape3{96, 176, 176}, Shape3{48, 80, 80}})
    CHECK(ms_ssim_problem(legal, legal[1] == 176 ? ssim_reference() : ssim_small()).empty());

  const auto p = test_volume({48, 64, 48}, 7);
  try {
    ms_ssim3d(p.syn, p.real, ssim_small());
    FAIL("MS-SSIM on 48×64×48 must throw");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("48×64×48") != std::string::npos);
    CHECK(std::string(e.what()).find("ms_ssim3d_padded") != std::string::npos);
  }
  const auto& c = fixture()["ms_ssim_padded"][0];
  const PaddedMsSsim r = ms_ssim3d_padded(p.syn, p.real, ssim_small());
  CHECK(r.padded);
  CHECK(r.shape == Shape3{48, 80, 80});
  CHECK(r.value == doctest::Approx(c["ms_ssim"].get<double>()).epsilon(1e-10));
}

TEST_CASE("metrics: bad input gives clear errors") {
  const io::Volume a = io::make_volume({8, 8, 8}), b = io::make_volume({8, 8, 9});
  try {
    mae(a, b);
    FAIL("shape mismatch must throw");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("8×8×8") != std::string::npos);
    CHECK(std::string(e.what()).find("8×8×9") != std::string::npos);
  }
  CHECK_THROWS_AS(ssim3d(a, b), std::invalid_argument);
  const io::Volume thin = io::make_volume({5, 20, 20}), thin2 = io::make_volume({5, 20, 20});
  CHECK_THROWS_WITH_AS(ssim3d(thin, thin2), doctest::Contains("too small"), std::invalid_argument);  // pad 5 ≥ 5
  CHECK_NOTHROW(ssim3d(thin, thin2, ssim_small()));
  CHECK_THROWS_AS(mae(nullptr, a.data.data(), 8), std::invalid_argument);
}

TEST_CASE("metrics: bitwise identical for 1 and 2 threads") {
  const auto p = test_volume({48, 80, 80}, 4);
  auto run = [&] {
    return std::vector<double>{mae(p.syn, p.real), psnr(p.syn, p.real), ssim3d(p.syn, p.real),
                               ssim3d(p.syn, p.real, ssim_small()), ms_ssim3d(p.syn, p.real, ssim_small())};
  };
  const auto one = with_threads(1, run), two = with_threads(2, run);
  for (size_t i = 0; i < one.size(); ++i) CHECK(one[i] == two[i]);
}

TEST_CASE("metrics: the reference metrics.py protocol (mean matching, zero padding to a fixed shape)") {
  const auto p = test_volume({20, 30, 30}, 9);
  double sr = 0, ss = 0;
  for (size_t i = 0; i < p.real.data.size(); ++i) sr += p.real.data[i], ss += p.syn.data[i];
  const double scale = sr / ss;
  double abs_sum = 0, sq_sum = 0;
  for (size_t i = 0; i < p.real.data.size(); ++i) {
    const double d = double(float(double(p.syn.data[i]) * scale)) - double(p.real.data[i]);
    abs_sum += std::fabs(d), sq_sum += d * d;
  }
  const double N = 24.0 * 32 * 40;  // zero padding adds exact zeros to both
  const ReferenceProtocolMetrics r = reference_protocol_metrics(p.real, p.syn, {24, 32, 40});
  CHECK(r.scale == doctest::Approx(scale).epsilon(1e-12));
  CHECK(r.mae == doctest::Approx(abs_sum / N).epsilon(1e-10));
  CHECK(r.psnr == doctest::Approx(10 * std::log10(N / sq_sum)).epsilon(1e-10));
  CHECK(std::isnan(r.ms_ssim));
  // A synthetic volume that is the real one times 2 is perfect after mean matching.
  io::Volume twice = p.real;
  for (auto& v : twice.data) v *= 2;
  const ReferenceProtocolMetrics perfect = reference_protocol_metrics(p.real, twice, {96, 176, 176}, true);
  CHECK(perfect.scale == doctest::Approx(0.5));
  CHECK(perfect.mae == 0.0);
  CHECK(std::isinf(perfect.psnr));
  CHECK(perfect.ms_ssim == doctest::Approx(1.0).epsilon(1e-12));
  CHECK_THROWS_WITH_AS(reference_protocol_metrics(p.real, io::make_volume(p.real.shape)), doctest::Contains("mean"),
                       std::invalid_argument);
}

// ---- statistics -------------------------------------------------------------------------------

TEST_CASE("stats: paired t-test, Pearson r, mean and std against scipy/numpy") {
  for (const auto& c : fixture()["stats"]["paired"]) {
    const auto a = c["a"].get<std::vector<double>>(), b = c["b"].get<std::vector<double>>();
    CAPTURE(a.size());
    const PairedTTest t = paired_t_test(a, b);
    CHECK(t.t == doctest::Approx(c["t"].get<double>()).epsilon(1e-10));
    CHECK(t.p == doctest::Approx(c["p"].get<double>()).epsilon(1e-9));
    CHECK(t.dof == c["dof"].get<double>());
    const Correlation r = pearson(a, b);
    CHECK(r.r == doctest::Approx(c["pearson_r"].get<double>()).epsilon(1e-10));
    CHECK(r.p == doctest::Approx(c["pearson_p"].get<double>()).epsilon(1e-8));
    CHECK(mean(a) == doctest::Approx(c["mean_a"].get<double>()).epsilon(1e-12));
    CHECK(stddev(a) == doctest::Approx(c["std_a_pop"].get<double>()).epsilon(1e-12));
    CHECK(stddev(a, 1) == doctest::Approx(c["std_a_sample"].get<double>()).epsilon(1e-12));
  }
}

TEST_CASE("stats: Student-t CDF and the regularised incomplete beta against scipy") {
  for (const auto& c : fixture()["stats"]["t_cdf"]) {
    CAPTURE(c.dump());
    CHECK(student_t_cdf(c["t"].get<double>(), c["dof"].get<double>()) ==
          doctest::Approx(c["cdf"].get<double>()).epsilon(1e-11));
  }
  for (const auto& c : fixture()["stats"]["betainc"]) {
    CAPTURE(c.dump());
    CHECK(incomplete_beta(c["a"].get<double>(), c["b"].get<double>(), c["x"].get<double>()) ==
          doctest::Approx(c["value"].get<double>()).epsilon(1e-12));
  }
  // Analytic: dof 1 is the Cauchy distribution, F(t) = ½ + atan(t)/π.
  for (double t : {-3.0, -0.4, 0.0, 0.9, 7.0}) CHECK(student_t_cdf(t, 1) == doctest::Approx(0.5 + std::atan(t) / M_PI).epsilon(1e-13));
  CHECK(student_t_two_sided_p(0.0, 5) == doctest::Approx(1.0));
}

TEST_CASE("stats: edge cases and errors") {
  const std::vector<double> a{1, 2, 3}, b{1, 2, 3}, c{2, 3, 4};
  const auto same = paired_t_test(a, b);
  CHECK(std::isnan(same.t));
  CHECK(std::isnan(same.p));
  const auto shift = paired_t_test(c, a);
  CHECK(std::isinf(shift.t));
  CHECK(shift.t > 0);
  CHECK(shift.p == 0.0);
  CHECK_THROWS_WITH_AS(paired_t_test(a, {1, 2}), doctest::Contains("different lengths"), std::invalid_argument);
  CHECK_THROWS_AS(paired_t_test({1}, {2}), std::invalid_argument);
  CHECK_THROWS_AS(mean({}), std::invalid_argument);
  CHECK(std::isnan(pearson({1, 1, 1}, {1, 2, 3}).r));
  CHECK(pearson({1, 2, 3, 4}, {2, 4, 6, 8}).r == doctest::Approx(1.0));
  CHECK_THROWS_AS(incomplete_beta(-1, 1, 0.5), std::invalid_argument);
  CHECK_THROWS_AS(incomplete_beta(1, 1, 1.5), std::invalid_argument);
  CHECK(mean_std({1, 2, 3}).str(2) == "2.00 ± 0.82");
}

// ---- SUVR ---------------------------------------------------------------------------------------

namespace {

// A 6×8×10 label volume: slabs along D with labels 1 (cortex), 2 (cortex, also FC), 91 (reference)
// and 0; the six ROIs map to labels 1 and 2.
Atlas toy_atlas() {
  io::Volume labels = io::make_volume({6, 8, 10});
  for (int64_t d = 0; d < 6; ++d)
    for (int64_t h = 0; h < 8; ++h)
      for (int64_t w = 0; w < 10; ++w) labels.at(d, h, w) = d < 2 ? 1.f : d < 3 ? 2.f : d < 5 ? 91.f : 0.f;
  std::map<std::string, std::vector<int>> regions{{"cerebral_cortex", {1, 2}}, {"cerebellar_cortex", {91}},
                                                  {"FC", {2}},  {"TC", {1}}, {"PC", {1, 2}}, {"OC", {1}},
                                                  {"CI", {2}},  {"OO", {1}}};
  return make_atlas(labels, regions);
}

}  // namespace

TEST_CASE("suvr: cortical and six-ROI SUVR on a hand-made atlas") {
  const Atlas atlas = toy_atlas();
  CHECK(atlas.has_six_rois());
  CHECK(atlas.voxels.at("cerebral_cortex").size() == 3 * 80);
  io::Volume pet = io::make_volume({6, 8, 10});
  // label 1 voxels: value 2 + w/10 (mean 2.45); label 2: 3; reference: 1 + h/16 (mean 1.21875).
  for (int64_t d = 0; d < 6; ++d)
    for (int64_t h = 0; h < 8; ++h)
      for (int64_t w = 0; w < 10; ++w)
        pet.at(d, h, w) = d < 2 ? 2.f + float(w) / 10.f : d < 3 ? 3.f : d < 5 ? 1.f + float(h) / 16.f : 100.f;
  const double ref = 1.21875, m1 = 2.45, m2 = 3.0;
  const Suvr s = compute_suvr(pet, atlas);
  CHECK(s.reference_mean == doctest::Approx(ref).epsilon(1e-7));
  CHECK(s.cortical == doctest::Approx((2 * m1 + m2) / 3 / ref).epsilon(1e-6));
  CHECK(s.roi[0] == doctest::Approx(m2 / ref).epsilon(1e-6));               // FC
  CHECK(s.roi[1] == doctest::Approx(m1 / ref).epsilon(1e-6));               // TC
  CHECK(s.roi[2] == doctest::Approx((2 * m1 + m2) / 3 / ref).epsilon(1e-6));  // PC
  // SUVR is scale-free: dividing the PET by its maximum changes nothing.
  io::Volume scaled = pet;
  for (auto& v : scaled.data) v /= 100.f;
  CHECK(compute_suvr(scaled, atlas).cortical == doctest::Approx(s.cortical).epsilon(1e-6));
}

TEST_CASE("suvr: errors name the problem") {
  const Atlas atlas = toy_atlas();
  CHECK_THROWS_WITH_AS(compute_suvr(io::make_volume({6, 8, 9}, 1.f), atlas), doctest::Contains("6×8×10"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(compute_suvr(io::make_volume({6, 8, 10}, 0.f), atlas), doctest::Contains("reference"),
                       std::invalid_argument);
  io::Volume labels = io::make_volume({4, 4, 4}, 1.f);
  CHECK_THROWS_WITH_AS(make_atlas(labels, {{"cerebral_cortex", {1}}}), doctest::Contains("cerebellar_cortex"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(make_atlas(labels, {{"cerebral_cortex", {1}}, {"cerebellar_cortex", {91}}}),
                       doctest::Contains("no voxels"), std::invalid_argument);
  labels.data[3] = 1.5f;
  CHECK_THROWS_WITH_AS(make_atlas(labels, {{"cerebral_cortex", {1}}, {"cerebellar_cortex", {91}}}),
                       doctest::Contains("non-integer"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(load_atlas("/nonexistent/cohort"), doctest::Contains("regions.json"), std::runtime_error);
}

TEST_CASE("suvr: load_atlas reads the phantom's regions.json layout; atlas_on_grid resamples") {
  const fs::path dir = fs::temp_directory_path() / ("cpets_test_atlas_" + std::to_string(::getpid()));
  fs::create_directories(dir / "atlas");
  Atlas toy = toy_atlas();
  toy.labels.affine = io::scaling_affine(3, 3, 3);
  io::write_nifti((dir / "atlas" / "labels.nii.gz").string(), toy.labels);
  nlohmann::ordered_json j;
  j["label_volume"] = "labels.nii.gz";
  j["roi"] = "cerebral_cortex";
  j["reference"] = "cerebellar_cortex";
  for (const auto& [name, labels] : toy.regions) j["regions"][name] = {{"description", name}, {"labels", labels}};
  std::ofstream(dir / "atlas" / "regions.json") << j.dump(2);
  const Atlas a = load_atlas(dir.string());  // the cohort folder
  CHECK(a.voxels == toy.voxels);
  CHECK(a.source.find("regions.json") != std::string::npos);
  // Same grid: unchanged. Half the voxel size (twice the voxels): every region doubles per axis.
  CHECK(atlas_on_grid(a, a.labels.shape, a.labels.affine).voxels == a.voxels);
  io::Affine fine = io::scaling_affine(1.5, 1.5, 1.5);
  for (int r = 0; r < 3; ++r) fine[r][3] = -0.75;  // voxel centres of the fine grid inside the coarse ones
  const Atlas b = atlas_on_grid(a, {12, 16, 20}, fine);
  CHECK(b.voxels.at("cerebellar_cortex").size() == 8 * a.voxels.at("cerebellar_cortex").size());
  fs::remove_all(dir);
}

TEST_CASE("suvr: on a phantom cohort, SUVR from the written atlas and PET matches the generator's truth") {
  // The phantom computes its SUVRs on the noise-free PET with its own code (io/phantom_render.cpp);
  // ours reads atlas/regions.json + labels.nii.gz and the noisy, masked, max-normalised PET files.
  const fs::path dir = fs::temp_directory_path() / ("cpets_test_suvr_phantom_" + std::to_string(::getpid()));
  io::phantom::Options opt;
  opt.out_dir = dir.string();
  opt.subjects = 3;
  opt.seed = 11;
  opt.progress = false;
  io::phantom::generate_cohort(opt);
  const Atlas atlas = load_atlas(dir.string());
  CHECK(atlas.has_six_rois());
  const io::CsvTable truth = io::read_csv((dir / "truth.csv").string());
  auto col = [&](const std::string& name) {
    const auto it = std::find(truth.header.begin(), truth.header.end(), name);
    REQUIRE(it != truth.header.end());
    return size_t(it - truth.header.begin());
  };
  int checked = 0;
  for (const auto& row : truth.rows) {
    const fs::path pet = dir / "pet" / row[col("Subject")] / row[col("PET_date")] / "av45.nii.gz";
    const Suvr s = compute_suvr(io::read_nifti(pet.string()), atlas);
    CAPTURE(pet.string());
    CHECK(s.cortical == doctest::Approx(std::stod(row[col("SUVR_av45")])).epsilon(0.01));
    for (size_t k = 0; k < six_rois().size(); ++k)
      CHECK(s.roi[k] == doctest::Approx(std::stod(row[col("SUVR_av45_" + six_rois()[k])])).epsilon(0.02));
    ++checked;
  }
  CHECK(checked >= 3);
  fs::remove_all(dir);
}

TEST_CASE("classification metrics equal scikit-learn's: weighted precision/recall/F1, ROC and AUC with ties, edge cases") {
  std::ifstream in(std::string(CPETS_FIXTURES) + "/metrics/classification.json");
  REQUIRE(in.good());
  const nlohmann::json doc = nlohmann::json::parse(in);
  REQUIRE(doc.at("cases").size() >= 6);
  for (const auto& c : doc.at("cases")) {
    const std::string name = c.at("name");
    CAPTURE(name);
    const auto labels = c.at("y_true").get<std::vector<int>>();
    const auto predictions = c.at("y_pred").get<std::vector<int>>();
    const auto scores = c.at("score").get<std::vector<double>>();
    const eval::BinaryClassification m = eval::classify_metrics(labels, predictions, scores);
    CHECK(m.accuracy == doctest::Approx(c.at("accuracy").get<double>()).epsilon(1e-12));
    CHECK(m.precision == doctest::Approx(c.at("precision").get<double>()).epsilon(1e-12));
    CHECK(m.recall == doctest::Approx(c.at("recall").get<double>()).epsilon(1e-12));
    CHECK(m.f1 == doctest::Approx(c.at("f1").get<double>()).epsilon(1e-12));
    if (c.at("auc").is_null()) {
      CHECK(std::isnan(m.auc));
      CHECK(m.roc.fpr.empty());
      continue;
    }
    CHECK(m.auc == doctest::Approx(c.at("auc").get<double>()).epsilon(1e-12));
    const auto fpr = c.at("roc_fpr").get<std::vector<double>>(), tpr = c.at("roc_tpr").get<std::vector<double>>();
    REQUIRE(m.roc.fpr.size() == fpr.size());
    for (size_t i = 0; i < fpr.size(); ++i) {
      CHECK(m.roc.fpr[i] == doctest::Approx(fpr[i]).epsilon(1e-12));
      CHECK(m.roc.tpr[i] == doctest::Approx(tpr[i]).epsilon(1e-12));
      const auto& t = c.at("roc_thresholds")[i];
      if (t.is_null()) CHECK(std::isinf(m.roc.thresholds[i]));
      else CHECK(m.roc.thresholds[i] == t.get<double>());
    }
  }
  CHECK_THROWS_WITH_AS(eval::classify_metrics({0, 1}, {0}, {0.1, 0.2}), doctest::Contains("2 labels but 2 scores and 1 predictions"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(eval::classify_metrics({0, 2}, {0, 1}, {0.1, 0.2}), doctest::Contains("other than 0/1"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(eval::classify_metrics({0, 1}, {0, 1}, {0.1, std::nan("")}), doctest::Contains("non-finite score"),
                       std::invalid_argument);
  CHECK_THROWS_AS(eval::classify_metrics({}, {}, {}), std::invalid_argument);
}

TEST_CASE("logistic regression (the tabular-only classifier) equals scikit-learn's LogisticRegression with C and class weights") {
  std::ifstream in(std::string(CPETS_FIXTURES) + "/metrics/classification.json");
  REQUIRE(in.good());
  const nlohmann::json doc = nlohmann::json::parse(in);
  REQUIRE(doc.at("logistic").size() == 3);
  for (const auto& c : doc.at("logistic")) {
    const std::string name = c.at("name");
    CAPTURE(name);
    const auto x = c.at("x").get<std::vector<std::vector<double>>>();
    const auto y = c.at("y").get<std::vector<int>>();
    const eval::LogisticRegression m =
        eval::fit_logistic_regression(x, y, c.at("class_weights").get<std::vector<double>>(), c.at("C").get<double>());
    const auto coef = c.at("coef").get<std::vector<double>>();
    REQUIRE(m.coef.size() == coef.size());
    // scikit-learn's lbfgs stops at its tolerance; Newton's method converges to the optimum itself.
    for (size_t j = 0; j < coef.size(); ++j) CHECK(m.coef[j] == doctest::Approx(coef[j]).epsilon(1e-6));
    CHECK(m.intercept == doctest::Approx(c.at("intercept").get<double>()).epsilon(1e-6));
    const auto decision = c.at("decision").get<std::vector<double>>();
    for (size_t i = 0; i < x.size(); ++i) CHECK(m.decision(x[i]) == doctest::Approx(decision[i]).epsilon(1e-6));
    CHECK(m.iterations < 200);
  }
  CHECK_THROWS_WITH_AS(eval::fit_logistic_regression({{0.1}, {0.2}}, {1, 1}, {1, 1}), doctest::Contains("one class only"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(eval::fit_logistic_regression({{0.1}, {NAN}}, {0, 1}, {1, 1}), doctest::Contains("not finite"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(eval::fit_logistic_regression({{0.1}, {0.2}}, {0, 1}, {1, 0}), doctest::Contains("two positive"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(eval::fit_logistic_regression({{0.1}, {0.2}}, {0, 1}, {1, 1}, 0), doctest::Contains("C must be"),
                       std::invalid_argument);
}

TEST_CASE("significance stars: the paper's three thresholds, none for NaN or p >= 0.05") {
  CHECK(eval::significance_stars(0.0004) == " ***");
  CHECK(eval::significance_stars(0.001) == " **");
  CHECK(eval::significance_stars(0.0099) == " **");
  CHECK(eval::significance_stars(0.01) == " *");
  CHECK(eval::significance_stars(0.0499) == " *");
  CHECK(eval::significance_stars(0.05).empty());
  CHECK(eval::significance_stars(std::nan("")).empty());
}
