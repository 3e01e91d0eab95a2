// cuBLAS wrappers with cpu::sgemm's row-major contract. A row-major matrix is the column-major
// transpose, so C = op(A)·op(B) is computed as Cᵀ = op(B)ᵀ·op(A)ᵀ: cuBLAS gets B first, the sizes
// as (N, M, K) and each operand's own transpose flag.
#include "kernels/cudnn/gemm.h"

#include <map>
#include <stdexcept>
#include <string>

#include "kernels/cuda/common.cuh"

namespace cpets::kernels::cudnn {
namespace {

void check_cublas(cublasStatus_t st, const char* call) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLAS error in ") + call + ": " + cublasGetStatusName(st) + " (" +
                             cublasGetStatusString(st) + ")");
}

cublasComputeType_t compute_type(Precision p) {
  switch (p) {
    case Precision::fp32_exact: return CUBLAS_COMPUTE_32F_PEDANTIC;
    case Precision::tf32: return CUBLAS_COMPUTE_32F_FAST_TF32;
    case Precision::bf16: return CUBLAS_COMPUTE_32F_FAST_16BF;
  }
  return CUBLAS_COMPUTE_32F_PEDANTIC;
}

int as_int(int64_t v, const char* what) {
  if (v < 0 || v > 2147483647)
    throw std::invalid_argument(std::string("cudnn::sgemm: ") + what + " = " + std::to_string(v) +
                                " is outside cuBLAS's 32-bit range; split the product");
  return static_cast<int>(v);
}

void check_dims(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc) {
  const std::string dims = " (M " + std::to_string(M) + ", N " + std::to_string(N) + ", K " + std::to_string(K) + ")";
  if (M < 0 || N < 0 || K < 0) throw std::invalid_argument("cudnn::sgemm: negative size" + dims);
  if (lda < (trans_a ? M : K) || ldb < (trans_b ? K : N) || ldc < N)
    throw std::invalid_argument("cudnn::sgemm: leading dimension too small: lda " + std::to_string(lda) + ", ldb " +
                                std::to_string(ldb) + ", ldc " + std::to_string(ldc) + dims);
}

}  // namespace

cublasHandle_t cublas_handle(cudaStream_t stream) {
  thread_local std::map<int, cublasHandle_t> handles;
  int device = 0;
  CPETS_CUDA_CHECK(cudaGetDevice(&device));
  auto it = handles.find(device);
  if (it == handles.end()) {
    cublasHandle_t h = nullptr;
    check_cublas(cublasCreate(&h), "cublasCreate");
    it = handles.emplace(device, h).first;
  }
  check_cublas(cublasSetStream(it->second, stream), "cublasSetStream");
  return it->second;
}

void sgemm(Precision p, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, cudaStream_t stream) {
  cuda::detail::NvtxRange nvtx("cublas::sgemm");
  check_dims(trans_a, trans_b, M, N, K, lda, ldb, ldc);
  if (M == 0 || N == 0) return;
  check_cublas(cublasGemmEx(cublas_handle(stream), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                            as_int(N, "N"), as_int(M, "M"), as_int(K, "K"), &alpha, B, CUDA_R_32F, as_int(ldb, "ldb"), A,
                            CUDA_R_32F, as_int(lda, "lda"), &beta, C, CUDA_R_32F, as_int(ldc, "ldc"), compute_type(p),
                            CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx");
}

void sgemm_batched(Precision p, bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K,
                   float alpha, const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb,
                   int64_t stride_b, float beta, float* C, int64_t ldc, int64_t stride_c, cudaStream_t stream) {
  cuda::detail::NvtxRange nvtx("cublas::sgemm_batched");
  check_dims(trans_a, trans_b, M, N, K, lda, ldb, ldc);
  if (batch == 0 || M == 0 || N == 0) return;
  check_cublas(cublasGemmStridedBatchedEx(cublas_handle(stream), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                          trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, as_int(N, "N"), as_int(M, "M"),
                                          as_int(K, "K"), &alpha, B, CUDA_R_32F, as_int(ldb, "ldb"), stride_b, A,
                                          CUDA_R_32F, as_int(lda, "lda"), stride_a, &beta, C, CUDA_R_32F,
                                          as_int(ldc, "ldc"), stride_c, as_int(batch, "batch"), compute_type(p),
                                          CUBLAS_GEMM_DEFAULT),
               "cublasGemmStridedBatchedEx");
}

}  // namespace cpets::kernels::cudnn
