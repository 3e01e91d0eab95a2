// max_pool3d: output sizes as PyTorch (values checked with torch 1.13's max_pool1d), forward and
// backward against naive loops written here, gradients by finite differences away from ties, the
// first-max rule on ties, bitwise determinism 1 vs 2 threads, clear errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops_conv.h"
#include "gradcheck.h"
#include "kernels/cpu/maxpool.h"

using namespace cpets;
using cpets::testing::gradcheck;
using cpets::testing::random_tensor;
using cpets::testing::with_threads;

namespace {

// Output length the way the PyTorch docs state it: ceil or floor of (in − k)/s, plus one, minus
// one if ceil_mode would start the last window beyond the input.
int64_t expected_len(int64_t in, int64_t k, int64_t s, bool ceil_mode) {
  const double q = double(in - k) / double(s);
  int64_t out = int64_t(ceil_mode ? std::ceil(q) : std::floor(q)) + 1;
  if (ceil_mode && (out - 1) * s >= in) --out;
  return out;
}

struct PoolCase {
  Shape shape;
  Int3 k, s;
  bool ceil_mode;
};

// Naive forward: max over the clipped window; argmax = first maximum in (d, h, w) order.
struct NaivePool {
  std::vector<float> y;
  std::vector<int64_t> argmax;  // flat index into x
  Shape out_shape;
};

NaivePool naive_pool(const PoolCase& c, const Tensor& x) {
  NaivePool r;
  int64_t o[3];
  for (int a = 0; a < 3; ++a) o[a] = expected_len(c.shape[2 + a], c.k[a], c.s[a], c.ceil_mode);
  r.out_shape = {c.shape[0], c.shape[1], o[0], o[1], o[2]};
  const int64_t D = c.shape[2], H = c.shape[3], W = c.shape[4];
  for (int64_t p = 0; p < c.shape[0] * c.shape[1]; ++p)
    for (int64_t od = 0; od < o[0]; ++od)
      for (int64_t oh = 0; oh < o[1]; ++oh)
        for (int64_t ow = 0; ow < o[2]; ++ow) {
          int64_t best = -1;
          for (int64_t d = od * c.s[0]; d < std::min(D, od * c.s[0] + c.k[0]); ++d)
            for (int64_t h = oh * c.s[1]; h < std::min(H, oh * c.s[1] + c.k[1]); ++h)
              for (int64_t w = ow * c.s[2]; w < std::min(W, ow * c.s[2] + c.k[2]); ++w) {
                const int64_t i = ((p * D + d) * H + h) * W + w;
                if (best < 0 || x.data()[i] > x.data()[best]) best = i;
              }
          r.y.push_back(x.data()[best]);
          r.argmax.push_back(best);
        }
  return r;
}

// Distinct values at least 0.04 apart in random order, so a finite-difference step of 0.01 never
// changes which element is the maximum.
Tensor tie_free_tensor(const Shape& shape, uint32_t seed) {
  Tensor t = Tensor::empty(shape);
  std::vector<int64_t> order(size_t(t.numel()));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(seed));
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = float(order[size_t(i)]) * 0.04f - 1.f;
  return t;
}

const std::vector<PoolCase> kCases = {
    {{2, 3, 1, 9, 7}, {1, 3, 3}, {1, 2, 2}, true},    // LPIPS-style 2-D pooling, odd sizes
    {{1, 2, 1, 8, 10}, {1, 3, 3}, {1, 2, 2}, true},   // even sizes: last window clipped
    {{1, 2, 1, 8, 10}, {1, 3, 3}, {1, 2, 2}, false},  // same, floor mode drops it
    {{2, 2, 5, 6, 7}, {2, 3, 2}, {2, 2, 3}, true},    // 3-D, mixed kernels and strides
    {{1, 1, 5, 7, 10}, {1, 2, 3}, {3, 4, 3}, true},   // stride > kernel: the start rule bites
    {{1, 2, 4, 4, 4}, {2, 2, 2}, {2, 2, 2}, false},
};

}  // namespace

