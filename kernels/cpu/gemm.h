// Single-precision matrix products on raw row-major buffers, built on Eigen's GEMM kernel.
//
// Determinism: Eigen's own OpenMP GEMM re-derives its cache blocking from the number of threads
// (and splits rows at thread-dependent boundaries), so its results change with OMP_NUM_THREADS
// (measured with Eigen 3.4: for 1024×128×4608, 95% of the elements differ between 1 and 2
// threads; only products with K below one cache block, e.g. 4608×384×128, came out equal). We therefore call Eigen's single-threaded kernel only, and parallelise
// ourselves over blocks of C whose sizes depend on the problem shape alone. Every element of C is
// then computed by the same code path with the same summation order for any thread count.
#pragma once
#include <cstdint>

namespace cpets::kernels::cpu {

// C = alpha · op(A) · op(B) + beta · C, all row-major. op(A) is M×K: A is stored M×K (lda ≥ K)
// or, when trans_a, K×M (lda ≥ M); likewise op(B) is K×N: B is K×N (ldb ≥ N) or, when trans_b,
// N×K (ldb ≥ K). beta == 0 overwrites C (NaNs in C are not propagated). Multithreaded; when K
// dominates (K ≥ 8192 and ≥ 16·max(M, N), e.g. weight gradients) K is split into fixed parts
// summed in order, using a temporary of up to 16·M·N floats.
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// The same product on the calling thread only: for small tiles inside an already parallel loop
// (e.g. attention). Results are bitwise identical to sgemm's for the same call.
void sgemm_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// `batch` independent products C_i = alpha · op(A_i) · op(B_i) + beta · C_i, where
// X_i = X + i · stride_x. A stride of 0 shares that operand across the batch. Multithreaded over
// (batch, block of C) pairs, deterministic.
void sgemm_batched(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b,
                   float beta, float* C, int64_t ldc, int64_t stride_c);

}  // namespace cpets::kernels::cpu
