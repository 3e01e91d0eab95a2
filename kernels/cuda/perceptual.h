// The perceptual loss's raw kernels on device pointers, the CUDA counterparts of
// kernels/cpu/perceptual.h (same definitions, including the zero-feature limit of the
// normalisation's derivative). Thread per (image, pixel) for the distance and its input
// gradients; the weight gradient sums N·P terms per channel in double, one block per channel with
// a fixed reduction tree (no atomics); gathers and scatters write each element once.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/cuda/stream.h"

namespace cpets::kernels::cuda {

void normalized_distance_forward(const float* a, const float* b, const float* w, int64_t N, int64_t C, int64_t P,
                                 float eps, float* out, cudaStream_t stream);
// Workspace: the per-pixel denominators of both inputs, for the weight gradient.
size_t normalized_distance_backward_workspace_bytes(int64_t N, int64_t P);
void normalized_distance_backward(const float* a, const float* b, const float* w, const float* dout, int64_t N,
                                  int64_t C, int64_t P, float eps, float* da, float* db, float* dw, Workspace ws,
                                  cudaStream_t stream);

// `index` is device memory (count entries).
void gather_axis_slices(const float* x, int64_t B, int64_t D, int64_t H, int64_t W, int axis, const int64_t* index,
                        int64_t count, float* out, cudaStream_t stream);
void scatter_axis_slices(const float* dout, int64_t B, int64_t D, int64_t H, int64_t W, int axis,
                         const int64_t* index, int64_t count, float* dx, cudaStream_t stream);

}  // namespace cpets::kernels::cuda
