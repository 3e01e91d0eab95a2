// Deterministic Σ term(i), i < n, for the losses: blocks of 256 threads each add a chunk of
// kSumChunk terms (thread-strided, in double) into a partial; one block then adds the partials
// (each thread a fixed strided subset in order, then the block tree) and writes
// float(mul · total / div) — the loss value, without a round trip to the host.
#pragma once
#include "kernels/cuda/launch.cuh"

namespace cpets::kernels::cuda {

constexpr int64_t kSumChunk = 16384;

inline int64_t map_sum_partials(int64_t n) { return n <= 0 ? 1 : ceil_div(n, kSumChunk); }

template <class Term>
__global__ void map_sum_partial_kernel(int64_t n, Term term, double* __restrict__ partial) {
  const int64_t b = int64_t(blockIdx.x) * kSumChunk, e = min(n, b + kSumChunk);
  double acc = 0.0;
  for (int64_t i = b + threadIdx.x; i < e; i += blockDim.x) acc += double(term(i));
  acc = block_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

static __global__ void map_sum_finish_kernel(const double* __restrict__ partial, int64_t P, double mul, double div,
                                             float* __restrict__ out) {
  double acc = 0.0;
  for (int64_t p = threadIdx.x; p < P; p += blockDim.x) acc += partial[p];
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[0] = float(mul * acc / div);
}

// out[0] = float(mul · Σ term(i) / div); `partial` holds map_sum_partials(n) doubles.
template <class Term>
void map_sum(int64_t n, Term term, double mul, double div, double* partial, float* out, cudaStream_t stream) {
  const int64_t P = map_sum_partials(n);
  if (n <= 0) {
    CPETS_CUDA_CHECK(cudaMemsetAsync(partial, 0, sizeof(double), stream));
  } else {
    map_sum_partial_kernel<<<unsigned(P), kBlock, 0, stream>>>(n, term, partial);
    CPETS_CHECK_LAUNCH("map_sum_partial_kernel");
  }
  map_sum_finish_kernel<<<1, kBlock, 0, stream>>>(partial, P, mul, div, out);
  CPETS_CHECK_LAUNCH("map_sum_finish_kernel");
}

}  // namespace cpets::kernels::cuda
