// Shape ops: reshape views, permute/transpose against naive index mapping (including the tiled
// transpose path on odd and large sizes), concat/slice/chunk against loops; gradients by finite
// differences; errors name the shapes.
#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>

#include "engine/ops.h"
#include "gradcheck.h"

using namespace cpets;
using cpets::testing::gradcheck;
using cpets::testing::random_tensor;

namespace {

std::vector<int64_t> strides_of(const Shape& s) {
  std::vector<int64_t> st(s.size());
  int64_t k = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = k;
    k *= s[i];
  }
  return st;
}

// out[i0..in] = x[j] where x index j has entry perm[d] = i_d.
Tensor reference_permute(const Tensor& x, const std::vector<int64_t>& perm) {
  Shape os(perm.size());
  for (size_t d = 0; d < perm.size(); ++d) os[d] = x.shape()[perm[d]];
  const std::vector<int64_t> xs = strides_of(x.shape());
  Tensor out = Tensor::empty(os);
  for (int64_t o = 0; o < out.numel(); ++o) {
    int64_t rem = o, src = 0;
    for (size_t d = os.size(); d-- > 0;) {
      src += (rem % os[d]) * xs[perm[d]];
      rem /= os[d];
    }
    out.data()[o] = x.data()[src];
  }
  return out;
}

}  // namespace

TEST_CASE("reshape is a view with a gradient reshaped back") {
  Tensor x = random_tensor({2, 3, 4}, 1);
  Tensor y = reshape(x, {4, -1});
  CHECK(y.shape() == Shape{4, 6});
  CHECK(y.same_storage(x));
  gradcheck([](const std::vector<Tensor>& in) { return reshape(in[0], {6, 4}) * 3.f; }, {x});
  CHECK_THROWS_WITH_AS(reshape(x, {5, -1}), doctest::Contains("reshape (2, 3, 4) to (5, -1)"), std::invalid_argument);
}

TEST_CASE("permute matches the naive index mapping for every permutation of a rank-4 tensor") {
  Tensor x = random_tensor({3, 4, 5, 6}, 2);
  std::vector<int64_t> perm{0, 1, 2, 3};
  do {
    CAPTURE(shape_str(perm));
    CHECK(permute(x, perm).to_vector() == reference_permute(x, perm).to_vector());
  } while (std::next_permutation(perm.begin(), perm.end()));
}

TEST_CASE("permute: attention-layout transposes on odd and large sizes, size-1 dimensions") {
  struct Case {
    Shape shape;
    std::vector<int64_t> perm;
  };
  for (const Case& c : std::vector<Case>{{{2, 70, 45}, {0, 2, 1}},        // (B,C,N) -> (B,N,C), not tile multiples
                                         {{2, 64, 2304}, {0, 2, 1}},      // model-size token layout
                                         {{2, 2304, 64}, {0, 2, 1}},
                                         {{2, 33, 4, 17}, {0, 2, 1, 3}},  // (B,N,H,d) -> (B,H,N,d): row copies
                                         {{3, 1, 5, 1, 7}, {4, 1, 2, 0, 3}},
                                         {{1000, 3}, {1, 0}},
                                         {{5}, {0}}}) {
    CAPTURE(shape_str(c.shape));
    Tensor x = random_tensor(c.shape, 3);
    CHECK(permute(x, c.perm).to_vector() == reference_permute(x, c.perm).to_vector());
  }
}

