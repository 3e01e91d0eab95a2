// sgemm / sgemm_batched against naive double loops, matmul and linear forward against naive
// products, every backward by finite differences, and thread-count independence.
#include <doctest/doctest.h>
#include <omp.h>

#include <cstring>
#include <vector>

#include "engine/ops_linalg.h"
#include "gradcheck.h"
#include "kernels/cpu/gemm.h"

using namespace cpets;
using cpets::testing::with_threads;
using cpets::testing::gradcheck;
using cpets::testing::random_tensor;

namespace {

std::vector<float> random_vector(size_t n, uint32_t seed) { return random_tensor({int64_t(n)}, seed).to_vector(); }

// Naive row-major C = alpha·op(A)·op(B) + beta·C in double.
std::vector<double> naive_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const float* A,
                               int64_t lda, const float* B, int64_t ldb, double beta, const float* C, int64_t ldc) {
  std::vector<double> out(M * N);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += double(ta ? A[k * lda + i] : A[i * lda + k]) * double(tb ? B[j * ldb + k] : B[k * ldb + j]);
      out[i * N + j] = alpha * s + beta * double(C[i * ldc + j]);
    }
  return out;
}

// Naive a (..., M, K) @ b (..., K, N) or shared 2-D b, in double.
std::vector<double> naive_matmul(const Tensor& a, const Tensor& b) {
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1), batch = a.numel() / (M * K);
  const bool shared = b.dim() == 2;
  std::vector<double> out(batch * M * N, 0.0);
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k)
          s += double(a.data()[(n * M + i) * K + k]) * double(b.data()[(shared ? 0 : n * K * N) + k * N + j]);
        out[(n * M + i) * N + j] = s;
      }
  return out;
}

void check_close(const Tensor& got, const std::vector<double>& want, double tol) {
  REQUIRE(size_t(got.numel()) == want.size());
  for (size_t i = 0; i < want.size(); ++i)
    if (std::abs(got.data()[i] - want[i]) > tol * (1 + std::abs(want[i]))) {
      FAIL_CHECK("element " << i << ": got " << got.data()[i] << ", want " << want[i]);
      return;
    }
}


}  // namespace

TEST_CASE("sgemm: all transpose combinations, padded leading dimensions, alpha and beta") {
  namespace kc = kernels::cpu;
  // The last sizes cross every blocking edge of the packed kernel: several K slabs (256), row
  // blocks (96) and column slabs (512), with partial micro-tiles in each.
  for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{37, 23, 19}, {1, 5, 3}, {130, 67, 200}, {3, 300, 1},
                         {200, 601, 700}, {7, 17, 513}}) {
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        CAPTURE(M); CAPTURE(N); CAPTURE(K); CAPTURE(ta); CAPTURE(tb);
        const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
        std::vector<float> A = random_vector((ta ? K : M) * lda, 1), B = random_vector((tb ? N : K) * ldb, 2);
        std::vector<float> C = random_vector(M * ldc, 3);
        std::vector<double> want = naive_gemm(ta, tb, M, N, K, 0.75, A.data(), lda, B.data(), ldb, -0.5, C.data(), ldc);
        kc::sgemm(ta, tb, M, N, K, 0.75f, A.data(), lda, B.data(), ldb, -0.5f, C.data(), ldc);
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) REQUIRE(C[i * ldc + j] == doctest::Approx(want[i * N + j]).epsilon(1e-5).scale(1));
      }
  }
}

TEST_CASE("sgemm: beta = 0 overwrites (NaN in C ignored), K = 0 only scales") {
  namespace kc = kernels::cpu;
  std::vector<float> A = random_vector(4 * 3, 4), B = random_vector(3 * 2, 5);
  std::vector<float> C(4 * 2, std::nanf(""));
  kc::sgemm(false, false, 4, 2, 3, 1.f, A.data(), 3, B.data(), 2, 0.f, C.data(), 2);
  std::vector<double> want = naive_gemm(false, false, 4, 2, 3, 1, A.data(), 3, B.data(), 2, 0, std::vector<float>(8, 0).data(), 2);
  for (int i = 0; i < 8; ++i) CHECK(C[i] == doctest::Approx(want[i]));
  std::vector<float> D = {1, 2, 3, 4};
  kc::sgemm(false, false, 2, 2, 0, 1.f, A.data(), 1, B.data(), 2, 2.f, D.data(), 2);
  CHECK(D == std::vector<float>{2, 4, 6, 8});
}

