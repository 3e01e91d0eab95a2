// The register layouts of the mma.sync tensor-core fragments, as __host__ __device__ functions:
// the kernels' warp tile products (mma_tile.cuh) load and store through them, and
// tests/test_cuda_host_math.cpp emulates those products on the host with the very same maps.
#pragma once
#include "kernels/cuda/hd.h"

namespace cpets::kernels::cuda {

// mma.sync fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k8 / m16n8k16"): which
// element of the tile lane `lane` holds in slot `i`. g = lane / 4, t = lane % 4.
struct RowCol {
  int row, col;
};
// TF32 m16n8k8: A is 16×8 (row = m, col = k), 4 slots.
CPETS_HD RowCol tf32_a_slot(int lane, int i) { return {(lane >> 2) + 8 * (i & 1), (lane & 3) + 4 * (i >> 1)}; }
// TF32 m16n8k8: B is 8×8 (row = k, col = n), 2 slots.
CPETS_HD RowCol tf32_b_slot(int lane, int i) { return {(lane & 3) + 4 * i, lane >> 2}; }
// BF16 m16n8k16: A is 16×16, 8 halves in 4 registers (slot i is half i & 1 of register i / 2).
CPETS_HD RowCol bf16_a_slot(int lane, int i) {
  int reg = i >> 1;
  return {(lane >> 2) + 8 * (reg & 1), 2 * (lane & 3) + (i & 1) + 8 * (reg >> 1)};
}
// BF16 m16n8k16: B is 16×8, 4 halves in 2 registers.
CPETS_HD RowCol bf16_b_slot(int lane, int i) { return {2 * (lane & 3) + (i & 1) + 8 * (i >> 1), lane >> 2}; }
// The f32 accumulator (16×8) of both shapes, 4 slots.
CPETS_HD RowCol mma_c_slot(int lane, int i) { return {(lane >> 2) + 8 * (i >> 1), 2 * (lane & 3) + (i & 1)}; }

}  // namespace cpets::kernels::cuda
