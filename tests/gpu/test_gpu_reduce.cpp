// Reductions and losses on CUDA tensors against the CPU backend: every axis pattern (rows mode,
// columns mode, alternating), odd sizes, tens of millions of elements (many blocks), determinism.
#include "gpu_check.h"

#include "engine/ops.h"

using namespace cpets;
using namespace cpets::gpu_testing;
using cpets::testing::random_tensor;

TEST_CASE("sum and mean over axes") {
  const Shape s = {3, 5, 7, 9};
  const std::vector<std::vector<int64_t>> axes_list = {{}, {0}, {1}, {3}, {-1}, {0, 2}, {1, 3}, {0, 1, 2}, {0, 3}};
  uint32_t seed = 1;
  for (const auto& axes : axes_list)
    for (bool keepdim : {false, true}) {
      Tensor x = random_tensor(s, seed++);
      int64_t n = 1;
      for (int64_t a : axes) n *= s[(a + 4) % 4];
      if (axes.empty()) n = shape_numel(s);
      const std::string what = "axes " + shape_str(axes) + (keepdim ? " keepdim" : "");
      check_against_cpu("sum " + what, [&](const std::vector<Tensor>& v) { return sum(v[0], axes, keepdim); }, {x},
                        sum_tol(n, 0.5), ulp_tol(0));
      check_against_cpu("mean " + what, [&](const std::vector<Tensor>& v) { return mean(v[0], axes, keepdim); }, {x},
                        sum_tol(n, 0.5 / double(n)), ulp_tol(1));
    }
}

TEST_CASE("large sums: many partial blocks, deterministic") {
  Tensor x = random_tensor({2, 3, 1 << 21}, 5u);  // 12.6 M elements
  check_against_cpu("sum all", [](const std::vector<Tensor>& v) { return sum(v[0]); }, {x},
                    sum_tol(x.numel(), 0.5), ulp_tol(0));
  check_against_cpu("sum last", [](const std::vector<Tensor>& v) { return sum(v[0], {-1}); }, {x},
                    sum_tol(1 << 21, 0.5), ulp_tol(0));
  check_against_cpu("sum first (columns)", [](const std::vector<Tensor>& v) { return sum(v[0], {0, 1}); }, {x},
                    sum_tol(6, 0.5), ulp_tol(0));
}

TEST_CASE("losses and their gradients") {
  for (const Shape& s : std::vector<Shape>{{7}, {3, 5, 11}, {2, 1, 48, 64, 48}}) {
    Tensor p = random_tensor(s, 11u), t = random_tensor(s, 12u);
    const int64_t n = p.numel();
    check_against_cpu("l1 " + shape_str(s), [](const std::vector<Tensor>& v) { return l1_loss(v[0], v[1]); }, {p, t},
                      sum_tol(n, 1.0 / double(n)), ulp_tol(1));
    check_against_cpu("mse " + shape_str(s), [](const std::vector<Tensor>& v) { return mse_loss(v[0], v[1]); },
                      {p, t}, sum_tol(n, 4.0 / double(n)), ulp_tol(1));
    check_against_cpu("lsgan " + shape_str(s), [](const std::vector<Tensor>& v) { return lsgan_loss(v[0], 1.f); },
                      {p}, sum_tol(n, 4.0 / double(n)), ulp_tol(1));
    // KL: terms 1 + lv − mu² − e^lv with |lv| ≤ 1, so |term| ≤ 5; exp differs by ulps, which
    // near lv = 0 is an absolute error of ulps of e (the gradient's e^lv − 1 cancels there).
    check_against_cpu("kl " + shape_str(s), [](const std::vector<Tensor>& v) { return kl_gaussian(v[0], v[1]); },
                      {p, t}, sum_tol(n, 16.0 / double(s[0])), {8 * kU, 8 * kU * 3.0 / double(s[0])});
  }
}

TEST_CASE("a loss on the GPU stays on the GPU") {
  Tensor p = random_tensor({4, 9}, 1u).to(Device::cuda()), t = random_tensor({4, 9}, 2u).to(Device::cuda());
  CHECK(l1_loss(p, t).device() == Device::cuda());
  CHECK_THROWS_AS(l1_loss(p, Tensor::zeros({4, 9})), std::invalid_argument);
}
