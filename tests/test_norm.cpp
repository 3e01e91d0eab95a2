// GroupNorm (+SiLU), LayerNorm, BatchNorm3d and softmax: forwards against naive double-precision
// loops written here, every backward by finite differences, BatchNorm's running statistics by hand,
// thread-count determinism on a large group, and data with a large offset (mean 1000, std 1).
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops_elementwise.h"
#include "engine/ops_norm.h"
#include "engine/ops_reduce.h"
#include "engine/ops_shape.h"
#include "gradcheck.h"
#include "kernels/cpu/norm.h"

using namespace cpets;
using cpets::testing::gradcheck;
using cpets::testing::random_tensor;

namespace {

Tensor gaussian_tensor(const Shape& shape, uint32_t seed, double mean, double stddev) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(mean, stddev);
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<float>(dist(gen));
  return t;
}

// Naive GroupNorm in double: per (b, g) mean and biased variance by two passes.
std::vector<double> naive_group_norm(const Tensor& x, int64_t G, const Tensor& gamma, const Tensor& beta, double eps) {
  const int64_t B = x.size(0), C = x.size(1), S = x.numel() / (B * C), Cg = C / G;
  std::vector<double> y(x.numel());
  const float* p = x.data();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < G; ++g) {
      double sum = 0;
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c)
        for (int64_t s = 0; s < S; ++s) sum += p[(b * C + c) * S + s];
      const double mean = sum / double(Cg * S);
      double sq = 0;
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c)
        for (int64_t s = 0; s < S; ++s) sq += (p[(b * C + c) * S + s] - mean) * (p[(b * C + c) * S + s] - mean);
      const double rstd = 1.0 / std::sqrt(sq / double(Cg * S) + eps);
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
        const double ga = gamma.defined() ? gamma.data()[c] : 1.0, be = beta.defined() ? beta.data()[c] : 0.0;
        for (int64_t s = 0; s < S; ++s) {
          const int64_t i = (b * C + c) * S + s;
          y[i] = (p[i] - mean) * rstd * ga + be;
        }
      }
    }
  return y;
}

double silu_ref(double z) { return z / (1.0 + std::exp(-z)); }

void check_close(const Tensor& got, const std::vector<double>& want, double atol, double rtol = 0) {
  REQUIRE(got.numel() == static_cast<int64_t>(want.size()));
  double worst = 0;
  int64_t worst_i = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double err = std::abs(got.data()[i] - want[i]) - rtol * std::abs(want[i]);
    if (err > worst) {
      worst = err;
      worst_i = i;
    }
  }
  INFO("worst element " << worst_i << ": got " << got.data()[worst_i] << " want " << want[worst_i]);
  CHECK(worst <= atol);
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return false;
  for (int64_t i = 0; i < a.numel(); ++i)
    if (std::memcmp(a.data() + i, b.data() + i, sizeof(float)) != 0) return false;
  return true;
}

// Runs fn with a given OpenMP thread count, restoring the previous one.
template <class F>
void with_threads(int n, F&& fn) {
  const int prev = omp_get_max_threads();
  omp_set_num_threads(n);
  fn();
  omp_set_num_threads(prev);
}

}  // namespace

// ---- GroupNorm ---------------------------------------------------------------------------------

TEST_CASE("group_norm forward matches naive double loops (odd sizes, G = 1, G = C, with/without affine)") {
  struct Case {
    Shape shape;
    int64_t groups;
    bool gamma, beta;
  };
  const std::vector<Case> cases = {
      {{2, 6, 5, 3, 7}, 3, true, true}, {{3, 4, 7}, 1, false, false},   {{2, 5, 3, 3}, 5, true, true},
      {{1, 8, 9, 11}, 4, true, false},  {{2, 4}, 2, false, true},        {{1, 2, 9000}, 1, true, true},
  };
  for (const auto& c : cases) {
    CAPTURE(shape_str(c.shape));
    CAPTURE(c.groups);
    Tensor x = random_tensor(c.shape, 1, -2.f, 3.f);
    const int64_t C = c.shape[1];
    Tensor gamma = c.gamma ? random_tensor({C}, 2, 0.5f, 1.5f) : Tensor();
    Tensor beta = c.beta ? random_tensor({C}, 3) : Tensor();
    check_close(group_norm(x, c.groups, gamma, beta, 1e-5f), naive_group_norm(x, c.groups, gamma, beta, 1e-5), 2e-5,
                1e-5);
  }
}

