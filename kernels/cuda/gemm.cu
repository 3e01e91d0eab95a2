// Our SGEMM (the cuBLAS reference is kernels/cudnn/gemm.h): the classic shared-memory tiling. A block of 256 threads owns a 64×64 tile of C and walks
// K in steps of 16: it stages the 64×16 slice of op(A) and the 16×64 slice of op(B) in shared
// memory (each thread loads 4 + 4 elements, with the fast-varying thread index along whichever
// dimension is contiguous in memory for that transpose, so global loads coalesce), then every
// thread accumulates a 4×4 micro-tile of C in registers: rows ty + 16i, columns tx + 16j, so a
// warp reads 16 consecutive B columns (no bank conflicts) and broadcasts A values. Each C
// element is summed in K order by one thread: deterministic, no split-K. Batches run on
// blockIdx.z. Edge tiles load zeros past M, N, K, so any shape works.
#include <stdexcept>
#include <string>

#include "kernels/cuda/gemm.h"
#include "kernels/cuda/launch.cuh"

namespace cpets::kernels::cuda {
namespace {

constexpr int kBM = 64, kBN = 64, kBK = 16;

template <bool kTA, bool kTB>
__global__ void __launch_bounds__(256) sgemm_kernel(int64_t M, int64_t N, int64_t K, float alpha,
                                                     const float* __restrict__ A, int64_t lda, int64_t stride_a,
                                                     const float* __restrict__ B, int64_t ldb, int64_t stride_b,
                                                     float beta, float* __restrict__ C, int64_t ldc,
                                                     int64_t stride_c) {
  __shared__ float As[kBK][kBM + 4];
  __shared__ float Bs[kBK][kBN + 4];
  A += int64_t(blockIdx.z) * stride_a;
  B += int64_t(blockIdx.z) * stride_b;
  C += int64_t(blockIdx.z) * stride_c;
  const int t = threadIdx.x, tx = t % 16, ty = t / 16;
  const int64_t m0 = int64_t(blockIdx.y) * kBM, n0 = int64_t(blockIdx.x) * kBN;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kBK) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      // op(A)(m, k): A[m·lda + k], or A[k·lda + m] when transposed.
      const int am = kTA ? t % 64 : t / 16 + 16 * j, ak = kTA ? t / 64 + 4 * j : t % 16;
      const int64_t gm = m0 + am, gk = k0 + ak;
      As[ak][am] = (gm < M && gk < K) ? (kTA ? A[gk * lda + gm] : A[gm * lda + gk]) : 0.f;
      // op(B)(k, n): B[k·ldb + n], or B[n·ldb + k] when transposed.
      const int bn = kTB ? t / 16 + 16 * j : t % 64, bk = kTB ? t % 16 : t / 64 + 4 * j;
      const int64_t gn = n0 + bn, gk2 = k0 + bk;
      Bs[bk][bn] = (gn < N && gk2 < K) ? (kTB ? B[gn * ldb + gk2] : B[gk2 * ldb + gn]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty + 16 * i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + tx + 16 * j;
      if (n >= N) continue;
      float* c = C + m * ldc + n;
      *c = beta == 0.f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *c;
    }
  }
}

void check_dims(int64_t batch, int64_t M, int64_t N, const char* who) {
  if (batch > 65535 || ceil_div(M, kBM) > 65535)
    throw std::invalid_argument(std::string(who) + ": batch " + std::to_string(batch) + " or M " + std::to_string(M) +
                                " exceeds the grid limits; fold the batch into the rows");
  (void)N;
}

}  // namespace

void sgemm_batched(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b,
                   float beta, float* C, int64_t ldc, int64_t stride_c, cudaStream_t stream) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  check_dims(batch, M, N, "cuda sgemm");
  const dim3 grid(unsigned(ceil_div(N, kBN)), unsigned(ceil_div(M, kBM)), unsigned(batch));
  auto go = [&](auto kernel) {
    kernel<<<grid, 256, 0, stream>>>(M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc, stride_c);
  };
  if (!trans_a && !trans_b) go(sgemm_kernel<false, false>);
  else if (!trans_a) go(sgemm_kernel<false, true>);
  else if (!trans_b) go(sgemm_kernel<true, false>);
  else go(sgemm_kernel<true, true>);
  CPETS_CHECK_LAUNCH("sgemm_kernel");
}

}  // namespace cpets::kernels::cuda
