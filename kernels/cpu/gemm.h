// Single-precision matrix products on raw row-major buffers: our packed, register-blocked GEMM,
// compiled for every CPU instruction-set level (kernels/cpu/isa.h; gemm.cpp has the blocking).
//
// Determinism: a multithreaded GEMM that derives its blocking from the thread count (Eigen's, or
// one splitting rows at thread-dependent boundaries) changes its results with OMP_NUM_THREADS.
// Here the serial kernel's summation order depends on the shape alone, and the parallel entry
// points split C (or K, in fixed parts added in order) by the shape alone, so every element is
// computed the same way for any thread count.
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
