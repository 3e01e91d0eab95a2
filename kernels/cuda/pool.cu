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

template <class I>
__host__ __device__ inline I out_size(I in, I k, I s) { return (in - k) / s + 1; }

template <class I>
__global__ void avg_pool_forward_kernel(const float* __restrict__ x, I planes, I D, I H, I W,
                                        I k, I s, float* __restrict__ y) {
  const I oD = out_size(D, k, s), oH = out_size(H, k, s), oW = out_size(W, k, s);
  const I n = planes * oD * oH * oW, step = I(gridDim.x) * blockDim.x;
  const float inv = 1.f / float(k * k * k);
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    I t = i;
    const I ow = t % oW; t /= oW;
    const I oh = t % oH; t /= oH;
    const I od = t % oD;
    const I p = t / oD;
    const float* base = x + ((p * D + od * s) * H + oh * s) * W + ow * s;
    float acc = 0.f;
    for (I a = 0; a < k; ++a)
      for (I b = 0; b < k; ++b)
        for (I c = 0; c < k; ++c) acc += base[(a * H + b) * W + c];
    y[i] = acc * inv;
  }
}

// Windows o with o·s ≤ i < o·s + k, clipped to [0, out).
template <class I>
__device__ __forceinline__ void window_range(I i, I k, I s, I out, I& lo, I& hi) {
  lo = i < k ? 0 : (i - k) / s + 1;
  hi = (i / s < out - 1 ? i / s : out - 1);
}

template <class I>
__global__ void avg_pool_backward_kernel(const float* __restrict__ dy, I planes, I D, I H, I W,
                                         I k, I s, float* __restrict__ dx) {
  const I oD = out_size(D, k, s), oH = out_size(H, k, s), oW = out_size(W, k, s);
  const I n = planes * D * H * W, step = I(gridDim.x) * blockDim.x;
  const float inv = 1.f / float(k * k * k);
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    I t = i;
    const I w = t % W; t /= W;
    const I h = t % H; t /= H;
    const I d = t % D;
    const I p = t / D;
    I d0, d1, h0, h1, w0, w1;
    window_range(d, k, s, oD, d0, d1);
    window_range(h, k, s, oH, h0, h1);
    window_range(w, k, s, oW, w0, w1);
    float acc = 0.f;
    for (I a = d0; a <= d1; ++a)
      for (I b = h0; b <= h1; ++b)
        for (I c = w0; c <= w1; ++c) acc += dy[((p * oD + a) * oH + b) * oW + c];
    dx[i] = acc * inv;
  }
}

template <class I>
__global__ void upsample_forward_kernel(const float* __restrict__ x, I planes, I D, I H, I W,
                                        float* __restrict__ y) {
  const I n = planes * 8 * D * H * W, step = I(gridDim.x) * blockDim.x;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    I t = i;
    const I w = t % (2 * W); t /= 2 * W;
    const I h = t % (2 * H); t /= 2 * H;
    const I d = t % (2 * D);
    const I p = t / (2 * D);
    y[i] = x[((p * D + d / 2) * H + h / 2) * W + w / 2];
  }
}

template <class I>
__global__ void upsample_backward_kernel(const float* __restrict__ dy, I planes, I D, I H, I W,
                                         float* __restrict__ dx) {
  const I n = planes * D * H * W, step = I(gridDim.x) * blockDim.x;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    I t = i;
    const I w = t % W; t /= W;
    const I h = t % H; t /= H;
    const I d = t % D;
    const I p = t / D;
    const float* base = dy + ((p * 2 * D + 2 * d) * 2 * H + 2 * h) * 2 * W + 2 * w;
    float acc = 0.f;
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 2; ++b) acc += base[(a * 2 * H + b) * 2 * W] + base[(a * 2 * H + b) * 2 * W + 1];
    dx[i] = acc;
  }
}

// 32-bit index maths when every index fits (the kernels divide per element; 64-bit division
// would cost as much as the memory traffic).
bool fits32(int64_t elements) { return elements < (int64_t(1) << 31) - int64_t(65536) * kBlock; }

}  // namespace

void avg_pool3d_forward(const float* x, int64_t planes, int64_t D, int64_t H, int64_t W, int64_t kernel,
                        int64_t stride, float* y, cudaStream_t stream) {
  const int64_t n = planes * out_size<int64_t>(D, kernel, stride) * out_size<int64_t>(H, kernel, stride) *
                    out_size<int64_t>(W, kernel, stride);
  if (n <= 0) return;
  if (fits32(planes * D * H * W))
    avg_pool_forward_kernel<uint32_t><<<grid_for(n), kBlock, 0, stream>>>(x, planes, D, H, W, kernel, stride, y);
  else
    avg_pool_forward_kernel<int64_t><<<grid_for(n), kBlock, 0, stream>>>(x, planes, D, H, W, kernel, stride, y);
  CPETS_CHECK_LAUNCH("avg_pool_forward_kernel");
}

void avg_pool3d_backward(const float* dy, int64_t planes, int64_t D, int64_t H, int64_t W, int64_t kernel,
                         int64_t stride, float* dx, cudaStream_t stream) {
  const int64_t n = planes * D * H * W;
  if (n <= 0) return;
  if (fits32(n))
    avg_pool_backward_kernel<uint32_t><<<grid_for(n), kBlock, 0, stream>>>(dy, planes, D, H, W, kernel, stride, dx);
  else
    avg_pool_backward_kernel<int64_t><<<grid_for(n), kBlock, 0, stream>>>(dy, planes, D, H, W, kernel, stride, dx);
  CPETS_CHECK_LAUNCH("avg_pool_backward_kernel");
}

void upsample_nearest2x_forward(const float* x, int64_t planes, int64_t D, int64_t H, int64_t W, float* y,
                                cudaStream_t stream) {
  const int64_t n = planes * 8 * D * H * W;
  if (n <= 0) return;
  if (fits32(n)) upsample_forward_kernel<uint32_t><<<grid_for(n), kBlock, 0, stream>>>(x, planes, D, H, W, y);
  else upsample_forward_kernel<int64_t><<<grid_for(n), kBlock, 0, stream>>>(x, planes, D, H, W, y);
  CPETS_CHECK_LAUNCH("upsample_forward_kernel");
}

void upsample_nearest2x_backward(const float* dy, int64_t planes, int64_t D, int64_t H, int64_t W, float* dx,
                                 cudaStream_t stream) {
  const int64_t n = planes * D * H * W;
  if (n <= 0) return;
  if (fits32(8 * n)) upsample_backward_kernel<uint32_t><<<grid_for(n), kBlock, 0, stream>>>(dy, planes, D, H, W, dx);
  else upsample_backward_kernel<int64_t><<<grid_for(n), kBlock, 0, stream>>>(dy, planes, D, H, W, dx);
  CPETS_CHECK_LAUNCH("upsample_backward_kernel");
}

}  // namespace cpets::kernels::cuda