TEST_CASE("max_pool3d output sizes equal PyTorch's") {
  namespace kc = kernels::cpu;
  // (in, kernel, stride) → floor, ceil lengths as printed by torch.nn.functional.max_pool1d.
  struct Row { int64_t in, k, s, floor_len, ceil_len; };
  for (Row r : {Row{63, 3, 2, 31, 31}, Row{47, 3, 2, 23, 23}, Row{64, 3, 2, 31, 32}, Row{6, 3, 2, 2, 3},
                Row{5, 1, 3, 2, 2}, Row{7, 2, 4, 2, 2}, Row{9, 3, 3, 3, 3}, Row{10, 3, 3, 3, 4}}) {
    CHECK(kc::max_pool_out_size(r.in, r.k, r.s, false) == r.floor_len);
    CHECK(kc::max_pool_out_size(r.in, r.k, r.s, true) == r.ceil_len);
    CHECK(expected_len(r.in, r.k, r.s, true) == r.ceil_len);
  }
  CHECK(kc::max_pool_out_size(2, 3, 2, true) == 1);  // a lone clipped window
  CHECK(kc::max_pool_out_size(1, 3, 2, true) == 0);  // PyTorch refuses this one
  // The SqueezeNet chain of a 128×96 slice after the stride-2 first conv: 63×47 → 31×23 → 15×11 → 7×5.
  Tensor x = Tensor::zeros({1, 1, 1, 63, 47});
  for (Shape want : {Shape{1, 1, 1, 31, 23}, Shape{1, 1, 1, 15, 11}, Shape{1, 1, 1, 7, 5}}) {
    x = max_pool3d(x, {1, 3, 3}, {1, 2, 2}, true);
    CHECK(x.shape() == want);
  }
}

TEST_CASE("max_pool3d forward and backward match naive loops") {
  uint32_t seed = 1;
  for (const PoolCase& c : kCases) {
    CAPTURE(shape_str(c.shape));
    Tensor x = random_tensor(c.shape, seed++);
    Tensor xg = x.clone().set_requires_grad(true);
    Tensor y = max_pool3d(xg, c.k, c.s, c.ceil_mode);
    NaivePool ref = naive_pool(c, x);
    REQUIRE(y.shape() == ref.out_shape);
    CHECK(y.to_vector() == ref.y);  // a max is exact
    {
      NoGradGuard ng;  // the forward that records no argmax
      CHECK(max_pool3d(xg, c.k, c.s, c.ceil_mode).to_vector() == ref.y);
    }

    Tensor dy = random_tensor(y.shape(), seed++);
    y.backward(dy);
    std::vector<double> dx(size_t(x.numel()), 0.0);
    for (size_t o = 0; o < ref.argmax.size(); ++o) dx[size_t(ref.argmax[o])] += dy.data()[o];
    std::vector<float> got = xg.grad().to_vector();
    for (size_t i = 0; i < dx.size(); ++i) CHECK(got[i] == doctest::Approx(dx[i]).epsilon(1e-6));
  }
}

TEST_CASE("max_pool3d backward by finite differences (inputs without ties)") {
  uint32_t seed = 100;
  for (const PoolCase& c : kCases) {
    CAPTURE(shape_str(c.shape));
    gradcheck([&](const std::vector<Tensor>& v) { return max_pool3d(v[0], c.k, c.s, c.ceil_mode); },
              {tie_free_tensor(c.shape, seed++)});
  }
}