TEST_CASE("sgemm: reduction-shaped products (K split into parts) match naive loops and thread counts") {
  namespace kc = kernels::cpu;
  for (auto [ta, tb, M, N, K] : {std::tuple<bool, bool, int64_t, int64_t, int64_t>{true, false, 13, 21, 20000},
                                 {false, true, 7, 5, 9000}, {true, true, 3, 40, 30001}}) {
    CAPTURE(M); CAPTURE(N); CAPTURE(K);
    std::vector<float> A = random_vector(M * K, 34), B = random_vector(K * N, 35), C0 = random_vector(M * N, 36);
    std::vector<double> want = naive_gemm(ta, tb, M, N, K, 0.5, A.data(), ta ? M : K, B.data(), tb ? K : N, 2.0, C0.data(), N);
    auto run = [&] {
      std::vector<float> C = C0;
      kc::sgemm(ta, tb, M, N, K, 0.5f, A.data(), ta ? M : K, B.data(), tb ? K : N, 2.f, C.data(), N);
      return C;
    };
    std::vector<float> c1 = with_threads(1, run), c2 = with_threads(2, run);
    CHECK(std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(float)) == 0);
    for (int64_t i = 0; i < M * N; ++i) REQUIRE(c1[i] == doctest::Approx(want[i]).epsilon(1e-4).scale(1));
  }
}

TEST_CASE("sgemm_batched: per-entry strides and a shared operand (stride 0)") {
  namespace kc = kernels::cpu;
  const int64_t batch = 3, M = 17, N = 9, K = 11;
  std::vector<float> A = random_vector(batch * M * K, 6), B = random_vector(K * N, 7), C(batch * M * N);
  kc::sgemm_batched(false, false, batch, M, N, K, 1.f, A.data(), K, M * K, B.data(), N, 0, 0.f, C.data(), N, M * N);
  for (int64_t n = 0; n < batch; ++n) {
    std::vector<double> want = naive_gemm(false, false, M, N, K, 1, A.data() + n * M * K, K, B.data(), N, 0, C.data(), N);
    for (int64_t i = 0; i < M * N; ++i) REQUIRE(C[n * M * N + i] == doctest::Approx(want[i]).epsilon(1e-5));
  }
}

TEST_CASE("sgemm: bitwise identical for 1 and 2 threads on a multi-block product") {
  namespace kc = kernels::cpu;
  for (auto [ta, tb, M, N, K] : {std::tuple<bool, bool, int64_t, int64_t, int64_t>{false, false, 1031, 200, 300},
                                 {true, false, 129, 700, 517}, {false, true, 70, 1500, 260}}) {
    std::vector<float> A = random_vector(M * K, 8), B = random_vector(K * N, 9);
    auto run = [&] {
      std::vector<float> C(M * N);
      kc::sgemm(ta, tb, M, N, K, 1.f, A.data(), ta ? M : K, B.data(), tb ? K : N, 0.f, C.data(), N);
      return C;
    };
    std::vector<float> c1 = with_threads(1, run), c2 = with_threads(2, run);
    CHECK(std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("matmul forward: batched, 4-D and shared 2-D b against naive loops") {
  Tensor a = random_tensor({3, 7, 5}, 10), b = random_tensor({3, 5, 4}, 11);
  check_close(matmul(a, b), naive_matmul(a, b), 1e-5);
  Tensor a4 = random_tensor({2, 3, 6, 9}, 12), b4 = random_tensor({2, 3, 9, 2}, 13);
  CHECK(matmul(a4, b4).shape() == Shape{2, 3, 6, 2});
  check_close(matmul(a4, b4), naive_matmul(a4, b4), 1e-5);
  Tensor b2 = random_tensor({5, 8}, 14);
  CHECK(matmul(a, b2).shape() == Shape{3, 7, 8});
  check_close(matmul(a, b2), naive_matmul(a, b2), 1e-5);
  Tensor m2 = random_tensor({4, 5}, 15);
  check_close(matmul(m2, b2), naive_matmul(m2, b2), 1e-5);
}

TEST_CASE("matmul backward: gradcheck batched and shared b") {
  gradcheck([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); },
            {random_tensor({2, 5, 3}, 16), random_tensor({2, 3, 7}, 17)});
  gradcheck([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); },
            {random_tensor({3, 5, 3}, 18), random_tensor({3, 4}, 19)});
  gradcheck([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); },
            {random_tensor({7, 3}, 20), random_tensor({3, 1}, 21)});
}

