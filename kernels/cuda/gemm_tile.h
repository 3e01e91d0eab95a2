// The thread → tile-element maps of our SGEMM (kernels/cuda/gemm.cu) as __host__ __device__ code:
// the kernel runs them on the GPU and tests/test_cuda_host_math.cpp runs the very same functions
// in a host emulation of the kernel, thread by thread and warp by warp, against float64.
#pragma once
#include <algorithm>
#include <cstdint>

#include "kernels/cuda/hd.h"
#include "kernels/cuda/precision.h"

namespace cpets::kernels::cuda::gemm_tile {

// A block of 256 threads owns a 64×64 tile of C and walks K in steps of 16.
constexpr int kBM = 64, kBN = 64, kBK = 16, kThreads = 256;
constexpr int kLoadsPerThread = kBM * kBK / kThreads;  // 4 of A and 4 of B per K step

// Padded shared rows (As[k][m], Bs[k][n]): +4 keeps the fp32 path's float reads conflict-free;
// the tensor-core fragment loads need a leading dimension ≡ 8 (mod 32) (mma_tile.cuh).
CPETS_HD constexpr int lead(Precision p) { return (p == Precision::fp32_exact ? 4 : 8) + kBM; }

// Which element of the 16-deep operand slices thread t loads in its slot j: (k, m) of op(A) and
// (k, n) of op(B). The fast-varying thread index runs along whichever index is contiguous in
// memory for that transpose, so a warp's global loads coalesce.
struct Slot {
  int k, index;
};
CPETS_HD Slot a_slot(bool trans_a, int t, int j) {
  return trans_a ? Slot{t / kBM + (kThreads / kBM) * j, t % kBM} : Slot{t % kBK, t / kBK + (kThreads / kBK) * j};
}
CPETS_HD Slot b_slot(bool trans_b, int t, int j) {
  return trans_b ? Slot{t % kBK, t / kBK + (kThreads / kBK) * j} : Slot{t / kBN + (kThreads / kBN) * j, t % kBN};
}

// fp32 path: thread t accumulates rows fp32_row(t, i) and columns fp32_col(t, j), i, j < 4 (a warp
// reads 16 consecutive B columns and broadcasts A values).
CPETS_HD int fp32_row(int t, int i) { return t / 16 + 16 * i; }
CPETS_HD int fp32_col(int t, int j) { return t % 16 + 16 * j; }

// Tensor-core path: warp w owns the 32×16 block at (warp_row(w), warp_col(w)): 2 m16 × 2 n8 tiles.
constexpr int kWarpTilesM = 2, kWarpTilesN = 2;
CPETS_HD int warp_row(int warp) { return (warp % 2) * 32; }
CPETS_HD int warp_col(int warp) { return (warp / 2) * 16; }

// Split K: below kSplitTarget tiles of C, a long K is cut into `splits` chunks of `chunk` (a
// multiple of kBK, at least kMinChunk) whose partial tiles are added in chunk order. A function
// of the shape only (never of the card), so results do not depend on the device.
constexpr int64_t kSplitTarget = 128, kMinChunk = 1024, kMaxSplits = 32;
struct SplitPlan {
  int64_t splits = 1, chunk = 0;
};
inline SplitPlan split_plan(int64_t batch, int64_t M, int64_t N, int64_t K) {
  auto cdiv = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  SplitPlan p;
  p.chunk = std::max<int64_t>(K, 1);
  const int64_t tiles = batch * cdiv(M, kBM) * cdiv(N, kBN);
  if (tiles >= kSplitTarget || K < 2 * kMinChunk) return p;
  p.splits = std::min({kMaxSplits, cdiv(kSplitTarget * 2, tiles), K / kMinChunk});
  p.chunk = cdiv(cdiv(K, p.splits), kBK) * kBK;
  p.splits = cdiv(K, p.chunk);
  return p;
}

}  // namespace cpets::kernels::cuda::gemm_tile