TEST_CASE("group_norm gradients (x, gamma, beta) by finite differences") {
  for (int64_t groups : {1, 2, 4}) {
    CAPTURE(groups);
    Tensor x = random_tensor({2, 4, 3, 5}, 10 + groups, -2.f, 2.f);
    Tensor gamma = random_tensor({4}, 20, 0.5f, 1.5f), beta = random_tensor({4}, 21);
    gradcheck([groups](const std::vector<Tensor>& in) { return group_norm(in[0], groups, in[1], in[2], 1e-5f); },
              {x, gamma, beta});
  }
  // Without affine parameters.
  gradcheck([](const std::vector<Tensor>& in) { return group_norm(in[0], 3, Tensor(), Tensor(), 1e-5f); },
            {random_tensor({1, 3, 7}, 30, -2.f, 2.f)});
}

TEST_CASE("group_norm_silu equals SiLU(group_norm) forward and backward, and passes gradcheck") {
  Tensor x = random_tensor({2, 6, 5, 7}, 40, -2.f, 2.f);
  Tensor gamma = random_tensor({6}, 41, 0.5f, 2.f), beta = random_tensor({6}, 42);
  Tensor gy = random_tensor({2, 6, 5, 7}, 43);

  // Unfused: group_norm, then SiLU and its derivative written out here.
  Tensor xa = x.clone().set_requires_grad(true), ga = gamma.clone().set_requires_grad(true),
         ba = beta.clone().set_requires_grad(true);
  Tensor z = group_norm(xa, 3, ga, ba, 1e-5f);
  std::vector<double> y_ref(z.numel());
  Tensor gz = Tensor::empty(z.shape());
  for (int64_t i = 0; i < z.numel(); ++i) {
    const double v = z.data()[i], s = 1.0 / (1.0 + std::exp(-v));
    y_ref[i] = silu_ref(v);
    gz.data()[i] = static_cast<float>(gy.data()[i] * s * (1.0 + v * (1.0 - s)));
  }
  z.backward(gz);

  Tensor xb = x.clone().set_requires_grad(true), gb = gamma.clone().set_requires_grad(true),
         bb = beta.clone().set_requires_grad(true);
  Tensor y = group_norm_silu(xb, 3, gb, bb, 1e-5f);
  check_close(y, y_ref, 1e-5, 1e-5);
  y.backward(gy);
  auto as_double = [](const Tensor& t) { return std::vector<double>(t.data(), t.data() + t.numel()); };
  check_close(xb.grad(), as_double(xa.grad()), 1e-4, 1e-4);
  check_close(gb.grad(), as_double(ga.grad()), 1e-4, 1e-4);
  check_close(bb.grad(), as_double(ba.grad()), 1e-4, 1e-4);

  gradcheck([](const std::vector<Tensor>& in) { return group_norm_silu(in[0], 2, in[1], in[2], 1e-5f); },
            {random_tensor({2, 4, 3, 5}, 44, -2.f, 2.f), random_tensor({4}, 45, 0.5f, 1.5f), random_tensor({4}, 46)});
  gradcheck([](const std::vector<Tensor>& in) { return group_norm_silu(in[0], 1, Tensor(), Tensor(), 1e-5f); },
            {random_tensor({1, 3, 7}, 47, -2.f, 2.f)});
}

