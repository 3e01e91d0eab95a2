// cuBLAS + softmax attention reference (see attention.h): the unfused composition that flash
// attention is measured against. GEMMs per batch element, strided over heads (a head's slice of a
// (N, C) row-major tensor is an (N, d) matrix with leading dimension C, heads d floats apart).
#include "kernels/cudnn/attention.h"

#include <cmath>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cudnn/gemm.h"

namespace cpets::kernels::cudnn {
namespace {

using cuda::detail::align_bytes;
using cuda::detail::cdiv;

constexpr int kRowThreads = 256;

// Block-wide reduction in a fixed tree (same order every run).
template <class F>
__device__ float block_reduce(float v, float* scratch, F combine) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int w = kRowThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) scratch[threadIdx.x] = combine(scratch[threadIdx.x], scratch[threadIdx.x + w]);
    __syncthreads();
  }
  float r = scratch[0];
  __syncthreads();
  return r;
}

// One block per score row: P = softmax(S) in place, lse = log Σ exp(S).
__global__ void __launch_bounds__(kRowThreads) softmax_rows(float* s, float* lse, int n) {
  __shared__ float scratch[kRowThreads];
  float* row = s + static_cast<int64_t>(blockIdx.x) * n;
  float m = -INFINITY;
  for (int j = threadIdx.x; j < n; j += kRowThreads) m = fmaxf(m, row[j]);
  m = block_reduce(m, scratch, [](float a, float b) { return fmaxf(a, b); });
  float sum = 0.f;
  for (int j = threadIdx.x; j < n; j += kRowThreads) sum += expf(row[j] - m);
  sum = block_reduce(sum, scratch, [](float a, float b) { return a + b; });
  const float inv = 1.f / sum;
  for (int j = threadIdx.x; j < n; j += kRowThreads) row[j] = expf(row[j] - m) * inv;
  if (threadIdx.x == 0) lse[blockIdx.x] = m + logf(sum);
}

// delta[b, h, i] = Σ_c dout · out over head h's channels of row i.
__global__ void head_row_dot(const float* out, const float* dout, float* delta, int batch, int nq, int channels,
                             int heads) {
  int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= static_cast<int64_t>(batch) * heads * nq) return;
  const int d = channels / heads;
  int i = static_cast<int>(idx % nq);
  int64_t bh = idx / nq;
  int h = static_cast<int>(bh % heads), b = static_cast<int>(bh / heads);
  const int64_t off = (static_cast<int64_t>(b) * nq + i) * channels + static_cast<int64_t>(h) * d;
  float acc = 0.f;
  for (int c = 0; c < d; ++c) acc = fmaf(dout[off + c], out[off + c], acc);
  delta[idx] = acc;
}

// dS = P ∘ (dP − delta_row), in place over dP.
__global__ void softmax_backward(const float* p, float* dp, const float* delta, int64_t rows, int n) {
  int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= rows * n) return;
  dp[idx] = p[idx] * (dp[idx] - delta[idx / n]);
}

struct Layout {
  int64_t B, Nq, Nk, C, H, d;
  float scale;
  size_t p_bytes, delta_bytes;
};

Layout layout(const AttentionShape& s, const char* who) {
  if (s.batch <= 0 || s.nq <= 0 || s.nk <= 0 || s.channels <= 0 || s.heads <= 0 || s.channels % s.heads != 0)
    throw std::invalid_argument(std::string("cudnn::") + who + ": batch " + std::to_string(s.batch) + ", Nq " +
                                std::to_string(s.nq) + ", Nk " + std::to_string(s.nk) + ", channels " +
                                std::to_string(s.channels) + ", heads " + std::to_string(s.heads) +
                                ": sizes must be positive and channels divisible by heads");
  Layout l{s.batch, s.nq, s.nk, s.channels, s.heads, s.head_dim(), 1.f / std::sqrt(static_cast<float>(s.head_dim())),
           0, 0};
  l.p_bytes = align_bytes(sizeof(float) * s.batch * s.heads * s.nq * s.nk);
  l.delta_bytes = align_bytes(sizeof(float) * s.batch * s.heads * s.nq);
  return l;
}

void check_workspace(size_t have, size_t need, const char* who) {
  if (have < need)
    throw std::invalid_argument(std::string("cudnn::") + who + ": workspace of " + std::to_string(have) +
                                " bytes is too small; the shape needs " + std::to_string(need) +
                                " (ask attention_reference_workspace_bytes)");
}

}  // namespace

size_t attention_reference_workspace_bytes(const AttentionShape& s) {
  Layout l = layout(s, "attention_reference_workspace_bytes");
  return 2 * l.p_bytes + l.delta_bytes;
}

