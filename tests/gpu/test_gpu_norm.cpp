// GroupNorm (+SiLU), LayerNorm, BatchNorm3d and softmax on CUDA tensors against the CPU backend,
// on odd shapes and on the model's shapes (groups of millions of elements), with determinism.
#include "gpu_check.h"

#include "engine/ops.h"

using namespace cpets;
using namespace cpets::gpu_testing;
using cpets::testing::random_tensor;

TEST_CASE("group_norm and group_norm_silu") {
  struct Case {
    Shape shape;
    int64_t groups;
  };
  const std::vector<Case> cases = {{{2, 6, 3, 5, 7}, 3}, {{1, 4, 9}, 2}, {{3, 8, 5, 1, 3}, 8}, {{2, 32, 24, 32, 24}, 32}};
  uint32_t seed = 1;
  for (const Case& c : cases) {
    const int64_t C = c.shape[1];
    Tensor x = random_tensor(c.shape, seed++, -2.f, 3.f);
    Tensor gamma = random_tensor({C}, seed++, 0.5f, 1.5f), beta = random_tensor({C}, seed++);
    const int64_t n = x.numel() / (c.shape[0] * C) * (C / c.groups);  // elements per group
    for (bool fused : {false, true}) {
      auto f = [&](const std::vector<Tensor>& v) {
        return fused ? group_norm_silu(v[0], c.groups, v[1], v[2], 1e-5f) : group_norm(v[0], c.groups, v[1], v[2], 1e-5f);
      };
      // The parameter gradients are sums over B·S elements of |g·x̂| ≲ 2: their tolerance
      // scales with that count; dx with the group's size (its mean terms).
      check_against_cpu(std::string(fused ? "group_norm_silu " : "group_norm ") + shape_str(c.shape), f,
                        {x, gamma, beta}, norm_tol(), {64 * kU, 64 * kU * std::sqrt(double(n)) * 2});
    }
  }
}

TEST_CASE("group_norm at the full model resolution (96x128x96)") {
  Tensor x = random_tensor({1, 16, 96, 128, 96}, 9u);
  Tensor gamma = random_tensor({16}, 10u, 0.5f, 1.5f), beta = random_tensor({16}, 11u);
  const int64_t n = 96 * 128 * 96 * 2;
  check_against_cpu("group_norm_silu full", [](const std::vector<Tensor>& v) { return group_norm_silu(v[0], 8, v[1], v[2], 1e-6f); },
                    {x, gamma, beta}, norm_tol(), {64 * kU, 64 * kU * std::sqrt(double(n)) * 2});
}

TEST_CASE("layer_norm with and without affine parameters") {
  for (const Shape& s : std::vector<Shape>{{5, 7}, {2, 33, 65}, {2, 1152, 512}}) {
    const int64_t D = s.back();
    Tensor x = random_tensor(s, 21u, -2.f, 2.f), g = random_tensor({D}, 22u, 0.5f, 1.5f), b = random_tensor({D}, 23u);
    const int64_t rows = x.numel() / D;
    check_against_cpu("layer_norm " + shape_str(s), [](const std::vector<Tensor>& v) { return layer_norm(v[0], v[1], v[2], 1e-5f); },
                      {x, g, b}, norm_tol(), {64 * kU, 64 * kU * std::sqrt(double(std::max(rows, D))) * 2});
    check_against_cpu("layer_norm plain " + shape_str(s), [](const std::vector<Tensor>& v) { return layer_norm(v[0], Tensor(), Tensor(), 1e-5f); },
                      {x}, norm_tol(), {64 * kU, 64 * kU * std::sqrt(double(D)) * 2});
  }
}

TEST_CASE("batch_norm3d in training (running statistics updated alike) and eval") {
  for (const Shape& s : std::vector<Shape>{{2, 3, 3, 5, 7}, {3, 16, 6, 8, 6}}) {
    const int64_t C = s[1];
    Tensor x = random_tensor(s, 31u, -1.f, 2.f), g = random_tensor({C}, 32u, 0.5f, 1.5f), b = random_tensor({C}, 33u);
    Tensor rm_cpu = random_tensor({C}, 34u), rv_cpu = random_tensor({C}, 35u, 0.5f, 2.f);
    Tensor rm_gpu = on_cuda(rm_cpu), rv_gpu = on_cuda(rv_cpu);
    const int64_t n = x.numel() / C;
    for (bool training : {true, false}) {
      auto f = [&](const std::vector<Tensor>& v) {
        const bool gpu = v[0].device() == Device::cuda();
        return batch_norm3d(v[0], v[1], v[2], gpu ? rm_gpu : rm_cpu, gpu ? rv_gpu : rv_cpu, training, 0.1f, 1e-5f);
      };
      check_against_cpu(std::string(training ? "batch_norm3d train " : "batch_norm3d eval ") + shape_str(s), f,
                        {x, g, b}, norm_tol(), {64 * kU, 64 * kU * std::sqrt(double(n)) * 2});
    }
    // check_against_cpu ran the GPU side twice per mode and the CPU side once: bring the CPU's
    // running statistics level by updating them the same number of times, then compare.
    Tensor rm2 = on_cuda(random_tensor({C}, 34u)), rv2 = on_cuda(random_tensor({C}, 35u, 0.5f, 2.f));
    Tensor rm1 = random_tensor({C}, 34u), rv1 = random_tensor({C}, 35u, 0.5f, 2.f);
    {
      NoGradGuard ng;
      batch_norm3d(x, g, b, rm1, rv1, true, 0.1f, 1e-5f);
      batch_norm3d(on_cuda(x), on_cuda(g), on_cuda(b), rm2, rv2, true, 0.1f, 1e-5f);
    }
    expect_close(rm2, rm1, norm_tol(), "running_mean");
    expect_close(rv2, rv1, norm_tol(), "running_var");
  }
}

TEST_CASE("softmax along every axis") {
  Tensor x = random_tensor({3, 5, 7}, 41u, -4.f, 4.f);
  for (int64_t dim : {0, 1, 2})
    check_against_cpu("softmax dim " + std::to_string(dim), [dim](const std::vector<Tensor>& v) { return softmax(v[0], dim); },
                      {x}, {16 * kU, 16 * kU}, {32 * kU, 32 * kU * 4});
}
