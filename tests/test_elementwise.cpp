// Elementwise ops: broadcasting binary ops against a naive index-mapping reference, activations
// against libm in double, special values at the kinks, gradients by finite differences.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "engine/ops.h"
#include "gradcheck.h"

using namespace cpets;
using cpets::testing::fine_step;
using cpets::testing::gradcheck;
using cpets::testing::random_tensor;

namespace {

// out[i] = f(a[ia], b[ib]) with the broadcast index mapping written out per element.
Tensor reference_binary(const Tensor& a, const Tensor& b, const std::function<double(double, double)>& f) {
  const size_t n = std::max(a.dim(), b.dim());
  Shape sa(n, 1), sb(n, 1), so(n);
  for (size_t i = 0; i < size_t(a.dim()); ++i) sa[n - a.dim() + i] = a.shape()[i];
  for (size_t i = 0; i < size_t(b.dim()); ++i) sb[n - b.dim() + i] = b.shape()[i];
  for (size_t i = 0; i < n; ++i) so[i] = std::max(sa[i], sb[i]);
  Tensor out = Tensor::empty(so);
  for (int64_t o = 0; o < out.numel(); ++o) {
    int64_t rem = o, ia = 0, ib = 0, stride_a = 1, stride_b = 1;
    for (size_t d = n; d-- > 0;) {
      const int64_t idx = rem % so[d];
      rem /= so[d];
      ia += (sa[d] == 1 ? 0 : idx) * stride_a;
      ib += (sb[d] == 1 ? 0 : idx) * stride_b;
      stride_a *= sa[d];
      stride_b *= sb[d];
    }
    out.data()[o] = float(f(a.data()[ia], b.data()[ib]));
  }
  return out;
}

void check_close(const Tensor& got, const Tensor& want, double rtol = 1e-6, double atol = 1e-7) {
  REQUIRE(got.shape() == want.shape());
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double g = got.data()[i], w = want.data()[i];
    if (std::abs(g - w) > atol + rtol * std::abs(w)) {
      FAIL_CHECK("element " << i << ": got " << g << ", want " << w);
      return;
    }
  }
}

struct BinaryCase {
  Shape a, b;
};

const std::vector<BinaryCase> kBroadcastCases = {
    {{5, 7}, {5, 7}},                  // same shape
    {{2, 3, 1, 4}, {3, 5, 1}},         // both sides stretch, different ranks
    {{2, 3, 4, 5, 6}, {1, 3, 1, 1, 1}},  // per-channel
    {{2, 3, 4, 5, 6}, {2, 3, 1, 1, 1}},  // per-sample, per-channel
    {{4, 3, 7}, {7}},                  // per-last-dim
    {{1, 3, 7}, {4, 1, 1}},
    {{}, {2, 3}},                      // 0-d operand
    {{3, 1}, {1}},
};

}  // namespace

TEST_CASE("binary ops match the naive broadcast reference") {
  const std::vector<std::pair<const char*, std::function<Tensor(const Tensor&, const Tensor&)>>> ops = {
      {"add", [](const Tensor& a, const Tensor& b) { return add(a, b); }},
      {"sub", [](const Tensor& a, const Tensor& b) { return sub(a, b); }},
      {"mul", [](const Tensor& a, const Tensor& b) { return mul(a, b); }},
      {"div", [](const Tensor& a, const Tensor& b) { return div(a, b); }},
  };
  const std::vector<std::function<double(double, double)>> refs = {
      [](double x, double y) { return x + y; }, [](double x, double y) { return x - y; },
      [](double x, double y) { return x * y; }, [](double x, double y) { return x / y; }};
  uint32_t seed = 1;
  for (const BinaryCase& c : kBroadcastCases) {
    Tensor a = random_tensor(c.a, seed++), b = random_tensor(c.b, seed++, 0.5f, 1.5f);
    for (size_t k = 0; k < ops.size(); ++k) {
      CAPTURE(ops[k].first);
      CAPTURE(shape_str(c.a));
      CAPTURE(shape_str(c.b));
      check_close(ops[k].second(a, b), reference_binary(a, b, refs[k]));
      check_close(ops[k].second(b, a), reference_binary(b, a, refs[k]));  // broadcast on the other side
    }
  }
}

