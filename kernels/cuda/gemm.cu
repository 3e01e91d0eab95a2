// Our SGEMM (the cuBLAS reference is kernels/cudnn/gemm.h): the classic shared-memory tiling. A block of 256 threads owns a 64×64 tile of C and walks
// K in steps of 16: it stages the 64×16 slice of op(A) and the 16×64 slice of op(B) in shared
// memory (each thread loads 4 + 4 elements, with the fast-varying thread index along whichever
// dimension is contiguous in memory for that transpose, so global loads coalesce), then every
// thread accumulates a 4×4 micro-tile of C in registers: rows ty + 16i, columns tx + 16j, so a
// warp reads 16 consecutive B columns (no bank conflicts) and broadcasts A values. Each C
// element is summed in K order by one thread. Batches run on blockIdx.z. Edge tiles load zeros
// past M, N, K, so any shape works.
// Split K: when C has few tiles but K is long (weight gradients: K = every token of the batch),
// the tiles alone cannot fill the card, so K is cut into a shape-determined number of chunks;
// each (tile, chunk) block writes its partial tile to the workspace and a second kernel adds the
// chunks in order and applies alpha/beta — still deterministic, no atomics.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/cuda/gemm.h"
#include "kernels/cuda/launch.cuh"

namespace cpets::kernels::cuda {
namespace {

constexpr int kBM = 64, kBN = 64, kBK = 16;

constexpr int64_t kSplitTarget = 128;  // below this many tiles, split K
constexpr int64_t kMinChunk = 1024;     // …into chunks of at least this many (multiple of kBK)
constexpr int64_t kMaxSplits = 32;

// With split K (splits > 1) blockIdx.z = batch·splits + chunk, and the block writes its partial
// tile (no alpha/beta) to `partial` [batch][chunk][M][N]; otherwise it writes C.
template <bool kTA, bool kTB>
__global__ void __launch_bounds__(256) sgemm_kernel(int64_t M, int64_t N, int64_t K, float alpha,
                                                     const float* __restrict__ A, int64_t lda, int64_t stride_a,
                                                     const float* __restrict__ B, int64_t ldb, int64_t stride_b,
                                                     float beta, float* __restrict__ C, int64_t ldc,
                                                     int64_t stride_c, int64_t splits, int64_t chunk,
                                                     float* __restrict__ partial) {
  __shared__ float As[kBK][kBM + 4];
  __shared__ float Bs[kBK][kBN + 4];
  const int64_t batch = int64_t(blockIdx.z) / splits, part = int64_t(blockIdx.z) - batch * splits;
  A += batch * stride_a;
  B += batch * stride_b;
  C += batch * stride_c;
  const int64_t k_begin = part * chunk, k_end = min(K, k_begin + chunk);
  const int t = threadIdx.x, tx = t % 16, ty = t / 16;
  const int64_t m0 = int64_t(blockIdx.y) * kBM, n0 = int64_t(blockIdx.x) * kBN;
  float acc[4][4] = {};
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kBK) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      // op(A)(m, k): A[m·lda + k], or A[k·lda + m] when transposed.
      const int am = kTA ? t % 64 : t / 16 + 16 * j, ak = kTA ? t / 64 + 4 * j : t % 16;
      const int64_t gm = m0 + am, gk = k0 + ak;
      As[ak][am] = (gm < M && gk < k_end) ? (kTA ? A[gk * lda + gm] : A[gm * lda + gk]) : 0.f;
      // op(B)(k, n): B[k·ldb + n], or B[n·ldb + k] when transposed.
      const int bn = kTB ? t / 16 + 16 * j : t % 64, bk = kTB ? t % 16 : t / 64 + 4 * j;
      const int64_t gn = n0 + bn, gk2 = k0 + bk;
      Bs[bk][bn] = (gn < N && gk2 < k_end) ? (kTB ? B[gn * ldb + gk2] : B[gk2 * ldb + gn]) : 0.f;
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
      if (splits > 1) {
        partial[(int64_t(blockIdx.z) * M + m) * N + n] = acc[i][j];
      } else {
        float* c = C + m * ldc + n;
        *c = beta == 0.f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *c;
      }
    }
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

struct SplitPlan {
  int64_t splits = 1, chunk = 0;
};

// A function of the shape only (never of the card), so results do not depend on the device.
SplitPlan split_plan(int64_t batch, int64_t M, int64_t N, int64_t K) {
  SplitPlan p;
  p.chunk = std::max<int64_t>(K, 1);
  const int64_t tiles = batch * ceil_div(M, kBM) * ceil_div(N, kBN);
  if (tiles >= kSplitTarget || K < 2 * kMinChunk) return p;
  p.splits = std::min({kMaxSplits, ceil_div(kSplitTarget * 2, tiles), K / kMinChunk});
  p.chunk = ceil_div(ceil_div(K, p.splits), kBK) * kBK;
  p.splits = ceil_div(K, p.chunk);
  return p;
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

void sgemm_batched(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha,
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
    kernel<<<grid, 256, 0, stream>>>(M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc, stride_c,
                                     p.splits, p.chunk, partial);
  };
  if (!trans_a && !trans_b) go(sgemm_kernel<false, false>);
  else if (!trans_a) go(sgemm_kernel<false, true>);
  else if (!trans_b) go(sgemm_kernel<true, false>);
  else go(sgemm_kernel<true, true>);
  CPETS_CHECK_LAUNCH("sgemm_kernel");
  if (p.splits > 1) {
    split_k_combine_kernel<<<grid_for(batch * M * N), kBlock, 0, stream>>>(partial, batch, p.splits, M, N, alpha, beta,
                                                                          C, ldc, stride_c);
    CPETS_CHECK_LAUNCH("split_k_combine_kernel");
  }
}

}  // namespace cpets::kernels::cuda
