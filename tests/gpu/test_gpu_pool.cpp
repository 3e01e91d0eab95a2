// max_pool3d on CUDA tensors against the CPU backend: the same maxima, and gradients routed to the
// same argmax — bitwise, since both pick the first maximum in scan order and add a voxel's
// gradients in output order. Overlapping windows (stride < kernel), ceil_mode's clipped last
// windows, ties (integer values) and NaNs; run twice for determinism.
#include "gpu_check.h"

#include <cmath>
#include <limits>

#include "engine/ops.h"

using namespace cpets;
using namespace cpets::gpu_testing;
using cpets::testing::random_tensor;

namespace {

// Values from a few integers, so many windows hold equal maxima.
Tensor tied(const Shape& shape, uint32_t seed) {
  Tensor t = random_tensor(shape, seed, 0.f, 4.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = std::floor(t.data()[i]);
  return t;
}

}  // namespace

TEST_CASE("max_pool3d forward and backward equal the CPU's, bitwise") {
  struct Case {
    Shape shape;
    Int3 kernel, stride;
    bool ceil_mode;
  };
  const std::vector<Case> cases = {{{2, 3, 7, 9, 11}, {2, 2, 2}, {2, 2, 2}, false},
                                   {{2, 3, 7, 9, 11}, {3, 3, 3}, {2, 2, 2}, true},   // overlapping, clipped
                                   {{1, 2, 5, 12, 13}, {1, 3, 3}, {1, 2, 2}, true},  // the perceptual net's
                                   {{1, 4, 6, 6, 6}, {3, 2, 1}, {1, 2, 3}, false},
                                   {{2, 16, 24, 32, 24}, {2, 2, 2}, {2, 2, 2}, false}};
  uint32_t seed = 1;
  for (const Case& c : cases)
    for (bool ties : {false, true}) {
      const Tensor x = ties ? tied(c.shape, seed++) : random_tensor(c.shape, seed++);
      check_against_cpu("max_pool3d " + shape_str(c.shape) + (ties ? " ties" : ""),
                        [&](const std::vector<Tensor>& v) { return max_pool3d(v[0], c.kernel, c.stride, c.ceil_mode); },
                        {x}, ulp_tol(0), ulp_tol(0));
    }
}

TEST_CASE("max_pool3d: a NaN in a window is its maximum on the GPU too") {
  Tensor x = random_tensor({1, 1, 4, 4, 4}, 9);
  x.data()[5] = std::numeric_limits<float>::quiet_NaN();
  x.data()[6] = std::numeric_limits<float>::quiet_NaN();
  const Tensor cpu = max_pool3d(x, {2, 2, 2}, {2, 2, 2}, false);
  const Tensor gpu = max_pool3d(on_cuda(x), {2, 2, 2}, {2, 2, 2}, false).to(Device::cpu());
  REQUIRE(cpu.numel() == gpu.numel());
  for (int64_t i = 0; i < cpu.numel(); ++i) {
    CAPTURE(i);
    CHECK(std::isnan(cpu.data()[i]) == std::isnan(gpu.data()[i]));
    if (!std::isnan(cpu.data()[i])) CHECK(cpu.data()[i] == gpu.data()[i]);
  }
  CHECK(std::isnan(gpu.data()[0]));
}
