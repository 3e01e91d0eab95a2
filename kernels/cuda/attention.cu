// Flash attention, forward and backward (see attention.h for the contract and attention_math.h
// for the shared math). FP32 on the CUDA cores.
//
// Every kernel has the same shape: a block of 128 threads owns 32 rows (queries for the forward
// and dQ passes, keys for the dK/dV pass), four threads per row. The other side is staged in
// shared memory 64 entries at a time; lane s of a row takes entries s, s+4, …, so the four lanes
// of a row read four different shared rows (padded by 4 floats: no bank conflicts) and the eight
// rows of a warp read the same ones (broadcast). At the end the four lanes' partial results are
// merged with two xor-shuffles in a fixed order, so every output is computed the same way on
// every run. Head dims are padded to 8, 16, 32 or 64 (template parameter; zeros beyond d).
#include "kernels/cuda/attention.h"

#include <cmath>
#include <string>

#include "kernels/cuda/attention_math.h"
#include "kernels/cuda/common.cuh"

namespace cpets::kernels::cuda {
namespace {

using namespace attn;
using detail::cdiv;
using detail::require;

struct Problem {
  int batch, nq, nk, channels, heads, d;
  float score_scale;  // 1/sqrt(d)
};

template <int DP>
struct Row {
  float v[DP];
};

// Loads DP channels of head h from row `row` of a (B, N, C) tensor, zero beyond d (and for rows
// outside [0, n)), scaled by `scale`.
template <int DP>
__device__ __forceinline__ void load_row(float (&r)[DP], const float* t, int n, int row, int channels, int h, int d,
                                         float scale) {
#pragma unroll
  for (int c = 0; c < DP; ++c) r[c] = (row < n && c < d) ? __ldg(t + static_cast<int64_t>(row) * channels + h * d + c) * scale : 0.f;
}

// Stages rows [row0, row0 + kTile) of head h of a (B, N, C) tensor (already offset to the batch)
// into shared memory, zero outside.
template <int DP>
__device__ __forceinline__ void stage_tile(float (*dst)[DP + 4], const float* t, int n, int row0, int channels, int h,
                                           int d) {
  for (int idx = threadIdx.x; idx < kTile * DP; idx += kThreads) {
    int j = idx / DP, c = idx % DP;
    int row = row0 + j;
    dst[j][c] = (row < n && c < d) ? __ldg(t + static_cast<int64_t>(row) * channels + h * d + c) : 0.f;
  }
}

template <int DP>
__device__ __forceinline__ float dot_shared(const float (&r)[DP], const float* s) {
  float acc = 0.f;
#pragma unroll
  for (int c = 0; c < DP; c += 4) {
    float4 x = *reinterpret_cast<const float4*>(s + c);
    acc = fmaf(r[c], x.x, acc);
    acc = fmaf(r[c + 1], x.y, acc);
    acc = fmaf(r[c + 2], x.z, acc);
    acc = fmaf(r[c + 3], x.w, acc);
  }
  return acc;
}

template <int DP>
__device__ __forceinline__ void axpy_shared(float (&acc)[DP], float a, const float* s) {
#pragma unroll
  for (int c = 0; c < DP; c += 4) {
    float4 x = *reinterpret_cast<const float4*>(s + c);
    acc[c] = fmaf(a, x.x, acc[c]);
    acc[c + 1] = fmaf(a, x.y, acc[c + 1]);
    acc[c + 2] = fmaf(a, x.z, acc[c + 2]);
    acc[c + 3] = fmaf(a, x.w, acc[c + 3]);
  }
}

// Sum over the four lanes of a row: (a + b) + (c + d) in every lane, in the same order.
__device__ __forceinline__ float row_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  x += __shfl_xor_sync(0xffffffffu, x, 2);
  return x;
}
__device__ __forceinline__ float row_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

// Writes channels c ≡ lane (mod 4) of a row: the four lanes together write the row once.
template <int DP>
__device__ __forceinline__ void write_row(float* t, int row, int channels, int h, int d, int lane, const float (&r)[DP],
                                          float scale) {
#pragma unroll
  for (int c = 0; c < DP; ++c)
    if (c % kLanesPerRow == lane && c < d) t[static_cast<int64_t>(row) * channels + h * d + c] = r[c] * scale;
}

// ---- forward ------------------------------------------------------------------------------------

template <int DP>
__global__ void __launch_bounds__(kThreads) flash_forward(Problem p, const float* q, const float* k, const float* v,
                                                          float* out, float* lse) {
  __shared__ __align__(16) float Ks[kTile][DP + 4];
  __shared__ __align__(16) float Vs[kTile][DP + 4];
  const int b = blockIdx.z, h = blockIdx.y;
  const int i = blockIdx.x * kRowsPerBlock + threadIdx.x / kLanesPerRow, lane = threadIdx.x % kLanesPerRow;
  const int64_t q_off = static_cast<int64_t>(b) * p.nq * p.channels, kv_off = static_cast<int64_t>(b) * p.nk * p.channels;

  float qr[DP], o[DP];
  load_row<DP>(qr, q + q_off, p.nq, i, p.channels, h, p.d, p.score_scale * kLog2e);
#pragma unroll
  for (int c = 0; c < DP; ++c) o[c] = 0.f;
  float m = -INFINITY, l = 0.f;

  for (int k0 = 0; k0 < p.nk; k0 += kTile) {
    __syncthreads();  // the previous tile is no longer read
    stage_tile<DP>(Ks, k + kv_off, p.nk, k0, p.channels, h, p.d);
    stage_tile<DP>(Vs, v + kv_off, p.nk, k0, p.channels, h, p.d);
    __syncthreads();
    float s[kPerLane];
    float tile_max = -INFINITY;
#pragma unroll
    for (int jj = 0; jj < kPerLane; ++jj) {
      int j = jj * kLanesPerRow + lane;
      s[jj] = k0 + j < p.nk ? dot_shared<DP>(qr, Ks[j]) : -INFINITY;
      tile_max = fmaxf(tile_max, s[jj]);
    }
    float alpha = online_rescale(m, tile_max);
    l *= alpha;
#pragma unroll
    for (int c = 0; c < DP; ++c) o[c] *= alpha;
    if (m != -INFINITY) {
#pragma unroll
      for (int jj = 0; jj < kPerLane; ++jj) {
        float pj = exp2f(s[jj] - m);  // exp2(−∞) = 0 for masked keys
        l += pj;
        axpy_shared<DP>(o, pj, Vs[jj * kLanesPerRow + lane]);
      }
    }
  }

  // Merge the four lanes' (m, l, o) into the row's softmax.
  const float m_all = row_max(m);
  const float wgt = merge_weight(m, m_all);
  const float l_all = row_sum(l * wgt);
#pragma unroll
  for (int c = 0; c < DP; ++c) o[c] = row_sum(o[c] * wgt);
  if (i < p.nq) {
    write_row<DP>(out + q_off, i, p.channels, h, p.d, lane, o, 1.f / l_all);
    if (lane == 0) lse[(static_cast<int64_t>(b) * p.heads + h) * p.nq + i] = (m_all + log2f(l_all)) * kLn2;
  }
}

// ---- backward -----------------------------------------------------------------------------------

// delta[b, h, i] = Σ_c dout[b, i, h·d + c] · out[b, i, h·d + c], the softmax-backward row term.
__global__ void row_delta(Problem p, const float* out, const float* dout, float* delta) {
  int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  int64_t rows = static_cast<int64_t>(p.batch) * p.heads * p.nq;
  if (idx >= rows) return;
  int i = static_cast<int>(idx % p.nq);
  int64_t bh = idx / p.nq;
  int h = static_cast<int>(bh % p.heads), b = static_cast<int>(bh / p.heads);
  const int64_t off = (static_cast<int64_t>(b) * p.nq + i) * p.channels + static_cast<int64_t>(h) * p.d;
  float s = 0.f;
  for (int c = 0; c < p.d; ++c) s = fmaf(__ldg(dout + off + c), __ldg(out + off + c), s);
  delta[idx] = s;
}

// dQ pass: rows are queries; walks every key tile.
template <int DP>
__global__ void __launch_bounds__(kThreads) flash_backward_dq(Problem p, const float* q, const float* k, const float* v,
                                                              const float* lse, const float* delta, const float* dout,
                                                              float* dq) {
  __shared__ __align__(16) float Ks[kTile][DP + 4];
  __shared__ __align__(16) float Vs[kTile][DP + 4];
  const int b = blockIdx.z, h = blockIdx.y;
  const int i = blockIdx.x * kRowsPerBlock + threadIdx.x / kLanesPerRow, lane = threadIdx.x % kLanesPerRow;
  const int64_t q_off = static_cast<int64_t>(b) * p.nq * p.channels, kv_off = static_cast<int64_t>(b) * p.nk * p.channels;
  const int64_t row_id = (static_cast<int64_t>(b) * p.heads + h) * p.nq + i;

  float qr[DP], dor[DP], acc[DP];
  load_row<DP>(qr, q + q_off, p.nq, i, p.channels, h, p.d, p.score_scale * kLog2e);
  load_row<DP>(dor, dout + q_off, p.nq, i, p.channels, h, p.d, 1.f);
#pragma unroll
  for (int c = 0; c < DP; ++c) acc[c] = 0.f;
  const float lse2 = i < p.nq ? __ldg(lse + row_id) * kLog2e : 0.f;
  const float di = i < p.nq ? __ldg(delta + row_id) : 0.f;

  for (int k0 = 0; k0 < p.nk; k0 += kTile) {
    __syncthreads();
    stage_tile<DP>(Ks, k + kv_off, p.nk, k0, p.channels, h, p.d);
    stage_tile<DP>(Vs, v + kv_off, p.nk, k0, p.channels, h, p.d);
    __syncthreads();
    if (i >= p.nq) continue;
#pragma unroll 4
    for (int jj = 0; jj < kPerLane; ++jj) {
      int j = jj * kLanesPerRow + lane;
      if (k0 + j >= p.nk) break;  // keys are taken in increasing order: the rest are outside too
      float pj = exp2f(dot_shared<DP>(qr, Ks[j]) - lse2);
      float ds = pj * (dot_shared<DP>(dor, Vs[j]) - di);
      axpy_shared<DP>(acc, ds, Ks[j]);
    }
  }
#pragma unroll
  for (int c = 0; c < DP; ++c) acc[c] = row_sum(acc[c]);
  if (i < p.nq) write_row<DP>(dq + q_off, i, p.channels, h, p.d, lane, acc, p.score_scale);
}

// dK/dV pass: rows are keys; walks the query tiles of chunk blockIdx.z % splits. With one split
// the results go to dk, dv; otherwise to this split's slice of the partial sums.
template <int DP>
__global__ void __launch_bounds__(kThreads) flash_backward_dkdv(Problem p, int splits, int chunk, const float* q,
                                                                const float* k, const float* v, const float* lse,
                                                                const float* delta, const float* dout, float* dk,
                                                                float* dv) {
  __shared__ __align__(16) float Qs[kTile][DP + 4];
  __shared__ __align__(16) float dOs[kTile][DP + 4];
  __shared__ float lse2s[kTile], deltas[kTile];
  const int split = blockIdx.z % splits, b = blockIdx.z / splits, h = blockIdx.y;
  const int j = blockIdx.x * kRowsPerBlock + threadIdx.x / kLanesPerRow, lane = threadIdx.x % kLanesPerRow;
  const int64_t q_off = static_cast<int64_t>(b) * p.nq * p.channels, kv_off = static_cast<int64_t>(b) * p.nk * p.channels;
  const int64_t rows_off = (static_cast<int64_t>(b) * p.heads + h) * p.nq;
  const int q_begin = split * chunk, q_end = min(p.nq, q_begin + chunk);

  float kr[DP], vr[DP], dkr[DP], dvr[DP];
  load_row<DP>(kr, k + kv_off, p.nk, j, p.channels, h, p.d, p.score_scale * kLog2e);
  load_row<DP>(vr, v + kv_off, p.nk, j, p.channels, h, p.d, 1.f);
#pragma unroll
  for (int c = 0; c < DP; ++c) dkr[c] = dvr[c] = 0.f;

  for (int q0 = q_begin; q0 < q_end; q0 += kTile) {
    __syncthreads();
    stage_tile<DP>(Qs, q + q_off, q_end, q0, p.channels, h, p.d);
    stage_tile<DP>(dOs, dout + q_off, q_end, q0, p.channels, h, p.d);
    for (int t = threadIdx.x; t < kTile; t += kThreads) {
      bool in = q0 + t < q_end;
      lse2s[t] = in ? __ldg(lse + rows_off + q0 + t) * kLog2e : 0.f;
      deltas[t] = in ? __ldg(delta + rows_off + q0 + t) : 0.f;
    }
    __syncthreads();
    if (j >= p.nk) continue;
#pragma unroll 4
    for (int ii = 0; ii < kPerLane; ++ii) {
      int i = ii * kLanesPerRow + lane;
      if (q0 + i >= q_end) break;
      float pi = exp2f(dot_shared<DP>(kr, Qs[i]) - lse2s[i]);
      axpy_shared<DP>(dvr, pi, dOs[i]);
      float ds = pi * (dot_shared<DP>(vr, dOs[i]) - deltas[i]);
      axpy_shared<DP>(dkr, ds, Qs[i]);
    }
  }
#pragma unroll
  for (int c = 0; c < DP; ++c) {
    dkr[c] = row_sum(dkr[c]);
    dvr[c] = row_sum(dvr[c]);
  }
  if (j >= p.nk) return;
  const int64_t slice = splits == 1 ? 0 : static_cast<int64_t>(split) * p.batch * p.nk * p.channels;
  write_row<DP>(dk + slice + kv_off, j, p.channels, h, p.d, lane, dkr, p.score_scale);
  write_row<DP>(dv + slice + kv_off, j, p.channels, h, p.d, lane, dvr, 1.f);
}

// out[i] = Σ_s partial[s][i] in increasing s.
__global__ void sum_query_splits(const float* partial, float* out, int64_t n, int splits) {
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  float s = 0.f;
  for (int z = 0; z < splits; ++z) s += partial[z * n + i];
  out[i] = s;
}

// ---- host side ----------------------------------------------------------------------------------

Problem problem(const AttentionShape& s, const char* who) {
  const std::string where = std::string("cuda::") + who + " (batch " + std::to_string(s.batch) + ", Nq " +
                            std::to_string(s.nq) + ", Nk " + std::to_string(s.nk) + ", channels " +
                            std::to_string(s.channels) + ", heads " + std::to_string(s.heads) + "): ";
  require(s.batch > 0 && s.nq > 0 && s.nk > 0 && s.channels > 0 && s.heads > 0,
          where + "batch, sequence lengths, channels and heads must be positive");
  require(s.channels % s.heads == 0, where + "channels must be divisible by heads");
  require(s.head_dim() <= attention_max_head_dim,
          where + "head dimension " + std::to_string(s.head_dim()) + " is above 64; use more heads");
  require(s.batch <= 65535 && s.heads <= 65535, where + "batch and heads must stay below 65536 (grid limits)");
  require(s.batch * std::max(s.nq, s.nk) * s.channels < (int64_t{1} << 31),
          where + "tensors above 2^31 elements are not supported; split the batch");
  return {static_cast<int>(s.batch), static_cast<int>(s.nq),       static_cast<int>(s.nk),
          static_cast<int>(s.channels), static_cast<int>(s.heads), static_cast<int>(s.head_dim()),
          1.f / std::sqrt(static_cast<float>(s.head_dim()))};
}

// Runs the statement(s) with the constexpr int DP set to the padded head dimension.
#define CPETS_WITH_HEAD_DIM(d, ...)                     \
  switch (padded_head_dim(d)) {                         \
    case 8: { constexpr int DP = 8; __VA_ARGS__; } break;   \
    case 16: { constexpr int DP = 16; __VA_ARGS__; } break; \
    case 32: { constexpr int DP = 32; __VA_ARGS__; } break; \
    default: { constexpr int DP = 64; __VA_ARGS__; } break; \
  }

size_t delta_bytes(const AttentionShape& s) { return detail::align_bytes(sizeof(float) * s.batch * s.heads * s.nq); }

size_t partial_bytes(const AttentionShape& s) {
  QuerySplit plan = plan_query_split(s.batch, s.heads, s.nq, s.nk);
  if (plan.splits == 1) return 0;
  return detail::align_bytes(sizeof(float) * plan.splits * s.batch * s.nk * s.channels);
}

}  // namespace

