// Multi-tensor Adam. Parallel decomposition: every tensor is cut into chunks of kChunk elements
// and each block takes one chunk of one tensor; the block finds its tensor by binary search over
// the tensors' first-block numbers (copied to the device with the pointers and scalars). All
// tensors are updated by one launch, and each element is independent, so any order gives the
// same bits.
#include <stdexcept>

#include "kernels/cuda/adam.h"
#include "kernels/cuda/launch.cuh"

namespace cpets::kernels::cuda {
namespace {

constexpr int64_t kChunk = 8192;

struct Entry {
  AdamTensor t;
  int64_t first_block;
};

__device__ __forceinline__ void adam_element(const AdamTensor& t, int64_t i) {
  const AdamScalars& s = t.s;
  const float p = t.param[i];
  const float grad = s.weight_decay != 0.f ? fmaf(s.weight_decay, p, t.grad[i]) : t.grad[i];
  const float m = fmaf(s.one_minus_beta1, grad, __fmul_rn(t.exp_avg[i], s.beta1));
  const float v = fmaf(__fmul_rn(s.one_minus_beta2, grad), grad, __fmul_rn(t.exp_avg_sq[i], s.beta2));
  t.exp_avg[i] = m;
  t.exp_avg_sq[i] = v;
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), s.bias_correction2_sqrt), s.eps);
  t.param[i] = __fadd_rn(p, __fdiv_rn(__fmul_rn(-s.step_size, m), denom));
}

__global__ void adam_kernel(const Entry* __restrict__ entries, int count) {
  int lo = 0, hi = count - 1;  // last entry with first_block <= blockIdx.x
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (entries[mid].first_block <= int64_t(blockIdx.x)) lo = mid;
    else hi = mid - 1;
  }
  const AdamTensor t = entries[lo].t;
  const int64_t b = (int64_t(blockIdx.x) - entries[lo].first_block) * kChunk, e = min(t.n, b + kChunk);
  for (int64_t i = b + threadIdx.x; i < e; i += blockDim.x) adam_element(t, i);
}

}  // namespace

size_t adam_workspace_bytes(size_t tensors) { return tensors * sizeof(Entry); }

void adam_multi_tensor(const std::vector<AdamTensor>& tensors, Workspace ws, cudaStream_t stream) {
  std::vector<Entry> entries;
  int64_t blocks = 0;
  for (const AdamTensor& t : tensors) {
    if (t.n <= 0) continue;
    entries.push_back({t, blocks});
    blocks += ceil_div(t.n, kChunk);
  }
  if (entries.empty()) return;
  if (ws.bytes < adam_workspace_bytes(entries.size()))
    throw std::invalid_argument("cuda adam_multi_tensor: workspace too small");
  // From pageable memory the driver stages the list before returning, so `entries` may go away.
  CPETS_CUDA_CHECK(cudaMemcpyAsync(ws.ptr, entries.data(), entries.size() * sizeof(Entry), cudaMemcpyHostToDevice,
                                   stream));
  adam_kernel<<<unsigned(blocks), kBlock, 0, stream>>>(static_cast<const Entry*>(ws.ptr), int(entries.size()));
  CPETS_CHECK_LAUNCH("adam_kernel");
}

}  // namespace cpets::kernels::cuda
