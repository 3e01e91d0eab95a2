// Helpers private to the engine-op kernels (.cu files of this folder other than conv3d and
// attention): launch sizes and deterministic block reductions.
//
// Determinism: every reduction here runs a fixed tree — each thread accumulates a fixed,
// shape-determined subset in order, then warp shuffles with fixed offsets, then the warps'
// results in warp order — and multi-block reductions write per-block partials that a second
// kernel combines in index order. No float atomics anywhere, and no launch size depends on the
// card (SM count), so the same shapes give the same bits on every run.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/check.h"
#include "kernels/cuda/hd_math.h"
#include "kernels/cuda/stream.h"

namespace cpets::kernels::cuda {

constexpr int kBlock = 256;  // threads per block unless a kernel says otherwise

// Blocks for a grid-stride loop over n items, capped so huge tensors reuse threads.
inline unsigned grid_for(int64_t n, int threads = kBlock) {
  const int64_t blocks = (n + threads - 1) / threads;
  return unsigned(blocks < 1 ? 1 : (blocks > 65536 ? 65536 : blocks));
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); the result is valid in thread 0.
// Callers that reduce twice in one kernel must __syncthreads() between the calls.
template <class T>
__device__ T block_sum(T v) {
  __shared__ T warp_part[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) warp_part[warp] = v;
  __syncthreads();
  const int warps = int(blockDim.x >> 5);
  v = (warp == 0 && lane < warps) ? warp_part[lane] : T(0);
  if (warp == 0) v = warp_sum(v);
  return v;
}

struct Double2 {
  double a, b;
};

// Two sums at once (one barrier instead of two); valid in thread 0.
__device__ inline Double2 block_sum2(double a, double b) {
  __shared__ double part[2][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  a = warp_sum(a);
  b = warp_sum(b);
  if (lane == 0) {
    part[0][warp] = a;
    part[1][warp] = b;
  }
  __syncthreads();
  const int warps = int(blockDim.x >> 5);
  a = (warp == 0 && lane < warps) ? part[0][lane] : 0.0;
  b = (warp == 0 && lane < warps) ? part[1][lane] : 0.0;
  if (warp == 0) {
    a = warp_sum(a);
    b = warp_sum(b);
  }
  return {a, b};
}

// float4 accesses need 16-byte alignment (allocator blocks are 256-byte aligned; offsets inside
// a tensor may not be).
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace cpets::kernels::cuda
