// Helpers of the gpu tests: run an op on CPU tensors and on CUDA copies of them, compare the
// outputs and (through autograd, with one fixed random upstream gradient) the input gradients
// against the CPU backend, and run the CUDA side twice to demand bitwise-identical results.
//
// Tolerances are derived from float32 arithmetic, u = 2⁻²⁴ (unit roundoff):
//   pointwise ops    a few ulp: the two backends use different exp/erf implementations, each
//                    within ~2 ulp of the true value, so |Δ| ≤ k·u·|y| with k ≈ 8 (ulp_tol);
//   sums of n terms  each backend's float result is within ~u·Σ|terms| of the exact sum (both
//                    accumulate in double, then round once) plus the inputs' own rounding, so
//                    |Δ| ≤ c·u·Σ|terms| (sum_tol);
//   products, K long float32 products accumulated in float: the statistical bound of rounding
//                    errors, |Δ| ≤ c·√K·u·Σ|a||b| (dot_tol), c = 8 for margin;
// and outputs that go through a normalisation (1/σ, x − μ) carry the statistics' relative error
// into every element: |Δ| ≤ c·u·(|y| + 1) with c generous (norm_tol).
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/tensor.h"
#include "gradcheck.h"

namespace cpets::gpu_testing {

constexpr double kU = 1.0 / 16777216.0;  // 2⁻²⁴

struct Tol {
  double rtol, atol;
};
inline Tol ulp_tol(double k = 8) { return {k * kU, 1e-30}; }
inline Tol sum_tol(int64_t n, double mean_abs, double c = 4) { return {c * kU, c * kU * double(n) * mean_abs + 1e-30}; }
inline Tol dot_tol(int64_t K, double mean_abs_product, double c = 8) {
  return {c * kU, c * std::sqrt(double(K)) * kU * double(K) * mean_abs_product + 1e-30};
}
inline Tol norm_tol(double c = 64) { return {c * kU, c * kU}; }

inline Tensor on_cuda(const Tensor& t) { return t.to(Device::cuda()).detach(); }

// Every element within atol + rtol·|want|; reports the worst one.
inline void expect_close(const Tensor& got_t, const Tensor& want_t, Tol tol, const std::string& what) {
  REQUIRE_MESSAGE(got_t.defined() == want_t.defined(), what << ": one side has no tensor");
  if (!got_t.defined()) return;
  REQUIRE_MESSAGE(got_t.shape() == want_t.shape(), what << ": shape " << got_t.str() << " vs " << want_t.str());
  const std::vector<float> got = got_t.to_vector(), want = want_t.to_vector();
  double worst = 0;
  int64_t worst_i = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(double(got[i]) - double(want[i]));
    const double bound = tol.atol + tol.rtol * std::abs(double(want[i]));
    const bool bad = !(err <= bound);  // NaN fails too
    if (bad && (worst_i < 0 || err / bound > worst)) {
      worst = err / bound;
      worst_i = int64_t(i);
    }
  }
  CHECK_MESSAGE(worst_i < 0, what << ": element " << worst_i << " is " << (worst_i >= 0 ? got[worst_i] : 0.f)
                                  << " on cuda vs " << (worst_i >= 0 ? want[worst_i] : 0.f) << " on cpu (" << worst
                                  << "× the tolerance " << tol.atol << " + " << tol.rtol << "·|x|)");
}

inline void expect_bitwise(const Tensor& a, const Tensor& b, const std::string& what) {
  REQUIRE(a.defined() == b.defined());
  if (!a.defined()) return;
  const std::vector<float> va = a.to_vector(), vb = b.to_vector();
  REQUIRE(va.size() == vb.size());
  CHECK_MESSAGE(std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)) == 0, what << ": two runs differ");
}

struct Run {
  Tensor out;
  std::vector<Tensor> grads;
};

// f on fresh leaf copies of `inputs` on `device` (grad wanted where `want_grad`); backward with
// upstream gradient `w` (on the CPU, copied over).
inline Run run_on(Device device, const std::function<Tensor(const std::vector<Tensor>&)>& f,
                  const std::vector<Tensor>& inputs, const std::vector<bool>& want_grad, const Tensor& w) {
  std::vector<Tensor> xs;
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor x = inputs[i].defined() ? inputs[i].to(device).detach().clone() : Tensor();
    if (x.defined() && want_grad[i]) x.set_requires_grad(true);
    xs.push_back(x);
  }
  Run r;
  r.out = f(xs);
  if (r.out.requires_grad()) r.out.backward(w.to(device).detach());
  for (const Tensor& x : xs) r.grads.push_back(x.defined() && x.requires_grad() ? x.grad() : Tensor());
  return r;
}

// The op on the GPU against the CPU backend, forward and backward, and twice on the GPU (bitwise).
inline void check_against_cpu(const std::string& what, const std::function<Tensor(const std::vector<Tensor>&)>& f,
                              const std::vector<Tensor>& inputs, Tol forward, Tol backward,
                              std::vector<bool> want_grad = {}) {
  if (want_grad.empty()) want_grad.assign(inputs.size(), true);
  Tensor probe;
  {
    NoGradGuard ng;
    probe = f(inputs);
  }
  const Tensor w = testing::random_tensor(probe.shape(), 4242u);
  const Run cpu = run_on(Device::cpu(), f, inputs, want_grad, w);
  const Run gpu = run_on(Device::cuda(), f, inputs, want_grad, w);
  CHECK(gpu.out.device() == Device::cuda());
  expect_close(gpu.out, cpu.out, forward, what + " forward");
  for (size_t i = 0; i < inputs.size(); ++i)
    if (want_grad[i]) expect_close(gpu.grads[i], cpu.grads[i], backward, what + " gradient of input " + std::to_string(i));
  const Run again = run_on(Device::cuda(), f, inputs, want_grad, w);
  expect_bitwise(again.out, gpu.out, what + " forward");
  for (size_t i = 0; i < inputs.size(); ++i)
    if (want_grad[i]) expect_bitwise(again.grads[i], gpu.grads[i], what + " gradient of input " + std::to_string(i));
}

}  // namespace cpets::gpu_testing
