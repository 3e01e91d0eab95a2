// sum / mean: every subset of axes against double loops, keepdim, negative axes, gradients,
// errors, and bitwise determinism for 1 vs 2 threads on ~10 M elements (also sum_to_shape).
#include <doctest/doctest.h>

#include <omp.h>

#include <cmath>

#include "engine/ops.h"
#include "gradcheck.h"

using namespace cpets;
using cpets::testing::gradcheck;
using cpets::testing::random_tensor;

namespace {

// Σ (or mean) over the axes in `mask`, in double, by visiting every element once.
std::vector<double> reference_reduce(const Tensor& x, const std::vector<bool>& mask, bool average) {
  const Shape& s = x.shape();
  int64_t kept = 1, count = 1;
  for (size_t d = 0; d < s.size(); ++d) (mask[d] ? count : kept) *= s[d];
  std::vector<double> out(kept, 0.0);
  for (int64_t i = 0; i < x.numel(); ++i) {
    int64_t rem = i, o = 0, stride = 1;
    for (size_t d = s.size(); d-- > 0;) {
      const int64_t idx = rem % s[d];
      rem /= s[d];
      if (!mask[d]) {
        o += idx * stride;
        stride *= s[d];
      }
    }
    out[o] += x.data()[i];
  }
  if (average)
    for (double& v : out) v /= double(count);
  return out;
}

void check_matches(const Tensor& got, const std::vector<double>& want, double rtol = 1e-6, double atol = 1e-6) {
  REQUIRE(size_t(got.numel()) == want.size());
  for (size_t i = 0; i < want.size(); ++i)
    if (std::abs(got.data()[i] - want[i]) > atol + rtol * std::abs(want[i])) {
      FAIL_CHECK("element " << i << ": got " << got.data()[i] << ", want " << want[i]);
      return;
    }
}

template <class F>
auto with_threads(int n, F&& f) {
  const int prev = omp_get_max_threads();
  omp_set_num_threads(n);
  auto r = f();
  omp_set_num_threads(prev);
  return r;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::equal(a.data(), a.data() + a.numel(), b.data());
}

}  // namespace

TEST_CASE("sum and mean over every subset of axes match double loops, with and without keepdim") {
  Tensor x = random_tensor({3, 4, 5, 7}, 1);
  for (int m = 0; m < 16; ++m) {
    std::vector<int64_t> axes;
    std::vector<bool> mask(4);
    Shape keep_shape, drop_shape;
    for (int d = 0; d < 4; ++d) {
      mask[d] = (m >> d) & 1;
      if (mask[d]) axes.push_back(d);
      keep_shape.push_back(mask[d] ? 1 : x.shape()[d]);
      if (!mask[d]) drop_shape.push_back(x.shape()[d]);
    }
    if (m == 0) continue;  // no axes would mean "all"; covered below
    CAPTURE(shape_str(axes));
    Tensor s = sum(x, axes), mk = mean(x, axes, true);
    CHECK(s.shape() == drop_shape);
    CHECK(mk.shape() == keep_shape);
    check_matches(s, reference_reduce(x, mask, false));
    check_matches(mk, reference_reduce(x, mask, true));
  }
  const std::vector<bool> all(4, true);
  CHECK(sum(x).shape() == Shape{});
  check_matches(sum(x), reference_reduce(x, all, false));
  check_matches(mean(x, {}, true), reference_reduce(x, all, true));
  CHECK(mean(x, {}, true).shape() == Shape{1, 1, 1, 1});
}

TEST_CASE("negative axes, size-1 dimensions and 0-d inputs") {
  Tensor x = random_tensor({2, 1, 3, 5}, 2);
  CHECK(sum(x, {-1, -3}).to_vector() == sum(x, {3, 1}).to_vector());
  check_matches(mean(x, {-1}), reference_reduce(x, {false, false, false, true}, true));
  Tensor s = Tensor::scalar(2.5f);
  CHECK(sum(s).item() == 2.5f);
  CHECK(mean(s).item() == 2.5f);
  CHECK(sum(Tensor::zeros({2, 0, 3}), {1}).to_vector() == std::vector<float>(6, 0.f));
}