TEST_CASE("matmul: bad shapes give messages naming both shapes") {
  CHECK_THROWS_WITH_AS(matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5})),
                       doctest::Contains("inner dimensions differ in a (2, 3) @ b (4, 5)"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(matmul(Tensor::zeros({2, 2, 3}), Tensor::zeros({3, 3, 5})),
                       doctest::Contains("batch dimensions differ"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(matmul(Tensor::zeros({3}), Tensor::zeros({3, 5})), doctest::Contains("at least 2 dimensions"),
                       std::invalid_argument);
}

TEST_CASE("linear forward with and without bias on 3-D input") {
  Tensor x = random_tensor({2, 5, 6}, 22), w = random_tensor({4, 6}, 23), b = random_tensor({4}, 24);
  Tensor y = linear(x, w, b), y0 = linear(x, w);
  CHECK(y.shape() == Shape{2, 5, 4});
  for (int64_t r = 0; r < 10; ++r)
    for (int64_t o = 0; o < 4; ++o) {
      double s = 0;
      for (int64_t i = 0; i < 6; ++i) s += double(x.data()[r * 6 + i]) * double(w.data()[o * 6 + i]);
      CHECK(y0.data()[r * 4 + o] == doctest::Approx(s).epsilon(1e-5));
      CHECK(y.data()[r * 4 + o] == doctest::Approx(s + b.data()[o]).epsilon(1e-5));
    }
}

TEST_CASE("linear backward: gradcheck of input, weight and bias") {
  gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
            {random_tensor({3, 2, 5}, 25), random_tensor({7, 5}, 26), random_tensor({7}, 27)});
  gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); },
            {random_tensor({4, 3}, 28), random_tensor({1, 3}, 29)});
}

TEST_CASE("linear: bad shapes give clear messages") {
  CHECK_THROWS_WITH_AS(linear(Tensor::zeros({2, 5}), Tensor::zeros({4, 6})),
                       doctest::Contains("must end in in_features = 6"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(linear(Tensor::zeros({2, 6}), Tensor::zeros({4, 6}), Tensor::zeros({5})),
                       doctest::Contains("bias (5) must be (4)"), std::invalid_argument);
}

TEST_CASE("linear forward and backward: bitwise identical for 1 and 2 threads") {
  Tensor x = random_tensor({2, 700, 64}, 30), w = random_tensor({96, 64}, 31), b = random_tensor({96}, 32);
  Tensor gout = random_tensor({2, 700, 96}, 33);
  auto run = [&] {
    Tensor xi = x.clone(), wi = w.clone(), bi = b.clone();
    xi.set_requires_grad(true); wi.set_requires_grad(true); bi.set_requires_grad(true);
    Tensor y = linear(xi, wi, bi);
    y.backward(gout);
    std::vector<float> all = y.to_vector();
    for (const Tensor& g : {xi.grad(), wi.grad(), bi.grad()}) {
      std::vector<float> v = g.to_vector();
      all.insert(all.end(), v.begin(), v.end());
    }
    return all;
  };
  std::vector<float> r1 = with_threads(1, run), r2 = with_threads(2, run);
  REQUIRE(r1.size() == r2.size());
  CHECK(std::memcmp(r1.data(), r2.data(), r1.size() * sizeof(float)) == 0);
}
