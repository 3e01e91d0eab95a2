// Fused multi-head scaled dot-product attention on an NVIDIA GPU (flash-attention style), the
// same semantics as kernels/cpu/attention.h: q (B, Nq, C), k and v (B, Nk, C), head h owns
// channels [h·d, (h+1)·d), scores scaled by 1/sqrt(d); lse (B, heads, Nq) is the natural-log
// logsumexp of each score row. Raw device pointers, asynchronous on `stream`.
//
// Forward: one thread block per (batch, head, 64-query tile), one thread per query; key/value
// tiles are staged in shared memory and folded in with an online softmax, so the Nq×Nk score
// matrix never exists in global memory. Backward (flash-attention 2): a dQ pass over query tiles
// and a dK/dV pass over key tiles, each recomputing score tiles from lse and each thread owning
// its outputs (no atomics). When there are few key tiles (cross-attention to 1–8 tokens) the
// dK/dV pass is also split over fixed query chunks whose partial sums are added in chunk order by
// a second kernel, so the result is bitwise reproducible and independent of the device.
// FP32 arithmetic throughout (CUDA cores). Head dims 1..64 (8, 16, 32 are the model's).
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/cpu/attention.h"

namespace cpets::kernels::cuda {

using AttentionShape = cpets::kernels::cpu::AttentionShape;

// Largest head dimension the kernels take.
constexpr int64_t attention_max_head_dim = 64;

// out (B, Nq, C); lse (B, heads, Nq). No workspace.
void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                       float* lse, cudaStream_t stream);

// Gradients for dout = ∂L/∂out; `out` and `lse` are the forward's results. dq may be null (not
// needed); dk and dv are both given or both null. Workspace: the per-row dot(dout, out) and, when
// the dK/dV pass is split, its partial sums.
size_t attention_backward_workspace_bytes(const AttentionShape& s);
void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v, const float* out,
                        const float* lse, const float* dout, float* dq, float* dk, float* dv, void* workspace,
                        size_t workspace_bytes, cudaStream_t stream);

}  // namespace cpets::kernels::cuda