TEST_CASE("permute and transpose: gradients, negative dimensions, errors") {
  Tensor x = random_tensor({2, 3, 5}, 4);
  gradcheck([](const std::vector<Tensor>& in) { return permute(in[0], {2, 0, 1}); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return transpose(in[0], -1, 0); }, {x});
  CHECK(transpose(x, -1, -2).to_vector() == reference_permute(x, {0, 2, 1}).to_vector());
  CHECK_THROWS_WITH_AS(permute(x, {0, 1}), doctest::Contains("2 dimensions given for shape (2, 3, 5)"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(permute(x, {0, 1, 1}), doctest::Contains("appears twice"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(transpose(x, 0, 3), doctest::Contains("dimension 3 is out of range for shape (2, 3, 5)"),
                       std::out_of_range);
}

TEST_CASE("concat along any dimension matches loops; gradients split back") {
  Tensor a = random_tensor({2, 3, 4}, 5), b = random_tensor({2, 1, 4}, 6), c = random_tensor({2, 2, 4}, 7);
  Tensor y = concat({a, b, c}, 1);
  REQUIRE(y.shape() == Shape{2, 6, 4});
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 6; ++j)
      for (int64_t k = 0; k < 4; ++k) {
        const float want = j < 3   ? a.data()[(i * 3 + j) * 4 + k]
                           : j < 4 ? b.data()[(i * 1 + j - 3) * 4 + k]
                                   : c.data()[(i * 2 + j - 4) * 4 + k];
        CHECK(y.data()[(i * 6 + j) * 4 + k] == want);
      }
  Tensor p = random_tensor({3, 2}, 8), q = random_tensor({3, 5}, 9);
  Tensor z = concat({p, q}, -1);
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 7; ++j)
      CHECK(z.data()[i * 7 + j] == (j < 2 ? p.data()[i * 2 + j] : q.data()[i * 5 + j - 2]));
  CHECK(concat({p, p}, 0).to_vector().size() == 12);
  gradcheck([](const std::vector<Tensor>& in) { return concat(in, 1); }, {a, b, c});
  gradcheck([](const std::vector<Tensor>& in) { return concat(in, 0); }, {random_tensor({1, 3}, 1), random_tensor({2, 3}, 2)});
  // A part that needs no gradient gets none.
  Tensor r = random_tensor({3, 2}, 10).set_requires_grad(true);
  concat({r, q}, 1).backward(Tensor::ones({3, 7}));
  CHECK(r.grad().to_vector() == std::vector<float>(6, 1.f));
  CHECK_FALSE(q.grad().defined());
}

TEST_CASE("concat: errors name the parts' shapes") {
  CHECK_THROWS_WITH_AS(concat({Tensor::zeros({2, 3}), Tensor::zeros({3, 3})}, 1),
                       doctest::Contains("part 1 has shape (3, 3) but part 0 has (2, 3)"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(concat({Tensor::zeros({2, 3}), Tensor::zeros({2, 3, 1})}, 0),
                       doctest::Contains("(2, 3, 1)"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(concat({}, 0), doctest::Contains("no tensors"), std::invalid_argument);
  CHECK_THROWS_AS(concat({Tensor::zeros({2})}, 1), std::out_of_range);
}

TEST_CASE("slice: values, negative bounds, gradient scattered into zeros, errors") {
  Tensor x = random_tensor({3, 7, 2}, 11);
  Tensor y = slice(x, 1, 2, 5);
  REQUIRE(y.shape() == Shape{3, 3, 2});
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t k = 0; k < 2; ++k) CHECK(y.data()[(i * 3 + j) * 2 + k] == x.data()[(i * 7 + j + 2) * 2 + k]);
  CHECK(slice(x, -2, -5, -2).to_vector() == y.to_vector());
  CHECK(slice(x, 1, 4, 4).numel() == 0);
  gradcheck([](const std::vector<Tensor>& in) { return slice(in[0], 1, 2, 5); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return slice(in[0], 0, 1, 3); }, {x});
  CHECK_THROWS_WITH_AS(slice(x, 1, 5, 8), doctest::Contains("of shape (3, 7, 2): need 0 <= start <= end <= 7"),
                       std::out_of_range);
  CHECK_THROWS_AS(slice(x, 1, 4, 3), std::out_of_range);
}

TEST_CASE("slice of a large tensor along the outer dimension (rows longer than a parallel chunk)") {
  Tensor x = random_tensor({4, 50000}, 12);
  Tensor y = slice(x, 0, 1, 3);
  CHECK(std::equal(y.data(), y.data() + y.numel(), x.data() + 50000));
}

TEST_CASE("chunk: equal parts with their own gradients; indivisible sizes are an error") {
  Tensor x = random_tensor({2, 6, 3}, 13);
  std::vector<Tensor> parts = chunk(x, 3, 1);
  REQUIRE(parts.size() == 3);
  for (int64_t c = 0; c < 3; ++c) CHECK(parts[c].to_vector() == slice(x, 1, 2 * c, 2 * c + 2).to_vector());
  // GEGLU-style use: first half times the second half, both from one tensor.
  gradcheck([](const std::vector<Tensor>& in) {
    std::vector<Tensor> h = chunk(in[0], 2, -1);
    return h[0] * h[1];
  }, {random_tensor({3, 8}, 14)});
  CHECK_THROWS_WITH_AS(chunk(x, 4, 1), doctest::Contains("dimension 1 of shape (2, 6, 3) has size 6"),
                       std::invalid_argument);
}

namespace {

// Σ parts[c] · weights[c] over the chosen parts, summed to a scalar: its gradient with respect to
// x is weights[c] in part c's region of x and exactly zero in the regions of unused parts.
Tensor weighted_parts(const std::vector<Tensor>& parts, const std::vector<Tensor>& weights,
                      const std::vector<int>& used) {
  Tensor total;
  for (int c : used) {
    Tensor t = sum(parts[c] * weights[c]);
    total = total.defined() ? total + t : t;
  }
  return total;
}

}  // namespace

TEST_CASE("chunk backward: the input gradient is the used parts' gradients, zeros in unused parts") {
  const Shape shape{3, 9, 5};  // chunked into 3 along dimension 1: parts (3, 3, 5)
  std::vector<Tensor> weights;
  for (uint32_t c = 0; c < 3; ++c) weights.push_back(random_tensor({3, 3, 5}, 40 + c));
  for (const std::vector<int>& used : {std::vector<int>{1}, {0}, {2}, {0, 2}, {0, 1, 2}, {2, 0, 1}}) {
    CAPTURE(used.size());
    CAPTURE(used[0]);
    Tensor x = random_tensor(shape, 30).set_requires_grad(true);
    std::vector<Tensor> parts = chunk(x, 3, 1);
    weighted_parts(parts, weights, used).backward();
    REQUIRE(x.grad().defined());
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 9; ++j)
        for (int64_t k = 0; k < 5; ++k) {
          const int64_t c = j / 3;
          const bool is_used = std::find(used.begin(), used.end(), int(c)) != used.end();
          const float want = is_used ? weights[c].data()[(i * 3 + j % 3) * 5 + k] : 0.f;
          CHECK(x.grad().data()[(i * 9 + j) * 5 + k] == want);
        }
  }
}

TEST_CASE("chunk backward: a part used twice, a part as the backward root, and gradchecks") {
  Tensor x = random_tensor({4, 6}, 31).set_requires_grad(true);
  std::vector<Tensor> h = chunk(x, 2, 0);  // along the outer dimension: parts (2, 6)
  (h[1] * h[1] + h[1]).backward(Tensor::ones({2, 6}));
  for (int64_t i = 0; i < 24; ++i) CHECK(x.grad().data()[i] == (i < 12 ? 0.f : doctest::Approx(2.f * x.data()[i] + 1.f).epsilon(1e-6)));
  x.zero_grad();
  chunk(x, 3, -1)[2].backward(Tensor::full({4, 2}, 3.f));
  for (int64_t i = 0; i < 24; ++i) CHECK(x.grad().data()[i] == (i % 6 >= 4 ? 3.f : 0.f));
  // Each part is a slice with its own node: a second backward pass from another part adds that
  // part's gradient.
  x.zero_grad();
  std::vector<Tensor> q = chunk(x, 2, 1);
  q[0].backward(Tensor::ones({4, 3}));
  q[1].backward(Tensor::full({4, 3}, 2.f));
  for (int64_t i = 0; i < 24; ++i) CHECK(x.grad().data()[i] == (i % 6 < 3 ? 1.f : 2.f));
  // Only one of three parts, and two parts of four, through a non-linear function.
  gradcheck([](const std::vector<Tensor>& in) { return chunk(in[0], 3, 1)[1] * 2.f; }, {random_tensor({3, 9, 5}, 32)});
  gradcheck([](const std::vector<Tensor>& in) {
    std::vector<Tensor> p = chunk(in[0], 4, -1);
    return p[3] * p[0] + p[0];
  }, {random_tensor({5, 3, 8}, 33)});
}

TEST_CASE("chunk without gradients records nothing; slice backward writes zeros only outside the slice") {
  Tensor x = random_tensor({2, 4}, 34);
  for (const Tensor& p : chunk(x, 2, 1)) CHECK_FALSE(p.requires_grad());
  Tensor y = random_tensor({3, 7, 2}, 35).set_requires_grad(true);
  slice(y, 1, 2, 5).backward(Tensor::full({3, 3, 2}, 2.f));
  for (int64_t i = 0; i < y.numel(); ++i) {
    const int64_t j = (i / 2) % 7;
    CHECK(y.grad().data()[i] == (j >= 2 && j < 5 ? 2.f : 0.f));
  }
}