TEST_CASE("binary ops on large tensors: rows longer than one parallel chunk, many short rows") {
  for (const BinaryCase& c : std::vector<BinaryCase>{{{100003}, {100003}},
                                                      {{2, 3, 40001}, {1, 3, 1}},
                                                      {{50001, 3}, {3}},
                                                      {{3, 70000}, {70000}}}) {
    CAPTURE(shape_str(c.a));
    Tensor a = random_tensor(c.a, 7), b = random_tensor(c.b, 8, 0.5f, 1.5f);
    check_close(add(a, b), reference_binary(a, b, [](double x, double y) { return x + y; }));
    check_close(div(b, a), reference_binary(b, a, [](double x, double y) { return x / y; }), 1e-6, 1e-6);
  }
}

TEST_CASE("binary ops: gradients by finite differences, broadcasting reduced back") {
  uint32_t seed = 100;
  for (const BinaryCase& c : kBroadcastCases) {
    CAPTURE(shape_str(c.a));
    CAPTURE(shape_str(c.b));
    Tensor a = random_tensor(c.a, seed++), b = random_tensor(c.b, seed++, 0.5f, 1.5f);
    gradcheck([](const std::vector<Tensor>& x) { return add(x[0], x[1]); }, {a, b});
    gradcheck([](const std::vector<Tensor>& x) { return sub(x[0], x[1]); }, {a, b});
    gradcheck([](const std::vector<Tensor>& x) { return mul(x[0], x[1]); }, {a, b});
    gradcheck([](const std::vector<Tensor>& x) { return div(x[0], x[1]); }, {a, b}, fine_step());
  }
}

TEST_CASE("binary ops: only the input that requires grad gets one") {
  Tensor a = random_tensor({2, 3}, 1).set_requires_grad(true);
  Tensor b = random_tensor({3}, 2, 0.5f, 1.5f);
  mul(a, b).backward(Tensor::ones({2, 3}));
  CHECK(a.grad().defined());
  CHECK_FALSE(b.grad().defined());
  check_close(a.grad(), reference_binary(Tensor::ones({2, 3}), b, [](double, double y) { return y; }));
}

TEST_CASE("empty tensors pass through elementwise ops and their gradients") {
  Tensor a = Tensor::zeros({0, 3}).set_requires_grad(true);
  Tensor b = Tensor::ones({3}).set_requires_grad(true);
  Tensor y = silu(mul(a, b) + 1.f);
  CHECK(y.shape() == Shape{0, 3});
  y.backward(Tensor::zeros({0, 3}));
  CHECK(a.grad().shape() == Shape{0, 3});
  CHECK(b.grad().to_vector() == std::vector<float>{0, 0, 0});
}

