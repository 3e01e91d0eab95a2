// Max pooling: forward a thread per output voxel scanning its (clipped) window in (d, h, w) order;
// backward a thread per input voxel visiting the windows that contain it in output order.
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/maxpool.h"

namespace cpets::kernels::cuda {
namespace {

struct Geometry {  // MaxPool3dShape's numbers, passed by value to the kernels
  int64_t planes, in[3], kernel[3], stride[3], out[3];
};

Geometry geometry(const MaxPool3dShape& s) {
  Geometry g{s.planes, {}, {}, {}, {}};
  for (int a = 0; a < 3; ++a) g.in[a] = s.in[a], g.kernel[a] = s.kernel[a], g.stride[a] = s.stride[a], g.out[a] = s.out[a];
  return g;
}

__global__ void max_pool_forward_kernel(const float* __restrict__ x, Geometry g, float* __restrict__ y,
                                        int32_t* __restrict__ argmax) {
  const int64_t n = g.planes * g.out[0] * g.out[1] * g.out[2];
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t t = i;
    const int64_t ow = t % g.out[2];
    t /= g.out[2];
    const int64_t oh = t % g.out[1];
    t /= g.out[1];
    const int64_t od = t % g.out[0];
    const int64_t p = t / g.out[0];
    const int64_t d0 = od * g.stride[0], h0 = oh * g.stride[1], w0 = ow * g.stride[2];
    const int64_t d1 = min(d0 + g.kernel[0], g.in[0]), h1 = min(h0 + g.kernel[1], g.in[1]),
                  w1 = min(w0 + g.kernel[2], g.in[2]);
    const float* plane = x + p * g.in[0] * g.in[1] * g.in[2];
    int64_t best_at = (d0 * g.in[1] + h0) * g.in[2] + w0;
    float best = plane[best_at];
    for (int64_t d = d0; d < d1; ++d)
      for (int64_t h = h0; h < h1; ++h)
        for (int64_t w = w0; w < w1; ++w) {
          const int64_t at = (d * g.in[1] + h) * g.in[2] + w;
          const float v = plane[at];
          if (v > best || (v != v && best == best)) best = v, best_at = at;  // strict: the first maximum stays
        }
    y[i] = best;
    if (argmax) argmax[i] = int32_t(best_at);
  }
}

// Outputs o with o·s ≤ i < o·s + k, clipped to [0, out): [lo, hi] (empty when lo > hi).
__device__ __forceinline__ void windows_of(int64_t i, int64_t k, int64_t s, int64_t out, int64_t& lo, int64_t& hi) {
  lo = i < k ? 0 : (i - k) / s + 1;
  hi = min(i / s, out - 1);
}

__global__ void max_pool_backward_kernel(const int32_t* __restrict__ argmax, const float* __restrict__ dy, Geometry g,
                                         float* __restrict__ dx) {
  const int64_t n = g.planes * g.in[0] * g.in[1] * g.in[2];
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t t = i;
    const int64_t w = t % g.in[2];
    t /= g.in[2];
    const int64_t h = t % g.in[1];
    t /= g.in[1];
    const int64_t d = t % g.in[0];
    const int64_t p = t / g.in[0];
    const int32_t self = int32_t((d * g.in[1] + h) * g.in[2] + w);
    int64_t d0, d1, h0, h1, w0, w1;
    windows_of(d, g.kernel[0], g.stride[0], g.out[0], d0, d1);
    windows_of(h, g.kernel[1], g.stride[1], g.out[1], h0, h1);
    windows_of(w, g.kernel[2], g.stride[2], g.out[2], w0, w1);
    const int64_t plane = p * g.out[0] * g.out[1] * g.out[2];
    float acc = 0.f;
    for (int64_t a = d0; a <= d1; ++a)
      for (int64_t b = h0; b <= h1; ++b)
        for (int64_t c = w0; c <= w1; ++c) {
          const int64_t o = plane + (a * g.out[1] + b) * g.out[2] + c;
          if (argmax[o] == self) acc += dy[o];
        }
    dx[i] = acc;
  }
}

}  // namespace

void max_pool3d_forward(const MaxPool3dShape& s, const float* x, float* y, int32_t* argmax, cudaStream_t stream) {
  const int64_t n = s.planes * s.out_voxels();
  if (n <= 0) return;
  max_pool_forward_kernel<<<grid_for(n), kBlock, 0, stream>>>(x, geometry(s), y, argmax);
  CPETS_CHECK_LAUNCH("max_pool_forward_kernel");
}

void max_pool3d_backward(const MaxPool3dShape& s, const int32_t* argmax, const float* dy, float* dx,
                         cudaStream_t stream) {
  const int64_t n = s.planes * s.in_voxels();
  if (n <= 0) return;
  max_pool_backward_kernel<<<grid_for(n), kBlock, 0, stream>>>(argmax, dy, geometry(s), dx);
  CPETS_CHECK_LAUNCH("max_pool_backward_kernel");
}

}  // namespace cpets::kernels::cuda
