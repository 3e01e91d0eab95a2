// Philox-4x32-10 on the host: the counter-based generator of engine/rng.h (its comment fixes the
// stream layout) as plain functions of (seed, first position), so the CPU and the CUDA kernels
// (kernels/cuda/rng.h) have the same signatures and produce the same stream. Fixed chunks: the
// values do not depend on the thread count.
#pragma once
#include <array>
#include <cstdint>

namespace cpets::kernels::cpu {

using PhiloxCounter = std::array<uint32_t, 4>;
using PhiloxKey = std::array<uint32_t, 2>;

// Ten rounds of Philox-4x32 on one 128-bit counter.
PhiloxCounter philox4x32_10(PhiloxCounter counter, PhiloxKey key);

// Values at stream positions start … start + n − 1 of the stream keyed by seed.
void philox_uniform(uint64_t seed, uint64_t start, float* out, int64_t n);  // [0, 1), 24 bits
void philox_uniform_range(uint64_t seed, uint64_t start, float* out, int64_t n, float lo, float hi);  // [lo, hi)
void philox_normal(uint64_t seed, uint64_t start, float* out, int64_t n, float mean, float std);

}  // namespace cpets::kernels::cpu
