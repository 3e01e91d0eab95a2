// LPIPS layer distance and slice gathering (kernels/cuda/perceptual.h). The arithmetic follows
// kernels/cpu/perceptual.cpp term by term: norms summed over channels in order, â = a / (‖a‖ + eps)
// by division (not a multiplied inverse), the backward's coefficient 0 where a pixel's features
// are all zero.
#include <stdexcept>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/perceptual.h"

namespace cpets::kernels::cuda {
namespace {

// ‖f‖ over the C channels of pixel p of one image's (C, P) features.
__device__ __forceinline__ float pixel_norm(const float* f, int64_t C, int64_t P, int64_t p) {
  float s = 0.f;
  for (int64_t c = 0; c < C; ++c) s += f[c * P + p] * f[c * P + p];
  return sqrtf(s);
}

__global__ void distance_forward_kernel(const float* __restrict__ a, const float* __restrict__ b,
                                        const float* __restrict__ w, int64_t N, int64_t C, int64_t P, float eps,
                                        float* __restrict__ out) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < N * P; i += step) {
    const int64_t n = i / P, p = i - n * P;
    const float* an = a + n * C * P;
    const float* bn = b + n * C * P;
    const float den_a = pixel_norm(an, C, P, p) + eps, den_b = pixel_norm(bn, C, P, p) + eps;
    float acc = 0.f;
    for (int64_t c = 0; c < C; ++c) {
      const float d = an[c * P + p] / den_a - bn[c * P + p] / den_b;
      acc += w[c] * d * d;
    }
    out[i] = acc;
  }
}

// da and db: g_c = 2·w_c·(â_c − b̂_c)·dout, then d/df of f/(‖f‖ + eps) applied to ±g.
__global__ void distance_input_grad_kernel(const float* __restrict__ a, const float* __restrict__ b,
                                           const float* __restrict__ w, const float* __restrict__ dout, int64_t N,
                                           int64_t C, int64_t P, float eps, float* __restrict__ da,
                                           float* __restrict__ db) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < N * P; i += step) {
    const int64_t n = i / P, p = i - n * P;
    const float* an = a + n * C * P;
    const float* bn = b + n * C * P;
    const float na = pixel_norm(an, C, P, p), nb = pixel_norm(bn, C, P, p);
    const float den_a = na + eps, den_b = nb + eps, go = dout[i];
    float dot_a = 0.f, dot_b = 0.f;
    for (int64_t c = 0; c < C; ++c) {
      const float g = 2.f * w[c] * (an[c * P + p] / den_a - bn[c * P + p] / den_b) * go;
      dot_a += g * an[c * P + p];
      dot_b += g * bn[c * P + p];
    }
    const float coef_a = na > 0.f ? dot_a / (den_a * na) : 0.f, coef_b = nb > 0.f ? dot_b / (den_b * nb) : 0.f;
    for (int64_t c = 0; c < C; ++c) {
      const float g = 2.f * w[c] * (an[c * P + p] / den_a - bn[c * P + p] / den_b) * go;
      if (da) da[n * C * P + c * P + p] = (g - an[c * P + p] * coef_a) / den_a;
      if (db) db[n * C * P + c * P + p] = -(g - bn[c * P + p] * coef_b) / den_b;
    }
  }
}

__global__ void denominators_kernel(const float* __restrict__ a, const float* __restrict__ b, int64_t N, int64_t C,
                                    int64_t P, float eps, float* __restrict__ den_a, float* __restrict__ den_b) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < N * P; i += step) {
    const int64_t n = i / P, p = i - n * P;
    den_a[i] = pixel_norm(a + n * C * P, C, P, p) + eps;
    den_b[i] = pixel_norm(b + n * C * P, C, P, p) + eps;
  }
}

// One block per channel: dw[c] = Σ_{n, p} dout·(â_c − b̂_c)², in double, fixed tree.
__global__ void distance_weight_grad_kernel(const float* __restrict__ a, const float* __restrict__ b,
                                            const float* __restrict__ dout, const float* __restrict__ den_a,
                                            const float* __restrict__ den_b, int64_t N, int64_t C, int64_t P,
                                            float* __restrict__ dw) {
  const int64_t c = blockIdx.x;
  double s = 0;
  for (int64_t i = threadIdx.x; i < N * P; i += blockDim.x) {
    const int64_t n = i / P, p = i - n * P;
    const float d = a[(n * C + c) * P + p] / den_a[i] - b[(n * C + c) * P + p] / den_b[i];
    s += double(dout[i]) * double(d * d);
  }
  s = block_sum(s);
  if (threadIdx.x == 0) dw[c] = float(s);
}