TEST_CASE("group statistics: large offset (mean 1000, std 1) keeps full precision") {
  // E[x²] − E[x]² in float would lose every digit of the variance here (1e6 vs 1).
  const int64_t n = 3 * 100003;
  Tensor x = gaussian_tensor({1, 3, 100003}, 50, 1000.0, 1.0);
  double mean = 0, var = 0;
  kernels::cpu::segment_moments(x.data(), 1, 1, n, &mean, &var);
  double m_ref = 0;
  for (int64_t i = 0; i < n; ++i) m_ref += x.data()[i];
  m_ref /= double(n);
  double v_ref = 0;
  for (int64_t i = 0; i < n; ++i) v_ref += (x.data()[i] - m_ref) * (x.data()[i] - m_ref);
  v_ref /= double(n);
  CHECK(std::abs(mean - m_ref) < 1e-9 * 1000);
  CHECK(std::abs(var - v_ref) < 1e-6 * v_ref);

  Tensor gamma = random_tensor({3}, 51, 0.5f, 1.5f), beta = random_tensor({3}, 52);
  // Output error is bounded by the float rounding of x − mean (~1000·2^-24 ≈ 6e-5).
  check_close(group_norm(x, 1, gamma, beta, 1e-5f), naive_group_norm(x, 1, gamma, beta, 1e-5), 2e-4);
  check_close(group_norm(x, 3, gamma, beta, 1e-5f), naive_group_norm(x, 3, gamma, beta, 1e-5), 2e-4);
}

TEST_CASE("group_norm and group_norm_silu are bitwise identical on 1 and 2 threads for a large group") {
  // B = 1 and 2 groups of 4·64·64·33 ≈ 540k elements: the statistics are split inside each group.
  Tensor x = gaussian_tensor({1, 8, 64, 64, 33}, 60, 0.5, 2.0);
  Tensor gamma = random_tensor({8}, 61, 0.5f, 1.5f), beta = random_tensor({8}, 62);
  Tensor gy = random_tensor(x.shape(), 63);
  for (bool silu : {false, true}) {
    CAPTURE(silu);
    std::vector<Tensor> results[2];
    for (int t = 1; t <= 2; ++t)
      with_threads(t, [&] {
        Tensor xi = x.clone().set_requires_grad(true), gi = gamma.clone().set_requires_grad(true),
               bi = beta.clone().set_requires_grad(true);
        Tensor y = silu ? group_norm_silu(xi, 2, gi, bi, 1e-5f) : group_norm(xi, 2, gi, bi, 1e-5f);
        y.backward(gy);
        results[t - 1] = {y, xi.grad(), gi.grad(), bi.grad()};
      });
    for (size_t k = 0; k < results[0].size(); ++k) {
      CAPTURE(k);
      CHECK(bitwise_equal(results[0][k], results[1][k]));
    }
    if (!silu) check_close(results[0][0], naive_group_norm(x, 2, gamma, beta, 1e-5), 3e-5, 1e-5);
  }
}

