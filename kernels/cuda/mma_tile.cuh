// One warp's share of a thread block's tensor-core tile product, shared by the tiled kernels that
// have a tf32/bf16 path (conv3d.cu, gemm.cu). The block stages a 16-deep slice of its operands in
// shared memory, k-major — A as As[k][m], B as Bs[k][n], already rounded to the precision
// (detail::round_operand) — and each warp multiplies its MI × NI grid of m16n8 tiles at
// (row0, col0) of the block's C tile with mma.sync, FP32 accumulation. Fragment element maps are
// conv3d_math.h's (tf32_a_slot, …), which tests/test_cuda_host_math.cpp runs on the host.
// Bank conflicts: a fragment load touches rows (k) 0..3 (or 0..7) × 8 columns; with a leading
// dimension ≡ 8 (mod 32) those 32 lanes hit 32 different banks.
#pragma once
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/mma_math.h"

namespace cpets::kernels::cuda::detail {

constexpr int kMmaDepth = 16;  // k per call: two m16n8k8 TF32 steps or one m16n8k16 BF16 step

template <Precision P, int MI, int NI, int ALd, int BLd>
__device__ __forceinline__ void warp_mma_k16(float (&c)[MI][NI][4], const float (*As)[ALd], const float (*Bs)[BLd],
                                             int row0, int col0) {
  static_assert(P != Precision::fp32_exact, "the fp32 path multiplies on the CUDA cores");
  // As a signed int, as the callers' thread index: the register allocation of conv3d's
  // implicit_gemm (80 registers) spilled with the unsigned form.
  const int lane = static_cast<int>(threadIdx.x) % 32;
  constexpr int kStep = P == Precision::tf32 ? 8 : 16;
#pragma unroll
  for (int kk = 0; kk < kMmaDepth; kk += kStep) {
    uint32_t a[MI][4], b[NI][2];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        if constexpr (P == Precision::tf32) {
          RowCol e = tf32_a_slot(lane, r);
          a[mi][r] = __float_as_uint(As[kk + e.col][row0 + mi * 16 + e.row]);
        } else {
          RowCol lo = bf16_a_slot(lane, 2 * r), hi = bf16_a_slot(lane, 2 * r + 1);
          a[mi][r] = pack_bf16(As[kk + lo.col][row0 + mi * 16 + lo.row], As[kk + hi.col][row0 + mi * 16 + hi.row]);
        }
      }
#pragma unroll
    for (int ni = 0; ni < NI; ++ni)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        if constexpr (P == Precision::tf32) {
          RowCol e = tf32_b_slot(lane, r);
          b[ni][r] = __float_as_uint(Bs[kk + e.row][col0 + ni * 8 + e.col]);
        } else {
          RowCol lo = bf16_b_slot(lane, 2 * r), hi = bf16_b_slot(lane, 2 * r + 1);
          b[ni][r] = pack_bf16(Bs[kk + lo.row][col0 + ni * 8 + lo.col], Bs[kk + hi.row][col0 + ni * 8 + hi.col]);
        }
      }
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni) {
        if constexpr (P == Precision::tf32)
          mma_tf32_16x8x8(c[mi][ni], a[mi], b[ni]);
        else
          mma_bf16_16x8x16(c[mi][ni], a[mi], b[ni]);
      }
  }
}

// Hands each accumulator of the warp's tiles to out(row, col, value), row and col within the
// block's C tile.
template <int MI, int NI, class Out>
__device__ __forceinline__ void warp_mma_store(const float (&c)[MI][NI][4], int row0, int col0, Out&& out) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
#pragma unroll
  for (int mi = 0; mi < MI; ++mi)
#pragma unroll
    for (int ni = 0; ni < NI; ++ni)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        RowCol e = mma_c_slot(lane, r);
        out(row0 + mi * 16 + e.row, col0 + ni * 8 + e.col, c[mi][ni][r]);
      }
}

}  // namespace cpets::kernels::cuda::detail
