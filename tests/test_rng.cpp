#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "engine/init.h"
#include "engine/rng.h"

using namespace cpets;

namespace {
std::vector<float> uniform(Generator& g, int64_t n) {
  std::vector<float> v(n);
  g.fill_uniform(v.data(), n);
  return v;
}
std::vector<float> normal(Generator& g, int64_t n, float mean = 0.f, float std = 1.f) {
  std::vector<float> v(n);
  g.fill_normal(v.data(), n, mean, std);
  return v;
}
bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
}  // namespace

TEST_CASE("philox4x32-10 matches the Random123 known-answer vectors") {
  // Random123 kat_vectors, "philox4x32 10 <ctr0..3> <key0..1> <out0..3>".
  CHECK(philox4x32_10({0, 0, 0, 0}, {0, 0}) == PhiloxCounter{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
  CHECK(philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}) ==
        PhiloxCounter{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
  CHECK(philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}) ==
        PhiloxCounter{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
}

TEST_CASE("uniform values are the documented function of the Philox words") {
  Generator g(0x0123456789abcdefULL);
  std::vector<float> v = uniform(g, 9);
  for (int p = 0; p < 9; ++p) {
    PhiloxCounter w = philox4x32_10({uint32_t(p / 4), 0, 0, 0}, {0x89abcdefu, 0x01234567u});
    CHECK(v[p] == float(w[p % 4] >> 8) / 16777216.0f);
  }
  CHECK(g.offset() == 9);
}

TEST_CASE("normals are Box-Muller on lane pairs of the Philox words") {
  Generator g(7);
  std::vector<float> v = normal(g, 4, 1.5f, 2.0f);
  PhiloxCounter w = philox4x32_10({0, 0, 0, 0}, {7, 0});
  for (int pair = 0; pair < 2; ++pair) {
    double u1 = (double(w[2 * pair]) + 0.5) / 4294967296.0, u2 = double(w[2 * pair + 1]) / 4294967296.0;
    double r = std::sqrt(-2 * std::log(u1)), th = 2 * M_PI * u2;
    CHECK(v[2 * pair] == doctest::Approx(1.5 + 2 * r * std::cos(th)).epsilon(1e-6));
    CHECK(v[2 * pair + 1] == doctest::Approx(1.5 + 2 * r * std::sin(th)).epsilon(1e-6));
  }
}

TEST_CASE("same seed gives the same stream; different seeds differ") {
  Generator a(42), b(42), c(43);
  auto va = normal(a, 1000), vb = normal(b, 1000), vc = normal(c, 1000);
  CHECK(bitwise_equal(va, vb));
  int same = 0;
  for (int i = 0; i < 1000; ++i) same += va[i] == vc[i];
  CHECK(same < 5);
}

TEST_CASE("split requests equal one request, at any split point, for uniform and normal") {
  const int64_t total = 3 * (1 << 14) + 7;  // spans several parallel chunks
  Generator whole_u(5), whole_n(5);
  auto ref_u = uniform(whole_u, total);
  auto ref_n = normal(whole_n, total);
  for (int64_t first : {int64_t(0), int64_t(1), int64_t(2), int64_t(3), int64_t(5), int64_t(16385), total - 1}) {
    CAPTURE(first);
    Generator gu(5), gn(5);
    auto u1 = uniform(gu, first), u2 = uniform(gu, total - first);
    auto n1 = normal(gn, first), n2 = normal(gn, total - first);
    u1.insert(u1.end(), u2.begin(), u2.end());
    n1.insert(n1.end(), n2.begin(), n2.end());
    CHECK(bitwise_equal(u1, ref_u));
    CHECK(bitwise_equal(n1, ref_n));
    CHECK(gu.offset() == uint64_t(total));
  }
}

TEST_CASE("the stream does not depend on the thread count") {
  const int64_t n = 200003;
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  Generator g1(99);
  auto u1 = uniform(g1, n), n1 = normal(g1, n);
  omp_set_num_threads(2);
  Generator g2(99);
  auto u2 = uniform(g2, n), n2 = normal(g2, n);
  omp_set_num_threads(saved);
  CHECK(bitwise_equal(u1, u2));
  CHECK(bitwise_equal(n1, n2));
}

TEST_CASE("state (seed, offset) round-trips and resumes the stream") {
  Generator g(123);
  uniform(g, 17);
  const std::string saved = g.state_string();
  CHECK(saved == "123:17");
  auto next = normal(g, 50);
  Generator h;
  h.set_state_string(saved);
  CHECK(h.state() == GeneratorState{123, 17});
  CHECK(bitwise_equal(normal(h, 50), next));
  CHECK_THROWS_WITH_AS(h.set_state_string("12-3"), doctest::Contains("<seed>:<offset>"), std::invalid_argument);
  CHECK_THROWS_AS(h.set_state_string("1:x"), std::invalid_argument);
  CHECK_THROWS_AS(h.set_state_string("1:99999999999999999999999"), std::invalid_argument);
}

TEST_CASE("statistics: 1e6 normals have the requested mean and variance; uniforms lie in [0, 1)") {
  const int64_t n = 1000000;
  Generator g(2024);
  auto z = normal(g, n, 3.0f, 2.0f);
  double s = 0, s2 = 0;
  for (float x : z) s += x;
  const double mean = s / n;
  for (float x : z) s2 += (x - mean) * (x - mean);
  const double var = s2 / (n - 1);
  // Standard errors: mean 2/1000 = 0.002, variance 4·sqrt(2/n) ≈ 0.0057; allow ~5 sigma.
  CHECK(std::abs(mean - 3.0) < 0.01);
  CHECK(std::abs(var - 4.0) < 0.03);

  auto u = uniform(g, n);
  double su = 0, lo = 1, hi = 0;
  int64_t bins[10] = {};
  for (float x : u) {
    su += x;
    lo = std::min<double>(lo, x);
    hi = std::max<double>(hi, x);
    bins[std::min(9, int(x * 10))]++;
  }
  CHECK(lo >= 0.0);
  CHECK(hi < 1.0);
  CHECK(std::abs(su / n - 0.5) < 0.002);  // sd of the mean ≈ 0.00029
  for (int64_t b : bins) CHECK(std::abs(b - n / 10) < 1500);  // sd ≈ 300

  std::vector<float> r(1000);
  g.fill_uniform(r.data(), 1000, -2.f, 5.f);
  for (float x : r) {
    CHECK(x >= -2.f);
    CHECK(x < 5.f);
  }
}

TEST_CASE("tensor helpers rand/randn draw from the generator and advance it") {
  Generator g(1), ref(1);
  Tensor t = randn({2, 3, 5}, g, 0.f, 0.5f);
  CHECK(t.shape() == Shape{2, 3, 5});
  CHECK(bitwise_equal(t.to_vector(), normal(ref, 30, 0.f, 0.5f)));
  Tensor u = rand({7}, g);
  CHECK(bitwise_equal(u.to_vector(), uniform(ref, 7)));
  CHECK(g.offset() == 37);
  CHECK_THROWS_AS(g.fill_normal(nullptr, 0, 0.f, -1.f), std::invalid_argument);
}

// ---- engine/init: PyTorch's default Conv3d/Linear initialisation drawn from a Generator ----

TEST_CASE("fan_in/fan_out follow PyTorch for Conv3d (out, in, k, k, k) and Linear (out, in) weights") {
  CHECK(fan_in(Tensor::empty({8, 4, 3, 3, 3})) == 4 * 27);
  CHECK(fan_out(Tensor::empty({8, 4, 3, 3, 3})) == 8 * 27);
  CHECK(fan_in(Tensor::empty({5, 7})) == 7);
  CHECK_THROWS_WITH_AS(fan_in(Tensor::empty({5})), doctest::Contains("at least 2 dimensions"), std::invalid_argument);
}

TEST_CASE("kaiming_uniform_(a=sqrt 5) is U(+-1/sqrt fan_in), the values being the generator's uniform stream") {
  Generator g(17), ref(17);
  Tensor w = Tensor::empty({16, 8, 3, 3, 3});
  kaiming_uniform_(w, g);
  const double bound = 1.0 / std::sqrt(8.0 * 27.0);
  auto u = uniform(ref, w.numel());
  double s2 = 0;
  for (int64_t i = 0; i < w.numel(); ++i) {
    const float x = w.data()[i];
    CHECK(std::abs(x) < bound);
    CHECK(x == doctest::Approx(-bound + 2 * bound * u[i]).epsilon(1e-5));
    s2 += double(x) * x;
  }
  CHECK(s2 / w.numel() == doctest::Approx(bound * bound / 3).epsilon(0.03));  // variance of U(-b, b)
  CHECK(g.offset() == uint64_t(w.numel()));

  // Other negative slopes use the leaky_relu gain sqrt(2 / (1 + a^2)).
  Tensor w0 = Tensor::empty({4, 9});
  kaiming_uniform_(w0, g, 0.0);
  for (float x : w0.to_vector()) CHECK(std::abs(x) < std::sqrt(6.0 / 9.0));
}

TEST_CASE("bias_uniform_, xavier_uniform_, normal_, zeros_, ones_") {
  Generator g(5);
  Tensor b = Tensor::empty({1000});
  bias_uniform_(b, 100, g);
  float lo = 1, hi = -1;
  for (float x : b.to_vector()) lo = std::min(lo, x), hi = std::max(hi, x);
  CHECK(lo >= -0.1f);
  CHECK(hi < 0.1f);
  CHECK(lo < -0.09f);  // the full range is used
  CHECK(hi > 0.09f);
  CHECK_THROWS_AS(bias_uniform_(b, 0, g), std::invalid_argument);

  Tensor x = Tensor::empty({30, 20});
  xavier_uniform_(x, g);
  for (float v : x.to_vector()) CHECK(std::abs(v) < std::sqrt(6.0 / 50.0));

  Tensor n = Tensor::empty({200000});
  normal_(n, g, -1.f, 0.02f);
  double s = 0, s2 = 0;
  for (float v : n.to_vector()) s += v;
  const double mean = s / n.numel();
  for (float v : n.to_vector()) s2 += (v - mean) * (v - mean);
  CHECK(std::abs(mean + 1.0) < 0.0003);
  CHECK(std::sqrt(s2 / n.numel()) == doctest::Approx(0.02).epsilon(0.01));

  zeros_(n);
  CHECK(n.to_vector() == std::vector<float>(200000, 0.f));
  ones_(b);
  CHECK(b.to_vector() == std::vector<float>(1000, 1.f));
  Tensor undefined;
  CHECK_THROWS_AS(zeros_(undefined), std::invalid_argument);
}

TEST_CASE("derive_seed: splitmix64 of seed ^ tag, distinct per tag") {
  // splitmix64's first output for state 0 (Vigna's reference implementation).
  CHECK(derive_seed(0, 0) == 0xE220A8397B1DCDAFull);
  CHECK(derive_seed(777, 1) == derive_seed(777, 1));
  CHECK(derive_seed(777, 1) != derive_seed(777, 2));
  CHECK(derive_seed(777, 1) != derive_seed(778, 1));
}
