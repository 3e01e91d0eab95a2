#include "kernels/cpu/gemm.h"

// Eigen's AVX-512 packet code trips GCC 12's -Wmaybe-uninitialized (false positives inside
// avx512fintrin.h); the kernels are instantiated in this file, so silence it for the whole TU.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Core>
#include <algorithm>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace cpets::kernels::cpu {
namespace {

// C[M×N] += alpha · op(A) · op(B) with Eigen's serial blocked GEMM (pack + gebp micro-kernel).
// We call the internal kernel directly rather than through Eigen's expression API because the
// latter may spawn OpenMP threads (see gemm.h) and only lets us switch that off globally.
template <int LhsOrder, int RhsOrder>
void eigen_gemm_accumulate(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                           int64_t ldb, float* C, int64_t ldc) {
  using namespace Eigen::internal;
  using Index = Eigen::Index;
  gemm_blocking_space<Eigen::RowMajor, float, float, Eigen::Dynamic, Eigen::Dynamic, Eigen::Dynamic> blocking(
      M, N, K, /*num_threads=*/1, /*l3_blocking=*/true);
  general_matrix_matrix_product<Index, float, LhsOrder, false, float, RhsOrder, false, Eigen::RowMajor, 1>::run(
      M, N, K, A, lda, B, ldb, C, 1, ldc, alpha, blocking);
}

void scale_matrix(float beta, float* C, int64_t M, int64_t N, int64_t ldc) {
  if (beta == 1.f) return;
  for (int64_t i = 0; i < M; ++i) {
    float* row = C + i * ldc;
    if (beta == 0.f) {
      std::fill(row, row + N, 0.f);
    } else {
      for (int64_t j = 0; j < N; ++j) row[j] *= beta;
    }
  }
}

// Splits the longer side of C into blocks so that each holds at least ~2 MFLOP of work and there
// are at most 64 blocks. Every block packs the whole of the other operand (K × other), so blocks
// are at least 64 long: that packing then costs ≤ 1/64 of the block's multiply-adds (with
// 16-row blocks it dominated dW = gᵀ·x of a 4608-token linear). Depends on the shape only,
// never on the thread count.
int64_t block_length(int64_t len, int64_t other, int64_t K) {
  const double flops = 2.0 * double(len) * double(other) * double(std::max<int64_t>(K, 1));
  int64_t chunks = std::clamp<int64_t>(int64_t(flops / 2e6), 1, 64);
  int64_t block = (len + chunks - 1) / chunks;
  block = (block + 15) / 16 * 16;  // whole micro-panels
  return std::max<int64_t>(block, 64);
}

}  // namespace

void sgemm_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  scale_matrix(beta, C, M, N, ldc);
  if (K <= 0 || alpha == 0.f) return;
  constexpr int R = Eigen::RowMajor, Cm = Eigen::ColMajor;
  // A row-major K×M matrix read as M×K is column-major with the same leading dimension.
  if (!trans_a && !trans_b) eigen_gemm_accumulate<R, R>(M, N, K, alpha, A, lda, B, ldb, C, ldc);
  else if (!trans_a && trans_b) eigen_gemm_accumulate<R, Cm>(M, N, K, alpha, A, lda, B, ldb, C, ldc);
  else if (trans_a && !trans_b) eigen_gemm_accumulate<Cm, R>(M, N, K, alpha, A, lda, B, ldb, C, ldc);
  else eigen_gemm_accumulate<Cm, Cm>(M, N, K, alpha, A, lda, B, ldb, C, ldc);
}

namespace {

// Pointer to row `r` of op(A) (trans: column r of the stored matrix).
const float* op_rows(const float* X, bool trans, int64_t r, int64_t ld) { return trans ? X + r : X + r * ld; }

}  // namespace

void sgemm_batched(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b,
                   float beta, float* C, int64_t ldc, int64_t stride_c) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  const bool split_rows = M >= N;
  const int64_t len = split_rows ? M : N;
  const int64_t block = block_length(len, split_rows ? N : M, K);
  const int64_t blocks = (len + block - 1) / block;
  parallel_for_balanced(batch * blocks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i = t / blocks, b0 = (t % blocks) * block, n = std::min(block, len - b0);
      const float* Ai = A + i * stride_a;
      const float* Bi = B + i * stride_b;
      float* Ci = C + i * stride_c;
      if (split_rows)
        sgemm_serial(trans_a, trans_b, n, N, K, alpha, op_rows(Ai, trans_a, b0, lda), lda, Bi, ldb, beta,
                     Ci + b0 * ldc, ldc);
      else  // columns b0.. of op(B): rows of the stored B when transposed, columns otherwise
        sgemm_serial(trans_a, trans_b, M, n, K, alpha, Ai, lda, trans_b ? Bi + b0 * ldb : Bi + b0, ldb, beta,
                     Ci + b0, ldc);
    }
  });
}

namespace {

// Reduction-shaped products (K much longer than M and N, e.g. weight gradients summed over every
// voxel): splitting C alone would make each block re-pack the whole of the other operand, so K is
// cut into fixed parts whose partial products are added in part order.
bool split_over_k(int64_t M, int64_t N, int64_t K) { return K >= 8192 && K >= 16 * std::max(M, N); }

void sgemm_split_k(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                   int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const int64_t parts = std::min<int64_t>(16, K / 4096);
  const int64_t part_len = ((K + parts - 1) / parts + 255) / 256 * 256;
  std::vector<float> partial(size_t(parts * M * N));
  parallel_for_balanced(parts, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t k0 = std::min(K, p * part_len), kn = std::min(part_len, K - k0);
      const float* Ak = trans_a ? A + k0 * lda : A + k0;  // columns k0.. of op(A)
      const float* Bk = trans_b ? B + k0 : B + k0 * ldb;  // rows k0.. of op(B)
      sgemm_serial(trans_a, trans_b, M, N, kn, 1.f, Ak, lda, Bk, ldb, 0.f, partial.data() + p * M * N, N);
    }
  });
  parallel_for(M, std::max<int64_t>(1, 16384 / N), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = 0; j < N; ++j) {
        float s = 0.f;
        for (int64_t p = 0; p < parts; ++p) s += partial[(p * M + i) * N + j];  // fixed order
        float& c = C[i * ldc + j];
        c = beta == 0.f ? alpha * s : alpha * s + beta * c;
      }
  });
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M > 0 && N > 0 && split_over_k(M, N, K))
    sgemm_split_k(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else
    sgemm_batched(trans_a, trans_b, 1, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0);
}

}  // namespace cpets::kernels::cpu