// Element e of the gathered slices (count, rows, cols) and its place in the volume.
struct Slices {
  int64_t rows, cols, row_stride, col_stride, n, axis_stride, volume;
};

Slices slices_of(int64_t D, int64_t H, int64_t W, int axis) {
  switch (axis) {
    case 0: return {H, W, W, 1, D, H * W, D * H * W};
    case 1: return {D, W, H * W, 1, H, W, D * H * W};
    default: return {D, H, H * W, W, W, 1, D * H * W};
  }
}

__device__ __forceinline__ int64_t volume_offset(const Slices& g, const int64_t* index, int64_t e) {
  const int64_t per = g.rows * g.cols, j = e / per, rc = e - j * per, r = rc / g.cols, col = rc - r * g.cols;
  const int64_t s = index[j];
  return (s / g.n) * g.volume + (s % g.n) * g.axis_stride + r * g.row_stride + col * g.col_stride;
}

__global__ void gather_kernel(const float* __restrict__ x, Slices g, const int64_t* __restrict__ index, int64_t total,
                              float* __restrict__ out) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step)
    out[e] = x[volume_offset(g, index, e)];
}

__global__ void scatter_kernel(const float* __restrict__ dout, Slices g, const int64_t* __restrict__ index,
                               int64_t total, float* __restrict__ dx) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step)
    dx[volume_offset(g, index, e)] = dout[e];  // distinct indices: each element written once
}

}  // namespace

void normalized_distance_forward(const float* a, const float* b, const float* w, int64_t N, int64_t C, int64_t P,
                                 float eps, float* out, cudaStream_t stream) {
  if (N * P == 0) return;
  distance_forward_kernel<<<grid_for(N * P), kBlock, 0, stream>>>(a, b, w, N, C, P, eps, out);
  CPETS_CHECK_LAUNCH("distance_forward_kernel");
}

size_t normalized_distance_backward_workspace_bytes(int64_t N, int64_t P) { return size_t(2 * N * P) * sizeof(float); }

void normalized_distance_backward(const float* a, const float* b, const float* w, const float* dout, int64_t N,
                                  int64_t C, int64_t P, float eps, float* da, float* db, float* dw, Workspace ws,
                                  cudaStream_t stream) {
  if (N * P == 0) return;
  if (da || db) {
    distance_input_grad_kernel<<<grid_for(N * P), kBlock, 0, stream>>>(a, b, w, dout, N, C, P, eps, da, db);
    CPETS_CHECK_LAUNCH("distance_input_grad_kernel");
  }
  if (!dw) return;
  if (ws.bytes < normalized_distance_backward_workspace_bytes(N, P))
    throw std::invalid_argument("cuda normalized_distance_backward: workspace too small");
  float* den_a = static_cast<float*>(ws.ptr);
  float* den_b = den_a + N * P;
  denominators_kernel<<<grid_for(N * P), kBlock, 0, stream>>>(a, b, N, C, P, eps, den_a, den_b);
  CPETS_CHECK_LAUNCH("denominators_kernel");
  distance_weight_grad_kernel<<<unsigned(C), kBlock, 0, stream>>>(a, b, dout, den_a, den_b, N, C, P, dw);
  CPETS_CHECK_LAUNCH("distance_weight_grad_kernel");
}

void gather_axis_slices(const float* x, int64_t B, int64_t D, int64_t H, int64_t W, int axis, const int64_t* index,
                        int64_t count, float* out, cudaStream_t stream) {
  (void)B;
  const Slices g = slices_of(D, H, W, axis);
  const int64_t total = count * g.rows * g.cols;
  if (total == 0) return;
  gather_kernel<<<grid_for(total), kBlock, 0, stream>>>(x, g, index, total, out);
  CPETS_CHECK_LAUNCH("gather_kernel");
}

void scatter_axis_slices(const float* dout, int64_t B, int64_t D, int64_t H, int64_t W, int axis,
                         const int64_t* index, int64_t count, float* dx, cudaStream_t stream) {
  const Slices g = slices_of(D, H, W, axis);
  const int64_t volume = B * D * H * W;
  if (volume > 0) cudaMemsetAsync(dx, 0, size_t(volume) * sizeof(float), stream);
  const int64_t total = count * g.rows * g.cols;
  if (total == 0) return;
  scatter_kernel<<<grid_for(total), kBlock, 0, stream>>>(dout, g, index, total, dx);
  CPETS_CHECK_LAUNCH("scatter_kernel");
}

}  // namespace cpets::kernels::cuda
