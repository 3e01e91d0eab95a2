// Losses: values against double loops and analytic cases, gradients (to pred and target) by finite
// differences, L1's zero derivative at equality, shape errors, and 1-vs-2-thread determinism on
// ~10 M elements.
#include <doctest/doctest.h>

#include <omp.h>

#include <cmath>

#include "engine/ops.h"
#include "gradcheck.h"

using namespace cpets;
using cpets::testing::fine_step;
using cpets::testing::with_threads;
using cpets::testing::gradcheck;
using cpets::testing::random_tensor;

namespace {

template <class F>
double mean_of(const Tensor& a, const Tensor& b, F&& f) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += f(double(a.data()[i]), double(b.data()[i]));
  return s / double(a.numel());
}

}  // namespace

TEST_CASE("l1, mse, lsgan and kl values match double loops") {
  for (const Shape& shape : {Shape{7}, Shape{2, 3, 5, 4, 3}, Shape{100003}}) {
    CAPTURE(shape_str(shape));
    Tensor p = random_tensor(shape, 1), t = random_tensor(shape, 2);
    CHECK(l1_loss(p, t).item() == doctest::Approx(mean_of(p, t, [](double a, double b) { return std::abs(a - b); })).epsilon(1e-6));
    CHECK(mse_loss(p, t).item() == doctest::Approx(mean_of(p, t, [](double a, double b) { return (a - b) * (a - b); })).epsilon(1e-6));
    CHECK(lsgan_loss(p, 1.f).item() == doctest::Approx(mean_of(p, t, [](double a, double) { return (a - 1) * (a - 1); })).epsilon(1e-6));
    CHECK(lsgan_loss(p, 0.f).item() == doctest::Approx(mean_of(p, t, [](double a, double) { return a * a; })).epsilon(1e-6));
    double kl = 0;
    for (int64_t i = 0; i < p.numel(); ++i) {
      const double m = p.data()[i], lv = t.data()[i];
      kl += 1 + lv - m * m - std::exp(lv);
    }
    CHECK(kl_gaussian(p, t).item() == doctest::Approx(-0.5 * kl / double(shape[0])).epsilon(1e-6));
    CHECK(l1_loss(p, t).shape() == Shape{});
  }
}

TEST_CASE("analytic cases: the KL of a standard normal is 0; losses of equal tensors are 0") {
  Tensor z = Tensor::zeros({2, 6, 3, 4, 3});
  CHECK(kl_gaussian(z, z).item() == 0.f);
  // mu = 1, logvar = 0 everywhere: each element contributes ½, divided by B = 2.
  CHECK(kl_gaussian(Tensor::ones({2, 5}), Tensor::zeros({2, 5})).item() == doctest::Approx(0.5 * 10 / 2));
  Tensor p = random_tensor({3, 4}, 3);
  CHECK(l1_loss(p, p).item() == 0.f);
  CHECK(mse_loss(p, p).item() == 0.f);
  CHECK(lsgan_loss(Tensor::ones({5}), 1.f).item() == 0.f);
}

TEST_CASE("loss gradients by finite differences, to pred and to target") {
  Tensor p = random_tensor({2, 3, 5}, 4), t = random_tensor({2, 3, 5}, 5);
  // Keep |p − t| away from 0 so the finite difference does not straddle L1's kink.
  for (int64_t i = 0; i < p.numel(); ++i)
    if (std::abs(p.data()[i] - t.data()[i]) < 0.05f) p.data()[i] = t.data()[i] + 0.1f;
  gradcheck([](const std::vector<Tensor>& in) { return l1_loss(in[0], in[1]); }, {p, t}, fine_step());
  gradcheck([](const std::vector<Tensor>& in) { return mse_loss(in[0], in[1]); }, {p, t}, fine_step());
  gradcheck([](const std::vector<Tensor>& in) { return kl_gaussian(in[0], in[1]); }, {p, t}, fine_step());
  gradcheck([](const std::vector<Tensor>& in) { return lsgan_loss(in[0], 1.f); }, {p}, fine_step());
  gradcheck([](const std::vector<Tensor>& in) { return lsgan_loss(in[0], 0.f) * 3.f; }, {p}, fine_step());
}