TEST_CASE("group_norm rejects bad inputs with a clear message") {
  Tensor x = Tensor::zeros({2, 6, 4});
  CHECK_THROWS_WITH_AS(group_norm(x, 4, Tensor(), Tensor(), 1e-5f), doctest::Contains("cannot be split into 4 groups"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(group_norm(x, 3, Tensor::ones({5}), Tensor(), 1e-5f), doctest::Contains("gamma has shape (5)"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(group_norm(Tensor::zeros({6}), 3, Tensor(), Tensor(), 1e-5f),
                       doctest::Contains("at least 2 dims"), std::invalid_argument);
}

// ---- LayerNorm ---------------------------------------------------------------------------------

namespace {
std::vector<double> naive_layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  const int64_t D = x.size(-1), rows = x.numel() / D;
  std::vector<double> y(x.numel());
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = x.data() + r * D;
    double m = 0;
    for (int64_t d = 0; d < D; ++d) m += p[d];
    m /= double(D);
    double v = 0;
    for (int64_t d = 0; d < D; ++d) v += (p[d] - m) * (p[d] - m);
    const double rs = 1.0 / std::sqrt(v / double(D) + eps);
    for (int64_t d = 0; d < D; ++d)
      y[r * D + d] = (p[d] - m) * rs * (gamma.defined() ? gamma.data()[d] : 1.0) + (beta.defined() ? beta.data()[d] : 0.0);
  }
  return y;
}
}  // namespace

TEST_CASE("layer_norm forward matches naive loops (widths 1..1500, with/without affine, offset 1000)") {
  for (int64_t D : {1, 7, 32, 48, 128, 300, 1500}) {
    CAPTURE(D);
    Tensor x = random_tensor({3, 5, D}, 70 + D, -2.f, 3.f);
    Tensor gamma = random_tensor({D}, 71, 0.5f, 1.5f), beta = random_tensor({D}, 72);
    check_close(layer_norm(x, gamma, beta, 1e-5f), naive_layer_norm(x, gamma, beta, 1e-5), 2e-5, 1e-5);
    check_close(layer_norm(x, Tensor(), Tensor(), 1e-5f), naive_layer_norm(x, Tensor(), Tensor(), 1e-5), 2e-5, 1e-5);
    check_close(layer_norm(x, gamma, Tensor(), 1e-5f), naive_layer_norm(x, gamma, Tensor(), 1e-5), 2e-5, 1e-5);
  }
  for (int64_t D : {128, 1500}) {
    Tensor far = gaussian_tensor({64, D}, 73, 1000.0, 1.0);
    check_close(layer_norm(far, Tensor(), Tensor(), 1e-5f), naive_layer_norm(far, Tensor(), Tensor(), 1e-5), 2e-4);
  }
}

TEST_CASE("layer_norm gradients by finite differences") {
  gradcheck([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2], 1e-5f); },
            {random_tensor({3, 2, 7}, 80, -2.f, 2.f), random_tensor({7}, 81, 0.5f, 1.5f), random_tensor({7}, 82)});
  gradcheck([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2], 1e-5f); },
            {random_tensor({2, 37}, 83, -2.f, 2.f), random_tensor({37}, 84, 0.5f, 1.5f), random_tensor({37}, 85)});
  gradcheck([](const std::vector<Tensor>& in) { return layer_norm(in[0], Tensor(), Tensor(), 1e-5f); },
            {random_tensor({4, 5}, 86, -2.f, 2.f)});
  // Rows longer than the short-row path (1024) take the blocked double path.
  gradcheck([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2], 1e-5f); },
            {random_tensor({2, 1500}, 91, -2.f, 2.f), random_tensor({1500}, 92, 0.5f, 1.5f), random_tensor({1500}, 93)});
}

TEST_CASE("layer_norm is bitwise identical on 1 and 2 threads") {
  Tensor x = random_tensor({20000, 64}, 87);
  Tensor gamma = random_tensor({64}, 88), beta = random_tensor({64}, 89), gy = random_tensor(x.shape(), 90);
  std::vector<Tensor> results[2];
  for (int t = 1; t <= 2; ++t)
    with_threads(t, [&] {
      Tensor xi = x.clone().set_requires_grad(true), gi = gamma.clone().set_requires_grad(true),
             bi = beta.clone().set_requires_grad(true);
      Tensor y = layer_norm(xi, gi, bi, 1e-5f);
      y.backward(gy);
      results[t - 1] = {y, xi.grad(), gi.grad(), bi.grad()};
    });
  for (size_t k = 0; k < 4; ++k) CHECK(bitwise_equal(results[0][k], results[1][k]));
}

// ---- BatchNorm3d -------------------------------------------------------------------------------