void attention_reference_forward(const AttentionShape& s, Precision p, const float* q, const float* k, const float* v,
                                 float* out, float* lse, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  cuda::detail::NvtxRange nvtx("cublas::attention_reference_forward");
  Layout l = layout(s, "attention_reference_forward");
  check_workspace(workspace_bytes, attention_reference_workspace_bytes(s), "attention_reference_forward");
  float* P = static_cast<float*>(workspace);
  const int64_t nn = l.Nq * l.Nk;
  for (int64_t b = 0; b < l.B; ++b)  // S = scale · Q Kᵀ
    sgemm_batched(p, false, true, l.H, l.Nq, l.Nk, l.d, l.scale, q + b * l.Nq * l.C, l.C, l.d, k + b * l.Nk * l.C, l.C,
                  l.d, 0.f, P + b * l.H * nn, l.Nk, nn, stream);
  softmax_rows<<<static_cast<unsigned>(l.B * l.H * l.Nq), kRowThreads, 0, stream>>>(P, lse, static_cast<int>(l.Nk));
  CPETS_CHECK_LAUNCH("softmax_rows");
  for (int64_t b = 0; b < l.B; ++b)  // O = P V
    sgemm_batched(p, false, false, l.H, l.Nq, l.d, l.Nk, 1.f, P + b * l.H * nn, l.Nk, nn, v + b * l.Nk * l.C, l.C, l.d,
                  0.f, out + b * l.Nq * l.C, l.C, l.d, stream);
}

void attention_reference_backward(const AttentionShape& s, Precision p, const float* q, const float* k, const float* v,
                                  const float* out, const float* dout, float* dq, float* dk, float* dv, void* workspace,
                                  size_t workspace_bytes, cudaStream_t stream) {
  cuda::detail::NvtxRange nvtx("cublas::attention_reference_backward");
  Layout l = layout(s, "attention_reference_backward");
  check_workspace(workspace_bytes, attention_reference_workspace_bytes(s), "attention_reference_backward");
  if (!dq || !dk || !dv) throw std::invalid_argument("cudnn::attention_reference_backward: dq, dk and dv are all required");
  float* P = static_cast<float*>(workspace);
  float* dP = reinterpret_cast<float*>(static_cast<char*>(workspace) + l.p_bytes);
  float* delta = reinterpret_cast<float*>(static_cast<char*>(workspace) + 2 * l.p_bytes);
  const int64_t nn = l.Nq * l.Nk, rows = l.B * l.H * l.Nq;
  head_row_dot<<<static_cast<unsigned>(cdiv(rows, 256)), 256, 0, stream>>>(out, dout, delta, int(l.B), int(l.Nq),
                                                                          int(l.C), int(l.H));
  CPETS_CHECK_LAUNCH("head_row_dot");
  for (int64_t b = 0; b < l.B; ++b) {
    const float* dO = dout + b * l.Nq * l.C;
    // dV = Pᵀ dO, dP = dO Vᵀ
    sgemm_batched(p, true, false, l.H, l.Nk, l.d, l.Nq, 1.f, P + b * l.H * nn, l.Nk, nn, dO, l.C, l.d, 0.f,
                  dv + b * l.Nk * l.C, l.C, l.d, stream);
    sgemm_batched(p, false, true, l.H, l.Nq, l.Nk, l.d, 1.f, dO, l.C, l.d, v + b * l.Nk * l.C, l.C, l.d, 0.f,
                  dP + b * l.H * nn, l.Nk, nn, stream);
  }
  softmax_backward<<<static_cast<unsigned>(cdiv(rows * l.Nk, 256)), 256, 0, stream>>>(P, dP, delta, rows, int(l.Nk));
  CPETS_CHECK_LAUNCH("softmax_backward");
  for (int64_t b = 0; b < l.B; ++b) {
    // dQ = scale · dS K, dK = scale · dSᵀ Q
    sgemm_batched(p, false, false, l.H, l.Nq, l.d, l.Nk, l.scale, dP + b * l.H * nn, l.Nk, nn, k + b * l.Nk * l.C, l.C,
                  l.d, 0.f, dq + b * l.Nq * l.C, l.C, l.d, stream);
    sgemm_batched(p, true, false, l.H, l.Nk, l.d, l.Nq, l.scale, dP + b * l.H * nn, l.Nk, nn, q + b * l.Nq * l.C, l.C,
                  l.d, 0.f, dk + b * l.Nk * l.C, l.C, l.d, stream);
  }
}

}  // namespace cpets::kernels::cudnn
