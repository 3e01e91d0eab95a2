// Philox random numbers on the device, EXACTLY the stream of engine/rng (same layout: value at
// position p from lane p % 4 of the Philox block p / 4; hd_math.h holds the shared code), so a
// seed gives the same tensor on the CPU and on the GPU.
#pragma once
#include <cstdint>

#include "kernels/cuda/stream.h"

namespace cpets::kernels::cuda {

// Values at stream positions offset … offset + n − 1 of generator `seed`.
void philox_uniform(uint64_t seed, uint64_t offset, float* out, int64_t n, cudaStream_t stream);  // [0, 1)
void philox_uniform_range(uint64_t seed, uint64_t offset, float* out, int64_t n, float lo, float hi,
                          cudaStream_t stream);  // [lo, hi)
void philox_normal(uint64_t seed, uint64_t offset, float* out, int64_t n, float mean, float std, cudaStream_t stream);

}  // namespace cpets::kernels::cuda