TEST_CASE("batch_norm3d training: batch statistics, running stats updated with unbiased variance") {
  const int64_t B = 3, C = 4, D = 3, H = 5, W = 2, S = D * H * W, N = B * S;
  Tensor x = random_tensor({B, C, D, H, W}, 100, -1.f, 4.f);
  Tensor gamma = random_tensor({C}, 101, 0.5f, 1.5f), beta = random_tensor({C}, 102);
  Tensor rm = Tensor::from_vector({C}, {0.1f, -0.2f, 0.3f, 0.f}), rv = Tensor::from_vector({C}, {1.f, 2.f, 0.5f, 1.f});
  const std::vector<float> rm0 = rm.to_vector(), rv0 = rv.to_vector();
  const float momentum = 0.1f, eps = 1e-5f;
  Tensor y = batch_norm3d(x, gamma, beta, rm, rv, true, momentum, eps);
  std::vector<double> y_ref(x.numel());
  for (int64_t c = 0; c < C; ++c) {
    double m = 0, v = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < S; ++s) m += x.data()[(b * C + c) * S + s];
    m /= double(N);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < S; ++s) v += std::pow(x.data()[(b * C + c) * S + s] - m, 2);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < S; ++s) {
        const int64_t i = (b * C + c) * S + s;
        y_ref[i] = (x.data()[i] - m) / std::sqrt(v / double(N) + eps) * gamma.data()[c] + beta.data()[c];
      }
    CHECK(rm.data()[c] == doctest::Approx((1 - momentum) * rm0[c] + momentum * m).epsilon(1e-6));
    CHECK(rv.data()[c] == doctest::Approx((1 - momentum) * rv0[c] + momentum * v / double(N - 1)).epsilon(1e-6));
  }
  check_close(y, y_ref, 2e-5, 1e-5);
}

TEST_CASE("batch_norm3d eval uses the running statistics and leaves them alone; train differs") {
  const int64_t C = 3;
  Tensor x = random_tensor({2, C, 3, 2, 5}, 110, -1.f, 2.f);
  Tensor gamma = random_tensor({C}, 111, 0.5f, 1.5f), beta = random_tensor({C}, 112);
  Tensor rm = Tensor::from_vector({C}, {0.5f, -0.5f, 1.f}), rv = Tensor::from_vector({C}, {2.f, 0.25f, 1.f});
  Tensor y = batch_norm3d(x, gamma, beta, rm, rv, false, 0.1f, 1e-5f);
  CHECK(rm.to_vector() == std::vector<float>{0.5f, -0.5f, 1.f});
  CHECK(rv.to_vector() == std::vector<float>{2.f, 0.25f, 1.f});
  const int64_t S = 30;
  std::vector<double> y_ref(x.numel());
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = (i / S) % C;
    y_ref[i] = (x.data()[i] - rm.data()[c]) / std::sqrt(rv.data()[c] + 1e-5) * gamma.data()[c] + beta.data()[c];
  }
  check_close(y, y_ref, 2e-5, 1e-5);
  Tensor yt = batch_norm3d(x, gamma, beta, rm.clone(), rv.clone(), true, 0.1f, 1e-5f);
  double diff = 0;
  for (int64_t i = 0; i < x.numel(); ++i) diff = std::max(diff, double(std::abs(yt.data()[i] - y.data()[i])));
  CHECK(diff > 0.1);
}

TEST_CASE("batch_norm3d gradients by finite differences, train and eval") {
  Tensor x = random_tensor({2, 3, 3, 1, 2}, 120, -2.f, 2.f);
  Tensor gamma = random_tensor({3}, 121, 0.5f, 1.5f), beta = random_tensor({3}, 122);
  Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
  for (bool training : {true, false}) {
    CAPTURE(training);
    gradcheck([&](const std::vector<Tensor>& in) { return batch_norm3d(in[0], in[1], in[2], rm, rv, training, 0.1f, 1e-5f); },
              {x, gamma, beta});
  }
  gradcheck([](const std::vector<Tensor>& in) {
    return batch_norm3d(in[0], Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1f, 1e-5f);
  }, {random_tensor({3, 2, 1, 3, 1}, 123, -2.f, 2.f)});
}

