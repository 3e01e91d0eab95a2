// Shape ops (permute, transpose, concat, slice, chunk) and pooling/upsampling on CUDA tensors
// against the CPU backend. Copies are exact, pooling sums at most k³ terms.
#include "gpu_check.h"

#include "engine/ops.h"

using namespace cpets;
using namespace cpets::gpu_testing;
using cpets::testing::random_tensor;

TEST_CASE("permute and transpose, including the attention layouts") {
  Tensor x = random_tensor({2, 3, 5, 7}, 1u);
  for (const auto& perm : std::vector<std::vector<int64_t>>{{0, 1, 2, 3}, {3, 2, 1, 0}, {0, 2, 3, 1}, {1, 0, 2, 3}, {0, 1, 3, 2}})
    check_against_cpu("permute " + shape_str(perm), [&](const std::vector<Tensor>& v) { return permute(v[0], perm); },
                      {x}, ulp_tol(0), ulp_tol(0));
  Tensor tokens = random_tensor({2, 64, 6 * 8 * 6}, 2u);
  check_against_cpu("(B,C,N)->(B,N,C)", [](const std::vector<Tensor>& v) { return transpose(v[0], 1, 2); }, {tokens},
                    ulp_tol(0), ulp_tol(0));
}

TEST_CASE("concat, slice and chunk") {
  Tensor a = random_tensor({2, 3, 5}, 3u), b = random_tensor({2, 4, 5}, 4u), c = random_tensor({2, 1, 5}, 5u);
  check_against_cpu("concat dim 1", [](const std::vector<Tensor>& v) { return concat({v[0], v[1], v[2]}, 1); }, {a, b, c},
                    ulp_tol(0), ulp_tol(0));
  Tensor x = random_tensor({3, 8, 7}, 6u);
  check_against_cpu("slice", [](const std::vector<Tensor>& v) { return slice(v[0], 1, 2, 7); }, {x}, ulp_tol(0),
                    ulp_tol(0));
  check_against_cpu("chunk", [](const std::vector<Tensor>& v) {
    auto parts = chunk(v[0], 2, 1);
    return concat({mul_scalar(parts[1], 2.f), parts[0]}, 2);
  }, {x}, ulp_tol(0), ulp_tol(0));
}

TEST_CASE("avg_pool3d and upsample_nearest2x") {
  for (const Shape& s : std::vector<Shape>{{2, 3, 4, 6, 8}, {1, 2, 5, 7, 9}, {2, 32, 24, 32, 24}}) {
    Tensor x = random_tensor(s, 7u);
    check_against_cpu("avg_pool3d " + shape_str(s), [](const std::vector<Tensor>& v) { return avg_pool3d(v[0]); }, {x},
                      sum_tol(8, 1.0 / 8), ulp_tol(1));
    check_against_cpu("avg_pool3d k3 s2 " + shape_str(s), [](const std::vector<Tensor>& v) { return avg_pool3d(v[0], 3, 2); },
                      {x}, sum_tol(27, 1.0 / 27), sum_tol(8, 1.0 / 27));
    check_against_cpu("upsample " + shape_str(s), [](const std::vector<Tensor>& v) { return upsample_nearest2x(v[0]); },
                      {x}, ulp_tol(0), sum_tol(8, 1.0));
  }
}