TEST_CASE("max_pool3d: ties send the gradient to the first maximum; NaN propagates") {
  // Constant 1×1×1×6×6 input, 3×3 windows stride 2 (ceil): windows start at rows/cols 0, 2, 4
  // (the last one clipped); each window's first element is its top-left corner, so the corners
  // (0|2|4, 0|2|4) get one each, although rows/cols 2 and 4 also lie in the previous window.
  Tensor x = Tensor::full({1, 1, 1, 6, 6}, 0.5f).set_requires_grad(true);
  Tensor y = max_pool3d(x, {1, 3, 3}, {1, 2, 2}, true);
  REQUIRE(y.shape() == Shape{1, 1, 1, 3, 3});
  y.backward(Tensor::ones(y.shape()));
  std::vector<float> g = x.grad().to_vector();
  for (int64_t h = 0; h < 6; ++h)
    for (int64_t w = 0; w < 6; ++w) CHECK(g[size_t(h * 6 + w)] == ((h % 2 == 0 && w % 2 == 0) ? 1.f : 0.f));

  // A NaN anywhere in a window (first, middle or last column, with or without argmax
  // recording) makes that output NaN, and the gradient goes to the NaN.
  for (int64_t at : {0, 4, 8, 5}) {
    Tensor n = random_tensor({1, 1, 1, 3, 3}, 9);
    n.data()[at] = std::numeric_limits<float>::quiet_NaN();
    {
      NoGradGuard ng;
      CHECK(std::isnan(max_pool3d(n, {1, 3, 3}, {1, 2, 2}, false).item()));
    }
    n.set_requires_grad(true);
    Tensor yn = max_pool3d(n, {1, 3, 3}, {1, 2, 2}, false);
    CHECK(std::isnan(yn.item()));
    yn.backward(Tensor::ones({1, 1, 1, 1, 1}));
    for (int64_t i = 0; i < 9; ++i) CHECK(n.grad().data()[i] == (i == at ? 1.f : 0.f));
  }
  // The same in a window clipped by ceil_mode: 3×4 input, windows at columns 0 and 2 (2 wide).
  Tensor c = random_tensor({1, 1, 1, 3, 4}, 10);
  c.data()[7] = std::numeric_limits<float>::quiet_NaN();  // row 1, column 3
  c.set_requires_grad(true);
  Tensor yc = max_pool3d(c, {1, 3, 3}, {1, 2, 2}, true);
  REQUIRE(yc.shape() == Shape{1, 1, 1, 1, 2});
  CHECK_FALSE(std::isnan(yc.data()[0]));
  CHECK(std::isnan(yc.data()[1]));
  yc.backward(Tensor::from_vector({1, 1, 1, 1, 2}, {0.f, 1.f}));
  CHECK(c.grad().data()[7] == 1.f);
}

TEST_CASE("max_pool3d is bitwise identical for 1 and 2 threads") {
  Tensor x = random_tensor({3, 40, 1, 63, 47}, 7);
  Tensor dy = random_tensor({3, 40, 1, 31, 23}, 8);
  auto run = [&] {
    Tensor xg = x.clone().set_requires_grad(true);
    Tensor y = max_pool3d(xg, {1, 3, 3}, {1, 2, 2}, true);
    y.backward(dy);
    std::vector<float> out = y.to_vector();
    std::vector<float> g = xg.grad().to_vector();
    out.insert(out.end(), g.begin(), g.end());
    return out;
  };
  std::vector<float> one = with_threads(1, run), two = with_threads(2, run);
  CHECK(one == two);
}

TEST_CASE("max_pool3d rejects bad input with the shapes in the message") {
  CHECK_THROWS_WITH_AS(max_pool3d(Tensor::zeros({1, 1, 1, 2, 5}), {1, 3, 3}, {1, 2, 2}, false),
                       doctest::Contains("smaller than the kernel on axis 3 (input (1, 1, 1, 2, 5)"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(max_pool3d(Tensor::zeros({1, 9, 9}), {1, 3, 3}, {1, 2, 2}, true),
                       doctest::Contains("must be 5-D"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(max_pool3d(Tensor::zeros({1, 1, 4, 4, 4}), {0, 2, 2}, {1, 1, 1}, true),
                       doctest::Contains("kernel and stride must be >= 1"), std::invalid_argument);
}
