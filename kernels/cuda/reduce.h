// Deterministic sums on raw device pointers: the CUDA counterpart of cpu::sum_axes, plus the
// map-sum that the losses use. Sums accumulate in double; no float atomics; the split into
// blocks depends on the shape only, so results are bitwise identical run to run.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/cuda/stream.h"

namespace cpets::kernels::cuda {

// out = scale · Σ x over the dimensions flagged in `reduce` (as cpu::sum_axes).
size_t sum_axes_workspace_bytes(const std::vector<int64_t>& shape, const std::vector<bool>& reduce);
void sum_axes(const float* x, const std::vector<int64_t>& shape, const std::vector<bool>& reduce, float* out,
              double scale, Workspace ws, cudaStream_t stream);

}  // namespace cpets::kernels::cuda
