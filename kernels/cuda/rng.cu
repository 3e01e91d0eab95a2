// Philox on the device: one thread per output value computes the Philox block of its position
// (ten rounds of 32×32→64-bit multiplies: cheap next to the memory write) and takes its lane.
// Normals take the lane pair (0,1) or (2,3) of the block through Box–Muller in double, as the
// CPU does; CUDA's double log/sin/cos are within 1–2 ulp of glibc's, and the value is rounded to
// float, so the GPU stream equals the CPU's except, in principle, at a float rounding boundary.
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/rng.h"

namespace cpets::kernels::cuda {
namespace {

enum class Dist { Unit, Range, Normal };

template <Dist kDist>
__global__ void philox_kernel(uint64_t seed, uint64_t offset, float* __restrict__ out, int64_t n, float a, float b) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const uint64_t pos = offset + uint64_t(i);
    const Philox4 w = philox_block(seed, pos >> 2);
    const unsigned lane = unsigned(pos & 3u);
    if (kDist == Dist::Unit) {
      out[i] = word_to_unit_float(w.v[lane]);
    } else if (kDist == Dist::Range) {
      out[i] = uniform_in(w.v[lane], a, b);
    } else {
      double z0, z1;
      const unsigned first = lane & ~1u;
      box_muller(w.v[first], w.v[first + 1], z0, z1);
      out[i] = float(double(a) + double(b) * ((lane & 1u) ? z1 : z0));
    }
  }
}

template <Dist kDist>
void launch(uint64_t seed, uint64_t offset, float* out, int64_t n, float a, float b, cudaStream_t stream) {
  if (n <= 0) return;
  philox_kernel<kDist><<<grid_for(n), kBlock, 0, stream>>>(seed, offset, out, n, a, b);
  CPETS_CHECK_LAUNCH("philox_kernel");
}

}  // namespace

void philox_uniform(uint64_t seed, uint64_t offset, float* out, int64_t n, cudaStream_t stream) {
  launch<Dist::Unit>(seed, offset, out, n, 0.f, 1.f, stream);
}
void philox_uniform_range(uint64_t seed, uint64_t offset, float* out, int64_t n, float lo, float hi,
                          cudaStream_t stream) {
  launch<Dist::Range>(seed, offset, out, n, lo, hi, stream);
}
void philox_normal(uint64_t seed, uint64_t offset, float* out, int64_t n, float mean, float std, cudaStream_t stream) {
  launch<Dist::Normal>(seed, offset, out, n, mean, std, stream);
}

}  // namespace cpets::kernels::cuda
