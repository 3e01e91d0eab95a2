// Pooling and upsampling. Every kernel is a gather with one thread per element it writes, so no
// two threads ever write the same address (no atomics) and each sum has a fixed order:
//   avg_pool forward   thread per output voxel, sums its kernel³ window;
//   avg_pool backward  thread per input voxel, sums dy over the windows that contain it;
//   upsample forward   thread per output voxel, copies its source voxel;
//   upsample backward  thread per input voxel, sums its 2×2×2 block of dy.
// Consecutive threads own consecutive W positions, so reads and writes are coalesced.
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/pool.h"

namespace cpets::kernels::cuda {
namespace {

__host__ __device__ inline int64_t out_size(int64_t in, int64_t k, int64_t s) { return (in - k) / s + 1; }

__global__ void avg_pool_forward_kernel(const float* __restrict__ x, int64_t planes, int64_t D, int64_t H, int64_t W,
                                        int64_t k, int64_t s, float* __restrict__ y) {
  const int64_t oD = out_size(D, k, s), oH = out_size(H, k, s), oW = out_size(W, k, s);
  const int64_t n = planes * oD * oH * oW, step = int64_t(gridDim.x) * blockDim.x;
  const float inv = 1.f / float(k * k * k);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t t = i;
    const int64_t ow = t % oW; t /= oW;
    const int64_t oh = t % oH; t /= oH;
    const int64_t od = t % oD;
    const int64_t p = t / oD;
    const float* base = x + ((p * D + od * s) * H + oh * s) * W + ow * s;
    float acc = 0.f;
    for (int64_t a = 0; a < k; ++a)
      for (int64_t b = 0; b < k; ++b)
        for (int64_t c = 0; c < k; ++c) acc += base[(a * H + b) * W + c];
    y[i] = acc * inv;
  }
}

// Windows o with o·s ≤ i < o·s + k, clipped to [0, out).
__device__ __forceinline__ void window_range(int64_t i, int64_t k, int64_t s, int64_t out, int64_t& lo, int64_t& hi) {
  lo = i < k ? 0 : (i - k) / s + 1;
  hi = min(i / s, out - 1);
}

__global__ void avg_pool_backward_kernel(const float* __restrict__ dy, int64_t planes, int64_t D, int64_t H, int64_t W,
                                         int64_t k, int64_t s, float* __restrict__ dx) {
  const int64_t oD = out_size(D, k, s), oH = out_size(H, k, s), oW = out_size(W, k, s);
  const int64_t n = planes * D * H * W, step = int64_t(gridDim.x) * blockDim.x;
  const float inv = 1.f / float(k * k * k);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t t = i;
    const int64_t w = t % W; t /= W;
    const int64_t h = t % H; t /= H;
    const int64_t d = t % D;
    const int64_t p = t / D;
    int64_t d0, d1, h0, h1, w0, w1;
    window_range(d, k, s, oD, d0, d1);
    window_range(h, k, s, oH, h0, h1);
    window_range(w, k, s, oW, w0, w1);
    float acc = 0.f;
    for (int64_t a = d0; a <= d1; ++a)
      for (int64_t b = h0; b <= h1; ++b)
        for (int64_t c = w0; c <= w1; ++c) acc += dy[((p * oD + a) * oH + b) * oW + c];
    dx[i] = acc * inv;
  }
}

__global__ void upsample_forward_kernel(const float* __restrict__ x, int64_t planes, int64_t D, int64_t H, int64_t W,
                                        float* __restrict__ y) {
  const int64_t n = planes * 8 * D * H * W, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t t = i;
    const int64_t w = t % (2 * W); t /= 2 * W;
    const int64_t h = t % (2 * H); t /= 2 * H;
    const int64_t d = t % (2 * D);
    const int64_t p = t / (2 * D);
    y[i] = x[((p * D + d / 2) * H + h / 2) * W + w / 2];
  }
}

__global__ void upsample_backward_kernel(const float* __restrict__ dy, int64_t planes, int64_t D, int64_t H, int64_t W,
                                         float* __restrict__ dx) {
  const int64_t n = planes * D * H * W, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t t = i;
    const int64_t w = t % W; t /= W;
    const int64_t h = t % H; t /= H;
    const int64_t d = t % D;
    const int64_t p = t / D;
    const float* base = dy + ((p * 2 * D + 2 * d) * 2 * H + 2 * h) * 2 * W + 2 * w;
    float acc = 0.f;
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 2; ++b) acc += base[(a * 2 * H + b) * 2 * W] + base[(a * 2 * H + b) * 2 * W + 1];
    dx[i] = acc;
  }
}

}  // namespace

void avg_pool3d_forward(const float* x, int64_t planes, int64_t D, int64_t H, int64_t W, int64_t kernel,
                        int64_t stride, float* y, cudaStream_t stream) {
  const int64_t n = planes * out_size(D, kernel, stride) * out_size(H, kernel, stride) * out_size(W, kernel, stride);
  if (n <= 0) return;
  avg_pool_forward_kernel<<<grid_for(n), kBlock, 0, stream>>>(x, planes, D, H, W, kernel, stride, y);
  CPETS_CHECK_LAUNCH("avg_pool_forward_kernel");
}

void avg_pool3d_backward(const float* dy, int64_t planes, int64_t D, int64_t H, int64_t W, int64_t kernel,
                         int64_t stride, float* dx, cudaStream_t stream) {
  const int64_t n = planes * D * H * W;
  if (n <= 0) return;
  avg_pool_backward_kernel<<<grid_for(n), kBlock, 0, stream>>>(dy, planes, D, H, W, kernel, stride, dx);
  CPETS_CHECK_LAUNCH("avg_pool_backward_kernel");
}

void upsample_nearest2x_forward(const float* x, int64_t planes, int64_t D, int64_t H, int64_t W, float* y,
                                cudaStream_t stream) {
  const int64_t n = planes * 8 * D * H * W;
  if (n <= 0) return;
  upsample_forward_kernel<<<grid_for(n), kBlock, 0, stream>>>(x, planes, D, H, W, y);
  CPETS_CHECK_LAUNCH("upsample_forward_kernel");
}

void upsample_nearest2x_backward(const float* dy, int64_t planes, int64_t D, int64_t H, int64_t W, float* dx,
                                 cudaStream_t stream) {
  const int64_t n = planes * D * H * W;
  if (n <= 0) return;
  upsample_backward_kernel<<<grid_for(n), kBlock, 0, stream>>>(dy, planes, D, H, W, dx);
  CPETS_CHECK_LAUNCH("upsample_backward_kernel");
}

}  // namespace cpets::kernels::cuda
