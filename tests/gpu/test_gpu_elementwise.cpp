// Elementwise ops and activations on CUDA tensors against the CPU backend: same shapes, the
// model's broadcasts (per channel, per last dimension), odd sizes and sizes that are not a
// multiple of 4 (the float4 path's tail).
#include "gpu_check.h"

#include "engine/ops.h"

using namespace cpets;
using namespace cpets::gpu_testing;
using cpets::testing::random_tensor;

namespace {
using Fn = std::function<Tensor(const std::vector<Tensor>&)>;
}

TEST_CASE("binary ops with broadcasting") {
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{7, 13}, {7, 13}},                     // same shape, odd sizes
      {{2, 5, 3, 4, 6}, {1, 5, 1, 1, 1}},     // per channel
      {{3, 9, 11}, {11}},                     // per last dimension
      {{4, 1, 5}, {1, 3, 1}},                 // both broadcast
      {{1001}, {1}},                          // scalar-like
      {{2, 64, 6, 8, 6}, {2, 64, 1, 1, 1}},   // the model's time/label embedding add
  };
  const std::vector<std::pair<const char*, Fn>> ops = {
      {"add", [](const std::vector<Tensor>& x) { return add(x[0], x[1]); }},
      {"sub", [](const std::vector<Tensor>& x) { return sub(x[0], x[1]); }},
      {"mul", [](const std::vector<Tensor>& x) { return mul(x[0], x[1]); }},
      {"div", [](const std::vector<Tensor>& x) { return div(x[0], x[1]); }},
  };
  uint32_t seed = 1;
  for (const auto& [sa, sb] : shapes)
    for (const auto& [name, f] : ops) {
      // Divisors kept away from 0 so the quotient's conditioning stays that of float32 rounding.
      Tensor a = random_tensor(sa, seed++), b = random_tensor(sb, seed++, 0.5f, 2.f);
      // Broadcast gradients are sums over the broadcast dimensions: n terms of |g·x| ≤ 4.
      const int64_t n = shape_numel(sa) / std::max<int64_t>(1, shape_numel(sb));
      check_against_cpu(std::string(name) + " " + shape_str(sa) + " ⊕ " + shape_str(sb), f, {a, b}, ulp_tol(2),
                        sum_tol(std::max<int64_t>(n, shape_numel(sb)), 4.0));
    }
}

TEST_CASE("unary ops and activations") {
  const std::vector<std::pair<const char*, Fn>> ops = {
      {"neg", [](const std::vector<Tensor>& x) { return neg(x[0]); }},
      {"add_scalar", [](const std::vector<Tensor>& x) { return add_scalar(x[0], 0.75f); }},
      {"mul_scalar", [](const std::vector<Tensor>& x) { return mul_scalar(x[0], -1.5f); }},
      {"silu", [](const std::vector<Tensor>& x) { return silu(x[0]); }},
      {"gelu", [](const std::vector<Tensor>& x) { return gelu(x[0]); }},
      {"leaky_relu", [](const std::vector<Tensor>& x) { return leaky_relu(x[0], 0.2f); }},
      {"relu", [](const std::vector<Tensor>& x) { return relu(x[0]); }},
      {"sigmoid", [](const std::vector<Tensor>& x) { return sigmoid(x[0]); }},
      {"tanh", [](const std::vector<Tensor>& x) { return tanh(x[0]); }},
      {"exp", [](const std::vector<Tensor>& x) { return exp(x[0]); }},
      {"clamp", [](const std::vector<Tensor>& x) { return clamp(x[0], -0.5f, 0.25f); }},
  };
  uint32_t seed = 100;
  for (const Shape& s : std::vector<Shape>{{1}, {3}, {4}, {1023}, {5, 7, 9}, {2, 16, 12, 16, 12}})
    for (const auto& [name, f] : ops) {
      // Activations compare at the ulp level except near their zeros, where the absolute error
      // of a few ulp of the terms matters: atol = 8u·max|x|.
      Tensor x = random_tensor(s, seed++, -4.f, 4.f);
      check_against_cpu(std::string(name) + " " + shape_str(s), f, {x}, {8 * kU, 8 * kU * 4},
                        {16 * kU, 16 * kU * 4});
    }
  Tensor pos = random_tensor({37, 5}, 7u, 0.1f, 5.f);
  check_against_cpu("log", [](const std::vector<Tensor>& x) { return log(x[0]); }, {pos}, {8 * kU, 8 * kU},
                    {8 * kU, 8 * kU});
}

TEST_CASE("geglu on odd and model shapes") {
  for (const Shape& s : std::vector<Shape>{{3, 10}, {2, 7, 18}, {2, 1152, 1024}}) {
    Tensor x = random_tensor(s, 77u, -3.f, 3.f);
    check_against_cpu("geglu " + shape_str(s), [](const std::vector<Tensor>& v) { return geglu(v[0]); }, {x},
                      {8 * kU, 8 * kU * 3}, {16 * kU, 16 * kU * 9});
  }
}

TEST_CASE("mixing devices is a clear error") {
  Tensor a = Tensor::ones({3}), b = Tensor::ones({3}, Device::cuda());
  try {
    add(a, b);
    FAIL("expected an error");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("different devices") != std::string::npos);
  }
}