TEST_CASE("binary ops: incompatible shapes give a message with both shapes") {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4});
  CHECK_THROWS_WITH_AS(add(a, b), doctest::Contains("add: shapes (2, 3) and (4) cannot be broadcast"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(mul(Tensor::zeros({2, 3, 4}), Tensor::zeros({3, 1, 5})),
                       doctest::Contains("(2, 3, 4) and (3, 1, 5)"), std::invalid_argument);
  CHECK_THROWS_WITH(div(a, Tensor::zeros({3, 3})), doctest::Contains("dimension -2 is 2 vs 3"));
}

TEST_CASE("scalar ops and neg: values and gradients") {
  Tensor a = random_tensor({3, 5}, 3);
  check_close(add_scalar(a, 2.5f), reference_binary(a, Tensor::scalar(2.5f), [](double x, double y) { return x + y; }));
  check_close(mul_scalar(a, -3.f), reference_binary(a, Tensor::scalar(-3.f), [](double x, double y) { return x * y; }));
  check_close(neg(a), reference_binary(a, Tensor::scalar(0.f), [](double x, double) { return -x; }));
  check_close(a - 1.f, reference_binary(a, Tensor::scalar(1.f), [](double x, double y) { return x - y; }));
  gradcheck([](const std::vector<Tensor>& x) { return add_scalar(x[0], 2.5f); }, {a});
  gradcheck([](const std::vector<Tensor>& x) { return mul_scalar(x[0], -3.f); }, {a});
  gradcheck([](const std::vector<Tensor>& x) { return -x[0]; }, {a});
}

namespace {

struct UnaryCase {
  std::string name;
  std::function<Tensor(const Tensor&)> op;
  std::function<double(double)> ref;
  float lo, hi;                  // input range for the gradient check
  std::vector<float> kinks;      // points where the derivative jumps (kept away from in gradcheck)
};

// ½x(1 + erf(x/√2)) written with erfc so the double reference keeps precision in the left tail.
double gelu_ref(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }

const std::vector<UnaryCase> kUnary = {
    {"silu", [](const Tensor& x) { return silu(x); }, [](double x) { return x / (1 + std::exp(-x)); }, -4, 4, {}},
    {"gelu", [](const Tensor& x) { return gelu(x); }, gelu_ref, -4, 4, {}},
    {"leaky_relu", [](const Tensor& x) { return leaky_relu(x, 0.2f); },
     [](double x) { return x > 0 ? x : 0.2 * x; }, -2, 2, {0.f}},
    {"relu", [](const Tensor& x) { return relu(x); }, [](double x) { return x > 0 ? x : 0.0; }, -2, 2, {0.f}},
    {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, [](double x) { return 1 / (1 + std::exp(-x)); }, -5, 5, {}},
    {"tanh", [](const Tensor& x) { return cpets::tanh(x); }, [](double x) { return std::tanh(x); }, -3, 3, {}},
    {"exp", [](const Tensor& x) { return cpets::exp(x); }, [](double x) { return std::exp(x); }, -2, 2, {}},
    {"log", [](const Tensor& x) { return cpets::log(x); }, [](double x) { return std::log(x); }, 0.3f, 3, {}},
    {"clamp", [](const Tensor& x) { return clamp(x, -0.5f, 0.7f); },
     [](double x) { return std::min(std::max(x, -0.5), 0.7); }, -2, 2, {-0.5f, 0.7f}},
};

// Random values in [lo, hi] nudged at least 0.05 away from every kink.
Tensor away_from_kinks(const Shape& shape, uint32_t seed, const UnaryCase& c) {
  Tensor t = random_tensor(shape, seed, c.lo, c.hi);
  for (int64_t i = 0; i < t.numel(); ++i)
    for (float k : c.kinks)
      if (std::abs(t.data()[i] - k) < 0.05f) t.data()[i] = k + (t.data()[i] < k ? -0.05f : 0.05f);
  return t;
}

}  // namespace

TEST_CASE("activations match libm in double over a wide range, including large chunked inputs") {
  for (const UnaryCase& c : kUnary) {
    CAPTURE(c.name);
    const bool positive_only = c.lo > 0;
    for (int64_t n : {int64_t(1001), int64_t(70001)}) {
      Tensor x = random_tensor({n}, uint32_t(n), positive_only ? 1e-3f : -20.f, 20.f);
      Tensor want = Tensor::empty(x.shape());
      for (int64_t i = 0; i < n; ++i) want.data()[i] = float(c.ref(x.data()[i]));
      check_close(c.op(x), want, 2e-6, 1e-30);
    }
  }
}

TEST_CASE("activations: gradients by finite differences on odd shapes") {
  uint32_t seed = 500;
  for (const UnaryCase& c : kUnary) {
    CAPTURE(c.name);
    Tensor x = away_from_kinks({3, 5, 7}, seed++, c);
    gradcheck([&](const std::vector<Tensor>& in) { return c.op(in[0]); }, {x}, fine_step());
  }
}

TEST_CASE("special values: kinks take PyTorch's one-sided derivative; log(0) is -inf; no overflow") {
  Tensor x = Tensor::from_vector({5}, {-0.5f, 0.f, 0.7f, -3.f, 3.f});
  x.set_requires_grad(true);
  auto grad_of = [&](const std::function<Tensor(const Tensor&)>& f) {
    x.zero_grad();
    f(x).backward(Tensor::ones({5}));
    return x.grad().to_vector();
  };
  CHECK(grad_of([](const Tensor& t) { return relu(t); }) == std::vector<float>{0, 0, 1, 0, 1});
  CHECK(grad_of([](const Tensor& t) { return leaky_relu(t, 0.2f); }) == std::vector<float>{0.2f, 0.2f, 1, 0.2f, 1});
  // clamp passes the gradient at both ends of [lo, hi] and blocks it outside.
  CHECK(grad_of([](const Tensor& t) { return clamp(t, -0.5f, 0.7f); }) == std::vector<float>{1, 1, 1, 0, 0});
  CHECK(clamp(x, -0.5f, 0.7f).to_vector() == std::vector<float>{-0.5f, 0.f, 0.7f, -0.5f, 0.7f});

  Tensor z = Tensor::from_vector({1}, {0.f});
  CHECK(cpets::log(z).item() == -std::numeric_limits<float>::infinity());
  Tensor big = Tensor::from_vector({4}, {-200.f, -90.f, 90.f, 200.f});
  for (float v : sigmoid(big).to_vector()) CHECK(std::isfinite(v));
  std::vector<float> s = silu(big).to_vector();
  CHECK(s[0] == doctest::Approx(0.0));
  CHECK(s[3] == 200.f);
  CHECK(sigmoid(big).to_vector()[3] == 1.f);
  CHECK_THROWS_WITH(clamp(x, 1.f, 0.f), doctest::Contains("lower bound"));
}

TEST_CASE("operator sugar composes with autograd") {
  Tensor a = random_tensor({4}, 1), b = random_tensor({4}, 2, 0.5f, 1.5f);
  gradcheck([](const std::vector<Tensor>& x) { return (x[0] * x[1] + x[0] / x[1] - x[1]) * 2.f - 1.f; }, {a, b},
            fine_step());
}

namespace {

// Dense inputs for GELU: every 1e-4 over [−10, 10] (the left tail reaches GELU(−10) ≈ −7.6e−23),
// tiny magnitudes near 0, and far values up to where x·Φ(x) underflows float and beyond.
std::vector<float> gelu_grid() {
  std::vector<float> xs;
  for (int i = -100000; i <= 100000; ++i) xs.push_back(float(i) * 1e-4f);
  for (float m = 1e-38f; m < 1.f; m *= 7.3f) {
    xs.push_back(m);
    xs.push_back(-m);
  }
  for (float v : {-2.9999998f, -3.f, -3.0000002f, 2.9999998f, 3.f, 3.0000002f, -12.f, -13.f, -13.5f, -14.f, -20.f,
                  -37.f, -40.f, -100.f, -1e30f, 12.f, 40.f, 1e30f})
    xs.push_back(v);
  return xs;
}

double normal_cdf_ref(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }
double normal_pdf_ref(double x) { return std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI); }

}  // namespace