void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v, float* out, float* lse,
                       cudaStream_t stream) {
  detail::NvtxRange nvtx("cuda::attention_forward");
  Problem p = problem(s, "attention_forward");
  require(q && k && v && out && lse, "cuda::attention_forward: q, k, v, out and lse must be device pointers, not null");
  dim3 grid(static_cast<unsigned>(cdiv(p.nq, kRowsPerBlock)), p.heads, p.batch);
  CPETS_WITH_HEAD_DIM(p.d, flash_forward<DP><<<grid, kThreads, 0, stream>>>(p, q, k, v, out, lse));
  CPETS_CHECK_LAUNCH("flash_forward");
}

size_t attention_backward_workspace_bytes(const AttentionShape& s) {
  problem(s, "attention_backward_workspace_bytes");
  return delta_bytes(s) + 2 * partial_bytes(s);
}

void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v, const float* out,
                        const float* lse, const float* dout, float* dq, float* dk, float* dv, void* workspace,
                        size_t workspace_bytes, cudaStream_t stream) {
  detail::NvtxRange nvtx("cuda::attention_backward");
  Problem p = problem(s, "attention_backward");
  require((dk == nullptr) == (dv == nullptr), "cuda::attention_backward: dk and dv must be both given or both null");
  require(q && k && v && out && lse && dout && workspace,
          "cuda::attention_backward: q, k, v, out, lse, dout and the workspace must be device pointers, not null");
  const size_t need = attention_backward_workspace_bytes(s);
  require(workspace_bytes >= need, "cuda::attention_backward: workspace of " + std::to_string(workspace_bytes) +
                                       " bytes is too small; the shape needs " + std::to_string(need) +
                                       " (ask attention_backward_workspace_bytes)");
  if (!dq && !dk) return;
  float* delta = static_cast<float*>(workspace);
  const int64_t rows = static_cast<int64_t>(p.batch) * p.heads * p.nq;
  row_delta<<<static_cast<unsigned>(cdiv(rows, 256)), 256, 0, stream>>>(p, out, dout, delta);
  CPETS_CHECK_LAUNCH("row_delta");

  if (dq) {
    dim3 grid(static_cast<unsigned>(cdiv(p.nq, kRowsPerBlock)), p.heads, p.batch);
    CPETS_WITH_HEAD_DIM(p.d, flash_backward_dq<DP><<<grid, kThreads, 0, stream>>>(p, q, k, v, lse, delta, dout, dq));
    CPETS_CHECK_LAUNCH("flash_backward_dq");
  }
  if (dk) {
    QuerySplit plan = plan_query_split(p.batch, p.heads, p.nq, p.nk);
    char* part = static_cast<char*>(workspace) + delta_bytes(s);
    float* dk_target = plan.splits == 1 ? dk : reinterpret_cast<float*>(part);
    float* dv_target = plan.splits == 1 ? dv : reinterpret_cast<float*>(part + partial_bytes(s));
    dim3 grid(static_cast<unsigned>(cdiv(p.nk, kRowsPerBlock)), p.heads,
              static_cast<unsigned>(p.batch * plan.splits));
    require(grid.z <= 65535, "cuda::attention_backward: batch × query splits exceeds the grid limit");
    CPETS_WITH_HEAD_DIM(p.d, flash_backward_dkdv<DP><<<grid, kThreads, 0, stream>>>(
                                 p, plan.splits, plan.chunk, q, k, v, lse, delta, dout, dk_target, dv_target));
    CPETS_CHECK_LAUNCH("flash_backward_dkdv");
    if (plan.splits > 1) {
      const int64_t n = static_cast<int64_t>(p.batch) * p.nk * p.channels;
      sum_query_splits<<<static_cast<unsigned>(cdiv(n, 256)), 256, 0, stream>>>(dk_target, dk, n, plan.splits);
      CPETS_CHECK_LAUNCH("sum_query_splits");
      sum_query_splits<<<static_cast<unsigned>(cdiv(n, 256)), 256, 0, stream>>>(dv_target, dv, n, plan.splits);
      CPETS_CHECK_LAUNCH("sum_query_splits");
    }
  }
}

}  // namespace cpets::kernels::cuda
