// matmul and linear on CUDA tensors, through our SGEMM and through cuBLAS, against the CPU
// backend: odd sizes, every transpose the backwards use, batched and shared operands, and the
// model's attention projection shapes.
#include "gpu_check.h"

#include "engine/backend.h"
#include "engine/ops.h"

using namespace cpets;
using namespace cpets::gpu_testing;
using cpets::testing::random_tensor;

namespace {

void for_each_gemm_backend(const std::function<void(const std::string&)>& body) {
  for (const char* b : {"cuda", "cublas"}) {
    set_backend("gemm", b);
    body(std::string(" [") + b + "]");
  }
  set_backend("gemm", "cuda");
}

}  // namespace

TEST_CASE("matmul: odd sizes, batched, shared right operand") {
  struct Case {
    Shape a, b;
  };
  const std::vector<Case> cases = {{{7, 13}, {13, 5}}, {{3, 17, 33}, {3, 33, 65}}, {{2, 3, 9, 4}, {4, 11}}, {{1, 1}, {1, 1}},
                                   {{129, 70}, {70, 67}}, {{65, 5000}, {5000, 33}} /* long K: split-K path */};
  for_each_gemm_backend([&](const std::string& tag) {
    uint32_t seed = 1;
    for (const Case& c : cases) {
      Tensor a = random_tensor(c.a, seed++), b = random_tensor(c.b, seed++);
      const int64_t K = c.a.back(), M = c.a[c.a.size() - 2], N = c.b.back();
      // |a||b| averages 1/4 for U(−1,1); backwards are products of length N (dA) and M·batch (dB).
      const int64_t batch = shape_numel(c.a) / (M * K);
      check_against_cpu("matmul " + shape_str(c.a) + "@" + shape_str(c.b) + tag,
                        [](const std::vector<Tensor>& v) { return matmul(v[0], v[1]); }, {a, b}, dot_tol(K, 0.25),
                        dot_tol(std::max(N, M * batch), 0.25));
    }
  });
}

TEST_CASE("linear with and without bias, the model's token projections") {
  struct Case {
    Shape x;
    int64_t out;
  };
  // The last two: weight gradients with K = 8000 and 36864 rows (split-K), the model's bottleneck.
  const std::vector<Case> cases = {{{5, 7}, 3}, {{2, 9, 33}, 17}, {{2, 1152, 256}, 512}, {{2, 4000, 64}, 96},
                                   {{2, 18432, 64}, 128}};
  for_each_gemm_backend([&](const std::string& tag) {
    uint32_t seed = 10;
    for (const Case& c : cases) {
      const int64_t in = c.x.back(), rows = shape_numel(c.x) / in;
      Tensor x = random_tensor(c.x, seed++), w = random_tensor({c.out, in}, seed++), b = random_tensor({c.out}, seed++);
      check_against_cpu("linear " + shape_str(c.x) + tag, [](const std::vector<Tensor>& v) { return linear(v[0], v[1], v[2]); },
                        {x, w, b}, dot_tol(in + 1, 0.25), dot_tol(std::max(rows, c.out), 0.25));
      check_against_cpu("linear no bias " + shape_str(c.x) + tag,
                        [](const std::vector<Tensor>& v) { return linear(v[0], v[1]); }, {x, w}, dot_tol(in, 0.25),
                        dot_tol(std::max(rows, c.out), 0.25));
    }
  });
}

TEST_CASE("matmul in tf32 and bf16 (tensor cores), ours and cuBLAS's: within the operand rounding of fp32") {
  // Rounding both operands to a p-bit mantissa moves each product by at most 2·u_op·|a||b|
  // (u_op = 2⁻¹¹ for TF32, 2⁻⁸ for BF16), so an output by at most 2·u_op·Σ|a||b| ≈ 2·u_op·K/4 for
  // U(−1, 1) inputs, plus the float accumulation; 4× that for margin. Bitwise repeatable as in fp32.
  const std::vector<std::pair<Shape, Shape>> cases = {{{7, 13}, {13, 5}}, {{3, 17, 33}, {3, 33, 65}},
                                                      {{129, 70}, {70, 67}}, {{65, 5000}, {5000, 33}}};
  for (const char* precision : {"tf32", "bf16"}) {
    set_backend("precision", precision);
    const double u_op = std::string(precision) == "tf32" ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
    auto tol = [&](int64_t K) { return Tol{8 * kU, 4 * 2 * u_op * 0.25 * double(K) + dot_tol(K, 0.25).atol}; };
    for_each_gemm_backend([&](const std::string& tag) {
      uint32_t seed = 50;
      for (const auto& [sa, sb] : cases) {
        Tensor a = random_tensor(sa, seed++), b = random_tensor(sb, seed++);
        const int64_t K = sa.back(), M = sa[sa.size() - 2], N = sb.back(), batch = shape_numel(sa) / (M * K);
        check_against_cpu(std::string("matmul ") + precision + " " + shape_str(sa) + "@" + shape_str(sb) + tag,
                          [](const std::vector<Tensor>& v) { return matmul(v[0], v[1]); }, {a, b}, tol(K),
                          tol(std::max(N, M * batch)));
      }
    });
  }
  set_backend("precision", "fp32");
}