TEST_CASE("gelu and its derivative match double erfc within 2e-7 relative over a dense grid, incl. the left tail") {
  const std::vector<float> xs = gelu_grid();
  Tensor x = Tensor::from_vector({int64_t(xs.size())}, xs).set_requires_grad(true);
  Tensor y = gelu(x);
  y.backward(Tensor::ones(x.shape()));
  const float* got = y.data();
  const float* dgot = x.grad().data();
  int bad = 0;
  for (size_t i = 0; i < xs.size() && bad < 5; ++i) {
    const double v = xs[i], cdf = normal_cdf_ref(v), pdf = normal_pdf_ref(v);
    const double want = v * cdf;
    // Relative, with an absolute floor of two float subnormal steps for results that underflow.
    if (!(std::abs(got[i] - want) <= 2e-7 * std::abs(want) + 3e-45)) {
      ++bad;
      FAIL_CHECK("gelu(" << v << ") = " << got[i] << ", want " << want);
    }
    // Φ(x) + x·φ(x) changes sign near x = −0.75, where the two terms cancel: relative to the
    // larger term there, not to the (vanishing) sum.
    const double dwant = cdf + v * pdf, scale = std::max(std::abs(dwant), 1e-3 * (cdf + std::abs(v) * pdf));
    if (!(std::abs(dgot[i] - dwant) <= 2e-7 * scale + 3e-45)) {
      ++bad;
      FAIL_CHECK("gelu'(" << v << ") = " << dgot[i] << ", want " << dwant);
    }
  }
  // Special values: ±inf and NaN behave as x·Φ(x) does in double.
  Tensor s = gelu(Tensor::from_vector({3}, {std::numeric_limits<float>::infinity(),
                                            -std::numeric_limits<float>::infinity(),
                                            std::numeric_limits<float>::quiet_NaN()}));
  CHECK(s.data()[0] == std::numeric_limits<float>::infinity());
  CHECK(std::isnan(s.data()[2]));
}

