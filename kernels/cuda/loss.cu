// Losses: the forward is one map_sum (map_sum.cuh: per-block double partials, then one block adds
// them in a fixed order); the backwards are one elementwise pass, thread per element, reading the
// scalar upstream gradient once per thread from device memory (it sits in L1/L2 after the first).
#include "kernels/cuda/loss.h"
#include "kernels/cuda/map_sum.cuh"

namespace cpets::kernels::cuda {
namespace {

struct LossTermF {
  LossTerm term;
  const float* a;
  const float* b;
  float target;
  __device__ float operator()(int64_t i) const {
    switch (term) {
      case LossTerm::AbsDiff: return fabsf(a[i] - b[i]);
      case LossTerm::SqDiff: {
        const float d = a[i] - b[i];
        return d * d;
      }
      case LossTerm::SqDiffScalar: {
        const float d = a[i] - target;
        return d * d;
      }
      case LossTerm::KlTerms: return 1.f + b[i] - a[i] * a[i] - expf(b[i]);
    }
    return 0.f;
  }
};

__device__ __forceinline__ float grad_scale(const float* g, double factor, double div) {
  return float(factor * double(*g) / div);
}

__device__ __forceinline__ float sign_of(float d) { return d > 0.f ? 1.f : (d < 0.f ? -1.f : 0.f); }

__global__ void abs_diff_grad_kernel(const float* __restrict__ p, const float* __restrict__ t, int64_t n,
                                     const float* g, double factor, double div, float* dp, float* dt) {
  const float scale = grad_scale(g, factor, div);
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float v = scale * sign_of(p[i] - t[i]);
    if (dp) dp[i] = v;
    if (dt) dt[i] = -v;
  }
}

__global__ void diff_grad_kernel(const float* __restrict__ p, const float* __restrict__ t, float target, int64_t n,
                                 const float* g, double factor, double div, float* dp, float* dt) {
  const float scale = grad_scale(g, factor, div);
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float v = scale * (p[i] - (t ? t[i] : target));
    if (dp) dp[i] = v;
    if (dt) dt[i] = -v;
  }
}

__global__ void kl_grad_kernel(const float* __restrict__ mu, const float* __restrict__ logvar, int64_t n,
                               const float* g, double factor, double div, float* dmu, float* dlogvar) {
  const float scale = grad_scale(g, factor, div);
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    if (dmu) dmu[i] = scale * mu[i];
    if (dlogvar) dlogvar[i] = scale * 0.5f * (expf(logvar[i]) - 1.f);
  }
}

}  // namespace

size_t loss_workspace_bytes(int64_t n) { return size_t(map_sum_partials(n)) * sizeof(double); }

void loss_sum(LossTerm term, const float* a, const float* b, float target, int64_t n, double mul, double div,
              float* out, Workspace ws, cudaStream_t stream) {
  if (ws.bytes < loss_workspace_bytes(n)) throw std::invalid_argument("cuda loss_sum: workspace too small");
  map_sum(n, LossTermF{term, a, b, target}, mul, div, static_cast<double*>(ws.ptr), out, stream);
}

void abs_diff_grad(const float* p, const float* t, int64_t n, const float* grad_out, double factor, double div,
                   float* dp, float* dt, cudaStream_t stream) {
  if (n <= 0) return;
  abs_diff_grad_kernel<<<grid_for(n), kBlock, 0, stream>>>(p, t, n, grad_out, factor, div, dp, dt);
  CPETS_CHECK_LAUNCH("abs_diff_grad_kernel");
}

void diff_grad(const float* p, const float* t, float target, int64_t n, const float* grad_out, double factor,
               double div, float* dp, float* dt, cudaStream_t stream) {
  if (n <= 0) return;
  diff_grad_kernel<<<grid_for(n), kBlock, 0, stream>>>(p, t, target, n, grad_out, factor, div, dp, dt);
  CPETS_CHECK_LAUNCH("diff_grad_kernel");
}

void kl_grad(const float* mu, const float* logvar, int64_t n, const float* grad_out, double factor, double div,
             float* dmu, float* dlogvar, cudaStream_t stream) {
  if (n <= 0) return;
  kl_grad_kernel<<<grid_for(n), kBlock, 0, stream>>>(mu, logvar, n, grad_out, factor, div, dmu, dlogvar);
  CPETS_CHECK_LAUNCH("kl_grad_kernel");
}

}  // namespace cpets::kernels::cuda