TEST_CASE("l1: the derivative is sign(pred − target), 0 where they are equal (as PyTorch)") {
  Tensor p = Tensor::from_vector({4}, {1.f, 2.f, 3.f, -1.f}).set_requires_grad(true);
  Tensor t = Tensor::from_vector({4}, {0.f, 2.f, 5.f, -1.f}).set_requires_grad(true);
  l1_loss(p, t).backward();
  CHECK(p.grad().to_vector() == std::vector<float>{0.25f, 0.f, -0.25f, 0.f});
  CHECK(t.grad().to_vector() == std::vector<float>{-0.25f, 0.f, 0.25f, 0.f});
}

TEST_CASE("losses: mismatched shapes are named") {
  CHECK_THROWS_WITH_AS(l1_loss(Tensor::zeros({2, 3}), Tensor::zeros({3, 2})),
                       doctest::Contains("l1_loss: pred (2, 3) and target (3, 2) must have the same shape"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(mse_loss(Tensor::zeros({2}), Tensor::zeros({2, 1})), doctest::Contains("(2) and target (2, 1)"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(kl_gaussian(Tensor::zeros({1, 3}), Tensor::zeros({1, 4})), doctest::Contains("mu (1, 3)"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(lsgan_loss(Tensor::zeros({0}), 1.f), doctest::Contains("empty"), std::invalid_argument);
}

TEST_CASE("determinism: 1 and 2 threads give bitwise identical losses on ~10 M elements") {
  Tensor p = random_tensor({2, 1, 96, 128, 96} /* 2.4 M */, 6), t = random_tensor({2, 1, 96, 128, 96}, 7);
  Tensor big_p = random_tensor({10000019}, 8), big_t = random_tensor({10000019}, 9);
  auto l1 = [&] { return l1_loss(big_p, big_t).item(); };
  auto mse = [&] { return mse_loss(big_p, big_t).item(); };
  auto kl = [&] { return kl_gaussian(big_p, big_t).item(); };
  auto gan = [&] { return lsgan_loss(p, 1.f).item() + l1_loss(p, t).item(); };
  CHECK(with_threads(1, l1) == with_threads(2, l1));
  CHECK(with_threads(1, mse) == with_threads(2, mse));
  CHECK(with_threads(1, kl) == with_threads(2, kl));
  CHECK(with_threads(1, gan) == with_threads(2, gan));
  CHECK(l1() == doctest::Approx(mean_of(big_p, big_t, [](double a, double b) { return std::abs(a - b); })).epsilon(1e-6));
}

TEST_CASE("cross_entropy: PyTorch's class-weighted mean, large logits stay finite, gradients by finite differences") {
  const Tensor logits = random_tensor({5, 2}, 40, -3.f, 3.f);
  const std::vector<int> y = {0, 1, 1, 0, 0};
  const std::vector<float> w = {1.f, 4.f};  // the reference's [sMCI, pMCI] weights
  double num = 0, den = 0;
  for (int i = 0; i < 5; ++i) {
    const double a = logits.data()[2 * i], b = logits.data()[2 * i + 1], m = std::max(a, b);
    const double lse = m + std::log(std::exp(a - m) + std::exp(b - m));
    num += w[size_t(y[size_t(i)])] * (lse - (y[size_t(i)] ? b : a));
    den += w[size_t(y[size_t(i)])];
  }
  CHECK(cross_entropy(logits, y, w).item() == doctest::Approx(num / den).epsilon(1e-6));
  CHECK(cross_entropy(logits, y).item() > 0);
  // Logits of ±1e4 would overflow exp without the row maximum.
  Tensor big = Tensor::zeros({1, 3});
  big.data()[0] = 1e4f, big.data()[1] = -1e4f, big.data()[2] = 1e4f - 1.f;
  CHECK(cross_entropy(big, {2}).item() == doctest::Approx(1.0 + std::log1p(std::exp(-1.0))).epsilon(1e-5));
  gradcheck([&](const std::vector<Tensor>& v) { return cross_entropy(v[0], y, w); }, {logits});
  CHECK_THROWS_WITH_AS(cross_entropy(logits, {0, 1}), doctest::Contains("2 targets for logits"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, {0, 1, 2, 0, 0}), doctest::Contains("target 2 of sample 2"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, y, {1.f}), doctest::Contains("1 class weights for 2 classes"),
                       std::invalid_argument);
}
