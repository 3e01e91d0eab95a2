// The perceptual loss's ops on CUDA tensors against the CPU backend: the LPIPS layer distance and
// its gradients (inputs and channel weights, all-zero pixels included) and the slice gather with
// its scatter backward, along every axis; run twice for determinism.
#include "gpu_check.h"

#include "engine/ops.h"
#include "models/perceptual.h"

using namespace cpets;
using namespace cpets::gpu_testing;
using cpets::testing::random_tensor;

TEST_CASE("lpips_layer_distance on the GPU equals the CPU's") {
  for (const Shape& s : std::vector<Shape>{{2, 5, 3, 4, 7}, {3, 64, 1, 24, 24}, {1, 3, 1, 1, 1}}) {
    Tensor fa = random_tensor(s, 1, -1.f, 1.f), fb = random_tensor(s, 2, -1.f, 1.f);
    for (int64_t i = 0; i < s[2] * s[3] * s[4] && s[1] > 1; i += 5)  // some all-zero pixels in fa
      for (int64_t c = 0; c < s[1]; ++c) fa.data()[c * s[2] * s[3] * s[4] + i] = 0.f;
    Tensor w = random_tensor({1, s[1], 1, 1, 1}, 3, 0.f, 1.f);
    const int64_t C = s[1], NP = s[0] * s[2] * s[3] * s[4];
    check_against_cpu("lpips_layer_distance " + shape_str(s),
                      [](const std::vector<Tensor>& v) { return lpips_layer_distance(v[0], v[1], v[2]); },
                      {fa, fb, w}, sum_tol(C, 1.0, 16), sum_tol(std::max(C, NP), 1.0, 16));
  }
}

TEST_CASE("gather_slices on the GPU equals the CPU's along every axis, gradient included") {
  const Tensor vol = random_tensor({2, 1, 5, 6, 7}, 4);
  for (int64_t axis = 2; axis <= 4; ++axis) {
    const int64_t n = 2 * vol.size(axis);
    std::vector<int64_t> index;
    for (int64_t i = n - 1; i >= 0; i -= 2) index.push_back(i);  // reversed, every other slice
    check_against_cpu("gather_slices axis " + std::to_string(axis),
                      [&](const std::vector<Tensor>& v) { return gather_slices(v[0], axis, index); }, {vol},
                      ulp_tol(0), ulp_tol(0));
  }
}
