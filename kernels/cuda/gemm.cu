// Our SGEMM (the cuBLAS reference is kernels/cudnn/gemm.h): the classic shared-memory tiling. A
// block of 256 threads owns a 64×64 tile of C and walks K in steps of 16: it stages the 64×16
// slice of op(A) and the 16×64 slice of op(B) in shared memory (each thread loads 4 + 4 elements,
// with the fast-varying thread index along whichever dimension is contiguous in memory for that
// transpose, so global loads coalesce; the maps are in gemm_tile.h), then multiplies:
//   fp32_exact: every thread accumulates a 4×4 micro-tile of C with FFMAs in K order.
//   tf32/bf16:  8 warps as 2 (M) × 4 (N), each a 32×16 block of m16n8 mma.sync tiles
//               (mma_tile.cuh); operands are rounded once when stored to shared memory, FP32
//               accumulation.
// Batches run on blockIdx.z. Edge tiles load zeros past M, N, K, so any shape works.
// Split K: when C has few tiles but K is long (weight gradients: K = every token of the batch),
// the tiles alone cannot fill the card, so K is cut into a shape-determined number of chunks;
// each (tile, chunk) block writes its partial tile to the workspace and a second kernel adds the
// chunks in order and applies alpha/beta — still deterministic, no atomics.
#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemm_tile.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/mma_tile.cuh"

namespace cpets::kernels::cuda {
namespace {

using namespace gemm_tile;

template <Precision P>
struct GemmAccumulators {
  float c[4][4];  // fp32: [i][j] of rows fp32_row(t, i), columns fp32_col(t, j)
};
template <>
struct GemmAccumulators<Precision::tf32> {
  float c[kWarpTilesM][kWarpTilesN][4];  // [m16 tile][n8 tile][slot]
};
template <>
struct GemmAccumulators<Precision::bf16> {
  float c[kWarpTilesM][kWarpTilesN][4];
};

// With split K (splits > 1) blockIdx.z = batch·splits + chunk, and the block writes its partial
// tile (no alpha/beta) to `partial` [batch][chunk][M][N]; otherwise it writes C.
template <Precision P, bool kTA, bool kTB>
__global__ void __launch_bounds__(kThreads) sgemm_kernel(int64_t M, int64_t N, int64_t K, float alpha,
                                                          const float* __restrict__ A, int64_t lda, int64_t stride_a,
                                                          const float* __restrict__ B, int64_t ldb, int64_t stride_b,
                                                          float beta, float* __restrict__ C, int64_t ldc,
                                                          int64_t stride_c, int64_t splits, int64_t chunk,
                                                          float* __restrict__ partial) {
  constexpr int kLd = lead(P);
  __shared__ __align__(16) float As[kBK][kLd];
  __shared__ __align__(16) float Bs[kBK][kLd];
  const int64_t batch = int64_t(blockIdx.z) / splits, part = int64_t(blockIdx.z) - batch * splits;
  A += batch * stride_a;
  B += batch * stride_b;
  C += batch * stride_c;
  const int64_t k_begin = part * chunk, k_end = min(K, k_begin + chunk);
  const int t = threadIdx.x, warp = t / 32;
  const int64_t m0 = int64_t(blockIdx.y) * kBM, n0 = int64_t(blockIdx.x) * kBN;
  GemmAccumulators<P> acc = {};
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kBK) {
#pragma unroll
    for (int j = 0; j < kLoadsPerThread; ++j) {
      // op(A)(m, k): A[m·lda + k], or A[k·lda + m] when transposed.
      const Slot a = a_slot(kTA, t, j);
      const int64_t gm = m0 + a.index, gk = k0 + a.k;
      As[a.k][a.index] = detail::round_operand<P>(
          (gm < M && gk < k_end) ? (kTA ? A[gk * lda + gm] : A[gm * lda + gk]) : 0.f);
      // op(B)(k, n): B[k·ldb + n], or B[n·ldb + k] when transposed.
      const Slot b = b_slot(kTB, t, j);
      const int64_t gn = n0 + b.index, gk2 = k0 + b.k;
      Bs[b.k][b.index] = detail::round_operand<P>(
          (gn < N && gk2 < k_end) ? (kTB ? B[gn * ldb + gk2] : B[gk2 * ldb + gn]) : 0.f);
    }
    __syncthreads();
    if constexpr (P == Precision::fp32_exact) {
#pragma unroll
      for (int kk = 0; kk < kBK; ++kk) {
        float a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = As[kk][fp32_row(t, i)];
#pragma unroll
        for (int j = 0; j < 4; ++j) b[j] = Bs[kk][fp32_col(t, j)];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc.c[i][j] = fmaf(a[i], b[j], acc.c[i][j]);
      }
    } else {
      detail::warp_mma_k16<P>(acc.c, As, Bs, warp_row(warp), warp_col(warp));
    }
    __syncthreads();
  }
  auto out = [&](int r, int c, float v) {
    const int64_t m = m0 + r, n = n0 + c;
    if (m >= M || n >= N) return;
    if (splits > 1) {
      partial[(int64_t(blockIdx.z) * M + m) * N + n] = v;
    } else {
      float* dst = C + m * ldc + n;
      *dst = beta == 0.f ? alpha * v : alpha * v + beta * *dst;
    }
  };
  if constexpr (P == Precision::fp32_exact) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) out(fp32_row(t, i), fp32_col(t, j), acc.c[i][j]);
  } else {
    detail::warp_mma_store(acc.c, warp_row(warp), warp_col(warp), out);
  }
}