TEST_CASE("geglu equals chunk -> gelu -> mul bitwise, forward and backward; gradcheck; errors") {
  for (const Shape& shape : {Shape{3, 5, 14}, Shape{2, 40002}, Shape{1, 2}, Shape{6}}) {
    CAPTURE(shape_str(shape));
    Tensor x = random_tensor(shape, 77, -6.f, 6.f).set_requires_grad(true);
    Shape half = shape;
    half.back() /= 2;
    Tensor gy = random_tensor(half, 78);
    Tensor fused = geglu(x);
    fused.backward(gy);
    Tensor dx_fused = x.grad().clone();
    x.zero_grad();
    std::vector<Tensor> ab = chunk(x, 2, -1);
    Tensor composed = mul(ab[0], gelu(ab[1]));
    composed.backward(gy);
    REQUIRE(fused.shape() == composed.shape());
    CHECK(std::equal(fused.data(), fused.data() + fused.numel(), composed.data()));
    CHECK(std::equal(dx_fused.data(), dx_fused.data() + dx_fused.numel(), x.grad().data()));
  }
  gradcheck([](const std::vector<Tensor>& in) { return geglu(in[0]); }, {random_tensor({3, 5, 2 * 7}, 79, -3.f, 3.f)},
            fine_step());
  CHECK_THROWS_WITH_AS(geglu(Tensor::zeros({4, 7})), doctest::Contains("(4, 7)"), std::invalid_argument);
  CHECK_THROWS_AS(geglu(Tensor::scalar(1.f)), std::invalid_argument);
}

namespace {

// Compares op(xs) with ref in double: relative 2e-7, with a floor of two subnormal steps; a
// reference beyond float's range must come out as ±inf.
void check_dense(const std::function<Tensor(const Tensor&)>& op, const std::function<double(double)>& ref,
                 const std::vector<float>& xs) {
  Tensor y = op(Tensor::from_vector({int64_t(xs.size())}, xs));
  int bad = 0;
  for (size_t i = 0; i < xs.size() && bad < 5; ++i) {
    const double want = ref(xs[i]), got = y.data()[i];
    const bool ok = std::abs(want) > std::numeric_limits<float>::max()
                        ? got == want || (std::isinf(got) && (got > 0) == (want > 0))
                        : std::abs(got - want) <= 2e-7 * std::abs(want) + 3e-45;
    if (!ok) {
      ++bad;
      FAIL_CHECK("f(" << xs[i] << ") = " << got << ", want " << want);
    }
  }
}

std::vector<float> grid(double lo, double hi, double step) {
  std::vector<float> xs;
  for (double v = lo; v <= hi; v += step) xs.push_back(float(v));
  return xs;
}

}  // namespace

