// Central finite-difference gradient check, shared by every op's test.
// For f(inputs) -> out, compares the analytic gradient of L = Σ w·out (w fixed random weights,
// so every output element matters with a different weight) against (L(x+h) − L(x−h)) / 2h,
// with L accumulated in double. Inputs should be small (a few hundred elements).
#pragma once
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "engine/autograd.h"
#include "engine/tensor.h"

namespace cpets::testing {

inline Tensor random_tensor(const Shape& shape, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = dist(gen);
  return t;
}

struct GradCheckOptions {
  double step = 1e-2;   // float32 forward: a larger step keeps round-off below truncation error
  double atol = 2e-3;
  double rtol = 2e-2;
  std::vector<bool> check;  // per input; empty = all
};

// A smaller finite-difference step, for ops with strong curvature or kinks nearby.
inline GradCheckOptions fine_step() {
  GradCheckOptions o;
  o.step = 1e-3;
  return o;
}

// Runs f with the OpenMP thread count set to `threads`, for 1-vs-N determinism checks.
template <class F>
auto with_threads(int threads, F&& f) {
  const int prev = omp_get_max_threads();
  omp_set_num_threads(threads);
  auto r = f();
  omp_set_num_threads(prev);
  return r;
}

inline double weighted_sum(const Tensor& out, const Tensor& w) {
  double s = 0;
  for (int64_t i = 0; i < out.numel(); ++i) s += double(out.data()[i]) * double(w.data()[i]);
  return s;
}

// Returns the largest normalised error; CHECKs every element.
inline double gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs,
                        GradCheckOptions opt = {}) {
  for (auto& x : inputs) {
    x = x.clone();
    x.set_requires_grad(true);
  }
  Tensor out = f(inputs);
  Tensor w = random_tensor(out.shape(), 12345u);
  out.backward(w);
  double worst = 0;
  for (size_t k = 0; k < inputs.size(); ++k) {
    if (!opt.check.empty() && !opt.check[k]) continue;
    Tensor& x = inputs[k];
    Tensor g = x.grad();
    REQUIRE_MESSAGE(g.defined(), "input " << k << " received no gradient");
    for (int64_t i = 0; i < x.numel(); ++i) {
      float orig = x.data()[i];
      double lp, lm;
      {
        NoGradGuard ng;
        x.data()[i] = float(orig + opt.step);
        lp = weighted_sum(f(inputs), w);
        x.data()[i] = float(orig - opt.step);
        lm = weighted_sum(f(inputs), w);
        x.data()[i] = orig;
      }
      double numeric = (lp - lm) / (2 * opt.step);
      double analytic = g.data()[i];
      double err = std::abs(numeric - analytic);
      double tol = opt.atol + opt.rtol * std::abs(numeric);
      worst = std::max(worst, err / tol);
      if (err > tol) {
        FAIL_CHECK("input " << k << " element " << i << ": analytic " << analytic << " vs numeric " << numeric);
        return worst;
      }
    }
  }
  return worst;
}

}  // namespace cpets::testing
