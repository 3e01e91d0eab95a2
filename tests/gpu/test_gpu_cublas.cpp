// GPU tests of the cuBLAS reference wrappers (kernels/cudnn/gemm) against kernels/cpu/gemm: every
// transpose combination, odd sizes, leading dimensions larger than the rows, alpha/beta, batched
// with a shared operand; FP32 (pedantic) within float rounding, TF32 and BF16 within their operand
// rounding bounds. Errors are per element relative to Σ|a·b| (the CPU product of |A| and |B|).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <tuple>
#include <vector>

#include "gpu/gpu_util.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cudnn/gemm.h"

using namespace cpets;
using namespace cpets::gpu_test;
namespace kd = cpets::kernels::cudnn;
using kd::Precision;

namespace {

double bound(Precision p, int64_t K) {
  const double u_op = p == Precision::tf32 ? std::ldexp(1.0, -11) : p == Precision::bf16 ? std::ldexp(1.0, -8) : 0;
  return 2 * u_op + 4e-7 * std::sqrt(double(K)) + 2 * std::ldexp(1.0, -24);
}

struct Gemm {
  bool ta, tb;
  int64_t M, N, K, lda, ldb, ldc;
};

void check_gemm(const Gemm& g, Precision p, uint32_t seed) {
  const int64_t a_rows = g.ta ? g.K : g.M, b_rows = g.tb ? g.N : g.K;
  auto A = random_vector(a_rows * g.lda, seed), B = random_vector(b_rows * g.ldb, seed + 1),
       C0 = random_vector(g.M * g.ldc, seed + 2);
  const float alpha = 0.75f, beta = 0.5f;
  std::vector<float> want = C0, scale(C0.size(), 0.f);
  kernels::cpu::sgemm(g.ta, g.tb, g.M, g.N, g.K, alpha, A.data(), g.lda, B.data(), g.ldb, beta, want.data(), g.ldc);
  auto aA = absolute(A), aB = absolute(B), aC = absolute(C0);
  scale = aC;
  kernels::cpu::sgemm(g.ta, g.tb, g.M, g.N, g.K, std::fabs(alpha), aA.data(), g.lda, aB.data(), g.ldb, std::fabs(beta),
                      scale.data(), g.ldc);
  auto dA = DeviceBuffer::from(A), dB = DeviceBuffer::from(B), dC = DeviceBuffer::from(C0);
  kd::sgemm(p, g.ta, g.tb, g.M, g.N, g.K, alpha, dA.f(), g.lda, dB.f(), g.ldb, beta, dC.f(), g.ldc, nullptr);
  auto got = dC.download();
  INFO(precision_name(p) << " ta " << g.ta << " tb " << g.tb << " M " << g.M << " N " << g.N << " K " << g.K);
  CHECK(relative_error(got, want, scale).max <= bound(p, g.K));
}

}  // namespace

TEST_CASE("cuBLAS sgemm wrapper: row-major contract of cpu::sgemm, every transpose, odd sizes") {
  uint32_t seed = 1;
  for (Precision p : {Precision::fp32_exact, Precision::tf32, Precision::bf16})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{7, 13, 5}, {129, 67, 70}, {33, 1, 2304}, {1, 65, 9}}) {
          const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
          check_gemm({ta, tb, M, N, K, lda, ldb, ldc}, p, seed += 3);
        }
}

TEST_CASE("cuBLAS batched sgemm wrapper: strided batches and a shared operand") {
  const int64_t batch = 3, M = 17, N = 9, K = 31;
  auto A = random_vector(batch * M * K, 7), B = random_vector(K * N, 8);
  std::vector<float> want(batch * M * N, 0.f);
  kernels::cpu::sgemm_batched(false, false, batch, M, N, K, 1.f, A.data(), K, M * K, B.data(), N, 0, 0.f, want.data(),
                              N, M * N);
  auto aA = absolute(A), aB = absolute(B);
  std::vector<float> scale(want.size(), 0.f);
  kernels::cpu::sgemm_batched(false, false, batch, M, N, K, 1.f, aA.data(), K, M * K, aB.data(), N, 0, 0.f, scale.data(),
                              N, M * N);
  auto dA = DeviceBuffer::from(A), dB = DeviceBuffer::from(B);
  DeviceBuffer dC(want.size());
  dC.fill_nan();
  kd::sgemm_batched(Precision::fp32_exact, false, false, batch, M, N, K, 1.f, dA.f(), K, M * K, dB.f(), N, 0, 0.f, dC.f(),
                    N, M * N, nullptr);
  CHECK(relative_error(dC.download(), want, scale).max <= bound(Precision::fp32_exact, K));
}

TEST_CASE("cuBLAS sgemm wrapper: bad leading dimensions give a clear exception") {
  DeviceBuffer buf(64);
  CHECK_THROWS_WITH_AS(kd::sgemm(Precision::fp32_exact, false, false, 4, 4, 4, 1.f, buf.f(), 3, buf.f(), 4, 0.f, buf.f(),
                                 4, nullptr),
                       doctest::Contains("leading dimension"), std::invalid_argument);
}
