// cuBLAS reference backend for matrix products, with the row-major contract of
// kernels/cpu/gemm.h (C = alpha · op(A) · op(B) + beta · C; op(A) is M×K, stored M×K with lda ≥ K
// or, when trans_a, K×M with lda ≥ M; likewise B) on device pointers, asynchronous on `stream`.
// Precision::fp32_exact computes with CUBLAS_COMPUTE_32F_PEDANTIC (no tensor cores), tf32 with
// CUBLAS_COMPUTE_32F_FAST_TF32 and bf16 with CUBLAS_COMPUTE_32F_FAST_16BF (operands rounded to
// BF16 inside cuBLAS, FP32 accumulation). Handles are kept per host thread and device (created on
// first use, never destroyed: they live as long as the process).
#pragma once
#include <cstdint>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "kernels/cuda/precision.h"

namespace cpets::kernels::cudnn {

using cpets::kernels::cuda::Precision;

void sgemm(Precision p, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, cudaStream_t stream);

// `batch` independent products C_i = alpha · op(A_i) · op(B_i) + beta · C_i with X_i = X + i · stride_x
// (a stride of 0 shares that operand), as cpu::sgemm_batched.
void sgemm_batched(Precision p, bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K,
                   float alpha, const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb,
                   int64_t stride_b, float beta, float* C, int64_t ldc, int64_t stride_c, cudaStream_t stream);

// The cuBLAS handle of this host thread and the current device, bound to `stream`.
cublasHandle_t cublas_handle(cudaStream_t stream);

}  // namespace cpets::kernels::cudnn