TEST_CASE("large reductions: long rows, long columns, middle axes") {
  // Rows longer than a chunk (chunk partials), columns longer than a chunk (split r), many
  // short rows, and the per-channel bias-gradient pattern (B, C, S) summed over B and S.
  struct Case {
    Shape shape;
    std::vector<int64_t> axes;
  };
  for (const Case& c : std::vector<Case>{{{3, 100003}, {1}},
                                         {{200001, 3}, {0}},
                                         {{70001, 5}, {1}},
                                         {{2, 2500}, {0}},
                                         {{2, 7, 30001}, {0, 2}},
                                         {{3, 5000, 7, 3}, {1, 3}}}) {
    CAPTURE(shape_str(c.shape));
    Tensor x = random_tensor(c.shape, 3);
    std::vector<bool> mask(c.shape.size(), false);
    for (int64_t a : c.axes) mask[a] = true;
    check_matches(sum(x, c.axes), reference_reduce(x, mask, false), 1e-6, 1e-4);
    check_matches(mean(x, c.axes), reference_reduce(x, mask, true), 1e-6, 1e-7);
  }
}

TEST_CASE("sum and mean: gradients by finite differences") {
  Tensor x = random_tensor({2, 3, 5}, 4);
  gradcheck([](const std::vector<Tensor>& in) { return sum(in[0], {0, 2}); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return mean(in[0], {-1}, true); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return mean(in[0]); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return sum(in[0], {1}, true) * in[0]; }, {x});
}

TEST_CASE("sum and mean: bad axes are named with the shape") {
  Tensor x = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH_AS(sum(x, {2}), doctest::Contains("sum: axis 2 is out of range for shape (2, 3)"),
                       std::out_of_range);
  CHECK_THROWS_WITH_AS(mean(x, {-3}), doctest::Contains("mean: axis -3"), std::out_of_range);
  CHECK_THROWS_WITH_AS(sum(x, {1, -1}), doctest::Contains("appears twice"), std::invalid_argument);
}

TEST_CASE("determinism: 1 and 2 threads give bitwise identical sums on ~10 M elements") {
  Tensor x = random_tensor({2, 32, 48, 64, 48}, 5);  // 9.4 M elements, the model's activation size
  auto run = [&] {
    return std::vector<Tensor>{sum(x), mean(x, {0, 2, 3, 4}), mean(x, {-1}), sum(x, {0}), sum(x, {1, 3}, true),
                               sum_to_shape(x, {32, 1, 1, 1}), sum_to_shape(x, {64, 48})};
  };
  std::vector<Tensor> one = with_threads(1, run), two = with_threads(2, run);
  for (size_t i = 0; i < one.size(); ++i) {
    CAPTURE(i);
    CHECK(bitwise_equal(one[i], two[i]));
  }
  // And accurate: the full sum against a double loop.
  double want = 0;
  for (int64_t i = 0; i < x.numel(); ++i) want += x.data()[i];
  CHECK(one[0].item() == doctest::Approx(want).epsilon(1e-6));
}

TEST_CASE("sum_to_shape: broadcast gradients reduced back, against loops") {
  Tensor g = random_tensor({2, 3, 4, 5}, 6);
  check_matches(sum_to_shape(g, {3, 1, 1}), reference_reduce(g, {true, false, true, true}, false));
  check_matches(sum_to_shape(g, {5}), reference_reduce(g, {true, true, true, false}, false));
  check_matches(sum_to_shape(g, {2, 1, 4, 1}), reference_reduce(g, {false, true, false, true}, false));
  CHECK(sum_to_shape(g, {3, 1, 1}).shape() == Shape{3, 1, 1});
  CHECK_THROWS_WITH(sum_to_shape(g, {3, 5}), doctest::Contains("is not a broadcast of (3, 5)"));
}