TEST_CASE("batch_norm3d is bitwise identical on 1 and 2 threads; rejects bad inputs") {
  Tensor x = gaussian_tensor({2, 4, 32, 32, 33}, 130, 3.0, 2.0);
  Tensor gy = random_tensor(x.shape(), 131);
  std::vector<Tensor> results[2];
  for (int t = 1; t <= 2; ++t)
    with_threads(t, [&] {
      Tensor xi = x.clone().set_requires_grad(true);
      Tensor rm = Tensor::zeros({4}), rv = Tensor::ones({4});
      Tensor y = batch_norm3d(xi, Tensor(), Tensor(), rm, rv, true, 0.1f, 1e-5f);
      y.backward(gy);
      results[t - 1] = {y, xi.grad(), rm, rv};
    });
  for (size_t k = 0; k < 4; ++k) CHECK(bitwise_equal(results[0][k], results[1][k]));
  CHECK_THROWS_WITH_AS(batch_norm3d(Tensor::zeros({2, 3, 4}), Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1f, 1e-5f),
                       doctest::Contains("must be (B, C, D, H, W)"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(batch_norm3d(Tensor::zeros({1, 3, 1, 1, 1}), Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1f, 1e-5f),
                       doctest::Contains("need more than 1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(batch_norm3d(Tensor::zeros({2, 3, 1, 1, 1}), Tensor(), Tensor(), Tensor::zeros({2}),
                                    Tensor::ones({2}), false, 0.1f, 1e-5f),
                       doctest::Contains("running_mean has shape (2)"), std::invalid_argument);
}

// ---- softmax -----------------------------------------------------------------------------------

TEST_CASE("softmax forward over each dim matches naive loops; large and -inf logits") {
  Tensor x = random_tensor({3, 5, 70}, 140, -4.f, 4.f);
  for (int64_t dim : {0, 1, 2, -1}) {
    CAPTURE(dim);
    const int64_t d = dim < 0 ? dim + 3 : dim;
    Shape sh = x.shape();
    int64_t outer = 1, inner = 1;
    for (int64_t i = 0; i < d; ++i) outer *= sh[i];
    for (int64_t i = d + 1; i < 3; ++i) inner *= sh[i];
    const int64_t D = sh[d];
    std::vector<double> ref(x.numel());
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        double m = -INFINITY, s = 0;
        for (int64_t k = 0; k < D; ++k) m = std::max(m, double(x.data()[(o * D + k) * inner + i]));
        for (int64_t k = 0; k < D; ++k) s += std::exp(x.data()[(o * D + k) * inner + i] - m);
        for (int64_t k = 0; k < D; ++k) ref[(o * D + k) * inner + i] = std::exp(x.data()[(o * D + k) * inner + i] - m) / s;
      }
    check_close(softmax(x, dim), ref, 1e-7, 2e-6);
  }
  Tensor big = Tensor::from_vector({1, 4}, {1000.f, 999.f, -INFINITY, 1000.f});
  Tensor y = softmax(big, -1);
  const double e = std::exp(-1.0), s = 2 + e;
  check_close(y, {1 / s, e / s, 0.0, 1 / s}, 1e-7, 1e-6);
  CHECK(y.data()[2] == 0.f);
  CHECK_THROWS_WITH_AS(softmax(x, 3), doctest::Contains("out of range"), std::invalid_argument);
}

TEST_CASE("softmax gradients by finite differences") {
  for (int64_t dim : {0, 1, 2}) {
    CAPTURE(dim);
    gradcheck([dim](const std::vector<Tensor>& in) { return softmax(in[0], dim); }, {random_tensor({3, 4, 5}, 150, -2.f, 2.f)});
  }
}

TEST_CASE("softmax stays accurate over the whole float exponent range") {
  // Rows [0, t] for t in [-100, 100]: the second probability is the logistic σ(t), down to 1e-38.
  const int64_t n = 2001;
  std::vector<float> v(2 * n);
  for (int64_t i = 0; i < n; ++i) {
    v[2 * i] = 0.f;
    v[2 * i + 1] = -100.f + 0.1f * float(i);
  }
  Tensor y = softmax(Tensor::from_vector({n, 2}, v), -1);
  std::vector<double> ref(2 * n);
  for (int64_t i = 0; i < n; ++i) {
    const double t = v[2 * i + 1];
    ref[2 * i] = 1.0 / (1.0 + std::exp(t));
    ref[2 * i + 1] = 1.0 / (1.0 + std::exp(-t));
  }
  check_close(y, ref, 1e-37, 3e-7);
}

namespace {
// Replicas as threads: sum() waits for every replica's values and hands each the total (summed
// in replica order, as a deterministic all-reduce would).
class ThreadReplicas {
 public:
  explicit ThreadReplicas(int n) : n_(n), parts_(size_t(n)) {}
  void sum(int replica, double* values, int64_t count) {
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t generation = generation_;
    parts_[size_t(replica)].assign(values, values + count);
    if (++arrived_ == n_) {
      total_.assign(size_t(count), 0.0);
      for (const auto& p : parts_)
        for (int64_t i = 0; i < count; ++i) total_[size_t(i)] += p[size_t(i)];
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != generation; });
    }
    std::copy(total_.begin(), total_.end(), values);
  }

 private:
  int n_, arrived_ = 0;
  int64_t generation_ = 0;
  std::vector<std::vector<double>> parts_;
  std::vector<double> total_;
  std::mutex mu_;
  std::condition_variable cv_;
};
}  // namespace