TEST_CASE("exp, tanh and log (libm in float) match double within 2e-7 relative over dense grids and extremes") {
  // exp: from where it underflows float (subnormal results) to past where it overflows.
  check_dense([](const Tensor& t) { return cpets::exp(t); }, [](double x) { return std::exp(x); },
              grid(-110, 95, 1e-3));
  // tanh: dense over [−20, 20], and magnitudes from 1e-38 up, where tanh x ≈ x.
  std::vector<float> t = grid(-20, 20, 1e-4);
  for (float m = 1e-38f; m < 1e30f; m *= 3.1f) {
    t.push_back(m);
    t.push_back(-m);
  }
  check_dense([](const Tensor& v) { return cpets::tanh(v); }, [](double x) { return std::tanh(x); }, t);
  // log: every binade from the smallest subnormal to the largest float, dense around 1.
  std::vector<float> l = grid(0.5, 2.0, 1e-5);
  for (double v = std::numeric_limits<float>::denorm_min(); v < std::numeric_limits<float>::max(); v *= 1.0007)
    l.push_back(float(v));
  l.push_back(std::numeric_limits<float>::max());
  check_dense([](const Tensor& v) { return cpets::log(v); }, [](double x) { return std::log(x); }, l);
  // Special values as libm.
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> e = cpets::exp(Tensor::from_vector({4}, {inf, -inf, 89.f, nan})).to_vector();
  CHECK(e[0] == inf);
  CHECK(e[1] == 0.f);
  CHECK(e[2] == inf);
  CHECK(std::isnan(e[3]));
  std::vector<float> h = cpets::tanh(Tensor::from_vector({3}, {inf, -inf, nan})).to_vector();
  CHECK(h[0] == 1.f);
  CHECK(h[1] == -1.f);
  CHECK(std::isnan(h[2]));
  std::vector<float> g = cpets::log(Tensor::from_vector({5}, {0.f, -0.f, -1.f, inf, nan})).to_vector();
  CHECK(g[0] == -inf);
  CHECK(g[1] == -inf);
  CHECK(std::isnan(g[2]));
  CHECK(g[3] == inf);
  CHECK(std::isnan(g[4]));
}

TEST_CASE("gelu: blocks within ±3 (cheap path) and blocks with a tail value give the same bits") {
  // 48 values within ±3: alone, each block of 16 takes the cheap path; with one value of 5 put in
  // every block, the same values go through the full formula.
  std::vector<float> inner(48), mixed(48);
  for (int i = 0; i < 48; ++i) inner[i] = mixed[i] = -3.f + 6.f * float(i) / 47.f;
  for (int b = 0; b < 3; ++b) mixed[b * 16 + 7] = 5.f;
  Tensor xi = Tensor::from_vector({48}, inner).set_requires_grad(true);
  Tensor xm = Tensor::from_vector({48}, mixed).set_requires_grad(true);
  Tensor yi = gelu(xi), ym = gelu(xm);
  yi.backward(Tensor::ones({48}));
  ym.backward(Tensor::ones({48}));
  for (int i = 0; i < 48; ++i) {
    if (i % 16 == 7) continue;
    CAPTURE(i);
    CHECK(yi.data()[i] == ym.data()[i]);
    CHECK(xi.grad().data()[i] == xm.grad().data()[i]);
  }
}

TEST_CASE("gelu, geglu and chunk backward: 1 and 2 threads give the same bits") {
  auto run = [](int threads) {
    const int prev = omp_get_max_threads();
    omp_set_num_threads(threads);
    Tensor x = random_tensor({37, 2 * 1501}, 90, -5.f, 5.f).set_requires_grad(true);
    Tensor gy = random_tensor({37, 1501}, 91);
    std::vector<Tensor> ab = chunk(x, 2, -1);
    Tensor y = geglu(x) + mul(ab[0], gelu(ab[1]));
    y.backward(gy);
    omp_set_num_threads(prev);
    return std::vector<Tensor>{y.detach(), x.grad()};
  };
  const std::vector<Tensor> one = run(1), two = run(2);
  for (size_t k = 0; k < one.size(); ++k)
    CHECK(std::equal(one[k].data(), one[k].data() + one[k].numel(), two[k].data()));
}
