// Single-precision matrix products on raw row-major device pointers, with cpu::sgemm's contract
// (op(A) M×K, op(B) K×N, leading dimensions, alpha/beta; beta == 0 overwrites C): a
// shared-memory tiled SGEMM, split over K (into shape-determined chunks added in order) when C
// alone has too few tiles. Deterministic, no atomics. Precision::fp32_exact multiplies with FP32
// FMA on the CUDA cores; tf32 and bf16 on the tensor cores (mma.sync, operands rounded to TF32 or
// BF16, FP32 accumulation; sm_80 and later). The cuBLAS reference is kernels/cudnn/gemm.h; the
// engine picks one per run (engine/backend.h, families "gemm" and "precision").
#pragma once
#include <cstdint>

#include "kernels/cuda/precision.h"
#include "kernels/cuda/stream.h"

namespace cpets::kernels::cuda {

// `batch` products C_i = alpha·op(A_i)·op(B_i) + beta·C_i, X_i = X + i·stride_x (stride 0 shares).
// The workspace holds split-K partial tiles (long K, few tiles of C); 0 bytes otherwise.
size_t sgemm_workspace_bytes(int64_t batch, int64_t M, int64_t N, int64_t K);
void sgemm_batched(Precision precision, bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K,
                   float alpha, const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb,
                   int64_t stride_b, float beta, float* C, int64_t ldc, int64_t stride_c, Workspace ws,
                   cudaStream_t stream);

}  // namespace cpets::kernels::cuda