// C = alpha·Σ_chunks partial + beta·C, chunks added in order.
__global__ void split_k_combine_kernel(const float* __restrict__ partial, int64_t batch, int64_t splits, int64_t M,
                                       int64_t N, float alpha, float beta, float* __restrict__ C, int64_t ldc,
                                       int64_t stride_c) {
  const int64_t n_all = batch * M * N, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n_all; i += step) {
    const int64_t b = i / (M * N), mn = i - b * M * N, m = mn / N, n = mn - m * N;
    float s = 0.f;
    for (int64_t p = 0; p < splits; ++p) s += partial[(b * splits + p) * M * N + mn];
    float* c = C + b * stride_c + m * ldc + n;
    *c = beta == 0.f ? alpha * s : alpha * s + beta * *c;
  }
}

void check_dims(int64_t grid_z, int64_t M, const char* who) {
  if (grid_z > 65535 || ceil_div(M, kBM) > 65535)
    throw std::invalid_argument(std::string(who) + ": batch " + std::to_string(grid_z) + " or M " + std::to_string(M) +
                                " exceeds the grid limits; fold the batch into the rows");
}

}  // namespace

size_t sgemm_workspace_bytes(int64_t batch, int64_t M, int64_t N, int64_t K) {
  const SplitPlan p = split_plan(batch, M, N, K);
  return p.splits > 1 ? size_t(batch * p.splits * M * N) * sizeof(float) : 0;
}

void sgemm_batched(Precision precision, bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b,
                   float beta, float* C, int64_t ldc, int64_t stride_c, Workspace ws, cudaStream_t stream) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  const SplitPlan p = split_plan(batch, M, N, K);
  check_dims(batch * p.splits, M, "cuda sgemm");
  if (ws.bytes < sgemm_workspace_bytes(batch, M, N, K))
    throw std::invalid_argument("cuda sgemm: workspace of " + std::to_string(ws.bytes) + " bytes, need " +
                                std::to_string(sgemm_workspace_bytes(batch, M, N, K)));
  float* partial = static_cast<float*>(ws.ptr);
  const dim3 grid(unsigned(ceil_div(N, kBN)), unsigned(ceil_div(M, kBM)), unsigned(batch * p.splits));
  auto go = [&](auto kernel) {
    kernel<<<grid, kThreads, 0, stream>>>(M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc, stride_c,
                                          p.splits, p.chunk, partial);
  };
  auto with_transposes = [&](auto precision) {
    constexpr Precision P = decltype(precision)::value;
    if (!trans_a && !trans_b) go(sgemm_kernel<P, false, false>);
    else if (!trans_a) go(sgemm_kernel<P, false, true>);
    else if (!trans_b) go(sgemm_kernel<P, true, false>);
    else go(sgemm_kernel<P, true, true>);
  };
  switch (precision) {
    case Precision::fp32_exact: with_transposes(std::integral_constant<Precision, Precision::fp32_exact>{}); break;
    case Precision::tf32: with_transposes(std::integral_constant<Precision, Precision::tf32>{}); break;
    case Precision::bf16: with_transposes(std::integral_constant<Precision, Precision::bf16>{}); break;
  }
  CPETS_CHECK_LAUNCH("sgemm_kernel");
  if (p.splits > 1) {
    split_k_combine_kernel<<<grid_for(batch * M * N), kBlock, 0, stream>>>(partial, batch, p.splits, M, N, alpha, beta,
                                                                          C, ldc, stride_c);
    CPETS_CHECK_LAUNCH("split_k_combine_kernel");
  }
}

}  // namespace cpets::kernels::cuda