TEST_CASE("batch_norm3d over replicas (synchronised BatchNorm) equals one batch_norm3d over the whole batch") {
  const int64_t B = 3, C = 4;
  const Tensor x = random_tensor({B, C, 3, 4, 2}, 120, -1.f, 3.f), w = random_tensor({B, C, 3, 4, 2}, 121);
  const Tensor gamma0 = random_tensor({C}, 122, 0.5f, 1.5f), beta0 = random_tensor({C}, 123);
  const std::vector<float> rm0{0.1f, -0.2f, 0.3f, 0.f}, rv0{1.f, 2.f, 0.5f, 1.f};
  struct Result {
    Tensor gx, ggamma, gbeta, y, rm, rv;
  };
  // One replica's part [b0, b1) of the batch; the loss is Σ w·y over its rows.
  auto run = [&](int64_t b0, int64_t b1) {
    Tensor xr = slice(x, 0, b0, b1).clone().set_requires_grad(true);
    Tensor g = gamma0.clone().set_requires_grad(true), b = beta0.clone().set_requires_grad(true);
    Tensor rm = Tensor::from_vector({C}, rm0), rv = Tensor::from_vector({C}, rv0);
    Tensor y = batch_norm3d(xr, g, b, rm, rv, true, 0.1f, 1e-5f);
    sum(mul(y, slice(w, 0, b0, b1).clone())).backward();
    return Result{xr.grad(), g.grad(), b.grad(), y, rm, rv};
  };
  const Result whole = run(0, B);

  ThreadReplicas replicas(2);
  Result parts[2];
  const int64_t split[3] = {0, 1, B};  // unequal shares: 1 and 2 samples
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      BatchNormReplicaGuard guard([&, r](double* v, int64_t n) { replicas.sum(r, v, n); });
      parts[r] = run(split[r], split[r + 1]);
    });
  for (auto& t : threads) t.join();

  auto close = [](const std::vector<float>& a, const std::vector<float>& b) {
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(2e-5).scale(1.0));
  };
  std::vector<float> y, gx;
  for (const Result& p : parts) {
    const auto py = p.y.to_vector(), pg = p.gx.to_vector();
    y.insert(y.end(), py.begin(), py.end());
    gx.insert(gx.end(), pg.begin(), pg.end());
    close(p.rm.to_vector(), whole.rm.to_vector());  // the whole batch's running statistics on every replica
    close(p.rv.to_vector(), whole.rv.to_vector());
  }
  close(y, whole.y.to_vector());
  close(gx, whole.gx.to_vector());  // each replica's rows of the whole batch's input gradient
  // γ and β: each replica's own share; the shares add up to the whole batch's gradient.
  std::vector<float> gg(C), gb(C);
  for (int64_t c = 0; c < C; ++c) {
    gg[size_t(c)] = parts[0].ggamma.to_vector()[size_t(c)] + parts[1].ggamma.to_vector()[size_t(c)];
    gb[size_t(c)] = parts[0].gbeta.to_vector()[size_t(c)] + parts[1].gbeta.to_vector()[size_t(c)];
  }
  close(gg, whole.ggamma.to_vector());
  close(gb, whole.gbeta.to_vector());
  // Without the guard a replica normalises by its own batch: the outputs differ.
  CHECK(std::abs(run(0, 1).y.to_vector()[0] - whole.y.to_vector()[0]) > 1e-3);
}
